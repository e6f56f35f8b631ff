"""convscope — see inside convolutional networks (PyTorch and Keras 3 on the torch backend).

Example::

    import convscope as cs
    scope = cs.Scope(model)
    print(scope.summary())
    scope.activations(image, layers="conv*")["conv_0"].grid(cols=8)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convscope.errors import (
    BackendError,
    CaptureError,
    ConvscopeError,
    InputError,
    LayerNotFoundError,
    ModelError,
    ModelLoadError,
    OptionError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CaptureError",
    "ConvscopeError",
    "InputError",
    "LayerNotFoundError",
    "ModelError",
    "ModelLoadError",
    "OptionError",
    "Scan",
    "Scope",
    "StoreMismatchError",
    "__version__",
    "attribution",
    "metrics",
    "objectives",
    "report",
    "reporting",
    "sample_image",
    "serve",
]

if TYPE_CHECKING:
    from convscope import attribution, reporting
    from convscope.attribution import metrics
    from convscope.dataset.errors import StoreMismatchError
    from convscope.dataset.scan import Scan
    from convscope.explorer import serve
    from convscope.optim import objectives
    from convscope.reporting import report
    from convscope.samples import sample_image
    from convscope.scope import Scope

_LAZY = {
    "Scan": "convscope.dataset.scan",
    "StoreMismatchError": "convscope.dataset.errors",
    "Scope": "convscope.scope",
    "report": "convscope.reporting",
    "sample_image": "convscope.samples",
    "serve": "convscope.explorer",
}
_SUBMODULES = {
    "attribution": "convscope.attribution",
    "metrics": "convscope.attribution.metrics",
    "objectives": "convscope.optim.objectives",
    "reporting": "convscope.reporting",
}


def __getattr__(name: str) -> Any:  # heavy imports (torch) only when first used
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'convscope' has no attribute {name!r}")
