"""``convscope serve MODEL [--images DIR] [--scan DIR] [--port N] [--host ADDR]``: the live local explorer."""

from __future__ import annotations

import argparse
from typing import Any

from convscope.cli import add_model_args


def add_serve_command(sub: Any) -> None:
    p = sub.add_parser("serve", help="the live local explorer in your browser (binds 127.0.0.1)")
    add_model_args(p)
    p.add_argument("--images", metavar="DIR", help="folder of images shown first (more can be dropped in the page)")
    p.add_argument("--scan", metavar="DIR", help="image folder to scan at start (class sub-folders become labels) "
                                                 "for dataset top-k, patches and histograms")  # fmt: skip
    p.add_argument("--scan-k", type=int, default=9, metavar="K", help="top images kept per channel (default 9)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line, for the predictions")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1); any other is served with a warning")  # fmt: skip


def run_serve(scope: Any, args: argparse.Namespace) -> int:
    from convscope.explorer import serve

    scan = None
    if args.scan is not None:
        scan = scope.scan(args.scan, k=args.scan_k, progress=False)
    serve(scope, images=args.images, scan=scan, port=args.port, host=args.host, labels=args.labels)
    return 0
