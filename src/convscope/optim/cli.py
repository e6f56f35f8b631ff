"""``convscope maximize``: synthesise what channels or classes respond to, written as one PNG gallery.

Registered by :mod:`convscope.cli` through :func:`add_maximize_command` and :func:`run_maximize`.

Examples::

    convscope maximize model.keras --layer conv_1 --channels 0-15 -o conv_1.png
    convscope maximize pkg.nets:vgg16 --weights vgg.pt --layer features.17 --channels 0-7 --size 128 -o f17.jpg
    convscope maximize model.keras --class 0-9 --steps 128          # writes maximize_class_0-9.png
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from convscope.errors import OptionError

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_indices(text: str, what: str = "channels") -> list[int]:
    """``"0-15"``, ``"3"``, ``"0,2,5-7"`` -> a list of ints (ranges inclusive, order kept, no repeats).

    Example: ``parse_indices("0-2,7")`` -> ``[0, 1, 2, 7]``
    """
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise OptionError(f"--{what} {text!r} is not allowed; pass indices and inclusive ranges such as "
                              "0-15 or 0,3,8-11")  # fmt: skip
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        out.extend(i for i in range(lo, hi + 1) if i not in out)
    return out


def add_maximize_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``maximize`` verb to ``subparsers`` (from ``ArgumentParser.add_subparsers``); returns its parser."""
    from convscope.cli import add_choice, add_model_args, add_picture_options
    from convscope.optim.objectives import OBJECTIVES
    from convscope.optim.recipes import RECIPES

    p = subparsers.add_parser(
        "maximize",
        help="synthesise images that maximise channels (--layer) or classes (--class), as one PNG",
        description="Activation maximisation: one image per channel of --layer, or per class of --class.",
    )
    add_model_args(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--layer", help="layer name, path, index or glob naming ONE layer")
    target.add_argument("--class", dest="classes", metavar="K", help="class index or range, e.g. 3 or 0-9")
    p.add_argument("--channels", help="channel indices/ranges of --layer, e.g. 0-15 (default: every channel)")
    per_layer = [k for k in ("channel", "neuron", "layer") if k in OBJECTIVES]
    add_choice(p, "--objective", per_layer, default="channel",
               help="channel mean, neuron at the centre, or layer (DeepDream, one image)")  # fmt: skip
    add_choice(p, "--recipe", list(RECIPES), default="default",
               help="; ".join(f"{k}: {r.description}" for k, r in RECIPES.items()))  # fmt: skip
    p.add_argument("--steps", type=int, help="optimiser steps (default: the recipe's, 256)")
    p.add_argument("--size", type=int, help="image side in pixels (default: the model's input size, else 128)")
    p.add_argument("--lr", type=float, help="Adam step size (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, help="images optimised together (default: what fits in memory)")
    p.add_argument("--cols", type=int, help="tiles per row (default: near-square)")
    p.add_argument("--no-labels", action="store_true", help="do not write labels above the images")
    add_picture_options(p, "maximize_LAYER.png or maximize_class_K.png")
    return p  # type: ignore[no-any-return]


def build_objective(scope: Any, args: argparse.Namespace) -> Any:
    """The objective the parsed arguments ask for."""
    from convscope.optim import objectives
    from convscope.optim.optimize import channel_count

    if args.classes is not None:
        if args.channels is not None:
            raise OptionError("--channels applies to --layer; with --class give the classes as --class 0-9")
        return objectives.logit(parse_indices(args.classes, "class"))
    if args.objective == "layer":
        if args.channels is not None:
            raise OptionError("--objective layer optimises the whole layer (one image); drop --channels")
        return objectives.layer(args.layer)
    if args.channels is not None:
        channels = parse_indices(args.channels)
    else:
        channels = list(range(channel_count(scope, args.layer, size=args.size)))
    make = objectives.channel if args.objective == "channel" else objectives.neuron
    return make(args.layer, channels)


def run_maximize(scope: Any, args: argparse.Namespace) -> int:
    """Handler of ``convscope maximize``: optimise, write the gallery picture, print one summary line."""
    from convscope.cli import one_layer, picture_path, write_picture

    if args.layer is not None:
        one_layer(scope, args.layer, "an objective reads one layer")
    objective = build_objective(scope, args)
    vis = scope.maximize(objective, steps=args.steps, size=args.size, lr=args.lr, seed=args.seed,
                         recipe=args.recipe, batch_size=args.batch_size, progress=None)  # fmt: skip
    name = args.layer if args.layer is not None else f"class_{args.classes}"
    out = write_picture(vis.grid(labels=not args.no_labels, cols=args.cols), picture_path(args, "maximize", name),
                        getattr(args, "scale", 1))  # fmt: skip
    lo, hi = float(vis.values.min()), float(vis.values.max())
    steps = f"{vis.meta['steps']} steps" + (" (the recipe's default)" if args.steps is None else "")
    print(f"{objective.name}: {len(vis)} image(s) of {vis.images.shape[1]}×{vis.images.shape[2]}, {steps}, "
          f"recipe {vis.meta['recipe']!r}, objective {lo:.4g}..{hi:.4g} -> {out}")  # fmt: skip
    return 0
