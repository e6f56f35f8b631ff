"""``convscope scan MODEL DATA -o scan/`` and ``convscope top scan/ --layer L --channel C`` (no model).

``scan`` writes a store (resumable: run it again after an interruption); ``top`` draws one channel's
top images, or their receptive-field patches, from the store alone.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from convscope.cli import add_choice, add_model_args, add_picture_options, picture_path, write_picture


def add_scan_command(sub: Any) -> None:
    p = sub.add_parser(
        "scan", help="scan a dataset: exact top-k images and statistics per channel, into a store"
    )
    add_model_args(p)
    p.add_argument("data", metavar="DATA", help="image folder (class sub-folders become labels)")
    p.add_argument("-o", "--output", dest="store", required=True, metavar="DIR",
                   help="store folder to write (and to resume from when run again)")  # fmt: skip
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layers to scan: names, paths, globs or types (default: every conv layer)")  # fmt: skip
    p.add_argument("-k", type=int, default=16, help="images kept per channel (default 16)")
    add_choice(p, "--by", ["max", "mean"], default="max", help="statistic the printed summary ranks by")
    p.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)"
    )
    p.add_argument("--shard-size", type=int, default=1024, metavar="N",
                   help="images per shard, the unit of resuming (default 1024)")  # fmt: skip
    add_choice(p, "--backend", ["local", "ray"], default="local",
               help="where shards are scanned: here, or on a Ray Data actor pool")  # fmt: skip
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="Ray cluster to join with --backend ray (default: $RAY_ADDRESS, else a local Ray)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a store written by another scan")


def run_scan(scope: Any, args: argparse.Namespace) -> int:
    if getattr(args, "ray_address", None):
        if args.backend != "ray":
            from convscope.errors import OptionError

            raise OptionError(f"--ray-address {args.ray_address} needs --backend ray")
        os.environ["RAY_ADDRESS"] = args.ray_address  # read by the Ray backend when it connects
    layers = [q for item in args.layers for q in item.split(",") if q] if args.layers else None
    result = scope.scan(args.data, layers=layers, k=args.k, store=args.store, batch_size=args.batch_size,
                        shard_size=args.shard_size, backend=args.backend, overwrite=args.overwrite)  # fmt: skip
    print(f"scanned {result.count} images ({len(result.skipped)} skipped) over {len(result.layers)} layers "
          f"-> {args.store}")  # fmt: skip
    for name, layer in result.layers.items():
        values = layer.top[_by(args.by)].values[:, 0].numpy()
        best = int(values.argmax())
        print(
            f"  {name}: {layer.stats.channels} channels; highest {args.by} {values[best]:.4g} at channel {best}"
        )
    return 0


def _by(name: str) -> Any:
    from convscope.dataset.shard import By

    return By(name)


def add_top_command(sub: Any) -> None:
    p = sub.add_parser("top", help="one channel's top images (or patches) from a scan store, no model needed")
    p.add_argument("store", metavar="STORE", help="store folder written by `convscope scan`")
    p.add_argument("--layer", required=True, help="a scanned layer")
    p.add_argument("--channel", type=int, required=True, help="channel index")
    add_choice(p, "--by", ["max", "mean"], default="max", help="statistic to rank by")
    p.add_argument(
        "--patches", action="store_true", help="receptive-field patches at the argmax, not whole images"
    )
    p.add_argument("--cols", type=int, help="tiles per row (default: near-square)")
    add_picture_options(p, "top_LAYER_CHANNEL.png")


def run_top(scope: Any, args: argparse.Namespace) -> int:
    from convscope.dataset.scan import Scan

    scan = Scan.open(args.store)
    top = scan.top(args.layer, args.channel, by=args.by)
    img = top.grid(cols=args.cols, patches=args.patches)
    out = write_picture(img, picture_path(args, "top", f"{top.layer}_{top.channel}"), args.scale)
    for ident, value in zip(top.ids, top.values.tolist(), strict=True):
        print(f"{ident}\t{value:.6g}")
    print(f"{top.layer} channel {top.channel}: top {len(top)} by {args.by} -> {out}")
    return 0
