"""Random image transforms applied before every step, so features must survive small changes (Lucid).

Geometric transforms (``pad``, ``jitter``, ``random_scale``, ``random_rotate``) are fused: a run of them
becomes one affine map per image and ONE ``grid_sample`` call, so the model sees the image at its final
size and nothing is resampled twice. Randomness comes only from the ``torch.Generator`` passed in, so a
seed repeats a run exactly. No torchvision is needed.

Example::

    ts = compose(pad(8), jitter(16), random_scale(0.9, 1.1), random_rotate(10))
    out = ts(images, torch.Generator().manual_seed(0))      # (N, C, H, W) -> (N, C, H, W)
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch.nn import functional as F

from convscope.errors import OptionError, check_choice

Size = tuple[int, int]


class PadMode(str, Enum):
    """How pixels outside the image are filled: mirrored (edge pixel repeated), edge copies, or a constant."""

    REFLECT = "reflect"
    EDGE = "edge"
    CONSTANT = "constant"


_GRID_MODE = {PadMode.REFLECT: "reflection", PadMode.EDGE: "border", PadMode.CONSTANT: "zeros"}


class Transform:
    """A random transform of an (N, C, H, W) batch; call it as ``t(images, generator)``."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not isinstance(self, Geometric | Compose | Lambda):
            raise NotImplementedError(f"{type(self).__name__} must override __call__(images, generator)")
        return apply_transforms(images, [self], generator)


class Geometric(Transform):
    """An affine transform; a run of them is fused into one resampling."""

    @abc.abstractmethod
    def matrices(self, n: int, size: Size, generator: torch.Generator) -> tuple[torch.Tensor, Size]:
        """(n, 3, 3) float64 maps from output to input pixel coordinates (origin at the image centre,
        x right, y down), and the output size (H, W)."""


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


@dataclass(frozen=True)
class Pad(Geometric):
    """Grow the canvas by ``width`` pixels on every side, filled by ``mode`` (``value`` for constant)."""

    width: int
    mode: PadMode = PadMode.REFLECT
    value: float = 0.5

    def matrices(self, n: int, size: Size, generator: torch.Generator) -> tuple[torch.Tensor, Size]:
        return _eye(n), (size[0] + 2 * self.width, size[1] + 2 * self.width)


@dataclass(frozen=True)
class Jitter(Geometric):
    """Crop ``pixels`` rows and columns at a random integer offset (the image shrinks by ``pixels``)."""

    pixels: int

    def matrices(self, n: int, size: Size, generator: torch.Generator) -> tuple[torch.Tensor, Size]:
        out = (size[0] - self.pixels, size[1] - self.pixels)
        if min(out) < 1:
            raise OptionError(f"jitter({self.pixels}) crops away the whole {size[0]}×{size[1]} image; "
                              "use a smaller jitter or pad first")  # fmt: skip
        m = _eye(n)
        offsets = torch.randint(0, self.pixels + 1, (n, 2), generator=generator).double()
        m[:, :2, 2] = offsets - self.pixels / 2
        return m, out


@dataclass(frozen=True)
class RandomScale(Geometric):
    """Zoom about the centre by a factor drawn uniformly from [low, high] (> 1 magnifies); size kept."""

    low: float
    high: float

    def matrices(self, n: int, size: Size, generator: torch.Generator) -> tuple[torch.Tensor, Size]:
        s = self.low + (self.high - self.low) * torch.rand(n, generator=generator, dtype=torch.float64)
        m = _eye(n)
        m[:, 0, 0] = m[:, 1, 1] = 1.0 / s
        return m, size


@dataclass(frozen=True)
class RandomRotate(Geometric):
    """Rotate about the centre by an angle drawn uniformly from [low, high] degrees (positive turns the
    picture counter-clockwise on screen); size kept."""

    low: float
    high: float

    def matrices(self, n: int, size: Size, generator: torch.Generator) -> tuple[torch.Tensor, Size]:
        deg = self.low + (self.high - self.low) * torch.rand(n, generator=generator, dtype=torch.float64)
        a = deg * (math.pi / 180)
        m = _eye(n)
        m[:, 0, 0], m[:, 0, 1] = torch.cos(a), -torch.sin(a)
        m[:, 1, 0], m[:, 1, 1] = torch.sin(a), torch.cos(a)
        return m, size


@dataclass(frozen=True)
class Lambda(Transform):
    """Any other transform: ``fn(images, generator) -> images`` (not fused; draw randomness from generator)."""

    fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Compose(Transform):
    """Transforms applied in order; geometric runs are fused."""

    transforms: tuple[Transform, ...]


# -- constructors ----------------------------------------------------------------------------------
def _count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name}={value!r} is not allowed; pass an int >= {minimum}")
    return value


def pad(width: int, *, mode: str | PadMode = "reflect", value: float = 0.5) -> Pad:
    """Pad ``width`` pixels per side. ``mode="reflect"`` (mirror), ``"edge"`` or ``"constant"`` (``value``,
    default 0.5 grey). Example: ``pad(8, mode="constant", value=0.5)``"""
    mode = mode.value if isinstance(mode, PadMode) else mode
    return Pad(_count("pad width", width), PadMode(check_choice("mode", mode, [m.value for m in PadMode])), float(value))


def jitter(pixels: int) -> Jitter:
    """Random crop ``pixels`` smaller, at an integer offset (after ``pad(p)``, ``jitter(2 * p)`` keeps the
    size and shifts by up to ``p``). Example: ``jitter(16)``"""
    return Jitter(_count("jitter", pixels))


