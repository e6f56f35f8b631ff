"""``Picture``: ``save()`` and the notebook PNG for every result object that draws a ``grid()``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from convscope.render.grid import save_png, to_png_bytes


class Picture:
    """Mixin: a result whose picture is ``self.grid(**options)`` gets ``save`` and ``_repr_png_``."""

    grid: Callable[..., Image.Image]

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write :meth:`grid` (``options`` as there) to ``path`` as PNG and return the path."""
        path = Path(path)
        save_png(self.grid(**options), path)
        return path

    def _repr_png_(self) -> bytes:
        """Jupyter shows the default picture."""
        return to_png_bytes(self.grid())
