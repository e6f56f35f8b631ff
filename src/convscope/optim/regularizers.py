"""Regularisers: penalties on the image itself (in [0, 1], before transforms), subtracted from the objective.

Each returns one value per image, already multiplied by its weight, so the optimiser maximises
``objective - sum(regularizers)``. Weights are relative to the objective's scale (a channel mean is often
0.1 to 10), so start small.

Example::

    scope.maximize(obj, regularizers=[l1(0.05), total_variation(0.25), blur(0.5)])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from convscope.errors import OptionError


@dataclass(frozen=True)
class Regularizer:
    """``weight * fn(images)``: ``fn`` maps (N, C, H, W) images in [0, 1] to (N,) penalties."""

    name: str
    weight: float
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.weight * self.fn(images)

    def __repr__(self) -> str:
        return f"{self.name}({self.weight:g})"


def _weight(name: str, weight: float) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise OptionError(f"{name}(weight={weight!r}): pass a number >= 0")
    return float(weight)


def l1(weight: float = 0.05, *, center: float = 0.5) -> Regularizer:
    """Mean absolute distance of the pixels from ``center`` (default 0.5 grey): keeps the image sparse."""
    return Regularizer("l1", _weight("l1", weight), lambda x: (x - center).abs().flatten(1).mean(1))


def l2(weight: float = 0.05, *, center: float = 0.5) -> Regularizer:
    """Mean squared distance of the pixels from ``center`` (default 0.5): damps extreme values."""
    return Regularizer("l2", _weight("l2", weight), lambda x: (x - center).square().flatten(1).mean(1))


def _tv(x: torch.Tensor) -> torch.Tensor:
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def total_variation(weight: float = 0.25) -> Regularizer:
    """Mean absolute difference between neighbouring pixels (rows plus columns): smooths high frequencies."""
    return Regularizer("total_variation", _weight("total_variation", weight), _tv)


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (k[:, None] * k[None, :] / 16).expand(c, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    return (x - blurred.detach()).square().flatten(1).mean(1)


def blur(weight: float = 0.5) -> Regularizer:
    """Mean squared distance to a 3×3 binomial blur of the image (held fixed each step): pulls the image
    towards its blurred self, as Lucid's ``blur_input_each_step``."""
    return Regularizer("blur", _weight("blur", weight), _blur)


REGULARIZERS: dict[str, Callable[..., Regularizer]] = {
    "l1": l1, "l2": l2, "total_variation": total_variation, "blur": blur,
}  # fmt: skip
"""Registry of regulariser constructors by name."""
