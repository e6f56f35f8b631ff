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
from typing import TYPE_CHECKING, Any

import numpy as np

from convscope.errors import OptionError

if TYPE_CHECKING:
    from convscope.scope import Scope

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
    from convscope.cli import add_choice, add_picture_options, colormap_names

    _model_args(p)
    p.add_argument("image", nargs="+", help="image file(s); several are explained as one batch")
    add_choice(p, "--method", names, default="gradcam", help="attribution method")
    p.add_argument("--target", type=int, default=None, help="class index to explain (default: top-1 class)")
    p.add_argument("--layer", default=None,
                   help="layer for CAM methods; 'name@1' is the second call of a module run twice (default: the "
                        "last block's output; printed)")  # fmt: skip
    add_picture_options(p, "attribute_METHOD.png")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1] (default: 0.5)")
    add_choice(p, "--cmap", colormap_names(), default="turbo", help="colour map of the heatmap")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable, e.g. -O steps=64 -O baseline=blur")
    p.add_argument("--raw", default=None, metavar="FILE.npy", help="also save the raw attribution values")
    p.add_argument("--on-original", action="store_true",
                   help="draw the heatmap on each original photo at its own resolution (default: on the "
                        "model-input picture)")  # fmt: skip
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="class names, one per line, for the top-5 predictions printed per image")  # fmt: skip
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
    """Compute the attribution for ``args.image`` and write the overlay picture; returns the exit code (0)."""
    from convscope.cli import one_layer, picture_path, write_picture
    from convscope.predictions import predictions_text

    options = parse_options(list(args.option or []))
    images = list(args.image)
    if args.layer is not None:
        one_layer(scope, args.layer, "CAM methods explain one layer")
    if text := predictions_text(scope, images, labels=args.labels):
        print(text)
    att = scope.attribute(images if len(images) > 1 else images[0], method=args.method, target=args.target,
                          layer=args.layer, **options)  # fmt: skip
    picture = att.grid(alpha=args.alpha, cmap=args.cmap, on=images if args.on_original else None)
    scale = getattr(args, "scale", 1)
    scale = 1 if args.on_original and scale == "auto" else scale  # the photos' own resolution, as asked
    out = write_picture(picture, picture_path(args, "attribute", args.method), scale)
    if args.raw:
        np.save(args.raw, att.raw)
    where = f" at layer {att.layer!r}" if att.layer else ""
    names: list[str] = []
    if args.labels is not None:
        from convscope.predictions import read_labels

        names = read_labels(args.labels)
    if att.targets is None:
        targets = "custom"
    else:  # with --labels: "target class 3 (cat)"
        targets = ", ".join(f"{t} ({names[t]})" if 0 <= t < len(names) else str(t) for t in att.targets)
    print(f"{args.method}{where}, target class {targets} -> {out}")
    return 0
