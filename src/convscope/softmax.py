"""Find the softmax that ends a model, so scores can be read as pre-softmax logits.

Class scores (optimised by ``objectives.logit`` and explained by attribution methods) must be logits:
softmax outputs saturate and couple the classes. Models that end in softmax are handled by
:class:`convscope.capture.Capture` with ``logits=True``:

* Keras: an output layer whose ``activation`` is softmax (``Dense(..., activation="softmax")`` or
  ``Activation("softmax")``) has its activation swapped for the identity during the pass.
* PyTorch: a final ``nn.Softmax``/``nn.LogSoftmax`` module (the last leaf module) passes its input through.

A softmax applied functionally inside ``forward`` (``F.softmax``) cannot be seen and is not removed.
"""

from __future__ import annotations

from typing import Any

import torch

from convscope.adapters.base import ModelAdapter

_SOFTMAX_NAMES = {"softmax", "log_softmax"}


def keras_softmax_layers(adapter: ModelAdapter) -> list[Any]:
    """Output layers of a Keras model whose activation is a softmax."""
    model = adapter.model
    try:
        outputs = [t._keras_history[0] for t in model.outputs]  # functional and Sequential models
    except (AttributeError, ValueError, TypeError):
        outputs = [adapter.handles[-1].module] if adapter.handles else []
    return [layer for layer in outputs if getattr(getattr(layer, "activation", None), "__name__", "") in _SOFTMAX_NAMES]


def torch_softmax_modules(adapter: ModelAdapter) -> list[torch.nn.Module]:
    """The model's last leaf module when it is ``nn.Softmax`` or ``nn.LogSoftmax``."""
    leaves = [h.module for h in adapter.handles if h.is_leaf]
    if leaves and isinstance(leaves[-1], torch.nn.Softmax | torch.nn.LogSoftmax):
        return [leaves[-1]]
    return []


def _passthrough(module: torch.nn.Module, args: Any, output: Any) -> Any:
    return args[0]


def strip_softmax(adapter: ModelAdapter) -> list[Any]:
    """Make the model return logits; returns undo actions (call each to restore)."""
    undo: list[Any] = []
    if adapter.framework == "keras":
        import keras

        for layer in keras_softmax_layers(adapter):
            original = layer.activation
            layer.activation = keras.activations.linear
            undo.append(lambda layer=layer, original=original: setattr(layer, "activation", original))
    else:
        for module in torch_softmax_modules(adapter):
            undo.append(module.register_forward_hook(_passthrough).remove)
    return undo


def ends_in_softmax(adapter: ModelAdapter) -> bool:
    """Whether ``strip_softmax`` would change this model's output."""
    if adapter.framework == "keras":
        return bool(keras_softmax_layers(adapter))
    return bool(torch_softmax_modules(adapter))
