"""``Visualization``: the result of activation maximisation — images, model inputs, values, history.

Plain data plus rendering shortcuts: ``.grid()`` tiles the images into one labelled gallery,
``.save(path)`` writes it as PNG, and notebooks show it through ``_repr_png_``.

Example::

    vis = scope.maximize(cs.objectives.channel("conv_1", range(16)))
    vis.grid(labels=True).save("conv_1.png")
    model(vis.inputs)            # exactly the input the reported ``vis.values`` came from
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from convscope._warnings import user_stacklevel
from convscope.adapters.base import Layout
from convscope.errors import OptionError
from convscope.render.picture import Picture


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] -> (N, H, W, C) uint8, rounding to the nearest level."""
    a = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return a.permute(0, 2, 3, 1).cpu().numpy().copy()


def display_tiles(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> tiles for display: (N, H, W) grey for 1 or 2 channels (mean of 2),
    (N, H, W, 3) RGB for 3 or more (the first three channels)."""
    c = images.shape[-1]
    if c == 1:
        return images[..., 0]
    if c == 2:
        return images.mean(axis=-1).round().astype(np.uint8)
    return np.ascontiguousarray(images[..., :3])


def _default_cols(n: int) -> int:
    """Near-square, wider than tall: 16 -> 4, 64 -> 8, 10 -> 4, 3 -> 3."""
    return n if n <= 3 else math.ceil(math.sqrt(n))


def tile(
    tiles: np.ndarray, *, cols: int, scale: int = 1, padding: int = 2, labels: Sequence[str] | None = None
) -> Image.Image:
    """Lay (N, H, W) grey or (N, H, W, 3) RGB uint8 ``tiles`` out row by row on white, upscaled ``scale``
    times (nearest), ``padding`` pixels apart, with an optional text strip above each tile."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    big = tiles.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else tiles
    font = ImageFont.load_default()
    strip = int(font.getbbox("Ag0")[3]) + 3 if labels is not None else 0
    th, tw = h * scale, w * scale
    out = np.full((rows * (th + strip + padding) - padding, cols * (tw + padding) - padding, *tiles.shape[3:]),
                  255, dtype=np.uint8)  # fmt: skip
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (th + strip + padding) + strip, c * (tw + padding)
        out[y : y + th, x : x + tw] = big[i]
    img = Image.fromarray(out)
    if labels is not None:
        draw = ImageDraw.Draw(img)
        ink = (0, 0, 0) if img.mode == "RGB" else 0
        for i, text in enumerate(labels[:n]):
            r, c = divmod(i, cols)
            while len(text) > 1 and draw.textlength(text, font=font) > tw:  # fit the label to its tile
                text = text[:-2] + "…"
            draw.text((c * (tw + padding) + 1, r * (th + strip + padding)), text, fill=ink, font=font)
    return img


@dataclass(frozen=True)
class Visualization(Picture):
    """Images synthesised to maximise an objective, one per objective entry.

    Attributes:
        images: (N, H, W, C) uint8, C the model's input channels — the pictures, before normalisation.
        inputs: the same images as model input (the model's layout, scale, mean and std applied), float.
        values: (N,) the objective for each image of ``inputs`` (no transforms).
        history: (steps, N) the objective at every step (under that step's random transforms).
        labels: one label per image, e.g. ``"conv_1 · 5"``.
        layout: the model's layout (``inputs`` is NCHW for PyTorch, NHWC for Keras).
        meta: how the images were made (recipe, steps, size, seed, lr, param, batch_size).
    """

    images: np.ndarray
    inputs: torch.Tensor
    values: np.ndarray
    history: np.ndarray
    labels: tuple[str, ...]
    layout: Layout
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def grid(
        self,
        *,
        labels: bool = True,
        cols: int | None = None,
        scale: int | None = None,
        padding: int = 2,
    ) -> Image.Image:
        """All images tiled into one gallery on white, each labelled like ``"conv_1 · 5"``.

        Defaults: ``labels=True``; ``cols=None`` (near-square, wider than tall); ``scale=None`` (nearest
        upscaling to at least 96 px tall when labelled, else 32); ``padding=2`` pixels between tiles.
        Returns a ``PIL.Image`` (mode ``"L"`` for 1- and 2-channel models, ``"RGB"`` otherwise).

        Example: ``scope.maximize_layer("conv_1", channels=range(16)).grid(cols=8).save("conv_1.png")``
        """
        if len(self) == 0:
            raise OptionError("this Visualization holds no images")
        for name, value in (("cols", cols), ("scale", scale)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(f"{name}={value!r} is not allowed; pass a positive int or None")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise OptionError(f"padding={padding!r} is not allowed; pass an int >= 0")
        tiles = display_tiles(self.images)
        n, h = len(tiles), tiles.shape[1]
        cols = cols or _default_cols(n)
        factor = scale or max(1, math.ceil((96 if labels else 32) / h))
        return tile(tiles, cols=cols, scale=factor, padding=padding, labels=list(self.labels) if labels else None)

    def image(self, index: int = 0) -> Image.Image:
        """One image as a ``PIL.Image`` at its own size."""
        if not -len(self) <= index < len(self):
            raise OptionError(f"index={index} is out of range for {len(self)} images")
        return Image.fromarray(display_tiles(self.images[[index]])[0])

    def __repr__(self) -> str:
        shown = ", ".join(f"{lb}: {v:.3g}" for lb, v in zip(self.labels[:4], self.values[:4], strict=False))
        more = " …" if len(self) > 4 else ""
        images = "1 image" if len(self) == 1 else f"{len(self)} images"
        return f"Visualization({images} {self.images.shape[1:3]}, values {{{shown}{more}}})"


# -- results that would be silent blanks -----------------------------------------------------------------
STILL_ATOL = 1e-8
"""An objective that never leaves ``|v| < STILL_ATOL`` (or rises by less) did not move."""
STILL_RTOL = 1e-3
"""... nor one that rises by less than this fraction of its size (judged from ``MIN_STEPS`` steps)."""
MIN_STEPS = 16
FLAT_LEVELS = 2
"""An image whose pixels all lie within this many uint8 levels is flat."""


def still_images(values: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Indices of images whose objective barely moved from the first step (``history[0]``) to the end
    (``values``): never above ``STILL_ATOL`` in size, or (with at least ``MIN_STEPS`` steps) a rise below
    ``STILL_RTOL`` of its size plus ``STILL_ATOL``."""
    if len(history) == 0:
        return np.zeros(0, dtype=np.intp)
    start = history[0]
    peak = np.abs(np.concatenate([history, values[None]])).max(axis=0)
    still = peak < STILL_ATOL
    if len(history) >= MIN_STEPS:
        scale = np.maximum(np.abs(start), np.abs(values))
        still |= values - start <= STILL_RTOL * scale + STILL_ATOL
    return np.flatnonzero(still)


def flat_images(images: np.ndarray) -> np.ndarray:
    """Indices of (N, H, W, C) uint8 images whose pixels all lie within ``FLAT_LEVELS`` levels."""
    flat = images.reshape(len(images), -1).astype(np.int16)
    return np.flatnonzero(flat.max(axis=1) - flat.min(axis=1) <= FLAT_LEVELS)


def _which(vis: Visualization, index: np.ndarray, show: Any) -> str:
    parts = [f"{vis.labels[i]!r}: {show(i)}" for i in index[:4]]
    return "; ".join(parts) + ("; …" if len(index) > 4 else "")


def warn_if_blank(vis: Visualization) -> None:
    """One warning for images whose objective barely moved (with start and end values and the likely
    cause), one for the other images that came out flat (near-constant)."""
    n, steps = len(vis), len(vis.history)
    still = still_images(vis.values, vis.history)
    if len(still):
        start = vis.history[0]
        moved = _which(vis, still, lambda i: f"{start[i]:.3g} -> {vis.values[i]:.3g}")
        warnings.warn(f"maximize: the objective barely moved over {steps} steps for {len(still)} of {n} image(s) "
                      f"({moved}): a dead or vanishing channel (its ReLU never fires, or values near 0), or an "
                      "objective that does not depend on the input; the image stays at its random start. Try another layer "
                      "or channel, or check the model's weights", stacklevel=user_stacklevel())  # fmt: skip
    flat = np.setdiff1d(flat_images(vis.images), still)
    if len(flat):
        shown = _which(vis, flat, lambda i: f"pixels {int(vis.images[i].min())}..{int(vis.images[i].max())}")
        ends = all(int(vis.images[i].min()) >= 255 - FLAT_LEVELS or int(vis.images[i].max()) <= FLAT_LEVELS
                   for i in flat)  # fmt: skip
        why = ("saturated: the objective grows with overall brightness (or darkness), so a uniform image is its "
               "optimum" if ends else "the gradient barely reached the pixels; try more steps, a larger lr or "
               "recipe='plain'")  # fmt: skip
        warnings.warn(f"maximize: {len(flat)} of {n} image(s) came out flat, near-constant ({shown}): {why}",
                      stacklevel=user_stacklevel())  # fmt: skip
