"""Values to colours: normalisation to uint8 levels, 256x3 uint8 colour tables, palettes (no matplotlib).

Each map is 17 colours sampled once from matplotlib at ``0, 1/16, ..., 1`` and linearly interpolated
to 256 entries; the largest difference to matplotlib's own table is under 9/255 per channel.

Example::

    >>> from convscope.render import COLORMAPS, apply_cmap
    >>> COLORMAPS["viridis"].shape
    (256, 3)
    >>> apply_cmap(np.array([0.0, 1.0]), "viridis").tolist()
    [[68, 1, 84], [253, 231, 37]]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TypeVar

import numpy as np

from ..errors import InputError, OptionError, check_choice

Anchors = Sequence[tuple[int, int, int]]
PadValue = float | tuple[int, int, int]
E = TypeVar("E", bound=Enum)

_VIRIDIS: Anchors = (
    (68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141),
    (44, 114, 142), (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115),
    (94, 201, 98), (132, 212, 75), (173, 220, 48), (216, 226, 25), (253, 231, 37),
)  # fmt: skip
_MAGMA: Anchors = (
    (0, 0, 4), (10, 8, 34), (29, 17, 71), (54, 16, 107), (81, 18, 124), (106, 28, 129),
    (131, 38, 129), (156, 46, 127), (183, 55, 121), (208, 65, 111), (231, 82, 99), (245, 107, 92),
    (252, 137, 97), (254, 167, 114), (254, 196, 136), (253, 226, 163), (252, 253, 191),
)  # fmt: skip
_INFERNO: Anchors = (
    (0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110),
    (138, 34, 106), (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29),
    (249, 142, 9), (252, 172, 17), (249, 203, 53), (242, 234, 105), (252, 255, 164),
)  # fmt: skip
_PLASMA: Anchors = (
    (13, 8, 135), (49, 5, 151), (76, 2, 161), (102, 0, 167), (126, 3, 168), (149, 17, 161),
    (170, 35, 149), (188, 53, 135), (204, 71, 120), (218, 90, 106), (230, 108, 92), (240, 128, 78),
    (248, 149, 64), (253, 172, 51), (253, 197, 39), (248, 223, 37), (240, 249, 33),
)  # fmt: skip
_TURBO: Anchors = (
    (48, 18, 59), (64, 64, 162), (70, 107, 227), (66, 148, 255), (40, 188, 235), (24, 221, 194),
    (50, 242, 152), (109, 254, 98), (164, 252, 60), (205, 236, 52), (238, 207, 58), (253, 172, 52),
    (251, 126, 33), (235, 80, 14), (208, 47, 5), (169, 22, 1), (122, 4, 3),
)  # fmt: skip
_COOLWARM: Anchors = (
    (59, 76, 192), (78, 104, 216), (98, 130, 234), (119, 154, 247), (141, 176, 254), (163, 194, 254),
    (185, 208, 249), (204, 217, 237), (221, 220, 220), (236, 211, 197), (245, 196, 172), (247, 176, 147),
    (244, 152, 122), (235, 125, 98), (221, 95, 75), (202, 59, 55), (180, 4, 38),
)  # fmt: skip
_GRAY: Anchors = ((0, 0, 0), (255, 255, 255))


def build_lut(anchors: Anchors, n: int = 256) -> np.ndarray:
    """Linearly interpolate evenly spaced ``anchors`` (RGB 0-255) to an ``(n, 3)`` uint8 table.

    ``n`` defaults to 256. The first and last entries equal the first and last anchors exactly.
    """
    colours = np.asarray(anchors, dtype=np.float64)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < 2:
        raise InputError(f"anchors must be at least two (r, g, b) triples; received shape {colours.shape}")
    where = np.linspace(0.0, 1.0, len(colours))
    x = np.linspace(0.0, 1.0, n)
    table = np.stack([np.interp(x, where, colours[:, k]) for k in range(3)], axis=1)
    lut = np.clip(np.rint(table), 0, 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


ANCHORS: Mapping[str, Anchors] = MappingProxyType({
    "gray": _GRAY,
    "viridis": _VIRIDIS,
    "magma": _MAGMA,
    "inferno": _INFERNO,
    "plasma": _PLASMA,
    "turbo": _TURBO,
    "coolwarm": _COOLWARM,
    "diverging": _COOLWARM,  # alias: blue-white-red for signed values
})  # fmt: skip
"""The registry: colour map name -> evenly spaced anchor colours."""

COLORMAPS: Mapping[str, np.ndarray] = MappingProxyType({name: build_lut(a) for name, a in ANCHORS.items()})
"""Read-only ``name -> (256, 3) uint8`` tables. ``"diverging"`` is an alias of ``"coolwarm"``."""

PAD_INDEX = 255
"""Palette images keep colour levels in ``0..254`` and the padding colour at this index."""


@functools.lru_cache(maxsize=64)
def palette_with(cmap: str, pad: tuple[int, int, int]) -> np.ndarray:
    """A 256-entry palette: ``cmap`` sampled at 255 even steps (entry 127 is its exact middle), then ``pad``.

    Used for palette ("P") images, whose PNGs encode as fast as gray ones and are a third the size.
    """
    anchors = ANCHORS[check_choice("cmap", cmap, list(ANCHORS))]
    table = np.concatenate([build_lut(anchors, PAD_INDEX), np.asarray([pad], dtype=np.uint8)])
    table.setflags(write=False)
    return table


def get_lut(cmap: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 table of ``cmap``; raises :class:`OptionError` naming the valid maps."""
    return COLORMAPS[check_choice("cmap", cmap, list(COLORMAPS))]


