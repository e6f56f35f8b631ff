"""The default CAM layer: the last spatial tensor that the model's whole output depends on.

Rule (``layer=None``): one forward pass of the first sample, with a hook on every module (containers
included), records each module call's output as an edge of the autograd graph and the order in which
calls finish. A call's output is a *cut* when every path from the model output back to the input runs
through that tensor — the network's later stages see the input only through it, so a shortcut around
it (a residual branch's skip-add) disqualifies it. Among the outputs that are spatial (4-D, height or
width > 1), the latest cut in execution order wins; of the modules that returned that very tensor, the
deepest one that ran exactly once names it (the block ``layer4.1`` rather than its twice-called
``relu``; the pooling layer ``features.30`` rather than the container ``features``); when only reused
modules returned it (one ``act`` applied twice), that call is named, ``'act@1'``. Pass-through
layers (dropout, identity) and adaptive pooling (which resamples to a fixed grid for the head) are
never chosen. Results: torchvision-layout ResNets ``layer4.1``, ``keras.applications.ResNet50``
``conv5_block3_out``, MobileNetV2 ``out_relu``, VGG its last pooling layer. Where no module output is a
cut (the output does not depend differentiably on the input), the last spatial leaf output.

Example::

    default_layer(scope.adapter, x).handle.name   # 'layer4.1'
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from convscope.adapters.base import LayerHandle, Layout, ModelAdapter
from convscope.capture import Capture, Recording, Target
from convscope.errors import OptionError

PASS_THROUGH = ("Dropout", "Dropout2d", "AlphaDropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise",
                "Identity", "ActivityRegularization")  # fmt: skip
_NEVER = (*PASS_THROUGH, "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "InputLayer")

Edge = tuple[Any, int]


def default_layer(adapter: ModelAdapter, x: torch.Tensor) -> Target:
    """The CAM layer used when ``layer=None``: the last spatial cut of the graph (see the module docstring)."""
    handles = [h for h in adapter.handles if h.type_name != "InputLayer"]
    by_key = {h.name: h for h in handles}
    x_in = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad(), Capture(adapter, [Target(h) for h in handles], grad=True, freeze=True,
                                      shapes_only=True, skip_errors=True) as cap:  # fmt: skip
        out = cap.run(x_in)
        rec = cap.recording
        spatial = [(key, call) for key, call in rec.events if _is_spatial(rec.shapes[key][call], adapter.layout)]
        calls = {key: len(shapes) for key, shapes in rec.shapes.items()}
        eligible = {key for key in calls if by_key[key].type_name not in _NEVER}
        chosen = _last_cut(rec, spatial, eligible, calls, by_key, _roots(out), x_in)
    if chosen is None:
        chosen = next((_call(by_key[key], call, calls) for key, call in reversed(spatial)
                       if key in eligible and by_key[key].is_leaf), None)  # fmt: skip
    if chosen is None:
        raise OptionError("no layer of this model has a spatial (4-D) output, so CAM methods have nothing to "
                          "weight; use a gradient method such as 'saliency' or 'integrated_gradients'")  # fmt: skip
    return chosen


def _call(handle: LayerHandle, call: int, calls: dict[str, int]) -> Target:
    """``handle``'s output, naming the call (``'name@k'``) only for a module that runs several times."""
    return Target(handle) if calls[handle.name] == 1 else Target(handle, call=call)


def _is_spatial(shape: Any, layout: Layout) -> bool:
    if not isinstance(shape, tuple) or len(shape) != 4:
        return False
    hw = shape[2:] if layout is Layout.NCHW else shape[1:3]
    return max(hw) > 1


def _last_cut(
    rec: Recording,
    spatial: list[tuple[str, int]],
    eligible: set[str],
    calls: dict[str, int],
    by_key: dict[str, LayerHandle],
    roots: list[Edge],
    x_in: torch.Tensor,
) -> Target | None:
    """The deepest eligible module returning the latest spatial cut — among those that ran once if any,
    else one call of a reused module (``'act@1'``); ``None`` if no output is a cut."""
    if not _reaches(roots, x_in, None):
        return None
    groups: dict[tuple[int, int], list[tuple[str, int]]] = {}
    edges: list[tuple[tuple[int, int], Edge]] = []
    for key, call in spatial:  # finishing order: inner modules before the containers returning the same tensor
        edge = rec.edges[key][call]
        if edge is None:
            continue
        ident = (id(edge[0]), edge[1])
        if ident not in groups:
            edges.append((ident, edge))
        groups.setdefault(ident, []).append((key, call))
    for ident, edge in reversed(edges):
        names = [(key, call) for key, call in groups[ident] if key in eligible]
        once = [(key, call) for key, call in names if calls[key] == 1]
        if names and not _reaches(roots, x_in, edge):
            key, call = max(once or names, key=lambda kc: by_key[kc[0]].depth)  # first of the deepest
            return _call(by_key[key], call, calls)
    return None


def _reaches(roots: list[Edge], x_in: torch.Tensor, cut: Edge | None) -> bool:
    """Whether the input's gradient node is reachable from ``roots`` without passing the edge ``cut``."""

    def blocked(node: Any, nr: int) -> bool:
        return cut is not None and node is cut[0] and nr == cut[1]

    stack = [node for node, nr in roots if not blocked(node, nr)]
    seen: dict[int, Any] = {}  # holds the nodes, so their ids stay unique during the walk
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if getattr(node, "variable", None) is x_in:
            return True
        stack.extend(child for child, nr in node.next_functions if child is not None and not blocked(child, nr))
    return False


def _roots(output: Any) -> list[Edge]:
    return [(t.grad_fn, int(t.output_nr)) for t in _tensors(output) if t.grad_fn is not None]


def _tensors(output: Any) -> Iterator[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, list | tuple):
        for item in output:
            yield from _tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from _tensors(item)
