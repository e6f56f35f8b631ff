"""Command line: ``convscope summary|maps|filters|maximize|attribute|demo``.

Errors print one line (``convscope: error: ...``) and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convscope.errors import ConvscopeError

# Optional verbs live beside their feature: module -> (adder, runner), registered when importable.
_PLUGINS = {
    "maximize": ("convscope.optim.cli", "add_maximize_command", "run_maximize"),
    "attribute": ("convscope.attribution.cli", "add_attribute_command", "run_attribute"),
}


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 3,224,224; got {text!r}") from None
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers (one sample, no batch); got {text!r}")
    return shape


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The MODEL argument and its options, shared by every verb that loads a model."""
    p.add_argument("model", metavar="MODEL", help=".keras/.h5 file, TorchScript/.pt2 file, or package.module:factory")
    p.add_argument("--weights", help="weights for a factory model (state dict, loaded with weights_only=True)")
    p.add_argument("--input-shape", type=_shape, help="one sample's shape in model layout, e.g. 3,224,224")
    p.add_argument("--unsafe", action="store_true", help="load Keras files with safe_mode=False (trusted files only)")


def load_scope(args: argparse.Namespace) -> Any:
    """Build a :class:`convscope.Scope` from the parsed model arguments."""
    from convscope.loading import load_model
    from convscope.scope import Scope

    model = load_model(args.model, weights=args.weights, safe_mode=not args.unsafe)
    return Scope(model, input_shape=args.input_shape)


def _out_path(args: argparse.Namespace) -> Path:
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _grid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cols", type=int, help="tiles per row (default: near-square)")
    p.add_argument("--cmap", default=None, help="gray, viridis, magma, inferno, plasma, turbo, coolwarm")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")


def run_summary(scope: Any, args: argparse.Namespace) -> int:
    print(scope.summary())
    return 0


def run_maps(scope: Any, args: argparse.Namespace) -> int:
    acts = scope.activations(args.image, layers=args.layer)  # one pass, however many layers match
    opts: dict[str, Any] = {"cols": args.cols, "normalize": args.normalize, "labels": args.labels}
    if args.cmap:
        opts["cmap"] = args.cmap
    out = _out_path(args)
    for name, fm in acts.items():
        # several layers (a glob or type): one file each, named after the layer
        path = out if len(acts) == 1 else out.with_name(f"{out.stem}_{name.replace('/', '_')}{out.suffix}")
        fm.save(path, **opts)
        h, w = fm.channels_first().shape[-2:]
        print(f"{name}: {fm.num_channels} maps of {h}x{w} -> {path}")
    return 0


def run_filters(scope: Any, args: argparse.Namespace) -> int:
    filters = scope.filters(args.layer)
    opts: dict[str, Any] = {"mode": args.mode, "cols": args.cols}
    if args.cmap:
        opts["cmap"] = args.cmap
    out = _out_path(args)
    filters.save(out, **opts)
    print(f"{filters.name}: {filters.weights.shape[0]} filters of {filters.weights.shape[1:]} -> {out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from convscope.demo.run import run_demo as demo

    index = demo(Path(args.output), quick=args.quick)
    print(f"demo written: {index}")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[..., int]]]:
    parser = argparse.ArgumentParser(prog="convscope", description="See inside convolutional networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners: dict[str, Callable[..., int]] = {"summary": run_summary, "maps": run_maps, "filters": run_filters}

    p = sub.add_parser("summary", help="per-layer table: name, type, output shape, parameters")
    add_model_args(p)
    p = sub.add_parser("maps", help="feature maps of one layer for an image, as one grid PNG")
    add_model_args(p)
    p.add_argument("image", help="image file (PNG/JPEG)")
    p.add_argument("--layer", required=True, help="layer name, path, index, glob or type")
    p.add_argument("--normalize", default="channel", help="channel, layer, symmetric or none")
    p.add_argument("--labels", action="store_true", help="label each tile with its channel index")
    _grid_options(p)
    p = sub.add_parser("filters", help="kernels of a conv layer as one PNG")
    add_model_args(p)
    p.add_argument("--layer", required=True, help="conv layer name, path, index, glob or type")
    p.add_argument("--mode", default="auto", help="auto, rgb, channels or mean")
    _grid_options(p)
    p = sub.add_parser("demo", help="train the digit CNN twins and write demo-output/index.html")
    p.add_argument("-o", "--output", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--quick", action="store_true", help="fewer epochs and steps (for smoke tests)")

    for verb, (module_name, adder, runner) in _PLUGINS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        getattr(module, adder)(sub)
        runners[verb] = getattr(module, runner)
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            return run_demo(args)
        scope = load_scope(args)
        return runners[args.command](scope, args)
    except ConvscopeError as exc:
        print(f"convscope: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # files, images, option values from outside our checks
        print(f"convscope: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130




if __name__ == "__main__":
    sys.exit(main())
