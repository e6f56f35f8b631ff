"""``convscope report MODEL IMAGES... -o report.html [--scan scan/] [--layers ...] [--maximize] [--methods ...]``.

Example::

    convscope report model.keras cat.jpg dog.jpg -o report.html --methods gradcam,saliency --labels classes.txt

``-o`` must name an ``.html``/``.htm`` file (not a folder), checked before the model runs; ``--no-progress``
silences the progress lines on stderr.
"""

from __future__ import annotations

import argparse
from typing import Any

from convscope.errors import OptionError, hint


def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to ``subparsers``; returns its parser."""
    from convscope.cli import add_model_args

    p = subparsers.add_parser("report", help="one self-contained HTML page: every layer, channel, kernel and map",
                              description="Write one HTML file (no network, opens from file://) with the summary, "
                              "predictions, the top channels of every layer per image, kernels, attribution maps "
                              "with deletion/insertion AUC, and optionally feature visualisations and dataset "
                              "examples.")  # fmt: skip
    add_model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files shown in the report")
    p.add_argument("-o", "--output", dest="out", default="report.html", metavar="FILE",
                   help="HTML file to write (default report.html; big reports add FILE_assets/ beside it)")  # fmt: skip
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layer names, paths, globs or types to show (default: every conv and dense layer)")  # fmt: skip
    p.add_argument("--methods", default="gradcam", metavar="M1,M2",
                   help="attribution methods, comma-separated, or 'none' (default gradcam)")  # fmt: skip
    p.add_argument("--targets", default=None, metavar="K1,K2", help="class indices to explain (default: top-1)")
    p.add_argument("--sanity", action="store_true", help="add the sanity-check verdict of each method")
    p.add_argument("--maximize", action="store_true", help="add feature visualisations of each layer's top channels")
    p.add_argument("--maximize-steps", type=int, default=128, metavar="N", help="optimiser steps (default 128)")
    p.add_argument("--scan", default=None, metavar="DIR", help="a stored scan (from convscope scan) for dataset examples")
    p.add_argument("--scan-images", default=None, metavar="DIR",
                   help="scan this image folder now (in memory) for dataset examples")  # fmt: skip
    p.add_argument("--labels", default=None, metavar="FILE", help="class names, one per line")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress lines on stderr (default: a bar on a terminal, else one line per job)")  # fmt: skip
    return p


def parse_methods(text: str) -> tuple[str, ...]:
    """``"gradcam,saliency"`` → names checked against the attribution registry; ``"none"`` → ``()``."""
    from convscope.attribution.base import methods

    if text.strip().lower() in ("", "none"):
        return ()
    allowed = methods()
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    for name in names:
        if name not in allowed:
            near = hint(name, allowed)
            raise OptionError(f"--methods {name!r} is not an attribution method; choose from: {', '.join(allowed)}"
                              + (f" ({near})" if near else ""))  # fmt: skip
    return names


def _targets(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise OptionError(f"--targets {text!r} is not a list of class indices; pass e.g. --targets 3,5") from None
    if any(v < 0 for v in values):
        raise OptionError(f"--targets {text!r}: class indices start at 0; pass e.g. --targets 3,5")
    return values


def _scan(scope: Any, args: argparse.Namespace) -> Any:
    if args.scan is not None and args.scan_images is not None:
        raise OptionError("give --scan (a stored scan) or --scan-images (a folder to scan now), not both")
    if args.scan_images is not None:
        return scope.scan(args.scan_images, layers=args.layers, k=9, progress=False)
    if args.scan is None:
        return None
    from convscope.dataset.scan import Scan

    opener = getattr(Scan, "open", None)
    if opener is None:
        raise OptionError(f"--scan {args.scan!r}: this convscope cannot open stored scans yet; pass "
                          "--scan-images DIR to scan an image folder now")  # fmt: skip
    return opener(args.scan)


def run_report(scope: Any, args: argparse.Namespace) -> int:
    from convscope.reporting import report
    from convscope.reporting.checks import check_out

    out = check_out(args.out, flag="-o ")  # before any model work
    methods = parse_methods(args.methods)
    targets = _targets(args.targets)
    if args.maximize_steps < 1:
        raise OptionError(f"--maximize-steps {args.maximize_steps} is not allowed; pass a positive int")
    try:
        written = report(scope, list(args.images), out=out, scan=_scan(scope, args), layers=args.layers,
                         methods=methods, maximize=args.maximize, labels=args.labels, targets=targets,
                         sanity=args.sanity, maximize_steps=args.maximize_steps,
                         progress=getattr(args, "progress", True))  # fmt: skip
    except OptionError as exc:  # the library says target=K; here it was --targets
        text = str(exc)
        if not text.startswith("target="):
            raise
        raise OptionError(f"--targets {args.targets}: class {text.removeprefix('target=')}") from None
    where = f" + {written.assets}/ ({written.asset_bytes / 1e6:.1f} MB)" if written.assets else ""
    print(f"report written: {written.path} ({written.html_bytes / 1e6:.1f} MB{where}, {written.pictures} pictures)")
    return 0
