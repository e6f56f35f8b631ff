"""The attribution method registry and the base class every method derives from.

A method is one small class: it names itself, states its option defaults and overrides one step
(``compute`` for a whole algorithm, or a narrower hook its family base defines, such as
``CAM.weights``). Constructors only store options; values are validated when work starts.

Example::

    class MyCAM(CAM):
        \"\"\"Grad-CAM with max-pooled instead of averaged gradients.\"\"\"
        name = "maxgradcam"

        def weights(self, p, job):
            return p.grad.amax(dim=(2, 3), keepdim=True)

    scope.attribute(x, method="maxgradcam")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from convscope._warnings import user_stacklevel as user_stacklevel  # re-exported for attribution
from convscope.errors import OptionError, check_choice, hint

if TYPE_CHECKING:
    from convscope.attribution.engine import Job

E = TypeVar("E", bound=Enum)


class Grid(str, Enum):
    """Where a method's raw values live."""

    INPUT = "input"  # the model input's own shape and layout (signed, per channel)
    LAYER = "layer"  # (N, h, w) on the chosen layer's spatial grid
    PIXEL = "pixel"  # (N, H, W) on the input's spatial grid, no channels


class Reduce(str, Enum):
    """How input-grid values become one non-negative value per pixel for ``.maps``."""

    ABS_MAX = "abs_max"  # max over channels of |v| (Simonyan et al. 2014)
    ABS_SUM = "abs_sum"  # |sum over channels of v|
    POSITIVE_SUM = "positive_sum"  # max(0, sum over channels of v)
    L2 = "l2"  # Euclidean norm over channels


@dataclass
class Raw:
    """What ``Method.compute`` returns: raw values on the method's grid, plus IG's convergence delta
    (``Σ values − gap``) and ``gap = f(x) − f(x')`` per sample."""

    values: torch.Tensor
    delta: torch.Tensor | None = None
    gap: torch.Tensor | None = None


_REGISTRY: dict[str, type[Method]] = {}


class Method:
    """Base class of attribution methods; subclasses with a ``name`` register themselves.

    Class attributes: ``name`` (registry key), ``grid`` (:class:`Grid`), ``uses_layer`` (needs a layer:
    the CAM family), ``uses_target`` (False for class-agnostic methods), ``score_power`` (how raw
    values grow with the target score: 1 for linear methods, 2 for squared ones, 0 when their size is
    not tied to the score; used to flag near-zero maps) and ``defaults`` (option name → default; merged
    along the class hierarchy).
    """

    name: ClassVar[str] = ""
    grid: ClassVar[Grid] = Grid.INPUT
    uses_layer: ClassVar[bool] = False
    uses_target: ClassVar[bool] = True
    score_power: ClassVar[int] = 1
    defaults: ClassVar[Mapping[str, Any]] = {}
    all_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get("defaults", {}))
        cls.all_defaults = MappingProxyType(merged)
        name = cls.__dict__.get("name")
        if name:
            _REGISTRY[name] = cls

    def __init__(self, **options: Any) -> None:
        for key in options:
            if key not in self.all_defaults:
                allowed = ", ".join(map(repr, self.all_defaults)) or "none"
                near = hint(key, self.all_defaults)
                raise OptionError(f"method {self.name!r} has no option {key!r}; its options: {allowed}"
                                  + (f" ({near})" if near else ""))  # fmt: skip
        self.options: dict[str, Any] = {**self.all_defaults, **options}

    def compute(self, job: Job) -> Raw:
        """Raw attributions for ``job`` on this method's grid."""
        raise NotImplementedError

    # -- option access, validated where work starts ------------------------------------------
    def int_option(self, key: str, minimum: int = 1) -> int:
        value = self.options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise OptionError(f"{self.name}: {key}={value!r} is not allowed; pass an int >= {minimum}")
        return int(value)

    def float_option(self, key: str, minimum: float = 0.0) -> float:
        value = self.options[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise OptionError(f"{self.name}: {key}={value!r} is not allowed; pass a number >= {minimum}")
        return float(value)

    def bool_option(self, key: str) -> bool:
        value = self.options[key]
        if not isinstance(value, bool):
            raise OptionError(f"{self.name}: {key}={value!r} is not allowed; pass True or False")
        return value

    def enum_option(self, key: str, kind: type[E]) -> E:
        value = self.options[key]
        if isinstance(value, kind):
            return value
        return kind(check_choice(f"{self.name}: {key}", value, [m.value for m in kind]))

    def reduce(self) -> Reduce:
        """The channel reduction for ``.maps`` (the ``reduce`` option; input-grid methods only)."""
        return self.enum_option("reduce", Reduce) if "reduce" in self.options else Reduce.ABS_MAX

    def describe(self) -> str:
        """First line of the class docstring."""
        return (type(self).__doc__ or "").strip().splitlines()[0] if type(self).__doc__ else self.name


def methods() -> tuple[str, ...]:
    """Names of every registered attribution method, in registration order.

    Example: ``"gradcam" in cs.attribution.methods()`` is ``True``.
    """
    _load_builtin()
    return tuple(_REGISTRY)


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; :class:`OptionError` with the closest names otherwise."""
    _load_builtin()
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    check_choice("method", name, list(_REGISTRY))
    raise AssertionError("unreachable")  # pragma: no cover


def _load_builtin() -> None:
    from convscope.attribution import cam, gradients, integrated, perturbation  # noqa: F401
