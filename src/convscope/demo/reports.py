"""The demo's reports: ``cs.report`` of a trained digit model on test digits, with the demo's scan.

The demo's ``index.html`` is the report of the Keras model with the demo's own sections added; the
PyTorch model's report is ``report_torch.html`` beside it. Each is the same HTML report ``convscope report``
writes: summary, top-5 predictions, every channel of every conv and dense layer, kernels, Grad-CAM with
deletion/insertion scores, and — from the demo's scan of all 1,797 digits — each channel's dataset
examples. Pictures are embedded and the page makes no network request.

Example::

    written = write_report(scope, digits, scan, out / "report_torch.html", title="PyTorch digit CNN")
    report_link(written, "PyTorch", seconds=4.2)   # Link('report_torch.html', 'Report of the PyTorch model', ...)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from convscope.reporting import Link, Written

#: Test digits each report shows.
REPORT_IMAGES = 4
#: Embedded picture bytes of the demo's pages: everything inline, so a page works when moved alone.
INLINE_BYTES = 16_000_000


def as_report_images(digits: np.ndarray) -> list[np.ndarray]:
    """``(N, 28, 28)`` floats in [0, 1] as uint8 ``(28, 28, 1)`` images, the form ``cs.report`` reads."""
    return [np.round(np.clip(d, 0.0, 1.0) * 255).astype(np.uint8)[..., None] for d in digits]


def write_report(scope: Any, digits: np.ndarray, scan: Any, path: Path, *, title: str, **page: Any) -> Written:
    """Write ``cs.report`` of ``scope`` on the first :data:`REPORT_IMAGES` ``digits`` to ``path``, with
    ``scan`` (a :class:`convscope.Scan`, or ``None``) for dataset examples and Grad-CAM; ``page``: the
    report's ``intro``, ``links`` and ``sections`` (default none)."""
    from convscope.reporting import report

    with warnings.catch_warnings():  # the report states dead or flat layers itself
        warnings.simplefilter("ignore")
        return report(scope, as_report_images(digits[:REPORT_IMAGES]), out=path, scan=scan, methods=("gradcam",),
                      title=title, inline_bytes=INLINE_BYTES, progress=False, **page)  # fmt: skip


def report_link(written: Written, name: str, *, seconds: float) -> Link:
    """A link to a written report of the ``name`` model, stating what it holds, its size and time."""
    return Link(written.path.name, f"Report of the {name} model",
                f"the same report as this page's, of the {name} build of the same CNN: every channel of every layer for "
                f"{REPORT_IMAGES} test digits, kernels, Grad-CAM with deletion/insertion scores and dataset examples "
                f"from the scan ({written.total_bytes / 1e6:.1f} MB, {seconds:.1f} s)")  # fmt: skip
