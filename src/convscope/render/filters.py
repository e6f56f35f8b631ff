"""Render convolution weights ``(out_channels, in_channels, kh, kw)`` as one mosaic of kernels.

Example::

    >>> img = filter_image(np.random.randn(64, 3, 3, 3))  # 8x8 colour patches, 24x24 px each
    >>> img.mode, img.size
    ('RGB', (199, 199))
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from PIL import Image

from ..errors import OptionError
from .colormaps import (
    Normalize,
    PadValue,
    Paint,
    normalize_to_uint8,
    pad_colour,
    paint_for,
    parse_option,
    resolve_cmap,
)
from .grid import Labels, as_maps, label_texts, resolve_layout, resolve_scale, tile_image

KERNEL_TARGET_PX = 24
"""Automatic scaling makes kernels at least this tall (3x3 -> x8, 5x5 -> x5, 7x7 -> x4, 11x11 -> x3)."""


class FilterMode(str, Enum):
    """How a 4-D kernel becomes tiles (see :func:`filter_image`)."""

    AUTO = "auto"
    RGB = "rgb"
    CHANNELS = "channels"
    MEAN = "mean"


def resolve_mode(mode: str | FilterMode, in_channels: int) -> FilterMode:
    """``"auto"`` -> ``RGB`` for 3 input channels, ``MEAN`` for 1 (a near-square grid of the kernels
    themselves) or above 8, else ``CHANNELS``; RGB needs 3."""
    chosen = parse_option("mode", mode, FilterMode)
    if chosen is FilterMode.AUTO:
        if in_channels == 3:
            return FilterMode.RGB
        return FilterMode.MEAN if in_channels == 1 or in_channels > 8 else FilterMode.CHANNELS
    if chosen is FilterMode.RGB and in_channels != 3:
        raise OptionError(f"mode='rgb' needs weights with 3 input channels; received {in_channels}; "
                          "use mode='channels' or 'mean'")  # fmt: skip
    return chosen


def _check_positive(option: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OptionError(f"{option}={value!r} is not allowed; pass a positive int")
    return value


def _rgb_tiles(weights: np.ndarray, norm: Normalize, cmap: str | None) -> np.ndarray:
    if cmap not in (None, "auto"):
        raise OptionError(f"cmap={cmap!r} has no effect in mode='rgb' (colours come from the 3 input "
                          "channels); leave cmap=None or use mode='channels' or 'mean'")  # fmt: skip
    return normalize_to_uint8(weights, norm).transpose(0, 2, 3, 1)


def filter_image(
    weights: np.ndarray,
    *,
    mode: str | FilterMode = "auto",
    cols: int | None = None,
    cmap: str | None = None,
    normalize: str | Normalize = "channel",
    padding: int = 1,
    pad_value: PadValue = 1.0,
    scale: int | None = None,
    labels: Labels = False,
    max_in: int = 8,
) -> Image.Image:
    """One image of the kernels of a conv layer, ``weights`` shaped ``(out, in, kh, kw)`` (torch layout).

    - ``mode="auto"``: ``"rgb"`` if ``in == 3``, ``"mean"`` if ``in > 8``, else ``"channels"``.
      ``"rgb"``: each filter one colour patch (its 3 input channels as R, G, B), as in the classic
      first-layer pictures; ``"channels"``: each filter one row of gray tiles, one per input channel,
      showing the first ``max_in`` (default 8) input channels; ``"mean"``: the mean over input
      channels, one tile per filter.
    - ``cols=None``: tiles per row for ``"rgb"``/``"mean"`` (default near-square); in ``"channels"``
      mode the row is the filter, so ``cols`` must stay None.
    - ``cmap=None``: gray, or ``"coolwarm"`` with ``normalize="symmetric"``; not allowed with ``"rgb"``.
    - ``normalize="channel"``: ``"channel"`` scales each filter (all its shown input channels) to its
      own min-max; ``"layer"``, ``"symmetric"`` (0 -> middle colour) and ``"none"`` as in
      :func:`~convscope.render.grid_image`.
    - ``padding=1``, ``pad_value=1.0`` (white); ``scale=None`` makes kernels at least 24 px
      (3x3 -> x8); ``labels=False``: ``True`` writes the filter index (``"filter:input"`` in
      ``"channels"`` mode), or pass one string per filter.

    Example: ``filter_image(model.conv1.weight.detach().numpy()).save("conv1.png")``.
    """
    arr = as_maps(weights, ndim=4, name="weights")
    out, cin, kh, _ = arr.shape
    chosen = resolve_mode(mode, cin)
    norm = parse_option("normalize", normalize, Normalize)
    pad = pad_colour(pad_value)
    names = label_texts(labels, np.arange(out), out)
    factor = resolve_scale(scale, kh, target=KERNEL_TARGET_PX)
    if chosen is FilterMode.RGB:
        paint, tiles = Paint(256, pad), _rgb_tiles(arr, norm, cmap)
        rows, cols = resolve_layout(out, None, cols)
    elif chosen is FilterMode.MEAN:
        paint = paint_for(resolve_cmap(cmap, norm), pad)
        tiles = normalize_to_uint8(arr.mean(axis=1), norm, levels=paint.levels)
        rows, cols = resolve_layout(out, None, cols)
    else:
        if cols is not None:
            raise OptionError(f"cols={cols!r} is not allowed in mode='channels' (each row is one filter); "
                              "leave cols=None or use mode='mean'")  # fmt: skip
        rows, cols = out, min(cin, _check_positive("max_in", max_in))
        paint = paint_for(resolve_cmap(cmap, norm), pad)
        tiles = normalize_to_uint8(arr[:, :cols], norm, levels=paint.levels).reshape(out * cols, *arr.shape[2:])
        names = None if names is None else [f"{name}:{i}" for name in names for i in range(cols)]
    img, _ = tile_image(tiles, rows=rows, cols=cols, scale=factor, padding=padding, paint=paint, labels=names)
    return img
