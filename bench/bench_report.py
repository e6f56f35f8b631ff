"""The HTML report's figures (issue 9): Keras ``applications.VGG16`` (random init), 4 photos, every conv and
dense layer, Grad-CAM with deletion/insertion — file size (goal <= 20 MB), build time, and first paint in
headless Chromium from ``file://`` (goal < 2 s); the digit CNN's report (goal < 2 MB). A benchmark, not a test::

    .venv/bin/python bench/bench_report.py            # both
    .venv/bin/python bench/bench_report.py --digits   # the digit CNN only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch

import convscope as cs

CHROMIUM = "/usr/bin/chromium"


def first_paint_ms(path: Path) -> float | None:
    """First contentful paint of ``path`` opened from ``file://`` (every non-file request aborted)."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_page()
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
        page.goto(path.resolve().as_uri(), wait_until="load")
        paint: list[float] = []
        for _ in range(100):  # the entry can land just after "load" on a small page
            paint = page.evaluate("performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)")
            if paint:
                break
            page.wait_for_timeout(20)
        browser.close()
    return float(paint[0]) if paint else None


def build(scope: cs.Scope, images: list[object], out: Path) -> dict[str, float | None]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = cs.report(scope, images, out=out, progress=False)
    seconds = time.perf_counter() - start
    return {"mb": written.total_bytes / 1e6, "build_s": seconds, "first_paint_ms": first_paint_ms(written.path),
            "pictures": written.pictures}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--digits", action="store_true", help="only the digit CNN's report")
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    from convscope.demo.models import torch_digits_model

    res: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        digits = cs.Scope(torch_digits_model(seed=0), input_shape=(1, 28, 28))
        res["digits"] = d = build(digits, [cs.sample_image("digit")] * 4, Path(tmp) / "digits.html")
        print(f"digit CNN, 4 images: {d['mb']:.2f} MB (goal < 2), built in {d['build_s']:.1f} s, "
              f"first paint {d['first_paint_ms']} ms", flush=True)  # fmt: skip
        if not args.digits:
            import keras
            from skimage import data

            model = keras.applications.VGG16(weights=None)
            scope = cs.Scope(model, preprocess="caffe")
            photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
            res["vgg16"] = v = build(scope, photos, Path(tmp) / "vgg16.html")
            print(f"Keras VGG16 (random init), 4 photos, 13 conv + 3 dense layers, Grad-CAM: {v['mb']:.2f} MB "
                  f"(goal <= 20), built in {v['build_s']:.1f} s, first paint {v['first_paint_ms']} ms (goal < 2000)")  # fmt: skip
    print(json.dumps(res))


if __name__ == "__main__":
    sys.exit(main())
