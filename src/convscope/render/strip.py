"""Render a vector of units (a ``Dense``, pooled or logit output) as one labelled strip of coloured cells.

One cell per unit, its colour the unit's value; a title names the layer, the unit count and the value
range (with the units that reach it), a ruler labels unit indices at intervals, a colour bar spans the
range. Example::

    >>> img = strip_image(np.array([-1.2, 0.0, 3.4]), name="fc")   # title "fc: 3 units, min -1.2 ..."
    >>> img.mode
    'RGB'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError, OptionError, check_choice
from .colormaps import COLORMAPS, Normalize, normalize_to_uint8, pad_colour, parse_option
from .grid import GridOptions, label_texts, resolve_layout, resolve_scale, select_channels

CELL_PX = 16
"""Cell width and height at ``scale=1`` (widened when labels need it)."""

_STEPS = (1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100)
_BAR_PX = 6
_MARGIN = 2


@dataclass(frozen=True)
class StripGeometry:
    """Where cells sit: ``box(i)`` is the ``(left, top, right, bottom)`` of the i-th shown cell."""

    cols: int
    rows: int
    cell_w: int
    cell_h: int
    band: int  # a label strip above every row of cells (per-cell labels), else 0
    left: int
    top: int
    padding: int

    @property
    def row_h(self) -> int:
        return self.band + self.cell_h + self.padding

    @property
    def width(self) -> int:
        """Width of the cell area."""
        return self.cols * (self.cell_w + self.padding) - self.padding

    @property
    def bottom(self) -> int:
        return self.top + self.rows * self.row_h - self.padding

    def box(self, i: int) -> tuple[int, int, int, int]:
        r, c = divmod(i, self.cols)
        x = self.left + c * (self.cell_w + self.padding)
        y = self.top + r * self.row_h + self.band
        return x, y, x + self.cell_w, y + self.cell_h


def vector_cmap(cmap: str | None, norm: Normalize) -> str:
    """``None``/``"auto"`` -> ``"coolwarm"`` for symmetric normalisation, else ``"viridis"`` (a gray top cell
    would vanish into white padding); names are checked."""
    if cmap is None or cmap == "auto":
        return "coolwarm" if norm is Normalize.SYMMETRIC else "viridis"
    return check_choice("cmap", cmap, [*COLORMAPS, "auto"])


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default()


def _width(text: str) -> int:
    return math.ceil(_font().getlength(text))


def _layout(n: int, cols: int | None, rows: int | None) -> tuple[int, int]:
    """``(rows, cols)``: given sizes checked as for grids; by default up to 32 units in one row, then rows
    of 32 (up to 512 units) or 64."""
    if cols is not None or rows is not None:
        return resolve_layout(n, rows, cols)
    cols = n if n <= 32 else (32 if n <= 512 else 64)
    return math.ceil(n / cols), cols


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def strip_title(name: str, values: np.ndarray) -> str:
    """``"fc: 10 units, min -1.2 (unit 4) max 3.4 (unit 7)"``; the first unit reaching each bound."""
    lo, hi = int(np.argmin(values)), int(np.argmax(values))
    head = f"{name}: " if name else ""
    units = "1 unit" if len(values) == 1 else f"{len(values)} units"
    return f"{head}{units}, min {_fmt(values[lo])} (unit {lo}) max {_fmt(values[hi])} (unit {hi})"


def render_strip(
    values: np.ndarray, opts: GridOptions, *, name: str = ""
) -> tuple[Image.Image, StripGeometry, np.ndarray]:
    """:func:`strip_image` plus the cell :class:`StripGeometry` and the original index of each shown unit."""
    vec = np.asarray(values)
    if vec.ndim != 1 or vec.dtype.kind not in "iuf" or vec.size == 0:
        raise InputError(
            f"values must be a non-empty real vector; received shape {vec.shape} dtype {vec.dtype}"
        )
    if not np.isfinite(vec).all():
        raise InputError("values contain NaN or inf; replace them (e.g. np.nan_to_num) before rendering")
    norm = parse_option("normalize", opts.normalize, Normalize)
    norm = Normalize.LAYER if norm is Normalize.CHANNEL else norm  # one vector: its own min-max
    lut = COLORMAPS[vector_cmap(opts.cmap, norm)]
    shown, index = select_channels(vec[:, None], opts.channels, opts.sort)
    contiguous = opts.channels is None and opts.sort is None
    texts = label_texts(opts.labels, index, len(vec))
    if texts is None and not contiguous:  # a subset or a new order: every cell names its unit
        texts = [str(i) for i in index]
    levels = normalize_to_uint8(shown[:, 0][None], norm, opts.clip)[0]
    n = len(index)
    rows, cols = _layout(n, opts.cols, opts.rows)
    scale = resolve_scale(opts.scale, CELL_PX, target=CELL_PX)  # None -> 1
    pad = opts.padding
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise OptionError(f"padding={pad!r} is not allowed; pass an int >= 0")
    cell_w = cell_h = CELL_PX * scale
    label_h = int(_font().getbbox("Ag0")[3]) + 2
    if texts is not None:
        cell_w = max(cell_w, min(80, max(_width(t) for t in texts) + 3))
    row_label_w = _width(str(index[(rows - 1) * cols])) + 4 if rows > 1 and contiguous else 0
    title = strip_title(name, vec)
    band = label_h if texts is not None else 0
    top = _MARGIN + label_h + (0 if texts is not None else label_h)  # title, then the ruler
    geo = StripGeometry(cols, rows, cell_w, cell_h, band, _MARGIN + row_label_w, top, pad)
    ends = _range(shown[:, 0], norm, opts.clip)
    hi_end = geo.left + max(_width(ends[0]) + 6 + _width(ends[1]), geo.width)  # the bar's labels fit too
    width = max(geo.left + geo.width, _MARGIN + _width(title), hi_end) + _MARGIN  # the title is never cut
    bar_y = geo.bottom + 3
    height = bar_y + _BAR_PX + label_h + _MARGIN
    background = tuple(int(v) for v in np.broadcast_to(pad_colour(opts.pad_value), (3,)))
    ink = (0, 0, 0) if sum(background) > 3 * 127 else (255, 255, 255)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[...] = background
    for i in range(n):
        x0, y0, x1, y1 = geo.box(i)
        out[y0:y1, x0:x1] = lut[levels[i]]
    ramp = np.linspace(0, 255, geo.width).round().astype(np.intp)
    out[bar_y : bar_y + _BAR_PX, geo.left : geo.left + geo.width] = lut[ramp][None]
    img = Image.fromarray(out)
    _annotate(img, geo, texts, title, ink, ends, index if contiguous else None)
    return img, geo, index


def _annotate(img: Image.Image, geo: StripGeometry, texts: Sequence[str] | None, title: str, ink: tuple[int, ...],
              ends: tuple[str, str], starts: np.ndarray | None) -> None:  # fmt: skip
    """Title, unit labels (per cell, or a ruler and the first unit of each row), the colour bar's ends."""
    draw, font = ImageDraw.Draw(img), _font()
    label_h = int(font.getbbox("Ag0")[3]) + 2
    draw.text((_MARGIN, _MARGIN), title, fill=ink, font=font)
    if texts is not None:
        for i, text in enumerate(texts):
            x0, y0, x1, _ = geo.box(i)
            while len(text) > 1 and _width(text) > x1 - x0:
                text = text[:-2] + "…"
            draw.text((x0 + 1, y0 - label_h), text, fill=ink, font=font)
    else:
        step = next(
            (
                t
                for t in _STEPS
                if t * (geo.cell_w + geo.padding) >= _width(str(geo.cols - 1)) + 6 and t * 16 >= geo.cols
            ),
            geo.cols,
        )
        for c in range(0, geo.cols, step):
            x0, y0, _, _ = geo.box(c)
            draw.text((x0, y0 - label_h), str(c), fill=ink, font=font)
        if geo.rows > 1 and starts is not None:
            for r in range(geo.rows):
                _, y0, _, _ = geo.box(r * geo.cols)
                draw.text((_MARGIN, y0), str(int(starts[r * geo.cols])), fill=ink, font=font)
    lo, hi = ends
    y = geo.bottom + 3 + _BAR_PX
    draw.text((geo.left, y), lo, fill=ink, font=font)
    if hi:
        draw.text((max(geo.left + _width(lo) + 6, geo.left + geo.width - _width(hi)), y), hi, fill=ink, font=font)


