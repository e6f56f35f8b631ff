"""``convscope attribute MODEL IMAGE [IMAGE ...] --method gradcam [--target K --layer L] -o out.png``.

The CLI module registers the sub-command with :func:`add_attribute_command`, loads the model into a
:class:`~convscope.Scope`, and calls :func:`run_attribute` with it and the parsed arguments.

Example::

    parser = argparse.ArgumentParser(prog="convscope")
    sub = parser.add_subparsers(dest="command")
    add_attribute_command(sub)
    args = parser.parse_args(["attribute", "model.keras", "cat.jpg", "--method", "gradcam++"])
    run_attribute(scope, args)
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convscope.errors import OptionError

if TYPE_CHECKING:
    from convscope.scope import Scope

_COLORMAPS = ("turbo", "inferno", "magma", "plasma", "viridis", "coolwarm", "gray")


def add_attribute_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``attribute`` sub-command to ``subparsers`` (from ``parser.add_subparsers()``); returns it."""
    from convscope.attribution.base import methods

    names = methods()
    p = subparsers.add_parser(
        "attribute",
        help="attribution heatmap (Grad-CAM, Integrated Gradients, ...) over an image",
        description="Explain a class score with an attribution method and save the heatmap over the image. "
        f"Methods: {', '.join(names)}.",
    )
    _model_args(p)
    p.add_argument("image", nargs="+", help="image file(s); several are explained as one batch")
    p.add_argument("--method", default="gradcam", choices=names, metavar="METHOD",
                   help="attribution method (default: gradcam); one of: " + ", ".join(names))
    p.add_argument("--target", type=int, default=None, help="class index to explain (default: top-1 class)")
    p.add_argument("--layer", default=None, help="layer for CAM methods (default: last spatial layer)")
    p.add_argument("-o", "--output", default="attribution.png", help="PNG to write (default: attribution.png)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1] (default: 0.5)")
    p.add_argument("--cmap", default="turbo", choices=_COLORMAPS, help="colour map (default: turbo)")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable, e.g. -O steps=64 -O baseline=blur")
    p.add_argument("--raw", default=None, metavar="FILE.npy", help="also save the raw attribution values")
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    """MODEL and its loading options, exactly as the other verbs declare them (``convscope.cli``)."""
    try:
        from convscope.cli import add_model_args
    except ImportError:  # used without the package CLI: the MODEL argument alone
        p.add_argument("model", metavar="MODEL", help=".keras/.h5 file, TorchScript/.pt2 file, or package.module:factory")
        return
    add_model_args(p)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["steps=64", "baseline=blur"]`` → ``{"steps": 64, "baseline": "blur"}`` (Python literals or text)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise OptionError(f"--option {pair!r} is not KEY=VALUE, e.g. --option steps=64")
        try:
            options[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key.strip()] = text
    return options


def run_attribute(scope: Scope, args: argparse.Namespace) -> int:
    """Compute the attribution for ``args.image`` and write the overlay PNG; returns the exit code (0)."""
    options = parse_options(list(args.option or []))
    images = list(args.image)
    att = scope.attribute(images if len(images) > 1 else images[0], method=args.method, target=args.target,
                          layer=args.layer, **options)  # fmt: skip
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    att.save(out, alpha=args.alpha, cmap=args.cmap)
    if args.raw:
        np.save(args.raw, att.raw)
    where = f" at layer {att.layer!r}" if att.layer else ""
    targets = ", ".join(map(str, att.targets)) if att.targets is not None else "custom"
    print(f"{args.method}{where}, target class {targets} -> {out}")
    return 0
