"""Receptive fields measured on the model's real graph, by backpropagation.

On a copy of the model (yours is never touched) every weight becomes a positive constant, biases and
BatchNorm shifts zero, max-pooling a window mean (its gradient reaches the whole window, not one argmax),
and the input is all ones, so every unit is positive and every path carries gradient. The input pixels
with non-zero gradient of one unit are then exactly the pixels it depends on — across residual branches,
dilation, strides, Keras' asymmetric ``"same"`` padding and pooling — and their bounding box is the
receptive field. Two diagonal neighbours in the layer's centre give the size, the stride and the offset;
the input grows (by multiples of 512, which keeps every padding the same) until their boxes lie inside.

Example::

    rf = scope.receptive_field("layer4")
    rf.size, rf.stride        # (435, 435), (32, 32) on a ResNet-18
    rf.box(0, 0)              # (-217, -217, 218, 218): left, top, right, bottom (exclusive), unclipped
    rf.box(0, 0, clip=True)   # (0, 0, 218, 218) on a 224 x 224 input
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from convscope.adapters.base import Layout
from convscope.capture import Capture, Target
from convscope.errors import ConvscopeError, OptionError

_GROW = 512
_MAX_SIDE = 4096


@dataclass(frozen=True)
class ReceptiveField:
    """Where unit (y, x) of ``layer`` looks in the input: ``box(y, x)`` = ``size`` at ``stride`` steps."""

    layer: str
    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]  # (top, left) of unit (0, 0)'s box
    input_size: tuple[int, int] | None = None  # (H, W) for clip=True

    def box(self, y: int, x: int, *, clip: bool = False) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` in input pixels, right/bottom exclusive (as ``PIL.Image.crop``);
        unclipped by default, ``clip=True`` clips to the input size."""
        top, left = self.offset[0] + int(y) * self.stride[0], self.offset[1] + int(x) * self.stride[1]
        box = (left, top, left + self.size[1], top + self.size[0])
        if not clip:
            return box
        if self.input_size is None:
            raise OptionError(
                "clip=True needs the input size; pass Scope(model, input_shape=...) or run the model first"
            )
        h, w = self.input_size
        return (max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h))