def _range(values: np.ndarray, norm: Normalize, clip: tuple[float, float] | None) -> tuple[str, str]:
    """The values at the colour bar's two ends."""
    if norm is Normalize.NONE:
        return "0", "1"
    if clip is not None:
        lo, hi = (float(v) for v in np.percentile(values, clip))
    else:
        lo, hi = float(values.min()), float(values.max())
    if norm is Normalize.SYMMETRIC:
        m = max(abs(lo), abs(hi))
        lo, hi = -m, m
    return bar_ends(lo, hi)


def bar_ends(lo: float, hi: float) -> tuple[str, str]:
    """The two labels of a colour bar, with enough digits to differ: ``("0.001", "0.0012")``; a
    constant range reads ``("constant 0.001", "")``."""
    if lo == hi:
        return f"constant {_fmt(lo)}", ""
    for digits in range(4, 16):
        a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
        if a != b:
            return a, b
    return repr(lo), repr(hi)


def strip_image(
    values: np.ndarray,
    *,
    name: str = "",
    cols: int | None = None,
    rows: int | None = None,
    cmap: str | None = None,
    normalize: str | Normalize = "layer",
    clip: tuple[float, float] | None = None,
    padding: int = 1,
    pad_value: float | tuple[int, int, int] = 1.0,
    labels: bool | Sequence[str] = False,
    channels: Sequence[int] | None = None,
    sort: str | None = None,
    scale: int | None = None,
) -> Image.Image:
    """One RGB image of a vector ``values`` ``(D,)``: one cell per unit, coloured by value.

    - ``name=""``: the title reads ``"{name}: D units, min v (unit i) max v (unit j)"``.
    - ``cols=None``: cells per row (D up to 32 in one row, then 32 up to 512 units, else 64); or ``rows``.
    - ``cmap=None``: ``"viridis"``, or ``"coolwarm"`` with ``normalize="symmetric"``.
    - ``normalize="layer"``: min-max over the vector (``"channel"`` means the same here); ``"symmetric"``
      puts 0 at the middle colour; ``"none"`` takes values as ``[0, 1]``. ``clip`` as for grids.
    - ``labels=False``: unit indices on a ruler at intervals (and row starts); ``True`` labels every
      cell; or one string per unit (class names). ``channels``/``sort`` pick or order units (then every
      cell is labelled with its unit index).
    - ``padding=1`` px between cells, ``pad_value=1.0`` (white background); ``scale=None`` (1):
      cells are ``16 * scale`` px.

    Example: ``strip_image(logits[0], name="fc", sort="max").save("fc.png")``.
    """
    opts = GridOptions(cols=cols, rows=rows, cmap=cmap, normalize=normalize, clip=clip, padding=padding,
                       pad_value=pad_value, labels=labels, channels=channels, sort=sort, scale=scale)  # fmt: skip
    return render_strip(values, opts, name=name)[0]
