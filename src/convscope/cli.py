"""Command line: ``convscope summary|maps|filters|maximize|attribute|demo``.

Errors print one line (``convscope: error: ...``) and exit with status 2, without a traceback; warnings
print one line each (``convscope: warning: ...``). Keras always runs on the torch backend here.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from convscope.errors import ConvscopeError, OptionError, closest, hint

PICTURE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                    ".tif": "TIFF", ".tiff": "TIFF"}  # fmt: skip
"""``-o`` suffix -> Pillow format of every picture verb."""

# Optional verbs live beside their feature: module -> (adder, runner), registered when importable.
_PLUGINS = {
    "maximize": ("convscope.optim.cli", "add_maximize_command", "run_maximize"),
    "attribute": ("convscope.attribution.cli", "add_attribute_command", "run_attribute"),
    "serve": ("convscope.explorer.cli", "add_serve_command", "run_serve"),
    "report": ("convscope.reporting.cli", "add_report_command", "run_report"),
    "scan": ("convscope.dataset.cli", "add_scan_command", "run_scan"),
    "top": ("convscope.dataset.cli", "add_top_command", "run_top"),
}


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``convscope: error: ...``, naming the flags; no
    usage block. Used for the main parser and, as ``parser_class``, every sub-command."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        print(f"convscope: error: {_argparse_message(message)}", file=sys.stderr)
        sys.exit(2)


def _argparse_message(message: str) -> str:
    """argparse's wording in ours: unknown commands get the closest verb, ``argument --x:`` reads ``--x:``."""
    m = re.search(r"argument COMMAND: invalid choice: '?([^' ]+)'? \(choose from (.*)\)", message)
    if m:
        verbs = [v.strip(" '\"") for v in m.group(2).split(",")]
        near = closest(m.group(1), verbs)
        return (f"unknown command {m.group(1)!r}" + (f" (closest: {near[0]!r})" if near else "")
                + f"; commands: {', '.join(verbs)}")  # fmt: skip
    m = re.search(r"one of the arguments (\S+) (\S+) is required", message)
    if m:
        return f"pass {m.group(1)} (channels of a layer) or {m.group(2)} (class scores), e.g. {m.group(1)} conv1"
    return re.sub(r"^argument ([^:]+): ", lambda g: g.group(1).split("/")[-1] + ": ", message)


