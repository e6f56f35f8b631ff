"""Bundled demo material: the digits data, sample photos and one digit ConvNet in Keras and PyTorch.

Submodules load lazily so ``import convscope.demo`` stays cheap; heavy libraries (scikit-learn,
scikit-image, Keras) are imported only by the functions that need them.

Example:
    >>> from convscope.demo import load_digits_28
    >>> load_digits_28().x_train.shape
    (1437, 28, 28)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DigitsSplit": "data",
    "as_nchw": "data",
    "as_nhwc": "data",
    "load_digits_28": "data",
    "sample_photo": "data",
    "PHOTOS": "data",
    "TorchDigitsNet": "models",
    "DigitModels": "models",
    "Twins": "models",
    "keras_digits_model": "models",
    "torch_digits_model": "models",
    "train_keras": "models",
    "train_torch": "models",
    "trained_digit_models": "models",
    "trained_twins": "models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
