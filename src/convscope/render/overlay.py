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
    rgb, values = _checked(image, values01, alpha)
    return Image.fromarray(_blend(rgb, values, alpha, cmap))


def overlay_on_photo(
    photo: np.ndarray, values01: np.ndarray, *, resize: str = "squash", alpha: float = 0.5, cmap: str = "turbo"
) -> Image.Image:
    """A model-input-sized map drawn on the original ``photo`` at the photo's own resolution.

    ``resize`` is how the photo was brought to the map's (input) size: ``"squash"`` (the map is
    stretched over the whole photo), ``"crop"`` (the map covers the centre region the model saw; the
    rest of the photo stays uncoloured) or ``"pad"`` (the padding is cut off the map first). Other
    arguments as for :func:`overlay`.

    Example: ``overlay_on_photo(np.asarray(Image.open("cat.jpg")), att.maps[0], resize="crop")``.
    """
    from convscope.preprocessing import Placement

    rgb, values = _checked(photo, values01, alpha)
    (h, w), (mh, mw) = rgb.shape[:2], values.shape
    place = Placement.of((h, w), (mh, mw), resize)
    left, top, right, bottom = place.input_box()
    x0, y0, x1, y1 = place.photo_box()
    out = rgb.copy()
    out[y0:y1, x0:x1] = _blend(rgb[y0:y1, x0:x1], values[top:bottom, left:right], alpha, cmap)
    return Image.fromarray(out)


def _checked(image: np.ndarray, values01: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise OptionError(f"alpha={alpha!r} is not allowed; pass a number in [0, 1]")
    values = np.asarray(values01)
    if values.ndim != 2:
        raise InputError(f"overlay needs a 2-D map; received shape {values.shape}")
    return _rgb(image), values


def _blend(rgb: np.ndarray, values: np.ndarray, alpha: float, cmap: str) -> np.ndarray:
    """``(1 − alpha) · rgb + alpha · cmap(values)``, the map resized to ``rgb``; uint8 (H, W, 3)."""
    colours = apply_cmap(np.clip(resize_map(values, rgb.shape[:2]), 0.0, 1.0), cmap).astype(np.float32)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def tile(images: Sequence[Image.Image | np.ndarray], *, cols: int | None = None, padding: int = 2) -> Image.Image:
    """RGB images laid out row by row on white, ``padding`` pixels apart (default 2).

    ``cols=None`` gives a near-square grid (``ceil(sqrt(n))`` columns). Images of different sizes are
    centred in cells of the largest height and width.

    Example: ``tile([att.overlay(i) for i in range(len(att))], cols=4)``.
    """
    arrays = [_rgb(np.asarray(im)) for im in images]
    if not arrays:
        raise InputError("tile needs at least one image")
    n = len(arrays)
    cols = cols if cols is not None else math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise OptionError(f"cols={cols!r} is not allowed; pass a positive int or None")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise OptionError(f"padding={padding!r} is not allowed; pass an int >= 0")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    h, w = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    out = np.full((rows * (h + padding) - padding, cols * (w + padding) - padding, 3), 255, dtype=np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, cols)
        top, left = r * (h + padding) + (h - a.shape[0]) // 2, c * (w + padding) + (w - a.shape[1]) // 2
        out[top : top + a.shape[0], left : left + a.shape[1]] = a
    return Image.fromarray(out)