class _SpreadPooling(TorchFunctionMode):
    """Max-pooling → window mean (same windows), so gradient reaches every element of each window."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in (F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d):
            return _window_mean(*args, **kwargs)
        if func in (F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices):
            out = F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
            return (
                (out, None)
                if func is F.adaptive_max_pool2d_with_indices or kwargs.get("return_indices")
                else out
            )
        return func(*args, **kwargs)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _window_mean(
    x: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False,
) -> Any:  # fmt: skip
    k, d, p = _pair(kernel_size), _pair(dilation), _pair(padding)
    s = _pair(stride) if stride not in (None, [], ()) else k
    size = F.max_pool2d(x.detach(), k, s, p, d, ceil_mode).shape[-2:]  # the real output grid
    pads = []
    for axis in (1, 0):  # F.pad order: last axis first
        need = (size[axis] - 1) * s[axis] + d[axis] * (k[axis] - 1) + 1
        pads += [p[axis], max(need - x.shape[-2 + axis] - p[axis], 0)]
    xp = F.pad(x, pads)
    n, c = xp.shape[0], xp.shape[1]
    cols = F.unfold(xp.reshape(n * c, 1, *xp.shape[-2:]), k, dilation=d, stride=s)
    out = cols.mean(dim=1).reshape(n, c, *size)
    return (out, None) if return_indices else out


def _neutral_torch(model: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for module in clone.modules():
            if isinstance(module, torch.nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.zero_()
                if module.running_var is not None:
                    module.running_var.fill_(1.0)
            for name, p in module.named_parameters(recurse=False):
                if p.ndim >= 2:  # torch layout (out, in, *taps)
                    p.fill_(1.0 / (p.shape[1] * math.sqrt(float(np.prod(p.shape[2:])))))
                else:
                    p.fill_(0.0 if "bias" in name else 1.0)
    return clone


def _neutral_keras(model: Any, shape: tuple[int, ...] | None) -> Any:
    import keras

    try:
        clone = keras.models.clone_model(model, input_tensors=keras.Input(shape) if shape else None)
    except Exception:  # subclassed or nested models: a plain copy at the declared size
        clone = keras.models.clone_model(model) if shape is None else _neutral_keras(model, None)
    for layer in clone._flatten_layers(include_self=False):
        depthwise = "Depthwise" in type(layer).__name__
        for var in layer.weights:
            name, shp = var.path.rsplit("/", 1)[-1], tuple(var.shape)
            if len(shp) >= 2 and name.endswith("kernel"):  # keras layout (*taps, in, out)
                fan = 1 if depthwise else shp[-2]
                value = np.full(shp, 1.0 / (fan * math.sqrt(float(np.prod(shp[:-2])))))
            elif name in ("bias", "beta", "moving_mean"):
                value = np.zeros(shp)
            else:
                value = np.ones(shp)
            var.assign(value.astype(var.dtype))
    return clone


def receptive_field(scope: Any, layer: Any) -> ReceptiveField:
    """Measure ``layer``'s receptive field (see the module docstring); ``scope`` is a :class:`Scope`."""
    targets = scope.targets(layer)
    if len(targets) != 1:
        raise OptionError(f"layer={layer!r} matches {len(targets)} layers; name exactly one")
    target = targets[0]
    nchw = scope.layout is Layout.NCHW
    base = scope.adapter.input_shape or scope._last_shape or scope.adapter.model_input_shape()
    if base is None or len(base) != 3 or any(d is None for d in base):
        c = scope.adapter.input_channels() or _first_conv_channels(scope) or 3
        base = (c, 64, 64) if nchw else (64, 64, c)
    chans, hw = (base[0], list(base[1:])) if nchw else (base[2], list(base[:2]))
    known = scope.adapter.input_size() or (tuple(scope._last_shape[1:] if nchw else scope._last_shape[:2])
                                           if scope._last_shape else None)  # fmt: skip
    label = scope.index.display_name(target.handle)
    while True:
        shape = (chans, *hw) if nchw else (*hw, chans)
        boxes, grid = _unit_boxes(scope, target, shape)
        inside = [all(b[i] > 0 and b[i + 2] < hw[1 - i] for b in boxes) for i in (1, 0)]  # rows, cols
        if all(inside) or max(hw) >= _MAX_SIDE:
            break
        hw = [hw[i] + (0 if inside[i] else _GROW) for i in (0, 1)]
    (l0, t0, r0, b0), (l1, t1, _, _) = boxes
    (y0, x0) = (grid[0] // 2, grid[1] // 2)
    if not all(inside) or grid[0] < 2 or grid[1] < 2:
        raise ConvscopeError(
            f"layer {label!r}: its receptive field could not be measured inside a {hw[0]} x {hw[1]} input "
            f"(layer grid {grid}); it may have no spatial structure left (after global pooling)"
        )
    stride = (t1 - t0, l1 - l0)
    return ReceptiveField(
        label, (b0 - t0, r0 - l0), stride, (t0 - y0 * stride[0], l0 - x0 * stride[1]),
        tuple(known) if known else None,  # type: ignore[arg-type]
    )  # fmt: skip


def _unit_boxes(
    scope: Any, target: Target, shape: tuple[int, ...]
) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
    """Bounding boxes of the input support of the centre unit and its lower-right neighbour."""
    from convscope.adapters import adapt

    nchw = scope.layout is Layout.NCHW
    if scope.framework == "keras":
        clone = _neutral_keras(scope.model, shape if scope.adapter.model_input_shape() is not None else None)
    else:
        clone = _neutral_torch(scope.model)
    adapter = adapt(clone, input_shape=tuple(shape))
    handle = next(h for h in adapter.handles if h.name == target.handle.name)
    x = torch.ones((2, *shape), device=adapter.device, requires_grad=True)
    with _SpreadPooling(), Capture(adapter, [Target(handle, target.item, target.pre)], grad=True, stop=True,
                                   freeze=True) as cap:  # fmt: skip
        cap.run(x)
        out = cap.recording.get(Target(handle, target.item, target.pre).key)
    if out.ndim != 4:
        raise ConvscopeError(
            f"layer {target.key!r} has output shape {(None, *(int(d) for d in out.shape[1:]))}; receptive fields "
            "need a spatial (4-D) output"
        )
    maps = out if nchw else out.permute(0, 3, 1, 2)
    grid = (int(maps.shape[2]), int(maps.shape[3]))
    y0, x0 = grid[0] // 2, grid[1] // 2
    y1, x1 = min(y0 + 1, grid[0] - 1), min(x0 + 1, grid[1] - 1)
    (maps[0, :, y0, x0].sum() + maps[1, :, y1, x1].sum()).backward()
    grad = x.grad
    if grad is None:
        raise ConvscopeError(f"layer {target.key!r} does not depend on the input by gradient")
    g = grad if nchw else grad.permute(0, 3, 1, 2)
    boxes = []
    for i in (0, 1):
        rows = torch.nonzero(g[i].abs().sum(0).sum(1)).squeeze(1)
        cols = torch.nonzero(g[i].abs().sum(0).sum(0)).squeeze(1)
        if rows.numel() == 0:
            raise ConvscopeError(f"layer {target.key!r} does not depend on the input by gradient")
        boxes.append((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
    return boxes, grid


def _first_conv_channels(scope: Any) -> int | None:
    """Input channels of the first conv layer (registration order), a guess for models of unknown input."""
    for h in scope.adapter.handles:
        shape = scope.adapter.kernel_shape(h) if h.is_leaf else None
        if shape is not None and len(shape) == 4:
            return int(shape[1])
    return None
