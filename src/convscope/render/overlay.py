"""Heatmaps over images: blend a [0, 1] map, coloured by a colour map, onto an RGB image; tile results.

Pure numpy/PIL. Example::

    >>> img = overlay(np.zeros((4, 4, 3), np.uint8), np.ones((2, 2)), alpha=0.5, cmap="gray")
    >>> np.asarray(img)[0, 0].tolist()
    [128, 128, 128]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import InputError, OptionError
from .colormaps import apply_cmap

try:
    _BILINEAR = Image.Resampling.BILINEAR
except AttributeError:  # Pillow < 9.1
    _BILINEAR = Image.BILINEAR  # type: ignore[attr-defined]


def _rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InputError(f"overlay needs a uint8 image; received dtype {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise InputError(f"overlay needs an image shaped (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {img.shape}")
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img[:, :, :3]


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D float map resized to ``size`` = (H, W) with PIL bilinear; returned as-is if already that size."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    if v.shape == size:
        return v
    return np.asarray(Image.fromarray(v).resize((size[1], size[0]), _BILINEAR), dtype=np.float32)


def overlay(image: np.ndarray, values01: np.ndarray, *, alpha: float = 0.5, cmap: str = "turbo") -> Image.Image:
    """``(1 − alpha) · image + alpha · cmap(values01)`` as an RGB PIL image of the image's size.

    Args:
        image: uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped).
        values01: 2-D map in [0, 1] (clipped), resized bilinearly to (H, W) when it differs.
        alpha: heatmap opacity in [0, 1] (default 0.5).
        cmap: colour map name from :data:`convscope.render.COLORMAPS` (default ``"turbo"``).

    Example: ``overlay(photo, att.maps[0], alpha=0.4, cmap="inferno").save("heat.png")``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise OptionError(f"alpha={alpha!r} is not allowed; pass a number in [0, 1]")
    rgb = _rgb(image)
    values = np.asarray(values01)
    if values.ndim != 2:
        raise InputError(f"overlay needs a 2-D map; received shape {values.shape}")
    colours = apply_cmap(np.clip(resize_map(values, rgb.shape[:2]), 0.0, 1.0), cmap).astype(np.float32)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def tile(images: Sequence[Image.Image | np.ndarray], *, cols: int | None = None, padding: int = 2) -> Image.Image:
    """Equal-sized RGB images laid out row by row on white, ``padding`` pixels apart (default 2).

    ``cols=None`` gives a near-square grid (``ceil(sqrt(n))`` columns).

    Example: ``tile([att.overlay(i) for i in range(len(att))], cols=4)``.
    """
    arrays = [_rgb(np.asarray(im)) for im in images]
    if not arrays:
        raise InputError("tile needs at least one image")
    if len({a.shape for a in arrays}) > 1:
        raise InputError(f"tile needs images of one size; received {sorted({a.shape for a in arrays})}")
    n = len(arrays)
    cols = cols if cols is not None else math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise OptionError(f"cols={cols!r} is not allowed; pass a positive int or None")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise OptionError(f"padding={padding!r} is not allowed; pass an int >= 0")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    h, w = arrays[0].shape[:2]
    out = np.full((rows * (h + padding) - padding, cols * (w + padding) - padding, 3), 255, dtype=np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, cols)
        out[r * (h + padding) : r * (h + padding) + h, c * (w + padding) : c * (w + padding) + w] = a
    return Image.fromarray(out)
