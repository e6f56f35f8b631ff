"""Feature-map grids to PNG: convscope's numpy tiling vs the seed way (matplotlib subplot per channel).

Maps are real activations: a random-init VGG16 on scikit-image's chelsea photo — 512 maps of 14×14
(last conv block) and 64 maps of 112×112 (after the first pool). Goals: >= 100x and >= 15x faster;
a colour-mapped grid <= 2x a gray one.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from common import VGG16, interleaved

import convscope as cs
from convscope.demo.data import sample_photo
from convscope.render import grid_image, to_png_bytes


def seed_way(maps: np.ndarray, cols: int) -> bytes:
    rows = -(-len(maps) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
    for ax, m in zip(axes.flat, maps, strict=False):
        ax.imshow(m, cmap="gray")
        ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def main() -> None:
    torch.manual_seed(0)
    scope = cs.Scope(VGG16().eval())
    acts = scope.activations(sample_photo("chelsea", 224), layers=["features.4", "features.28"])
    cases = {"512 maps 14x14": (acts["features.28"].channels_first()[0], 32),
             "64 maps 112x112": (acts["features.4"].channels_first()[0], 8)}  # fmt: skip
    for label, (maps, cols) in cases.items():
        t = interleaved(
            {
                "gray": lambda m=maps: to_png_bytes(grid_image(m, cmap="gray")),
                "viridis": lambda m=maps: to_png_bytes(grid_image(m, cmap="viridis")),
                "seed": lambda m=maps, c=cols: seed_way(m, c),
            },
            repeats=3,
        )
        print(f"{label}: convscope gray {t['gray']*1e3:.1f} ms, viridis {t['viridis']*1e3:.1f} ms, "
              f"matplotlib subplots {t['seed']*1e3:.0f} ms -> {t['seed']/t['gray']:.0f}x faster; "
              f"colour/gray {t['viridis']/t['gray']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