def to_index(values01: np.ndarray) -> np.ndarray:
    """Map floats in ``[0, 1]`` to uint8 indices ``floor(v * 255 + 0.5)``; clipped, NaN -> 0.

    uint8 input is returned unchanged (already indices).
    """
    values = np.asarray(values01)
    if values.dtype == np.uint8:
        return values
    inside = np.clip(values, 0, 1).astype(np.float32)  # clip first: huge values cannot overflow the scaling
    return np.nan_to_num(inside * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def apply_cmap(values01: np.ndarray, cmap: str = "gray") -> np.ndarray:
    """Colour an array of values in ``[0, 1]``: returns uint8 of shape ``values01.shape + (3,)``.

    Always three channels, also for ``"gray"`` (grid renderers keep gray single-channel internally,
    which is faster). Values outside ``[0, 1]`` are clipped and NaN maps to the first colour, so the
    result never depends on NaN. uint8 input is taken as ready-made indices ``0..255``.
    ``cmap`` defaults to ``"gray"``; allowed names are the keys of :data:`COLORMAPS`.

    Example: ``apply_cmap(np.array([0.5]), "gray").tolist() == [[128, 128, 128]]``.
    """
    lut = get_lut(cmap)
    return lut[to_index(values01)]


class Normalize(str, Enum):
    """How values become ``[0, 1]``: per channel, per layer, symmetric around zero, or not at all."""

    CHANNEL = "channel"
    LAYER = "layer"
    SYMMETRIC = "symmetric"
    NONE = "none"


def parse_option(option: str, value: object, kind: type[E]) -> E:
    """Turn an option string (or enum member) into ``kind``; raises :class:`OptionError` otherwise."""
    if isinstance(value, kind):
        return value
    return kind(check_choice(option, value, [m.value for m in kind]))


def _check_clip(clip: tuple[float, float] | None, norm: Normalize) -> None:
    if clip is None:
        return
    if norm is Normalize.NONE:
        raise OptionError("clip cannot be used with normalize='none'; choose 'channel', 'layer' or 'symmetric'")
    ok = isinstance(clip, tuple | list) and len(clip) == 2 and all(isinstance(p, int | float) for p in clip)
    if not ok or not 0 <= clip[0] < clip[1] <= 100:
        raise OptionError(f"clip={clip!r} is not allowed; pass (low_pct, high_pct) with 0 <= low < high <= 100")


def _bounds(flat: np.ndarray, norm: Normalize, clip: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Low and high value per item (shape ``(N, 1)``) for CHANNEL, else one pair (shape ``(1, 1)``)."""
    axis = 1 if norm is Normalize.CHANNEL else None
    if norm is Normalize.NONE:
        return np.zeros((1, 1)), np.ones((1, 1))
    if clip is not None:
        lo, hi = np.percentile(flat, clip, axis=axis, keepdims=True)
    else:
        lo, hi = flat.min(axis=axis, keepdims=True), flat.max(axis=axis, keepdims=True)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise InputError("maps contain NaN or inf; replace them (e.g. np.nan_to_num) before rendering")
    return lo, hi


def normalize_to_uint8(
    x: np.ndarray, norm: Normalize, clip: tuple[float, float] | None = None, *, levels: int = 256
) -> np.ndarray:
    """Scale ``x`` (items along axis 0) to uint8 ``0..top`` as ``floor(v01 * top + 0.5)``, clipped.

    ``top = levels - 1`` (``levels`` defaults to 256; palette images use 255).
    ``CHANNEL``: min-max per item; ``LAYER``: one min-max over all; ``SYMMETRIC``: ``0 -> 128`` exactly
    (127 for 255 levels), ``+max|v|`` (over all) -> top, ``-max|v|`` -> 0; ``NONE``: values taken as
    ``[0, 1]``. ``clip`` (default None) is ``(low_pct, high_pct)``: percentiles replace min and max
    (per item for ``CHANNEL``). Constant items give 0 (all-zero ``SYMMETRIC`` input gives the middle),
    never NaN. Non-finite input raises :class:`InputError`.

    Example: ``normalize_to_uint8(np.array([[0., 1.], [2., 4.]]), Normalize.LAYER)`` -> ``[[0, 64], [128, 255]]``.
    """
    _check_clip(clip, norm)
    flat = x.reshape(len(x), -1)
    lo, hi = _bounds(flat, norm, clip)
    top = levels - 1
    if norm is Normalize.SYMMETRIC:  # v * (top / 2) / m + top / 2 + 0.5: zero lands on the middle exactly
        span = np.maximum(np.abs(lo), np.abs(hi)).max(keepdims=True)
        centre, reach, offset = np.zeros_like(span), top / 2, top / 2 + 0.5
    else:
        span, centre, reach, offset = hi - lo, lo, float(top), 0.5
    out = _stretch(flat, centre, span, reach)
    out += np.float32(offset)
    np.clip(out, 0, top, out=out)
    return out.astype(np.uint8).reshape(x.shape)


_SAFE_GAIN = 1e30  # float32 holds up to 3.4e38: ``(v - centre) * gain`` cannot overflow below this


def _stretch(flat: np.ndarray, centre: np.ndarray, span: np.ndarray, reach: float) -> np.ndarray:
    """``(flat - centre) * reach / span`` as float32 (0 where ``span`` is 0), without overflow or
    RuntimeWarnings also when ``span`` is denormal-small (a vanishing layer, values ~1e-39).

    The usual case multiplies by a float32 gain; a gain too large for float32 (or values too large
    to subtract safely) takes a float64 path that divides before it multiplies, so every step stays
    within ``[-1, 1] * reach``."""
    span64 = span.astype(np.float64)
    big = float(np.abs(flat).max(initial=0.0)) if flat.size else 0.0
    with np.errstate(divide="ignore", over="ignore"):
        gain = np.divide(reach, span64, out=np.zeros(span64.shape), where=span64 > 0)
    if float(gain.max(initial=0.0)) < _SAFE_GAIN and big < _SAFE_GAIN:
        out = np.subtract(flat, centre.astype(np.float32), dtype=np.float32)
        out *= gain.astype(np.float32)
        return out
    wide = np.subtract(flat, centre, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a span beyond float64 (e.g. -1e308..1e308): inf -> 0
        np.divide(wide, span64, out=wide, where=span64 > 0)
        wide[~np.isfinite(wide)] = 0.0
        wide *= np.where(span64 > 0, reach, 0.0)
    return wide.astype(np.float32)


def pad_colour(pad_value: PadValue) -> np.ndarray:
    """uint8 gray level (shape ``()``) for a float in ``[0, 1]`` (fraction of white), or RGB ``(3,)``."""
    if isinstance(pad_value, int | float) and not isinstance(pad_value, bool) and 0 <= pad_value <= 1:
        return np.asarray(round(pad_value * 255), dtype=np.uint8)
    rgb = np.asarray(pad_value) if isinstance(pad_value, tuple | list) else np.zeros(0)
    if rgb.shape != (3,) or rgb.dtype.kind not in "iu" or rgb.min() < 0 or rgb.max() > 255:
        raise OptionError(f"pad_value={pad_value!r} is not allowed; pass a float in [0, 1] (fraction of "
                          "white) or an (r, g, b) tuple of ints 0-255")  # fmt: skip
    if rgb[0] == rgb[1] == rgb[2]:
        return np.asarray(rgb[0], dtype=np.uint8)
    return rgb.astype(np.uint8)


def resolve_cmap(cmap: str | None, norm: Normalize) -> str:
    """``None``/``"auto"`` -> ``"coolwarm"`` for symmetric normalisation, else ``"gray"``; names are checked."""
    if cmap is None or cmap == "auto":
        return "coolwarm" if norm is Normalize.SYMMETRIC else "gray"
    return check_choice("cmap", cmap, [*COLORMAPS, "auto"])


@dataclass(frozen=True)
class Paint:
    """How uint8 tiles become pixels: values ``0..levels-1``, ``fill`` for padding, optional palette."""

    levels: int = 256
    fill: np.ndarray = field(default_factory=lambda: np.asarray(255, dtype=np.uint8))
    palette: np.ndarray | None = None


def paint_for(cmap: str, pad: np.ndarray) -> Paint:
    """Gray maps with gray padding make an ``"L"`` image (256 levels). Anything coloured makes a palette
    (``"P"``) image: 255 levels of ``cmap`` plus the padding colour at :data:`PAD_INDEX`; its PNG encodes
    as fast as gray and is a third the size of RGB. ``img.convert("RGB")`` gives RGB pixels."""
    if cmap == "gray" and pad.ndim == 0:
        return Paint(256, pad)
    rgb = np.broadcast_to(pad, (3,))
    palette = palette_with(cmap, (int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return Paint(PAD_INDEX, np.asarray(PAD_INDEX, dtype=np.uint8), palette)
