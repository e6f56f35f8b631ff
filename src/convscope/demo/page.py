"""The demo's pictures: each saved as a PNG beside the page and handed to the report as a picture.

The page itself is written by the HTML report (:func:`convscope.reporting.report`): the demo's steps
return :class:`convscope.reporting.Section` objects whose pictures come from :func:`picture`.

Example::

    pic = picture(grid, out, "maps_keras_conv_0.png", "Keras · conv_0: 32 maps of 26×26")
    pic.file, pic.key            # ('maps_keras_conv_0.png', 'section/maps_keras_conv_0.png')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convscope.reporting.model import PictureRef


def save(img: Any, path: Path) -> Path:
    """Save a PIL image or array as PNG at ``path``; returns ``path``."""
    from convscope.render import save_png

    save_png(img, path)
    return path


def upscale_image(img: Any, factor: int) -> Any:
    """``img`` enlarged ``factor`` times with nearest-neighbour sampling (pixels stay crisp)."""
    from PIL import Image

    if factor == 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def picture(img: Any, out: Path, name: str, caption: str, **extra: Any) -> PictureRef:
    """Save ``img`` (a PIL image) as ``out/name`` and return it as a page picture linking that file.

    ``extra``: ``note``, ``kind`` and ``data`` of :class:`~convscope.reporting.model.PictureRef` (default none).
    """
    save(img, out / name)
    return PictureRef.of(f"section/{name}", img, caption, file=name, **extra)
