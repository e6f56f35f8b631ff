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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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
