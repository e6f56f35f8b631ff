"""Loading models named on the command line: Keras files, TorchScript/``torch.export`` files, factories.

Everything loads safely by default: Keras with ``safe_mode=True`` (no arbitrary lambdas), PyTorch
weights with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

from convscope.errors import BackendError, ModelLoadError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _keras() -> Any:
    """Keras on the torch backend, or a :class:`BackendError` saying why not (never an ImportError)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    wanted = os.environ["KERAS_BACKEND"]
    try:
        import keras
    except ImportError as exc:
        raise BackendError(
            f"Keras could not start its {wanted!r} backend ({exc}); convscope runs Keras on torch: set "
            "KERAS_BACKEND=torch before anything imports keras"
        ) from exc
    backend = keras.backend.backend()
    if backend != "torch":
        raise BackendError(
            f"keras was already imported on the {backend!r} backend in this process; convscope loads Keras "
            "files on the torch backend: set KERAS_BACKEND=torch before the first `import keras`"
        )
    return keras


def load_model(spec: str, *, weights: str | None = None, safe_mode: bool = True) -> Any:
    """Load ``spec``: a ``.keras``/``.h5`` file, a TorchScript or ``torch.export`` (``.pt2``) file,
    or ``package.module:factory`` (called with no arguments; ``weights`` then loads a state dict or
    Keras weights file into the result).

    Example::

        model = load_model("my_pkg.nets:build_cnn", weights="cnn.pt")
    """
    path = Path(spec)
    if path.suffix.lower() in KERAS_SUFFIXES or path.exists():
        if weights is not None:
            raise ModelLoadError(f"--weights goes with a 'package.module:factory' model, not with the file {spec!r}")
        return _load_file(path, safe_mode=safe_mode)
    if ":" in spec:
        model = _load_factory(spec)
        if weights is not None:
            load_weights(model, weights)
        else:
            warnings.warn(
                f"factory {spec!r} was loaded without --weights: its weights are the factory's own "
                "initialisation (random unless the factory loads trained weights)",
                UserWarning,
                stacklevel=2,
            )
        return model
    raise ModelLoadError(
        f"cannot load model {spec!r}: no such file, and not of the form 'package.module:factory'; "
        "pass a .keras/.h5 file, a TorchScript or torch.export (.pt2) file, or a factory"
    )


def _load_file(path: Path, *, safe_mode: bool) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    if path.suffix.lower() in KERAS_SUFFIXES:
        _check_keras_file(path)
        keras = _keras()
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
        except Exception as exc:
            raise ModelLoadError(f"Keras could not load {str(path)!r}: {exc}") from exc
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{str(path)!r} is neither a Keras file (.keras/.h5) nor a TorchScript/torch.export archive"
        )
    names = zipfile.ZipFile(path).namelist()
    import torch

    try:
        if any(n.endswith("models/model.json") or n.endswith("archive_format") for n in names):
            with warnings.catch_warnings():  # torch's own pytree deprecation, not the user's concern
                warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
                return torch.export.unflatten(torch.export.load(path))
        if any("/code/" in n for n in names):
            return torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"PyTorch could not load {str(path)!r}: {exc}") from exc
    raise ModelLoadError(
        f"{str(path)!r} looks like a saved state dict or pickled object, not a model; build the model "
        "with a factory and pass the file as weights: `convscope ... package.module:factory --weights FILE`"
    )


