"""Objectives: what activation maximisation climbs — small functions that compose with ``+ - *`` and ``/``.

Every objective returns one value per image. A plain objective (``channel("conv_1", 5)``) applies to
every image of a batch; a *batched* one (``channel("conv_1", range(16))`` or a list of objectives)
defines one image per entry and is optimised as one batch. Each objective knows the layers it reads,
so only those are hooked and the forward pass stops after the deepest of them.

Example::

    import convscope as cs
    obj = cs.objectives.channel("conv_1", 5) - 0.1 * cs.objectives.layer("conv_0")
    scope.maximize(obj)
    scope.maximize(cs.objectives.channel("conv_1", range(16)))     # 16 images, one batch
    scope.maximize([cs.objectives.logit(k) for k in range(10)])    # one image per class

A new objective is one function returning :class:`Objective`; see :func:`channel` for the pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from convscope.errors import OptionError
from convscope.layers import LayerQuery
from convscope.optim.base import Check, Context, Objective, ObjectiveLike, Shapes, as_objective, stack

__all__ = [
    "OBJECTIVES", "Context", "Objective", "ObjectiveLike", "Shapes", "as_objective", "channel", "direction",
    "diversity", "layer", "logit", "neuron", "stack",
]  # fmt: skip


# -- helpers ------------------------------------------------------------------------------------------
def _indices(value: int | Sequence[int] | range, what: str, fn: str) -> list[int] | int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if value < 0:
            raise OptionError(f"{fn}: {what}={value} is negative; pass an index >= 0")
        return int(value)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | range | np.ndarray):
        raise OptionError(f"{fn}: {what}={value!r} is not allowed; pass an int or a list/range of ints")
    items = list(value)
    bad = [v for v in items if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0]
    if not items or bad:
        raise OptionError(f"{fn}: {what}={value!r} is not allowed; pass a non-empty list of ints >= 0"
                          + (f" (bad: {bad[:5]!r})" if bad else ""))  # fmt: skip
    return [int(v) for v in items]


def _check_index(fn: str, query: LayerQuery, what: str, axis: int, indices: list[int] | int) -> Check:
    top = max(indices) if isinstance(indices, list) else indices

    def check(shapes: Shapes) -> None:
        shape = shapes.layer(query)
        if len(shape) <= axis:
            raise OptionError(f"{fn}: layer {shapes.name(query)!r} outputs shape {shape}; it has no {what} axis")
        if top >= shape[axis]:
            from convscope.featuremaps import index_ranges

            given = indices if isinstance(indices, list) else [indices]
            bad = index_ranges(i for i in given if i >= shape[axis])
            own = getattr(shapes, "model_shape", lambda q: None)(query)
            where = f"output shape {own}" if own is not None else f"output shape {shape} channel-first"
            raise OptionError(f"{fn}: {what} {bad} out of range; layer {shapes.name(query)!r} has {shape[axis]} "
                              f"{what}s (0-{shape[axis] - 1}), {where}")  # fmt: skip

    return check


def _per_index(
    query: LayerQuery | None,
    indices: list[int] | int,
    pick: Callable[[torch.Tensor, Any], torch.Tensor],
    label: Callable[[int], str],
    make: Callable[[Any], Objective],
    checks: tuple[Check, ...],
) -> Objective:
    """An objective over one index (any batch) or a list of indices (one image each).

    ``query=None`` reads the model output instead of a layer.
    """

    def source(ctx: Context) -> torch.Tensor:
        return ctx.output if query is None else ctx.layer(query)

    layers, needs_output = ((), True) if query is None else ((query,), False)
    if isinstance(indices, int):
        k = indices
        return Objective(lambda ctx: pick(source(ctx), k), layers, needs_output, None, (), label(k), checks)
    index = torch.tensor(indices)

    def fn(ctx: Context) -> torch.Tensor:
        t = source(ctx)
        return pick(t, index.to(t.device))

    name = label(indices[0]) if len(indices) == 1 else f"{label(indices[0])} … {label(indices[-1])}"
    return Objective(fn, layers, needs_output, len(indices), tuple(label(i) for i in indices), name, checks,
                     lambda i, j: make(indices[i:j]))  # fmt: skip


def _gather(t: torch.Tensor, c: Any) -> torch.Tensor:
    """Channel ``c`` (an int, or one index per image) of a channel-first tensor, flattened per image."""
    if isinstance(c, int):
        return t[:, c].reshape(len(t), -1)
    return t[torch.arange(len(t), device=t.device), c].reshape(len(t), -1)


# -- the objectives ---------------------------------------------------------------------------------
def channel(layer: LayerQuery, c: int | Sequence[int] | range) -> Objective:
    """Mean activation of channel ``c`` of ``layer`` (a dense layer's unit ``c``).

    ``c`` may be a list or range: one image per channel, optimised as one batch.

    Example: ``scope.maximize(cs.objectives.channel("conv_1", range(16)))``
    """
    idx = _indices(c, "channel", f"channel({layer!r}, …)")
    return _per_index(layer, idx, lambda t, k: _gather(t, k).mean(1), lambda k: f"{layer} · {k}",
                      lambda sub: channel(layer, sub), (_check_index(f"channel({layer!r}, …)", layer, "channel", 0, idx),))  # fmt: skip


def neuron(layer: LayerQuery, c: int | Sequence[int] | range, x: int | None = None, y: int | None = None) -> Objective:
    """Activation of channel ``c`` at one position (column ``x``, row ``y``; default the centre).

    For a dense layer it is unit ``c`` (give no ``x``/``y``). Example: ``neuron("conv_1", 5, x=3, y=4)``
    """
    fn_name = f"neuron({layer!r}, …)"
    idx = _indices(c, "channel", fn_name)
    for what, v in (("x", x), ("y", y)):
        if v is not None:
            _indices(v, what, fn_name)

    def pick(t: torch.Tensor, k: Any) -> torch.Tensor:
        if t.dim() == 4:
            t = t[:, :, t.shape[2] // 2 if y is None else y, t.shape[3] // 2 if x is None else x]
        return _gather(t, k)[:, 0]

    def check_xy(shapes: Shapes) -> None:
        shape = shapes.layer(layer)
        if len(shape) != 3 and (x is not None or y is not None):
            raise OptionError(f"{fn_name}: layer {shapes.name(layer)!r} outputs shape {shape} (no rows/columns); "
                              "drop x and y")  # fmt: skip
        if len(shape) == 3 and ((x or 0) >= shape[2] or (y or 0) >= shape[1]):
            raise OptionError(f"{fn_name}: position x={x}, y={y} is outside layer {shapes.name(layer)!r}, whose maps "
                              f"are {shape[1]} rows × {shape[2]} columns")  # fmt: skip

    at = "" if x is None and y is None else f" @({x if x is not None else 'c'},{y if y is not None else 'c'})"
    return _per_index(layer, idx, pick, lambda k: f"{layer} · {k}{at}", lambda sub: neuron(layer, sub, x, y),
                      (_check_index(f"neuron({layer!r}, …)", layer, "channel", 0, idx), check_xy))  # fmt: skip


def layer(layer: LayerQuery) -> Objective:
    """DeepDream: the mean square of every activation of ``layer``. Example: ``layer("conv_1")``"""
    return Objective(lambda ctx: ctx.layer(layer).reshape(ctx.n, -1).square().mean(1), (layer,),
                     name=f"{layer} · dream")  # fmt: skip


def logit(k: int | Sequence[int] | range) -> Objective:
    """Pre-softmax score of class ``k`` (a model ending in softmax is run on its logits).

    ``k`` may be a list or range: one image per class. Example: ``scope.maximize(logit(range(10)))``
    """
    idx = _indices(k, "class", "logit")
    top = max(idx) if isinstance(idx, list) else idx

    def check(shapes: Shapes) -> None:
        if shapes.output is None or len(shapes.output) != 1:
            raise OptionError(f"logit: the model output has shape {shapes.output}; logit() needs (N, classes) "
                              "scores — use channel() or neuron() on a layer instead")  # fmt: skip
        if top >= shapes.output[0]:
            raise OptionError(f"logit: class {top} is out of range; the model has {shapes.output[0]} classes "
                              f"(0..{shapes.output[0] - 1})")  # fmt: skip

    return _per_index(None, idx, lambda t, j: _gather(t, j)[:, 0], lambda j: f"class {j}", logit, (check,))


def direction(layer: LayerQuery, vector: Sequence[float] | np.ndarray | torch.Tensor) -> Objective:
    """Mean over positions of the dot product of ``layer``'s channel vector with ``vector`` (length C).

    Example: ``direction("conv_1", torch.randn(64))``
    """
    v = torch.as_tensor(np.asarray(vector, dtype=np.float32) if not isinstance(vector, torch.Tensor) else vector)
    v = v.detach().float().flatten()

    def fn(ctx: Context) -> torch.Tensor:
        t = ctx.layer(layer)
        w = v.to(t.device, t.dtype).reshape(1, -1, *([1] * (t.dim() - 2)))
        return (t * w).sum(1).reshape(ctx.n, -1).mean(1)

    def check(shapes: Shapes) -> None:
        if shapes.layer(layer)[0] != len(v):
            raise OptionError(f"direction: vector has {len(v)} values but layer {shapes.name(layer)!r} has "
                              f"{shapes.layer(layer)[0]} channels; pass one value per channel")  # fmt: skip

    return Objective(fn, (layer,), name=f"{layer} · direction", checks=(check,))


def diversity(layer: LayerQuery) -> Objective:
    """Minus the mean cosine similarity of each image's Gram matrix at ``layer`` to the others' (Lucid).

    Add a small multiple to a batched objective to make its images differ:
    ``channel("conv_1", [5] * 4) + 0.1 * diversity("conv_1")``. Zero for a batch of one.
    """

    def fn(ctx: Context) -> torch.Tensor:
        t = ctx.layer(layer)
        n = ctx.n
        flat = t.reshape(n, t.shape[1], -1)
        gram = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).reshape(n, -1), dim=1)
        sim = gram @ gram.T
        if n < 2:
            return sim.new_zeros(n)
        return -(sim.sum(1) - sim.diagonal()) / (n - 1)

    return Objective(fn, (layer,), name=f"{layer} · diversity")


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "channel": channel, "neuron": neuron, "layer": layer, "logit": logit, "direction": direction,
    "diversity": diversity,
}  # fmt: skip
