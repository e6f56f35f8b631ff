"""Adapter for Keras 3 models on the torch backend (NHWC); every Keras layer is an ``nn.Module``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from convscope.adapters.base import LayerHandle, Layout, ModelAdapter


def to_numpy(value: Any) -> np.ndarray:
    """A Keras variable or tensor (torch backend) as a float32 numpy copy, converted explicitly.

    ``Variable.numpy()``, ``np.asarray(variable)`` and even ``keras.ops.convert_to_numpy(variable)`` go
    through the variable's ``__array__``, which NumPy 2 deprecates (one DeprecationWarning per call).
    """
    tensor = getattr(value, "value", value)  # a Keras Variable holds its torch tensor in ``.value``
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().cpu().float().numpy().copy()
    return np.array(tensor, dtype=np.float32)


def _kernel(layer: Any) -> tuple[Any, bool]:
    """A layer's kernel variable (``None`` without one) and whether it is depthwise, as Keras stores it:
    Conv2D (kh, kw, in, out), DepthwiseConv2D (kh, kw, in, multiplier), Dense (in, out)."""
    kernel = getattr(layer, "depthwise_kernel", None)
    depthwise = kernel is not None or "Depthwise" in type(layer).__name__
    return (kernel if kernel is not None else getattr(layer, "kernel", None)), depthwise


def _is_container(layer: Any) -> bool:
    """A nested model (Sequential, functional or subclassed) whose layers we list too."""
    return hasattr(layer, "layers") and isinstance(getattr(layer, "layers", None), list) and bool(layer.layers)


class KerasAdapter(ModelAdapter):
    """Layers come from ``model.layers`` (nested models recursively), named by their Keras name."""

    framework = "keras"
    layout = Layout.NHWC

    def _build_handles(self) -> list[LayerHandle]:
        handles: list[LayerHandle] = []
        seen: set[int] = set()

        def walk(container: Any, prefix: str, depth: int) -> None:
            for layer in container.layers:
                if id(layer) in seen:  # a layer shared by two nested models is listed once
                    continue
                seen.add(id(layer))
                path = f"{prefix}{layer.name}"
                nested = _is_container(layer)
                handles.append(
                    LayerHandle(
                        name=layer.name,
                        path=path,
                        module=layer,
                        type_name=type(layer).__name__,
                        index=len(handles),
                        depth=depth,
                        is_leaf=not nested,
                    )
                )
                if nested:
                    walk(layer, path + ".", depth + 1)

        walk(self.model, "", 0)
        names = [h.name for h in handles]
        for h in handles:  # equal Keras names in different nested models: use the dotted path
            if names.count(h.name) > 1:
                h.name = h.path
        return handles

    def model_input_shape(self) -> tuple[int | None, ...] | None:
        try:
            inputs = self.model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if inputs:
            return tuple(inputs[0].shape[1:])
        return None

    def weights(self, handle: LayerHandle) -> dict[str, np.ndarray]:
        layer = handle.module
        out: dict[str, np.ndarray] = {}
        kernel, depthwise = _kernel(layer)
        if kernel is not None:
            k = to_numpy(kernel)
            if k.ndim == 4 and depthwise:
                # depthwise (kh, kw, in, mult) -> one single-channel kernel per output: (in*mult, 1, kh, kw)
                kh, kw, cin, mult = k.shape
                k = k.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None]
            elif k.ndim == 4:  # Conv2D: (kh, kw, in, out) -> (out, in, kh, kw)
                k = k.transpose(3, 2, 0, 1)
            elif k.ndim == 2:  # Dense: (in, out) -> (out, in)
                k = k.T
            out["kernel"] = k.copy()
        bias = getattr(layer, "bias", None)
        if bias is not None:
            out["bias"] = to_numpy(bias)
        return out

    def kernel_shape(self, handle: LayerHandle) -> tuple[int, ...] | None:
        kernel, depthwise = _kernel(handle.module)
        if kernel is None:
            return None
        shape = tuple(int(d) for d in kernel.shape)
        if len(shape) == 4 and depthwise:
            return (shape[2] * shape[3], 1, shape[0], shape[1])
        if len(shape) == 4:
            return (shape[3], shape[2], shape[0], shape[1])
        return shape[::-1] if len(shape) == 2 else shape

    def param_counts(self, handle: LayerHandle) -> tuple[int, int]:
        layer: Any = handle.module
        total = sum(int(np.prod(w.shape)) for w in layer.weights)
        trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        return total, trainable

    def total_params(self) -> tuple[int, int]:
        total = sum(int(np.prod(w.shape)) for w in self.model.weights)
        trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
        return total, trainable

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x, training=False)
