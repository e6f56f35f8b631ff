"""Render a stack of 2-D maps ``(C, H, W)`` as one mosaic image, built in numpy in one pass.

Example::

    >>> img = grid_image(np.random.rand(32, 26, 26))   # 4 rows x 8 cols of 52x52 tiles
    >>> img.size
    (423, 211)
    >>> png = to_png_bytes(img)
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError, OptionError, check_choice
from .colormaps import (
    PAD_INDEX,
    Normalize,
    PadValue,
    Paint,
    normalize_to_uint8,
    pad_colour,
    paint_for,
    parse_option,
    resolve_cmap,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Labels = bool | Sequence[str]


class Sort(str, Enum):
    """Order shown channels by descending mean or max activation."""

    MEAN = "mean"
    MAX = "max"


@dataclass(frozen=True)
class Geometry:
    """Where tiles sit in a mosaic: ``origin(i)`` is the top-left pixel ``(x, y)`` of tile ``i``."""

    rows: int
    cols: int
    tile_h: int  # after scaling
    tile_w: int
    strip: int  # label strip height above each tile (0 without labels)
    padding: int

    def origin(self, i: int) -> tuple[int, int]:
        r, c = divmod(i, self.cols)
        return c * (self.tile_w + self.padding), r * (self.strip + self.tile_h + self.padding) + self.strip


def default_layout(n: int) -> tuple[int, int]:
    """Near-square ``(rows, cols)`` favouring wide: an exact ``rows x cols`` with ``cols <= 2 * rows`` if any
    (32 -> 4x8, 64 -> 8x8, 512 -> 16x32), else ``cols = ceil(sqrt(n))``; up to 3 maps sit in one row."""
    if n <= 3:
        return 1, max(n, 1)
    for rows in range(math.isqrt(n), 0, -1):
        if n % rows == 0 and n // rows <= 2 * rows:
            return rows, n // rows
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def resolve_layout(n: int, rows: int | None, cols: int | None) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` tiles: default layout, or derive the missing side; too small raises."""
    for name, value in (("rows", rows), ("cols", cols)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise OptionError(f"{name}={value!r} is not allowed; pass a positive int or None")
    if cols is None:
        if rows is None:
            return default_layout(n)
        cols = math.ceil(n / rows)
    elif rows is None:
        rows = math.ceil(n / cols)
    if rows * cols < n:
        raise OptionError(f"rows={rows}, cols={cols} hold {rows * cols} tiles but {n} are shown; "
                          "give a larger grid, or only rows or only cols")  # fmt: skip
    return rows, cols


def resolve_scale(scale: int | None, height: int, target: int = 32) -> int:
    """``scale`` as given (positive int), or for None the smallest integer making tiles ``target`` px tall
    (default 32: 7x7 maps -> 5, 26x26 -> 2, 32 px or taller -> 1)."""
    if scale is None:
        return max(1, math.ceil(target / max(height, 1)))
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise OptionError(f"scale={scale!r} is not allowed; pass a positive int, or None for automatic")
    return scale


def _label_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default()


def _strip_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    return int(font.getbbox("Ag0")[3]) + 2


def _ink(mode: str, paint: Paint) -> tuple[Any, Any]:
    """Background and text colour of label strips in an image of ``mode``: text contrasts with padding."""
    if paint.palette is not None:
        luma = paint.palette.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return PAD_INDEX, int(np.argmax(np.abs(luma[:PAD_INDEX] - luma[PAD_INDEX])))
    background = tuple(int(v) for v in np.broadcast_to(paint.fill, (3,)))
    text = 0 if paint.fill.mean() > 127 else 255
    return (background, (text,) * 3) if mode == "RGB" else (background[0], text)


def _draw_labels(img: Image.Image, labels: Sequence[str], geo: Geometry, paint: Paint) -> None:
    font = _label_font()
    background, text_colour = _ink(img.mode, paint)
    for i, text in enumerate(labels):  # each label drawn on its own strip so it never leaves it
        strip = Image.new(img.mode, (geo.tile_w, geo.strip), background)
        ImageDraw.Draw(strip).text((1, 0), text, fill=text_colour, font=font)
        x, y = geo.origin(i)
        img.paste(strip, (x, y - geo.strip))


def tile_image(
    tiles: np.ndarray,
    *,
    rows: int,
    cols: int,
    scale: int = 1,
    padding: int = 1,
    paint: Paint | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[Image.Image, Geometry]:
    """Lay uint8 ``tiles`` ``(N, H, W)`` (gray or palette indices) or ``(N, H, W, 3)`` out row by row.

    One numpy array is filled by reshaping, no loop over tiles. Tiles are upscaled ``scale`` times
    (nearest, default 1), separated by ``padding`` pixels (default 1, no outer border) of ``paint.fill``
    (default white, gray); ``labels`` (default None) adds a text strip above each tile.
    Returns the image and its :class:`Geometry`.
    """
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise OptionError(f"padding={padding!r} is not allowed; pass an int >= 0")
    paint = paint or Paint()
    n, h, w = tiles.shape[:3]
    depth = tiles.shape[3:]
    strip = _strip_height(_label_font()) if labels is not None else 0
    geo = Geometry(rows, cols, h * scale, w * scale, strip, padding)
    cell_h, cell_w = strip + geo.tile_h + padding, geo.tile_w + padding
    out = np.empty((rows * cell_h, cols * cell_w, *depth), dtype=np.uint8)
    out[...] = paint.fill
    if rows * cols > n:
        blank = np.broadcast_to(paint.fill, (rows * cols - n, h, w, *depth))
        tiles = np.concatenate([tiles, blank])
    cells = out.reshape(rows, cell_h, cols, cell_w, *depth)
    area = cells[:, strip : strip + geo.tile_h, :, : geo.tile_w].reshape(rows, h, scale, cols, w, scale, *depth)
    area[...] = tiles.reshape(rows, cols, h, w, *depth).swapaxes(1, 2)[:, :, None, :, :, None]
    img = Image.fromarray(np.ascontiguousarray(out[: rows * cell_h - padding, : cols * cell_w - padding]))
    if paint.palette is not None:
        img.putpalette(paint.palette.tobytes())  # "L" -> "P"
    if labels is not None:
        _draw_labels(img, labels, geo, paint)
    return img, geo


def select_channels(
    maps: np.ndarray, channels: Sequence[int] | None, sort: str | Sort | None
) -> tuple[np.ndarray, np.ndarray]:
    """The shown maps and their original indices: ``channels`` subset in its order (default all), then
    sorted by descending mean or max if ``sort`` is given (stable, default None = keep order)."""
    count = len(maps)
    if channels is None:
        index = np.arange(count)
    else:
        bad = [c for c in channels if not isinstance(c, int | np.integer) or not 0 <= c < count]
        if bad or len(channels) == 0:
            raise OptionError(f"channels={list(channels)!r} is not allowed; pass a non-empty list of "
                              f"ints in [0, {count - 1}] (bad: {bad!r})")  # fmt: skip
        index = np.asarray(channels, dtype=np.intp)
    if sort is not None:
        order = parse_option("sort", sort, Sort)
        flat = maps[index].reshape(len(index), -1)
        score = flat.mean(axis=1) if order is Sort.MEAN else flat.max(axis=1)
        index = index[np.argsort(-score, kind="stable")]
    shown = maps if channels is None and sort is None else maps[index]
    return shown, index


def label_texts(labels: Labels, index: np.ndarray, count: int, option: str = "labels") -> list[str] | None:
    """``True`` -> original channel numbers; a sequence holds one string per input channel (``count``)."""
    if labels is False or labels is None:
        return None
    if labels is True:
        return [str(i) for i in index]
    if isinstance(labels, str) or len(labels) != count:
        raise OptionError(f"{option} must be True/False or one string per channel ({count}); "
                          f"received {labels!r:.80}")  # fmt: skip
    return [str(labels[i]) for i in index]


def as_maps(maps: np.ndarray, ndim: int = 3, name: str = "maps") -> np.ndarray:
    """``maps`` as a real numeric array with ``ndim`` dims (2-D input gains a channel axis)."""
    arr = np.asarray(maps)
    if arr.ndim == ndim - 1 and ndim == 3:
        arr = arr[None]
    if arr.ndim != ndim or arr.dtype.kind not in "iuf" or 0 in arr.shape:
        raise InputError(f"{name} must be a non-empty real array with {ndim} dims; received "
                         f"shape {arr.shape} dtype {arr.dtype}")  # fmt: skip
    return arr


@dataclass(frozen=True)
class GridOptions:
    """The options of :func:`grid_image`, stored as given; checked when rendering starts."""

    cols: int | None = None
    rows: int | None = None
    cmap: str | None = None
    normalize: str | Normalize = Normalize.CHANNEL
    clip: tuple[float, float] | None = None
    padding: int = 1
    pad_value: PadValue = 1.0
    labels: Labels = False
    channels: Sequence[int] | None = None
    sort: str | Sort | None = None
    scale: int | None = None

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> GridOptions:
        allowed = [f.name for f in dataclass_fields(cls)]
        for key in options:
            check_choice("option", key, allowed)
        return cls(**options)


def render_grid(maps: np.ndarray, opts: GridOptions) -> tuple[Image.Image, Geometry, np.ndarray]:
    """:func:`grid_image` plus the tile :class:`Geometry` and the original index of each shown channel."""
    arr = as_maps(maps)
    norm = parse_option("normalize", opts.normalize, Normalize)
    cmap = resolve_cmap(opts.cmap, norm)
    paint = paint_for(cmap, pad_colour(opts.pad_value))
    shown, index = select_channels(arr, opts.channels, opts.sort)
    texts = label_texts(opts.labels, index, len(arr))
    rows, cols = resolve_layout(len(shown), opts.rows, opts.cols)
    scale = resolve_scale(opts.scale, shown.shape[1])
    tiles = normalize_to_uint8(shown, norm, opts.clip, levels=paint.levels)
    img, geo = tile_image(tiles, rows=rows, cols=cols, scale=scale, padding=opts.padding, paint=paint, labels=texts)
    return img, geo, index


def grid_image(
    maps: np.ndarray,
    *,
    cols: int | None = None,
    rows: int | None = None,
    cmap: str | None = None,
    normalize: str | Normalize = "channel",
    clip: tuple[float, float] | None = None,
    padding: int = 1,
    pad_value: PadValue = 1.0,
    labels: Labels = False,
    channels: Sequence[int] | None = None,
    sort: str | Sort | None = None,
    scale: int | None = None,
) -> Image.Image:
    """One image of all maps ``(C, H, W)`` (a 2-D map counts as one channel), tiled row by row.

    - ``cols=None, rows=None``: near-square, wider than tall (32 -> 4x8, 64 -> 8x8, 512 -> 16x32);
      give one and the other is derived; a grid too small raises :class:`OptionError`.
    - ``cmap=None``: a name from :data:`COLORMAPS`; ``None``/``"auto"`` is ``"coolwarm"`` for
      ``normalize="symmetric"``, else ``"gray"``. Gray grids are ``"L"`` images; colour maps (or a
      coloured ``pad_value``) give palette ``"P"`` images with 255 levels, see :func:`paint_for`.
    - ``normalize="channel"``: ``"channel"`` | ``"layer"`` | ``"symmetric"`` | ``"none"`` (see
      :class:`Normalize`); constant channels give 0 (the middle colour for symmetric), never NaN.
    - ``clip=None``: ``(low_pct, high_pct)`` percentiles used instead of min/max.
    - ``padding=1`` pixels between tiles (after scaling, no outer border); ``pad_value=1.0`` is white
      (a fraction of white), or an ``(r, g, b)`` tuple.
    - ``labels=False``: ``True`` writes each channel index in a strip above its tile; or one string
      per channel of ``maps``.
    - ``channels=None``: indices to show, in that order; ``sort=None`` | ``"mean"`` | ``"max"`` (descending).
    - ``scale=None``: integer nearest upscaling; None makes tiles at least 32 px tall (7x7 -> x5).

    Example: ``grid_image(acts[0], cmap="viridis", sort="mean", labels=True).save("acts.png")``.
    """
    opts = GridOptions(cols=cols, rows=rows, cmap=cmap, normalize=normalize, clip=clip, padding=padding,
                       pad_value=pad_value, labels=labels, channels=channels, sort=sort, scale=scale)  # fmt: skip
    return render_grid(maps, opts)[0]


def grid_figure(maps: np.ndarray, *, titles: str | Sequence[str] | None = None, **options: Any) -> Figure:
    """A matplotlib figure showing :func:`grid_image` at 1:1 pixel size, axes off.

    ``titles`` (default None): a string becomes the figure title; a sequence (one string per channel)
    is written on each tile. Other options as for :func:`grid_image`. Needs matplotlib (imported lazily).
    """
    from matplotlib.figure import Figure

    img, geo, index = render_grid(maps, GridOptions.from_kwargs(options))
    dpi = 100
    top = 0.3 if isinstance(titles, str) else 0.0
    fig = Figure(figsize=(img.width / dpi, img.height / dpi + top), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, img.height / (img.height + top * dpi)))
    ax.imshow(np.asarray(img.convert("RGB")), interpolation="nearest")
    ax.set_axis_off()
    if isinstance(titles, str):
        fig.suptitle(titles)
    elif titles is not None:
        for i, text in enumerate(label_texts(titles, index, len(as_maps(maps)), "titles") or []):
            x, y = geo.origin(i)
            ax.text(x + 1, y + 1, text, fontsize=7, va="top", color="yellow", backgroundcolor="black")
    return fig


def to_png_bytes(img: Image.Image, *, compress_level: int = 1) -> bytes:
    """PNG-encode ``img``; ``compress_level`` defaults to 1 (fast, slightly larger files)."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_png(img: Image.Image, path: str | os.PathLike[str], *, compress_level: int = 1) -> None:
    """Write ``img`` to ``path`` as PNG with ``compress_level`` (default 1, fast)."""
    img.save(path, format="PNG", compress_level=compress_level)
