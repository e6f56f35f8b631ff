"""Model adapters: one protocol over PyTorch modules and Keras 3 models (torch backend)."""

from __future__ import annotations

from typing import Any

from convscope.adapters.base import LayerHandle, Layout, ModelAdapter
from convscope.errors import BackendError, ConvscopeError

__all__ = ["Layout", "LayerHandle", "ModelAdapter", "adapt", "is_keras_model"]


def is_keras_model(model: Any) -> bool:
    """True for a Keras 3 model or layer (by class ancestry; never imports keras)."""
    return any(cls.__module__.split(".")[0] == "keras" for cls in type(model).__mro__)


def adapt(model: Any, *, input_shape: tuple[int, ...] | None = None) -> ModelAdapter:
    """Wrap ``model`` in the adapter for its framework.

    Raises :class:`BackendError` for a Keras model on a backend other than torch and
    :class:`ConvscopeError` for anything that is neither a ``torch.nn.Module`` nor a Keras model.
    """
    if isinstance(model, ModelAdapter):
        return model
    if is_keras_model(model):
        import torch

        if not isinstance(model, torch.nn.Module):
            import keras

            raise BackendError(
                f"this Keras model runs on the {keras.backend.backend()!r} backend; convscope needs the "
                "torch backend. Set KERAS_BACKEND=torch before importing keras (e.g. "
                "`import os; os.environ['KERAS_BACKEND'] = 'torch'` as the first line), then load the "
                "model again: the model file loads unchanged. (cs.Scope(model) does this by itself: it runs "
                "the model in a torch-backend worker process.)"
            )
        from convscope.adapters.keras import KerasAdapter

        return KerasAdapter(model, input_shape=input_shape)
    import torch

    if isinstance(model, torch.nn.Module):
        from convscope.adapters.torch import TorchAdapter

        return TorchAdapter(model, input_shape=input_shape)
    raise ConvscopeError(
        f"cannot inspect a {type(model).__module__}.{type(model).__qualname__}; convscope accepts a "
        "torch.nn.Module or a Keras 3 model (KERAS_BACKEND=torch)"
    )
