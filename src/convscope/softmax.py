"""Read a model that ends in softmax as pre-softmax logits.

Class scores (optimised by ``objectives.logit`` and explained by attribution methods) must be logits:
softmax outputs saturate and couple the classes. :class:`convscope.capture.Capture` with
``logits=True`` uses :class:`LogitsReader`:

* Keras: an output layer whose ``activation`` is softmax (``Dense(..., activation="softmax")``,
  ``Activation("softmax")``) has its activation swapped for the identity during the pass.
* Both frameworks: every ``nn.Softmax``/``nn.LogSoftmax`` module and Keras ``Softmax`` layer records
  its input; when the model's output *is* one of their outputs, the recorded input (the logits, still
  on the autograd graph) is returned instead. A softmax used inside the model (attention, gating) is
  therefore never touched.

A softmax applied functionally inside ``forward`` (``F.softmax``) cannot be seen and is not removed.
"""

from __future__ import annotations

from typing import Any

import torch

from convscope.adapters.base import ModelAdapter

_SOFTMAX_NAMES = {"softmax", "log_softmax"}
_SOFTMAX_TYPES = {"Softmax", "LogSoftmax"}


def _output_layers(model: Any) -> list[Any]:
    """The layers producing a Keras model's outputs, stepping into nested models that end it."""
    try:
        found = [t._keras_history[0] for t in model.outputs]  # functional and Sequential models
    except (AttributeError, ValueError, TypeError):
        layers = getattr(model, "layers", None)
        found = [layers[-1]] if layers else []
    out: list[Any] = []
    for layer in found:
        nested = getattr(layer, "layers", None)
        out.extend(_output_layers(layer) if isinstance(nested, list) and nested else [layer])
    return out


def keras_softmax_layers(adapter: ModelAdapter) -> list[Any]:
    """Output layers (also inside a nested head model) whose ``activation`` attribute is a softmax."""
    return [
        layer
        for layer in _output_layers(adapter.model)
        if getattr(getattr(layer, "activation", None), "__name__", "") in _SOFTMAX_NAMES
    ]


def softmax_modules(adapter: ModelAdapter) -> list[torch.nn.Module]:
    """Every softmax module or layer of the model (``nn.Softmax``, ``nn.LogSoftmax``, Keras ``Softmax``)."""
    found: dict[int, torch.nn.Module] = {}
    for h in adapter.handles:
        if h.is_leaf and (isinstance(h.module, torch.nn.Softmax | torch.nn.LogSoftmax) or h.type_name in _SOFTMAX_TYPES):
            found.setdefault(id(h.module), h.module)
    return list(found.values())


class LogitsReader:
    """Installs the swaps and recording hooks; :meth:`logits` maps the model output to logits."""

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        self.undo: list[Any] = []
        self._seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def install(self) -> None:
        if self.adapter.framework == "keras":
            import keras

            for layer in keras_softmax_layers(self.adapter):
                original = layer.activation
                layer.activation = keras.activations.linear
                self.undo.append(lambda layer=layer, original=original: setattr(layer, "activation", original))
        for module in softmax_modules(self.adapter):
            self.undo.append(module.register_forward_hook(self._record).remove)

    def _record(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
            self._seen[id(output)] = (output, args[0])
        return None  # Keras layers must see None returned

    def logits(self, output: Any) -> Any:
        """``output`` itself, or the softmax input when ``output`` is a softmax's output."""
        if isinstance(output, torch.Tensor):
            hit = self._seen.get(id(output))
            if hit is not None and hit[0] is output:
                return hit[1]
        return output

    def remove(self) -> None:
        for undo in reversed(self.undo):
            undo()
        self.undo.clear()
        self._seen.clear()
