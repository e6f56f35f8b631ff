"""Pure numpy/PIL renderers: activation grids, unit strips, filter mosaics, colour maps and fast PNG output."""

from .colormaps import COLORMAPS, Normalize, apply_cmap
from .filters import filter_image
from .grid import grid_figure, grid_image, save_png, to_png_bytes
from .strip import strip_image

__all__ = [
    "COLORMAPS",
    "Normalize",
    "apply_cmap",
    "filter_image",
    "grid_figure",
    "grid_image",
    "save_png",
    "strip_image",
    "to_png_bytes",
]
