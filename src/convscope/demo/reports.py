"""The demo's full reports: ``cs.report`` of each trained digit model, written beside ``index.html``.

Each report (``report_keras.html``, ``report_torch.html``) is the same HTML report ``convscope report``
writes: summary, top-5 predictions, every channel of every conv and dense layer, kernels, Grad-CAM with
deletion/insertion scores, and — from the demo's scan of all 1,797 digits — each channel's dataset
examples. The page is self-contained (pictures embedded) and makes no network request.

Example::

    links = write_reports(out, scopes, digits, scans)   # [Link('report_keras.html', ...), ...]
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Test digits each report shows.
REPORT_IMAGES = 4


@dataclass(frozen=True)
class Link:
    """A link from the demo page to a file beside it: ``href``, its text and a line on what it holds."""

    href: str
    text: str
    detail: str = ""


def as_report_images(digits: np.ndarray) -> list[np.ndarray]:
    """``(N, 28, 28)`` floats in [0, 1] as uint8 ``(28, 28, 1)`` images, the form ``cs.report`` reads."""
    return [np.round(np.clip(d, 0.0, 1.0) * 255).astype(np.uint8)[..., None] for d in digits]


def write_reports(out: Path, scopes: dict[str, Any], digits: np.ndarray, scans: dict[str, Any],
                  names: dict[str, str]) -> list[Link]:  # fmt: skip
    """Write ``out/report_{fw}.html`` for each scope on the first :data:`REPORT_IMAGES` ``digits``, with
    ``scans[fw]`` (a :class:`convscope.Scan`, or missing) for dataset examples; returns one link each."""
    from convscope.reporting import report

    links = []
    images = as_report_images(digits[:REPORT_IMAGES])
    for fw, scope in scopes.items():
        start = time.perf_counter()
        with warnings.catch_warnings():  # the report states dead or flat layers itself
            warnings.simplefilter("ignore")
            written = report(scope, images, out=out / f"report_{fw}.html", scan=scans.get(fw),
                             methods=("gradcam",), title=f"convscope report · {names[fw]} digit CNN")  # fmt: skip
        size = written.total_bytes / 1e6
        links.append(Link(written.path.name, f"Full report of the {names[fw]} model",
                          f"every channel of every layer for {len(images)} test digits, kernels, Grad-CAM with "
                          f"deletion/insertion scores and dataset examples from the scan ({size:.1f} MB, "
                          f"{time.perf_counter() - start:.1f} s)"))  # fmt: skip
    return links
