"""Redirected ReLU gradients (Lucid): a channel that is dead for the start image can still be climbed.

A unit that is negative before its ReLU gets no gradient, so a target channel that is zero everywhere
for the initial image would never change. Inside :func:`redirect_relu` every ``relu`` call (``nn.ReLU``,
``F.relu``, ``torch.relu``, Keras' ``activation="relu"``) keeps its forward value and its true gradient;
only at the last ReLU of the pass (the one nearest the objective), for an image through which no gradient
passes at all, the upward push goes to the negative unit nearest to zero, which then comes alive.
Nothing is registered on the model: a ``TorchFunctionMode`` swaps the function for the duration, at no
measurable cost (VGG16 at 128 px: within timing noise of plain ``relu``).

Example::

    with redirect_relu():
        loss = -model(x)[:, 3].sum()
    loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


class RedirectedReLU(torch.autograd.Function):
    """``relu(x)`` forward; backward is the true ReLU gradient, except at a *gated* ReLU (the last one the
    forward pass ran, nearest the objective) for an image through which no gradient passes at all: there the
    upward push reaches the negative unit closest to zero (the one that comes alive first), a sharper form
    of Lucid's ``redirected_relu_grad``. In-place ReLUs keep no copy of their input, so they pass the push
    to every negative unit, as Lucid does."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, in_place: bool) -> torch.Tensor:
        ctx.in_place = in_place
        if in_place:
            ctx.mark_dirty(x)
            out = x.clamp_min_(0)
            ctx.save_for_backward(out)  # out > 0 exactly where x > 0
            return out
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (saved,) = ctx.saved_tensors
        relu_grad = torch.ops.aten.threshold_backward(grad, saved, 0)  # the true gradient, one fused pass
        if not getattr(ctx, "gate", False) or grad.dim() < 2:
            return relu_grad, None
        passes = relu_grad.flatten(1).abs().amax(1) > 0
        if bool(passes.all()):
            return relu_grad, None
        up = grad < 0  # the loss is minimised: a negative gradient pushes a unit up
        if ctx.in_place:
            redirected = grad * (up | (saved > 0))
        else:
            nearest = torch.where(up, saved, torch.full_like(saved, -torch.inf)).flatten(1).argmax(1)
            rows = torch.arange(len(nearest), device=grad.device)
            flat = torch.zeros_like(grad).flatten(1)
            flat[rows, nearest] = grad.flatten(1)[rows, nearest]
            redirected = flat.reshape(grad.shape)
        return torch.where(passes.reshape(-1, *[1] * (grad.dim() - 1)), relu_grad, redirected), None


_OUT_OF_PLACE: set[Callable[..., Any]] = {F.relu, torch.relu, torch.Tensor.relu}
_IN_PLACE: set[Callable[..., Any]] = {torch.relu_, torch.Tensor.relu_}


class redirect_relu(TorchFunctionMode):  # noqa: N801 - used like a function: ``with redirect_relu():``
    """Context manager: ReLUs called inside use :class:`RedirectedReLU` when their input needs a gradient;
    the last one called is gated when the block ends."""

    def __init__(self) -> None:
        super().__init__()
        self.last: Any = None

    def __exit__(self, *exc: Any) -> None:
        if self.last is not None:
            self.last.gate = True  # the node nearest the objective
        super().__exit__(*exc)

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _OUT_OF_PLACE or func in _IN_PLACE:
            x = args[0]
            if isinstance(x, torch.Tensor) and x.requires_grad and x.is_floating_point() and torch.is_grad_enabled():
                in_place = func in _IN_PLACE or kwargs.get("inplace", False) or (len(args) > 1 and args[1] is True)
                out = RedirectedReLU.apply(x, bool(in_place))
                self.last = out.grad_fn
                return out
        return func(*args, **kwargs)
