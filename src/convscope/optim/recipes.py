"""Recipes: named bundles of parameterisation, transforms, regularisers and step size.

* ``"default"``: feature visualisation as in Olah et al. 2017 (Lucid): a Fourier-parameterised,
  colour-decorrelated image squashed by a sigmoid, seen through random pad/jitter/scale/rotate
  transforms, all scaled to the image size (:func:`~convscope.optim.transforms.standard_transforms`).
  From 128 px on it is Lucid's recipe unchanged. Images whose shorter side is under 64 px (a 28×28
  digit, a 32×32 CIFAR image) use one value per pixel, clamped to the valid range, and milder
  transforms (pad 1, jitter 2, zoom ±2 %, ±2° at 28 px): a Fourier basis with so few frequencies
  makes the ascent imprecise there (on a trained 28×28 digit CNN it let another image win 3-4 of
  16 channels; pixels win all 16).
* ``"plain"``: gradient ascent on the pixels (Erhan et al. 2009): one value per pixel starting
  from grey noise, no transforms, no regularisers, pixels clamped to the valid range after every step.

Both redirect ReLU gradients (:mod:`convscope.optim.relu`): this changes nothing while any gradient
reaches the image, and lets a target that is dead for the start image (zero everywhere, common after a
Keras ``activation="relu"``) come alive instead of staying grey. Both run 256 steps at ``lr=0.05``,
whatever the image size.

Any option given to :func:`convscope.optim.maximize` overrides the recipe's value, and a :class:`Recipe`
object may be passed instead of a name (e.g. ``dataclasses.replace(RECIPES["default"], relu_redirect=False)``).

Example::

    scope.maximize(obj, recipe="plain", steps=64)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from convscope.errors import OptionError, check_choice
from convscope.optim.params import ParamFactory, ParamKind, Squash
from convscope.optim.regularizers import Regularizer
from convscope.optim.transforms import Compose, Size, Transform, compose, standard_transforms

DEFAULT_SIZE = 128
"""Image side used when the model does not declare its input size."""
FOURIER_MIN_SIDE = 64
"""Shorter image side (px) from which the default recipe uses its Fourier image; smaller images use pixels."""


@dataclass(frozen=True)
class Recipe:
    """Defaults for one way of synthesising images (see the module docstring)."""

    name: str
    param: ParamKind
    decorrelate: bool
    squash: Squash
    transforms: Callable[[Size], Compose]
    regularizers: tuple[Regularizer, ...]
    lr: float
    steps: int
    description: str
    relu_redirect: bool = False
    pixels_below: int = 0
    """Images whose shorter side is below this many pixels use a clamped pixel image without colour
    mixing instead of ``param``/``decorrelate``/``squash`` (0: never)."""

    def image(self, size: Size) -> tuple[ParamKind, bool, Squash]:
        """The parameterisation, colour decorrelation and squashing for images of ``size`` (H, W)."""
        if min(size) < self.pixels_below:
            return ParamKind.PIXEL, False, Squash.CLAMP  # clamping needs unmixed channels (see params)
        return self.param, self.decorrelate, self.squash


RECIPES: dict[str, Recipe] = {
    "default": Recipe("default", ParamKind.FFT, True, Squash.SIGMOID, standard_transforms, (), 0.05, 256,
                      "Fourier-parameterised, colour-decorrelated image seen through random jitter/scale/rotate "
                      "(Olah et al. 2017), scaled to the image size (pixels under 64 px)",
                      relu_redirect=True, pixels_below=FOURIER_MIN_SIDE),
    "plain": Recipe("plain", ParamKind.PIXEL, False, Squash.CLAMP, lambda size: compose(), (), 0.05, 256,
                    "gradient ascent on the pixels, clamped to the valid range, no transforms or regularisers "
                    "(Erhan et al. 2009)", relu_redirect=True),
}  # fmt: skip
"""Registry of recipes by name (read by the CLI)."""


@dataclass(frozen=True)
class Settings:
    """Every option of one run, resolved from a recipe and the caller's overrides."""

    recipe: str
    steps: int
    size: Size
    param: str | ParamKind | ParamFactory
    decorrelate: bool | np.ndarray | torch.Tensor
    squash: Squash
    transforms: Compose
    regularizers: tuple[Regularizer, ...]
    lr: float
    relu_redirect: bool = False


def _size(size: int | Sequence[int] | None, declared: Size | None) -> Size:
    if size is None:
        return declared or (DEFAULT_SIZE, DEFAULT_SIZE)
    if isinstance(size, int) and not isinstance(size, bool):
        dims: tuple[Any, ...] = (size, size)
    elif isinstance(size, Sequence) and not isinstance(size, str):
        dims = tuple(size)
    else:
        dims = ()
    if len(dims) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 8 for d in dims):
        raise OptionError(f"size={size!r} is not allowed; pass an int >= 8 (square) or (height, width), e.g. 128")
    return int(dims[0]), int(dims[1])


def resolve_settings(
    *,
    recipe: str | Recipe,
    declared_size: Size | None,
    steps: int | None = None,
    size: int | Sequence[int] | None = None,
    param: str | ParamKind | ParamFactory | None = None,
    transforms: Transform | Sequence[Transform] | None = None,
    regularizers: Sequence[Regularizer] | None = None,
    decorrelate: bool | np.ndarray | torch.Tensor | None = None,
    lr: float | None = None,
) -> Settings:
    """Merge ``recipe``'s defaults with explicit options (``None`` = recipe default) and validate them."""
    r = recipe if isinstance(recipe, Recipe) else RECIPES[check_choice("recipe", recipe, list(RECIPES))]
    steps = r.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise OptionError(f"steps={steps!r} is not allowed; pass an int >= 1, e.g. 256")
    lr = r.lr if lr is None else lr
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < 100:
        raise OptionError(f"lr={lr!r} is not allowed; pass a positive step size such as 0.05")
    hw = _size(size, declared_size)
    regs = r.regularizers if regularizers is None else tuple(regularizers)
    own_param, own_decorrelate, own_squash = r.image(hw)
    kind = own_param if param is None else param
    squash = own_squash if kind == own_param else Squash.SIGMOID  # clamping suits only the recipe's pixel image
    bad = [g for g in regs if not isinstance(g, Regularizer)]
    if bad:
        raise OptionError(f"regularizers: {bad[0]!r:.60} is not a Regularizer; use l1(), l2(), total_variation() "
                          "or blur() from convscope.optim")  # fmt: skip
    return Settings(
        recipe=r.name,
        steps=steps,
        size=hw,
        param=kind,
        decorrelate=own_decorrelate if decorrelate is None else decorrelate,
        squash=squash,
        transforms=r.transforms(hw) if transforms is None else compose(transforms),
        regularizers=regs,
        lr=float(lr),
        relu_redirect=r.relu_redirect,
    )