def _unknown_option(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> str:
    """``unknown option --inptu-shape (closest: --input-shape)`` for the first of ``extras``."""
    sub = _subparser(parser, getattr(args, "command", None)) or parser
    flags = [f for f in sub._option_string_actions if f.startswith("--")]
    first = next((e for e in extras if e.startswith("-")), extras[0])
    if not first.startswith("-"):
        return f"unexpected argument {first!r}; see convscope {args.command or ''} --help".replace("  ", " ")
    near = closest(first.split("=")[0], flags)
    return f"unknown option {first.split('=')[0]}" + (f" (closest: {near[0]})" if near else "")


def _subparser(parser: argparse.ArgumentParser, verb: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and verb in action.choices:
            return action.choices[verb]  # type: ignore[no-any-return]
    return None


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
    from convscope.preprocessing import Preprocess, Resize

    add_choice(p, "--preprocess", [m.value for m in Preprocess], default=None,
               help="image preprocessing preset: torch (ImageNet mean/std on [0,1]), caffe (BGR, 0-255 minus "
                    "the ImageNet mean), tf ([-1,1]); default: scale to [0,1], or --mean/--std")  # fmt: skip
    add_choice(p, "--resize", [m.value for m in Resize], default="squash",
               help="how images reach the input size: squash (stretch), crop (short side, then centre), "
                    "pad (letterbox on black)")  # fmt: skip
    p.add_argument("--mean", metavar="R,G,B", help="per-channel mean subtracted after scaling to [0,1]")
    p.add_argument("--std", metavar="R,G,B", help="per-channel std divided by after the mean")


def _numbers(flag: str, text: str | None) -> tuple[float, ...] | None:
    """``--mean 0.485,0.456,0.406`` → a tuple of floats (one value or one per channel)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values:
        raise OptionError(f"{flag} {text!r} is not a list of numbers; pass one per channel, e.g. "
                          f"{flag} {'0.485,0.456,0.406' if flag == '--mean' else '0.229,0.224,0.225'}")  # fmt: skip
    return values


def load_scope(args: argparse.Namespace) -> Any:
    """Build a :class:`convscope.Scope` from the parsed model arguments."""
    from convscope.loading import load_model
    from convscope.scope import Scope

    mean, std = _numbers("--mean", getattr(args, "mean", None)), _numbers("--std", getattr(args, "std", None))
    preprocess = getattr(args, "preprocess", None)
    if preprocess is not None and (mean is not None or std is not None):
        flags = " and ".join(f for f, v in (("--mean", mean), ("--std", std)) if v is not None)
        raise OptionError(f"--preprocess {preprocess} sets the mean and std itself; drop {flags} or --preprocess")
    model = load_model(args.model, weights=args.weights, safe_mode=not args.unsafe)
    return Scope(model, input_shape=args.input_shape, preprocess=preprocess,
                 resize=getattr(args, "resize", "squash"), mean=mean, std=std)  # fmt: skip


# -- options with a fixed set of values: checked by us, one line with the closest names ------------------
def add_choice(p: argparse.ArgumentParser, flag: str, allowed: Sequence[str], *, default: str | None,
               help: str, dest: str | None = None) -> None:  # fmt: skip
    """Add ``flag`` taking one of ``allowed`` (listed in its help). Unlike argparse ``choices``, a bad
    value gives one ``convscope: error`` line naming the closest values (see :func:`check_choices`)."""
    dest = dest or flag.lstrip("-").replace("-", "_")
    shown = f" (default: {default})" if default is not None else ""
    p.add_argument(flag, dest=dest, default=default, metavar=flag.lstrip("-").upper(),
                   help=f"{help}; one of: {', '.join(allowed)}{shown}")  # fmt: skip
    table = dict(p.get_default("_choices") or {})
    table[dest] = (flag, tuple(allowed))
    p.set_defaults(_choices=table)


def check_choices(args: argparse.Namespace) -> None:
    """Raise :class:`OptionError` for the first option registered by :func:`add_choice` whose value is
    not allowed, e.g. ``--method 'gradcm' is not allowed; choose one of: ... (closest: 'gradcam')``."""
    for dest, (flag, allowed) in (getattr(args, "_choices", None) or {}).items():
        value = getattr(args, dest, None)
        if value is not None and value not in allowed:
            near = hint(str(value), allowed)
            raise OptionError(f"{flag} {value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}"
                              + (f" ({near})" if near else ""))  # fmt: skip


def colormap_names() -> list[str]:
    """The colour maps every ``--cmap`` offers: the renderer's registry, so help and errors agree."""
    from convscope.render.colormaps import COLORMAPS

    return list(COLORMAPS)


# -- pictures: one rule for -o, --scale and the file format on every picture verb ---------------------
def add_picture_options(p: argparse.ArgumentParser, example: str) -> None:
    """``-o/--output`` (optional; default a name from the verb and layer, e.g. ``example``) and ``--scale``."""
    kinds = " ".join(PICTURE_SUFFIXES)
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help=f"picture to write, format from the suffix ({kinds}); default: {example}")  # fmt: skip
    p.add_argument("--scale", type=_scale, default="auto", metavar="N",
                   help="enlarge the final picture N times, nearest neighbour; default auto: the smallest "
                        f"whole factor (at most {AUTO_SCALE_MAX}) that makes the shorter side >= {AUTO_SCALE_SIDE} px")  # fmt: skip


AUTO_SCALE_SIDE, AUTO_SCALE_MAX = 256, 8
"""``--scale auto``: enlarge until the shorter side is at least this many pixels, by at most this factor."""


def _scale(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'auto'; got {text!r}") from None


def auto_scale(width: int, height: int) -> int:
    """The ``--scale auto`` factor: the smallest whole N (1..8) with ``N * min(width, height) >= 256``."""
    short = max(1, min(width, height))
    return max(1, min(AUTO_SCALE_MAX, -(-AUTO_SCALE_SIDE // short)))


def check_picture_options(args: argparse.Namespace) -> None:
    """Refuse an unknown ``-o`` suffix or ``--scale`` below 1 before any model is loaded."""
    if getattr(args, "output", None) is not None and args.command != "demo":
        suffix = Path(args.output).suffix.lower()
        if suffix not in PICTURE_SUFFIXES:
            raise OptionError(f"-o {args.output!r}: cannot tell the picture format from the suffix "
                              f"{suffix or '(none)'!r}; use one of: {' '.join(PICTURE_SUFFIXES)}")  # fmt: skip
    scale = getattr(args, "scale", 1)
    if isinstance(scale, int) and scale < 1:
        raise OptionError(f"--scale {scale} is not allowed; pass a whole number >= 1 (1 keeps the size)")


def picture_path(args: argparse.Namespace, verb: str, name: str, *, several: bool = False) -> Path:
    """``-o`` as given; with ``several`` pictures ``OUT_<name>.ext``; without ``-o`` ``<verb>_<name>.png``.
    A later call of a module, printed ``name@1``, is written ``name-call1`` (``@`` is awkward in shells)."""
    name = re.sub(r"@(\d+)$", r"-call\1", name)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("+", "p")).strip("_.") or "model"
    given = getattr(args, "output", None)
    if given is None:
        return Path(f"{verb}_{safe}.png")
    out = Path(given)
    return out.with_name(f"{out.stem}_{safe}{out.suffix}") if several else out


_NOTED: set[str] = set()


def write_picture(img: Any, path: Path, scale: int | str = 1) -> Path:
    """Save the PIL image ``img`` to ``path`` (format from the suffix), enlarged ``scale`` times
    (``"auto"``: :func:`auto_scale`, printed when it enlarges)."""
    from PIL import Image

    if scale == "auto":
        scale = auto_scale(img.width, img.height)
        note = f"--scale auto: pictures enlarged {scale}x (pass --scale 1 to keep their size)"
        if scale > 1 and note not in _NOTED:  # once per size factor and run
            _NOTED.add(note)
            print(note)
    assert isinstance(scale, int)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    fmt = PICTURE_SUFFIXES[path.suffix.lower()]
    if fmt in ("JPEG", "BMP") and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return path


# -- messages: library hints rewritten in CLI terms ----------------------------------------------------
_FLAGS = {"input_shape": "--input-shape", "size": "--size", "steps": "--steps", "lr": "--lr", "seed": "--seed",
          "batch_size": "--batch-size", "channels": "--channels", "cols": "--cols", "cmap": "--cmap",
          "normalize": "--normalize", "mode": "--mode", "recipe": "--recipe", "method": "--method",
          "layer": "--layer", "target": "--target", "alpha": "--alpha"}  # fmt: skip
_REWRITES: tuple[tuple[str, str], ...] = (
    (r"pass Scope\(model, input_shape=\(C, H, W\)\) \(PyTorch\) or \(H, W, C\) \(Keras\)"
     r"(, or run scope\.activations\(\.\.\.\) on an input first)?", "pass --input-shape C,H,W (PyTorch) or H,W,C (Keras)"),
    (r"Pass size=\(H, W\) to maximize \(CLI: --size\) or give the scope its input shape: "
     r"Scope\(model, input_shape=\.\.\.\) \(CLI: --input-shape C,H,W\)", "Pass --size N or --input-shape C,H,W"),
    (r"[\w.]+\([^()]*(?:\([^()]*\)[^()]*)*\) \(CLI: ([^)]*)\)", r"\1"),  # "call(...) (CLI: --flag)" -> "--flag"
    (r"\binput_shape=\((\d+), (\d+), (\d+)\)", r"--input-shape \1,\2,\3"),
    (r"as \(C, H, W\) in the model's own layout", "as --input-shape C,H,W (PyTorch) or H,W,C (Keras)"),
    (r"as \(H, W, C\) in the model's own layout", "as --input-shape H,W,C (Keras) or C,H,W (PyTorch)"),
)  # fmt: skip


def _numbers_flag(m: re.Match[str]) -> str:
    values = ",".join(v.strip() for v in m.group(2).split(",") if v.strip())
    return f"--{m.group(1)} {values} has {m.group(3)} values; pass 1 or {m.group(4)}"


def cli_message(text: str) -> str:
    """A library message with its Python spellings (``Scope(model, input_shape=...)``, ``steps=0``)
    turned into the command-line flags that set the same thing; one line."""
    text = re.sub(r"\b(mean|std)=\(([^)]*)\) has (\d+) values; pass 1 value or (\d+) \(one per channel\)",
                  _numbers_flag, text)  # fmt: skip
    text = re.sub(r"leave layer=None(?: for the last one| for the default \(the last block's output\))?",
                  "omit --layer to use the last block's output", text)  # fmt: skip
    for pattern, repl in _REWRITES:
        text = re.sub(pattern, repl, text)
    text = re.sub(r"(?<![\w.-])(" + "|".join(_FLAGS) + r")=(?=\S)",
                  lambda m: _FLAGS[m.group(1)] + " ", text)  # fmt: skip
    return " ".join(text.split())


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside: every warning prints as ``convscope: warning: ...`` on one line, no source line."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:  # fmt: skip
        kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
        print(f"convscope: warning: {kind}{cli_message(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def force_torch_backend() -> None:
    """The CLI owns its process: Keras runs on torch whatever ``KERAS_BACKEND`` says (one note if changed)."""
    wanted = os.environ.get("KERAS_BACKEND")
    if wanted and wanted != "torch" and "keras" not in sys.modules:
        print(f"convscope: note: KERAS_BACKEND={wanted} overridden: the CLI runs Keras on the torch backend",
              file=sys.stderr)  # fmt: skip
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"


def one_layer(scope: Any, query: str, why: str) -> None:
    """Refuse a ``--layer`` that matches several layers, listing them (``…`` and the count past 8)."""
    from convscope.layers import ambiguous

    found = scope.targets(query)
    if len(found) > 1:
        names = [scope.index.display_name(t.handle) + ("" if t.item is None else f"[{t.item}]") for t in found]
        raise ambiguous(query, names, why)


def _grid_options(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--cols", type=int, help="tiles per row (default: near-square)")
    add_choice(p, "--cmap", colormap_names(), default=None, help="colour map (default: gray, coolwarm for symmetric)")
    add_picture_options(p, example)


def run_summary(scope: Any, args: argparse.Namespace) -> int:
    print(scope.summary())
    return 0


def run_maps(scope: Any, args: argparse.Namespace) -> int:
    from convscope.featuremaps import index_ranges
    from convscope.optim.cli import parse_indices
    from convscope.predictions import predictions_text

    channels = parse_indices(args.channels) if args.channels is not None else None
    if text := predictions_text(scope, [args.image], labels=args.labels):
        print(text)
    acts = scope.activations(args.image, layers=args.layer)  # one pass, however many layers match
    if args.layer is None:
        print(f"--layer not given: showing every layer with spatial maps ({len(acts)}): "
              f"{', '.join(acts)}")  # fmt: skip
    elif len(acts) > 1:
        print(f"--layer {args.layer} matched {len(acts)} outputs; writing one file each")
    opts: dict[str, Any] = {"cols": args.cols, "normalize": args.normalize, "labels": args.tile_labels,
                            "channels": channels}  # fmt: skip
    if args.cmap:
        opts["cmap"] = args.cmap
    for name, fm in acts.items():  # several layers (a glob or type): one file each, named after the layer
        try:
            picture = fm.grid(**opts)
        except ConvscopeError as exc:
            if channels is None:
                raise
            raise OptionError(str(exc).replace(f"channels={index_ranges(channels)}", f"--channels {args.channels}",
                                               1)) from None  # fmt: skip
        path = write_picture(picture, picture_path(args, "maps", name, several=len(acts) > 1), args.scale)
        shown = f"{fm.num_channels}" if channels is None else f"{len(channels)} of {fm.num_channels}"
        if fm.is_vector:  # Dense, global pooling, logits: drawn as a strip of units
            print(f"{name}: {shown} units (a vector, drawn as a strip) -> {path}")
            continue
        h, w = fm.channels_first().shape[-2:]
        print(f"{name}: {shown} maps of {h}x{w} -> {path}")
    return 0


def run_filters(scope: Any, args: argparse.Namespace) -> int:
    layer = args.layer
    if layer is None:
        convs = [h for h in scope.adapter.handles if scope._has_conv_kernel(h)]
        if not convs:
            raise OptionError("this model has no 2-D convolution layer, so there are no filters to draw")
        layer = convs[0].name
        print(f"--layer not given: using the first conv layer, {scope.index.display_name(convs[0])!r}")
    filters = scope.filters(layer)
    opts: dict[str, Any] = {"mode": args.mode, "cols": args.cols}
    if args.cmap:
        opts["cmap"] = args.cmap
    out = write_picture(filters.grid(**opts), picture_path(args, "filters", filters.name), args.scale)
    print(f"{filters.name}: {filters.weights.shape[0]} filters of {filters.weights.shape[1:]} -> {out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from convscope.demo.run import run_demo as demo

    index = demo(Path(args.output), quick=args.quick)
    print(f"demo written: {index}")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[..., int]]]:
    parser = CliParser(prog="convscope", description="See inside convolutional networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    runners: dict[str, Callable[..., int]] = {"summary": run_summary, "maps": run_maps, "filters": run_filters}

    p = sub.add_parser("summary", help="per-layer table: name, type, output shape, parameters")
    add_model_args(p)
    from convscope.render.colormaps import Normalize
    from convscope.render.filters import FilterMode

    p = sub.add_parser("maps", help="feature maps of one layer for an image, as one grid picture")
    add_model_args(p)
    p.add_argument("image", help="image file (PNG/JPEG)")
    p.add_argument("--layer", default=None,
                   help="layer name, path, index, glob or type; 'name@1' is the second call of a module run "
                        "twice (default: every layer with spatial maps, listed)")  # fmt: skip
    p.add_argument("--channels", help="channel indices/ranges to show, e.g. 0-15 or 0,3,8-11 (default: all)")
    add_choice(p, "--normalize", [m.value for m in Normalize], default="channel", help="how values become colours")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="class names, one per line, for the top-5 predictions printed for the image")  # fmt: skip
    p.add_argument("--tile-labels", action="store_true", help="label each tile with its channel index")
    _grid_options(p, "maps_LAYER.png")
    p = sub.add_parser("filters", help="kernels of a conv layer as one picture")
    add_model_args(p)
    p.add_argument("--layer", default=None,
                   help="conv layer name, path, index, glob or type (default: the first conv layer)")
    add_choice(p, "--mode", [m.value for m in FilterMode], default="auto", help="how kernels become tiles")
    _grid_options(p, "filters_LAYER.png")
    p = sub.add_parser("demo", help="train the same digit CNN in Keras and in PyTorch, then write demo-output/index.html")
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
    force_torch_backend()  # before anything imports keras
    _NOTED.clear()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keras' save/load may import TensorFlow: no C++ logs
    # nor its oneDNN notice (printed before TF reads the level); TensorFlow computes nothing here: the engine is torch
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    parser, runners = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(_unknown_option(parser, args, extras))
    if args.command is None:
        parser.print_help()
        return 2
    with one_line_warnings():
        try:
            check_choices(args)
            check_picture_options(args)
            if args.command == "demo":
                return run_demo(args)
            scope = load_scope(args) if hasattr(args, "model") else None  # `top` reads a store, no model
            return runners[args.command](scope, args)
        except ConvscopeError as exc:
            print(f"convscope: error: {cli_message(str(exc))}", file=sys.stderr)
            return 2
        except (OSError, ValueError) as exc:  # files, images, option values from outside our checks
            print(f"convscope: error: {type(exc).__name__}: {cli_message(str(exc))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("convscope: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
