"""`convscope demo` end to end (quick mode, cached twin weights): files, sizes, and the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PIL import Image

from convscope.demo.run import run_demo


def test_demo_writes_every_figure_and_a_self_contained_page(tmp_path: Path, digit_twins: Any, digit_twins_cache: Path) -> None:
    out = tmp_path / "demo-output"
    index = run_demo(out, quick=True, cache_dir=digit_twins_cache)
    assert index == out / "index.html"
    for fw in ("keras", "torch"):
        # 32 maps of 26x26 as 4 rows x 8 cols; 64 maps of 24x24 as 8x8 (x2 upscale, 1 px gaps)
        assert Image.open(out / f"maps_{fw}_conv_0.png").size == (8 * 52 + 7, 4 * 52 + 3)
        assert Image.open(out / f"maps_{fw}_conv_1.png").size == (8 * 48 + 7, 8 * 48 + 7)
        assert (out / f"filters_{fw}_conv_0.png").exists()
        assert (out / f"maximize_{fw}_classes.png").exists() and (out / f"maximize_{fw}_conv_1.png").exists()
        assert (out / f"attr_{fw}_gradcam.png").exists()
        summary = (out / f"summary_{fw}.txt").read_text()
        assert "Total params: 1,199,882" in summary  # the seed tutorial's parameter count
    assert Image.open(out / "vgg16_block1_conv1_filters.png").mode == "RGB"  # colour first-layer kernels
    page = index.read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(re.findall(r"src='data:image/png;base64,", page)) == len(pngs)  # every figure embedded
    assert "hold-out accuracy" in page