def _check_keras_file(path: Path) -> None:
    """A ``.keras`` file is a zip archive holding ``config.json``; ``.h5`` files are HDF5. Say so plainly
    instead of Keras' "File not found" for a file that exists but is not one."""
    with path.open("rb") as f:
        head = f.read(8)
    if path.suffix.lower() == ".keras":
        try:
            readable = zipfile.is_zipfile(path) and zipfile.ZipFile(path).testzip() is None
        except (zipfile.BadZipFile, OSError, EOFError):
            readable = False
        if head.startswith(b"PK\x03\x04") and not readable:
            raise ModelLoadError(
                f"{str(path)!r} is not a valid Keras archive: it starts like a zip archive but cannot be read "
                "as one — a truncated or damaged zip archive (an interrupted download or copy?); save the "
                "model again with model.save('model.keras')"
            )
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(
                f"{str(path)!r} is not a valid Keras archive: a .keras file is a zip archive written by "
                f"model.save('model.keras'), but this file starts with {head!r} (truncated or not a model?)"
            )
        if "config.json" not in zipfile.ZipFile(path).namelist():
            raise ModelLoadError(
                f"{str(path)!r} is not a valid Keras archive: the zip holds no config.json; save the model "
                "with model.save('model.keras')"
            )
    elif zipfile.is_zipfile(path):
        raise ModelLoadError(f"{str(path)!r} is a zip archive, not an HDF5 file: a Keras v3 archive is named "
                             "*.keras; rename the file")  # fmt: skip
    elif head != _HDF5_MAGIC:
        raise ModelLoadError(
            f"{str(path)!r} is not an HDF5 file (legacy Keras .h5): it starts with {head!r}; save the model "
            "with model.save('model.keras') or model.save('model.h5')"
        )


def _load_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"factory {spec!r} must look like 'package.module:function'")
    if os.getcwd() not in sys.path:  # let users name modules in the current folder
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import {module_name!r} for factory {spec!r}: {exc}") from exc
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ModelLoadError(f"module {module_name!r} has no attribute {attr!r}; {_callables(factory, part)}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ModelLoadError(f"{spec!r} is not callable")
    try:
        return factory()
    except Exception as exc:
        raise ModelLoadError(f"factory {spec!r} raised {type(exc).__name__}: {exc}") from exc


def _callables(owner: Any, wanted: str) -> str:
    """The public functions and classes ``owner`` defines, closest to ``wanted`` first, for a message."""
    import difflib

    own = getattr(owner, "__name__", None)
    names = [n for n, v in vars(owner).items() if not n.startswith("_") and callable(v)
             and getattr(v, "__module__", own) == own]  # fmt: skip
    if not names:
        return "it defines no public functions or classes"
    names.sort(key=lambda n: (-difflib.SequenceMatcher(None, wanted.lower(), n.lower()).ratio(),
                              -difflib.SequenceMatcher(None, wanted, n).ratio()))  # fmt: skip
    shown = ", ".join(repr(n) for n in names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
    return f"its functions and classes, closest first: {shown}"


def load_weights(model: Any, weights: str | os.PathLike[str]) -> None:
    """Load a weights file into ``model``: a PyTorch state dict (``weights_only=True``) or Keras weights."""
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadError(f"weights file {str(path)!r} does not exist")
    from convscope.adapters import is_keras_model

    if is_keras_model(model):
        try:
            model.load_weights(path)
        except Exception as exc:
            raise ModelLoadError(f"Keras could not load weights {str(path)!r}: {exc}") from exc
        return
    _check_torch_weights(path)
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load {str(path)!r} safely (weights_only=True): {exc}. Save a plain state dict "
            "with torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # common checkpoint layout
    if not isinstance(state, dict):
        raise ModelLoadError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"weights {str(path)!r} do not fit the model: {exc}") from exc


def _check_torch_weights(path: Path) -> None:
    """``torch.save`` writes a zip archive (or, before torch 1.6, a pickle starting with byte 0x80);
    anything else gets a plain message instead of torch's unpickler internals."""
    if zipfile.is_zipfile(path):
        return
    with path.open("rb") as f:
        head = f.read(8)
    if head[:1] == b"\x80":
        return
    what = "an empty file" if not head else f"a file starting with {head!r}"
    raise ModelLoadError(
        f"weights file {str(path)!r} is not a PyTorch weights file: torch.save writes a zip archive, and this "
        f"is {what}; save a state dict with torch.save(model.state_dict(), path)"
    )
