"""Loading models named on the command line: Keras files, TorchScript/``torch.export`` files, factories.

Everything loads safely by default: Keras with ``safe_mode=True`` (no arbitrary lambdas), PyTorch
weights with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from convscope.errors import ModelLoadError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

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
        return model
    raise ModelLoadError(
        f"cannot load model {spec!r}: no such file, and not of the form 'package.module:factory'; "
        "pass a .keras/.h5 file, a TorchScript or torch.export (.pt2) file, or a factory"
    )


def _load_file(path: Path, *, safe_mode: bool) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    if path.suffix.lower() in KERAS_SUFFIXES:
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
            return torch.export.unflatten(torch.export.load(path))
        if any("/code/" in n for n in names):
            return torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"PyTorch could not load {str(path)!r}: {exc}") from exc
    raise ModelLoadError(
        f"{str(path)!r} looks like a saved state dict or pickled object, not a model; build the model "
        "with a factory and pass the file as weights: `convscope ... package.module:factory --weights FILE`"
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
            raise ModelLoadError(f"module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ModelLoadError(f"{spec!r} is not callable")
    try:
        return factory()
    except Exception as exc:
        raise ModelLoadError(f"factory {spec!r} raised {type(exc).__name__}: {exc}") from exc


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
