"""Keras on TensorFlow or JAX: the model moved to a torch-backend worker process, every call forwarded.

``cs.Scope(model)`` uses :class:`BridgedScope` by itself when :func:`needs_bridge` says so.
"""

from __future__ import annotations

from typing import Any

from convscope.errors import ConvscopeError

__all__ = ["BridgedScope", "GraphCannotCrossError", "needs_bridge"]


def _keras2(model: Any) -> bool:
    mods = [cls.__module__ for cls in type(model).__mro__]
    return any(m.split(".")[0] == "tf_keras" or m.startswith(("keras.engine.", "keras.src.engine.")) for m in mods)


def needs_bridge(model: Any) -> bool:
    """True for a Keras 3 model whose backend is not torch; a Keras 2 (``tf_keras``) model is refused."""
    if model is None or isinstance(model, type):
        return False
    if _keras2(model):
        raise ConvscopeError(
            f"this is a Keras 2 model ({type(model).__module__}.{type(model).__qualname__}, from tf_keras or "
            "TF_USE_LEGACY_KERAS=1); convscope needs Keras 3. Build it with `import keras` (Keras 3) instead, or "
            "save it with model.save('model.h5') and load that file with Keras 3's keras.models.load_model"
        )
    from convscope.adapters import is_keras_model

    if not is_keras_model(model):
        return False
    import keras
    import torch

    return isinstance(model, keras.Model) and not isinstance(model, torch.nn.Module)


def __getattr__(name: str) -> Any:
    if name == "BridgedScope":
        from convscope.bridge.bridged import BridgedScope

        return BridgedScope
    if name == "GraphCannotCrossError":
        from convscope.bridge.wire import GraphCannotCrossError

        return GraphCannotCrossError
    raise AttributeError(name)