def random_scale(low: float = 0.9, high: float = 1.1) -> RandomScale:
    """Zoom by a factor uniform in [low, high] (defaults 0.9, 1.1). Example: ``random_scale(0.8, 1.2)``"""
    if not 0 < low <= high:
        raise OptionError(f"random_scale({low!r}, {high!r}): need 0 < low <= high, e.g. (0.9, 1.1)")
    return RandomScale(float(low), float(high))


def random_rotate(degrees: float | tuple[float, float] = 10.0) -> RandomRotate:
    """Rotate by an angle uniform in [-degrees, degrees], or in ``(low, high)`` (default ±10°).
    Example: ``random_rotate((-5, 15))``"""
    low, high = (-float(degrees), float(degrees)) if isinstance(degrees, int | float) else map(float, degrees)
    if low > high:
        raise OptionError(f"random_rotate: low={low} is above high={high}; pass (low, high) or one number")
    return RandomRotate(low, high)


def compose(*transforms: Transform | Sequence[Transform]) -> Compose:
    """One transform from several (lists are flattened). Example: ``compose(pad(4), jitter(8))``"""
    return Compose(tuple(_flatten(transforms)))


REFERENCE_SIDE = 128
"""Shorter image side (px) from which :func:`standard_transforms` are Lucid's full strength."""
SMALL_SIDE = 32
"""Shorter image side (px) at and below which :func:`standard_transforms` are at their mildest."""


def transform_strength(size: Size) -> float:
    """How strong the default transforms are for images of ``size`` (H, W): 0 when the shorter side is
    ``<= 32`` px, 1 from 128 px on, linear in between. Example: ``transform_strength((28, 28)) == 0.0``"""
    return min(1.0, max(0.0, (min(size) - SMALL_SIDE) / (REFERENCE_SIDE - SMALL_SIDE)))


def standard_transforms(size: Size) -> Compose:
    """The default recipe's transforms for images of ``size`` (H, W), scaled to the image; the size is kept,
    so models with a fixed input size work.

    With ``t = transform_strength(size)`` and ``side = min(H, W)``: pad ``p = max(1, round(side * (1 + t) / 32))``
    (mirrored), jitter ``2p``, zoom ``1 ± (0.1 - 0.08 (1 - t))``, rotate ``±(10 - 8 (1 - t))°``. From 128 px on
    that is Lucid's recipe (``p = side / 16``, zoom 0.9-1.1, ±10°; 224 px: pad 14, jitter 28); at 28 px it is
    pad 1, jitter 2, zoom 0.98-1.02, ±2°, because a small net's features are a few pixels wide and stronger
    resampling blurs them away.
    """
    t = transform_strength(size)
    p = max(1, round(min(size) * (1 + t) / 32))
    zoom, degrees = 0.1 - 0.08 * (1 - t), 10.0 - 8.0 * (1 - t)
    return compose(pad(p), jitter(2 * p), random_scale(1 - zoom, 1 + zoom), random_rotate(degrees))


# -- applying -------------------------------------------------------------------------------------
def _flatten(items: Iterable[object]) -> list[Transform]:
    out: list[Transform] = []
    for t in items:
        if isinstance(t, Compose):
            out.extend(_flatten(t.transforms))
        elif isinstance(t, Transform):
            out.append(t)
        elif isinstance(t, list | tuple):
            out.extend(_flatten(t))
        elif callable(t):
            out.append(Lambda(t))  # type: ignore[arg-type]
        else:
            raise OptionError(f"transforms: {t!r:.60} is not a transform; use pad(), jitter(), random_scale(), "
                              "random_rotate(), or a function (images, generator) -> images")  # fmt: skip
    return out


def _warp(images: torch.Tensor, m: torch.Tensor, size: Size, fill: Pad | None) -> torch.Tensor:
    n, c, h, w = images.shape
    if size == (h, w) and torch.allclose(m, _eye(n), atol=1e-12):
        return images
    to_in = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], dtype=torch.float64))
    from_out = torch.diag(torch.tensor([size[1] / 2.0, size[0] / 2.0, 1.0], dtype=torch.float64))
    theta = (to_in @ m @ from_out)[:, :2].to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [n, c, *size], align_corners=False)
    mode = PadMode.REFLECT if fill is None else fill.mode
    shift = fill.value if fill is not None and mode is PadMode.CONSTANT else 0.0
    out = F.grid_sample(images - shift if shift else images, grid, mode="bilinear", padding_mode=_GRID_MODE[mode],
                        align_corners=False)  # fmt: skip
    return out + shift if shift else out


def apply_transforms(
    images: torch.Tensor, transforms: Transform | Sequence[Transform], generator: torch.Generator
) -> torch.Tensor:
    """Apply ``transforms`` in order to (N, C, H, W) ``images``, fusing runs of geometric ones.

    Out-of-image pixels are filled as the run's ``pad`` says (mirror when it has none); two pads with
    different fills in one run raise :class:`OptionError`.
    """
    items = _flatten([transforms])
    n = images.shape[0]
    m, size, fill = _eye(n), (images.shape[2], images.shape[3]), None
    for t in [*items, None]:
        if isinstance(t, Geometric):
            step, size = t.matrices(n, size, generator)
            m = m @ step
            if isinstance(t, Pad):
                if fill is not None and (fill.mode, fill.value) != (t.mode, t.value):
                    raise OptionError(f"two pads with different fills in one run of transforms ({fill}, {t}); "
                                      "use one fill mode")  # fmt: skip
                fill = t
            continue
        images = _warp(images, m, size, fill)
        m, fill = _eye(n), None
        if isinstance(t, Lambda):
            images = t.fn(images, generator)
        elif t is not None:
            images = t(images, generator)
    return images
