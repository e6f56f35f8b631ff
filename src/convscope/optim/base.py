"""The ``Objective`` type: a score per image that composes with ``+ - *`` and ``/``, and what it reads.

Objectives see a :class:`Context` (layer outputs, channel-first, and the model output) and return one
value per image. Their checks see :class:`Shapes` before any step runs. :func:`stack` turns a list of
objectives into one batched objective (one image per entry).

Example::

    peak = Objective(lambda ctx: ctx.layer("conv_1")[:, 3].amax(dim=(1, 2)),
                     layers=("conv_1",), name="max of conv_1 · 3")
    both = stack([peak, 2 * peak])      # two images
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch

from convscope.adapters.base import Layout
from convscope.errors import OptionError
from convscope.layers import LayerQuery

Check = Callable[["Shapes"], None]
ObjectiveLike = Union["Objective", Sequence["Objective"]]


class Context:
    """What an objective reads in one step: layer outputs and the model output, for a slice of the batch.

    ``layer(query)`` is channel-first whatever the framework: (N, C, H, W) for conv maps (a Keras
    (N, H, W, C) tensor is viewed, not copied), (N, D) for dense layers.
    """

    def __init__(self, acts: Mapping[Any, torch.Tensor], output: Any, layout: Layout, n: int) -> None:
        self._acts, self._output, self.layout, self.n = acts, output, layout, n
        self._start = 0

    def layer(self, query: LayerQuery) -> torch.Tensor:
        t = self._acts[query]
        if self.layout is Layout.NHWC and t.dim() >= 3:
            t = t.movedim(-1, 1)
        return t[self._start : self._start + self.n]

    @property
    def output(self) -> torch.Tensor:
        if not isinstance(self._output, torch.Tensor):
            raise OptionError(f"this objective reads the model output, but the model returned "
                              f"{type(self._output).__name__}; logit() needs a (N, classes) tensor")  # fmt: skip
        return self._output[self._start : self._start + self.n]

    def slice(self, start: int, n: int) -> Context:
        """The same step seen by images ``start .. start + n`` of this context."""
        ctx = Context(self._acts, self._output, self.layout, n)
        ctx._start = self._start + start
        return ctx


@dataclass(frozen=True)
class Shapes:
    """Channel-first shapes (without batch) of the layers an objective reads, for up-front checks."""

    layers: Mapping[Any, tuple[int, ...]]
    output: tuple[int, ...] | None
    names: Mapping[Any, str] = field(default_factory=dict)

    def layer(self, query: LayerQuery) -> tuple[int, ...]:
        return self.layers[query]

    def name(self, query: LayerQuery) -> str:
        return self.names.get(query, str(query))


@dataclass(frozen=True, eq=False)
class Objective:
    """A differentiable score per image, to be maximised.

    Args:
        fn: ``Context -> Tensor`` of shape ``(ctx.n,)``, one value per image.
        layers: layer queries the objective reads (hooked; default none).
        needs_output: whether it reads the model output (default ``False``); then the pass runs to the end.
        batch: number of images it defines (default ``None``: it applies to any batch).
        labels: one label per image (default: ``(name,)``).
        name: short description, e.g. ``"conv_1 · 5"``.
        checks: functions of :class:`Shapes` raising :class:`OptionError` before any step runs.
        slicer: ``(start, stop) -> Objective`` for images ``start:stop`` (batched objectives only).

    Example::

        peak = Objective(lambda ctx: ctx.layer("conv_1")[:, 3].amax(dim=(1, 2)),
                         layers=("conv_1",), name="max of conv_1 · 3")
    """

    fn: Callable[[Context], torch.Tensor]
    layers: tuple[Any, ...] = ()
    needs_output: bool = False
    batch: int | None = None
    labels: tuple[str, ...] = ()
    name: str = "objective"
    checks: tuple[Check, ...] = ()
    slicer: Callable[[int, int], Objective] | None = None

    def __call__(self, ctx: Context) -> torch.Tensor:
        return self.fn(ctx)

    @property
    def size(self) -> int:
        """How many images this objective yields (its batch, else 1)."""
        return self.batch or 1

    def image_labels(self) -> tuple[str, ...]:
        return self.labels or (self.name,) * self.size

    def check(self, shapes: Shapes) -> None:
        for c in self.checks:
            c(shapes)

    def slice(self, start: int, stop: int) -> Objective:
        """The objective for images ``start:stop`` (itself when it applies to any batch)."""
        if self.batch is None:
            return self
        if start == 0 and stop == self.batch:
            return self
        if self.slicer is None:
            raise OptionError(f"objective {self.name!r} defines {self.batch} images but cannot be split; give it "
                              "a slicer, or pass batch_size >= its number of images")  # fmt: skip
        return self.slicer(start, stop)

    # -- composition ---------------------------------------------------------------------------
    def _combine(self, other: Objective | float, op: Callable[[Any, Any], Any], symbol: str) -> Objective:
        if not isinstance(other, Objective):
            if isinstance(other, bool) or not isinstance(other, int | float):
                return NotImplemented
            k = float(other)
            name = f"{k:g} * {self.name}" if symbol == "*" else f"{self.name} {symbol} {k:g}"
            return Objective(lambda ctx: op(self.fn(ctx), k), self.layers, self.needs_output, self.batch,
                             self.labels, name, self.checks,
                             None if self.slicer is None else lambda i, j: op(self.slice(i, j), k))  # fmt: skip
        batch = _merge_batch(self, other)
        labels = _merge_labels(self, other, symbol, batch)
        return Objective(
            lambda ctx: op(self.fn(ctx), other.fn(ctx)),
            tuple(dict.fromkeys(self.layers + other.layers)),
            self.needs_output or other.needs_output,
            batch,
            labels,
            f"{self.name} {symbol} {other.name}",
            self.checks + other.checks,
            None if batch is None else lambda i, j: op(self.slice(i, j), other.slice(i, j)),
        )

    def __add__(self, other: Objective | float) -> Objective:
        return self._combine(other, lambda a, b: a + b, "+")

    def __radd__(self, other: float) -> Objective:
        return self._combine(other, lambda a, b: a + b, "+")

    def __sub__(self, other: Objective | float) -> Objective:
        return self._combine(other, lambda a, b: a - b, "-")

    def __rsub__(self, other: float) -> Objective:
        return (-self)._combine(other, lambda a, b: a + b, "+")

    def __mul__(self, other: Objective | float) -> Objective:
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other: float) -> Objective:
        return self._combine(other, lambda a, b: a * b, "*")

    def __truediv__(self, other: float) -> Objective:
        if isinstance(other, Objective) or other == 0:
            raise OptionError(f"an objective can be divided by a non-zero number only; received {other!r}")
        return self._combine(other, lambda a, b: a / b, "/")

    def __neg__(self) -> Objective:
        return self._combine(-1.0, lambda a, b: a * b, "*")

    def __repr__(self) -> str:
        return f"Objective({self.name!r}, images={self.size}, layers={list(self.layers)})"


def _merge_batch(a: Objective, b: Objective) -> int | None:
    if a.batch is not None and b.batch is not None and a.batch != b.batch:
        raise OptionError(f"cannot combine {a.name!r} ({a.batch} images) with {b.name!r} ({b.batch} images); "
                          "batched objectives must define the same number of images")  # fmt: skip
    return a.batch if a.batch is not None else b.batch


def _merge_labels(a: Objective, b: Objective, symbol: str, batch: int | None) -> tuple[str, ...]:
    if batch is None:
        return (f"{a.name} {symbol} {b.name}",)
    if a.batch is not None and b.batch is not None:
        return tuple(f"{x} {symbol} {y}" for x, y in zip(a.image_labels(), b.image_labels(), strict=True))
    return (a if a.batch is not None else b).image_labels()


def stack(objectives: Sequence[Objective]) -> Objective:
    """One image per objective (batched ones contribute one per entry), optimised as one batch."""
    parts = list(objectives)
    if not parts or not all(isinstance(o, Objective) for o in parts):
        raise OptionError(f"expected an Objective or a non-empty list of them; received {objectives!r:.120}")
    if len(parts) == 1:
        return parts[0]
    sizes = [o.size for o in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()

    def fn(ctx: Context) -> torch.Tensor:
        return torch.cat([o.fn(ctx.slice(s, n)) for o, s, n in zip(parts, offsets, sizes, strict=False)])

    def slicer(i: int, j: int) -> Objective:
        return stack([o.slice(max(i - s, 0), min(j - s, n)) for o, s, n in zip(parts, offsets, sizes, strict=False)
                      if s < j and s + n > i])  # fmt: skip

    labels = tuple(lb for o in parts for lb in o.image_labels())
    return Objective(fn, tuple(dict.fromkeys(q for o in parts for q in o.layers)), any(o.needs_output for o in parts),
                     sum(sizes), labels, f"[{len(labels)} objectives]", tuple(c for o in parts for c in o.checks),
                     slicer)  # fmt: skip


def as_objective(objective: ObjectiveLike) -> Objective:
    """An :class:`Objective` as given, or a list of them stacked (see :func:`stack`)."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, Sequence) and not isinstance(objective, str):
        return stack(objective)
    raise OptionError(f"objective={objective!r:.80} is not allowed; pass an Objective such as "
                      "cs.objectives.channel('conv_1', 5), or a list of them")  # fmt: skip
