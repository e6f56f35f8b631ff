"""The demo's activation-maximisation galleries: one labelled tile per objective, and a note on every flat one.

A tile whose optimum is a uniform image (every pixel within a few levels of black or white) is not a
pattern the channel looks for: the objective simply grows with overall brightness (or darkness). Such a
tile says so under itself, in the library's words (``maximize`` warns the same), instead of showing a
black or white square without comment.

Example::

    vis = scope.maximize(objectives.channel("conv_1", range(16)), steps=128, seed=0)
    [f.note for f in gallery_figures(vis, out=out, stem="maximize_torch_conv_1")][:1]
    # ['saturated: the objective grows with overall brightness, so a uniform white image is its optimum']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convscope.demo.page import picture, upscale_image
from convscope.reporting.model import PictureRef

#: A tile is "mostly saturated" when at least this share of its pixels sit at black or white.
SATURATED_SHARE = 0.7


def flat_kind(image: np.ndarray, *, still: bool = False) -> str:
    """``"still"`` (the objective never moved), ``"saturated"`` (uniform or almost all pixels black or
    white), ``"flat"`` (near-constant grey) or ``""`` for one ``(H, W, C)`` uint8 image."""
    from convscope.optim.visualization import FLAT_LEVELS

    if still:
        return "still"
    lo, hi = int(image.min()), int(image.max())
    ends = (image <= FLAT_LEVELS) | (image >= 255 - FLAT_LEVELS)
    if hi - lo <= FLAT_LEVELS:
        return "saturated" if bool(ends.all()) else "flat"
    return "saturated" if float(ends.mean()) >= SATURATED_SHARE else ""


def explain_flat(kind: str, image: np.ndarray, *, start: float, end: float) -> str:
    """One sentence on why a tile shows no pattern (``""`` when ``kind`` is ``""``)."""
    tone = "white" if float(image.mean()) >= 128 else "black"
    if kind == "saturated":
        from convscope.optim.visualization import FLAT_LEVELS

        share = float(((image <= FLAT_LEVELS) | (image >= 255 - FLAT_LEVELS)).mean())
        return (f"saturated ({share:.0%} of pixels black or white): the objective grows with overall brightness "
                f"(or darkness), so a near-uniform {tone} image is its optimum — no spatial pattern to show")  # fmt: skip
    if kind == "still":
        return f"still: the objective barely moved ({start:.3g} → {end:.3g}) — a dead or vanishing channel"
    if kind == "flat":
        return "flat: the gradient barely reached the pixels, so the image stays near its start"
    return ""


def gallery_figures(vis: Any, *, out: Path, stem: str, names: list[str], model: str) -> list[PictureRef]:
    """One page picture per image of ``vis`` saved as ``out/{stem}_{i}.png`` (enlarged to about 112 px),
    captioned ``names[i]`` with the final objective value, and a note when it is flat (see :func:`flat_kind`)."""
    from convscope.optim.visualization import still_images

    still = set(still_images(vis.values, vis.history).tolist())
    figures = []
    for i, name in enumerate(names):
        img = vis.image(i)
        shown = upscale_image(img, max(1, 112 // img.height))
        kind = flat_kind(vis.images[i], still=i in still)
        start = float(vis.history[0][i]) if len(vis.history) else float("nan")
        note = explain_flat(kind, vis.images[i], start=start, end=float(vis.values[i]))
        data = {"model": model, "channel": str(i), "flat": kind, "value": f"{float(vis.values[i]):.4g}"}
        figures.append(picture(shown, out, f"{stem}_{i}.png", f"{name} · value {float(vis.values[i]):.3g}", note=note,
                               kind="tile", data=data))  # fmt: skip
    return figures
