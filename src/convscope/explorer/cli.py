"""``convscope serve MODEL [--images DIR] [--scan DIR] [--port N] [--host ADDR]``: the live local explorer."""

from __future__ import annotations

import argparse
from typing import Any

from convscope.cli import add_model_args


def add_serve_command(sub: Any) -> None:
    p = sub.add_parser("serve", help="the live local explorer in your browser (binds 127.0.0.1)")
    add_model_args(p)
    p.add_argument("--images", metavar="DIR",
                   help="folder of images (or one image file) shown first; more can be dropped in the page")  # fmt: skip
    p.add_argument("--scan", metavar="DIR",
                   help="dataset top-k, patches and histograms: a store written by `convscope scan MODEL DATA "
                        "-o DIR` (a folder with manifest.json, same model), or an image folder to scan at "
                        "start (class sub-folders become labels)")  # fmt: skip
    p.add_argument("--scan-k", type=int, default=9, metavar="K",
                   help="top images kept per channel when --scan is an image folder (default 9)")  # fmt: skip
    p.add_argument("--labels", metavar="FILE", help="class names, one per line, for the predictions")
    p.add_argument("--port", type=_port, default=0, help="port, 0-65535 (default 0: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1); any other is served with a warning")  # fmt: skip


def _port(text: str) -> int:
    """``--port`` checked while the command line is read, before the model loads: 0-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; pass a number 0-65535 (0: a free one)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port; pass 0-65535 (0: a free one, printed)")
    return port


def run_serve(scope: Any, args: argparse.Namespace) -> int:
    from convscope.explorer import _bind, cli_names, open_scan, serve

    with cli_names():  # errors and warnings name --images, --scan, --port, --host (--port is checked by _port)
        if args.port:  # a taken port fails now, not after a long --scan
            _bind(args.host, args.port).close()
        scan = open_scan(scope, args.scan, k=args.scan_k)
        serve(scope, images=args.images, scan=scan, port=args.port, host=args.host, labels=args.labels)
    return 0
