"""Guided backprop and deconvnet: ReLU backward rules swapped in for the duration of one forward pass.

Instead of hooking ``nn.ReLU`` modules (which misses reused modules, ``F.relu`` inside ``forward`` and
Keras' ``activation="relu"``), :func:`relu_override` installs a ``TorchFunctionMode`` that catches every
ReLU call made while the model runs — ``nn.ReLU`` (in place or not), ``F.relu``, ``torch.relu``,
``Tensor.relu``/``relu_``, ``clamp(min=0)``, the ``aten.relu``/``relu_`` ops of a ``torch.export``
graph — and Keras' ReLU activation, which calls ``F.relu`` on the torch backend. Nothing is registered on the model; leaving the ``with`` block removes the mode.

Backward rules for a ReLU with output ``y`` and incoming gradient ``g``:

* guided backprop (Springenberg et al. 2015): ``g * (y > 0) * (g > 0)``
* deconvnet (Zeiler & Fergus 2014):           ``relu(g)``, ignoring the forward mask

Example::

    with relu_override(ReluMode.GUIDED) as seen:
        out = model(x)
    # leave the mode before backward: the custom backward runs plain torch ops
    out[0, 3].backward()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from convscope.errors import ConvscopeError


class ReluMode(str, Enum):
    """How gradients pass ReLUs: ordinarily, guided backprop, or the deconvnet rule."""

    NORMAL = "normal"
    GUIDED = "guided"
    DECONV = "deconv"


class _Rule(torch.autograd.Function):
    """ReLU forward; backward by the rule passed as ``mode``. ``inplace`` keeps the semantics of
    ``nn.ReLU(inplace=True)`` (the input tensor is overwritten and marked dirty)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mode: ReluMode, inplace: bool) -> torch.Tensor:
        if inplace:
            y = x.clamp_(min=0)
            ctx.mark_dirty(x)
        else:
            y = x.clamp(min=0)
        ctx.mode = mode
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (y,) = ctx.saved_tensors
        return _backward(ctx.mode, y, grad), None, None


def _backward(mode: ReluMode, y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    positive = grad.clamp(min=0)
    return positive if mode is ReluMode.DECONV else positive * (y > 0).to(grad.dtype)


_aten = torch.ops.aten  # a torch.export (.pt2) graph calls these OpOverloads, which the mode also sees
_RELU: set[Callable[..., Any]] = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
                                  _aten.relu.default, _aten.relu_.default}  # fmt: skip
_INPLACE: set[Callable[..., Any]] = {F.relu_, torch.relu_, torch.Tensor.relu_, torch.Tensor.clamp_,
                                     torch.clamp_, torch.Tensor.clamp_min_, torch.clamp_min_,
                                     _aten.relu_.default, _aten.clamp_.default, _aten.clamp_min_.default}  # fmt: skip
_CLAMP: set[Callable[..., Any]] = {torch.clamp, torch.Tensor.clamp, torch.clamp_, torch.Tensor.clamp_,
                                   torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_min_,
                                   torch.Tensor.clamp_min_, _aten.clamp.default, _aten.clamp_.default,
                                   _aten.clamp_min.default, _aten.clamp_min_.default}  # fmt: skip
_OTHER: dict[Callable[..., Any], str] = {
    F.leaky_relu: "leaky_relu", F.elu: "elu", F.selu: "selu", F.celu: "celu", F.gelu: "gelu",
    F.silu: "silu", F.mish: "mish", F.hardswish: "hardswish", F.relu6: "relu6", F.hardtanh: "hardtanh",
    F.softplus: "softplus", torch.sigmoid: "sigmoid", torch.Tensor.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    torch.tanh: "tanh", torch.Tensor.tanh: "tanh", F.tanh: "tanh",
    _aten.sigmoid.default: "sigmoid", _aten.tanh.default: "tanh", _aten.gelu.default: "gelu",
    _aten.silu.default: "silu", _aten.leaky_relu.default: "leaky_relu", _aten.hardtanh.default: "hardtanh",
}  # fmt: skip


def _is_relu_clamp(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``clamp(x, min=0)`` / ``clamp_min(x, 0)`` with no upper bound is a ReLU written by hand."""
    rest = list(args[1:])
    low = kwargs.get("min", rest[0] if rest else None)
    high = kwargs.get("max", rest[1] if len(rest) > 1 else None)
    return isinstance(low, int | float) and float(low) == 0.0 and high is None


class _GuidedMode(TorchFunctionMode):
    def __init__(self, mode: ReluMode) -> None:
        super().__init__()
        self.mode = mode
        self.relus = 0
        self.others: set[str] = set()

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        x = args[0] if args else kwargs.get("input")
        relu = func in _RELU or (func in _CLAMP and _is_relu_clamp(func, args, kwargs))
        if relu and isinstance(x, torch.Tensor) and x.is_floating_point():
            self.relus += 1
            inplace = func in _INPLACE or bool(kwargs.get("inplace", False)) or (
                func is F.relu and len(args) > 1 and bool(args[1])
            )
            if inplace and x.requires_grad and x.is_leaf:
                inplace = False  # autograd forbids writing into a leaf that requires grad
            return _Rule.apply(x, self.mode, inplace)
        if func in _OTHER:
            self.others.add(_OTHER[func])
        return func(*args, **kwargs)


class ReluReport:
    """What :func:`relu_override` saw: ReLU calls rewritten and other nonlinearities left alone."""

    def __init__(self) -> None:
        self.relus = 0
        self.others: set[str] = set()


@contextmanager
def relu_override(mode: ReluMode, model: Any = None) -> Iterator[ReluReport]:
    """Rewrite every ReLU run inside the block to use ``mode``'s backward rule.

    Args:
        mode: :class:`ReluMode`; ``NORMAL`` makes this a no-op.
        model: checked for TorchScript modules, whose ReLUs cannot be intercepted (refused).

    Yields a :class:`ReluReport`, filled in when the block exits. Leave the block before calling
    ``backward``: the custom backward runs torch ops that the mode would otherwise catch too.
    """
    report = ReluReport()
    if mode is ReluMode.NORMAL:
        yield report
        return
    if model is not None and any(isinstance(m, torch.jit.ScriptModule) for m in _modules(model)):
        raise ConvscopeError(
            f"{mode.value} backprop cannot rewrite the ReLUs of a TorchScript model (its graph bypasses "
            "Python); load the eager nn.Module instead, or use a method with ordinary gradients "
            "('saliency', 'integrated_gradients', 'gradcam')"
        )
    guided = _GuidedMode(mode)
    try:
        with guided:
            yield report
    finally:
        report.relus, report.others = guided.relus, guided.others


def _modules(model: Any) -> Iterator[Any]:
    return iter(model.modules()) if isinstance(model, torch.nn.Module) else iter(())
