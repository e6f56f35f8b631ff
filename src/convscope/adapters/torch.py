"""Adapter for plain PyTorch ``nn.Module`` models (NCHW), including unflattened ``torch.export`` programs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from convscope.adapters.base import LayerHandle, Layout, ModelAdapter


class TorchAdapter(ModelAdapter):
    """Layers are the model's named sub-modules, named by their dotted path."""

    framework = "torch"
    layout = Layout.NCHW

    def _build_handles(self) -> list[LayerHandle]:
        handles: list[LayerHandle] = []
        original = exported_types(self.model)
        for path, module in self.model.named_modules(remove_duplicate=False):
            if path == "":
                continue
            handles.append(
                LayerHandle(
                    name=path,
                    path=path,
                    module=module,
                    type_name=original.get(path) or type(module).__name__,
                    index=len(handles),
                    depth=path.count("."),
                    is_leaf=next(iter(module.children()), None) is None,
                )
            )
        return handles

    def model_type_name(self) -> str:
        """The model's class name; for an unflattened ``torch.export`` program, the exported module's."""
        return exported_types(self.model).get("") or type(self.model).__name__

    def model_input_shape(self) -> tuple[int | None, ...] | None:
        exported = exported_input_shape(self.model)
        if exported is not None:
            return exported
        for module in self.model.modules():
            if isinstance(module, nn.Conv2d | nn.Conv1d | nn.Conv3d):
                return (module.in_channels, None, None) if isinstance(module, nn.Conv2d) else None
            if isinstance(module, nn.Linear):
                return None
        return None

    def weights(self, handle: LayerHandle) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for role in ("weight", "bias"):
            value = getattr(handle.module, role, None)
            if isinstance(value, torch.Tensor):
                array = value.detach().cpu().float().numpy().copy()
                if role == "weight" and isinstance(handle.module, nn.ConvTranspose2d):
                    array = array.transpose(1, 0, 2, 3).copy()  # stored (in, out/groups, kh, kw)
                out["kernel" if role == "weight" else role] = array
        return out

    def kernel_shape(self, handle: LayerHandle) -> tuple[int, ...] | None:
        value = getattr(handle.module, "weight", None)
        if not isinstance(value, torch.Tensor):
            return None
        shape = tuple(int(d) for d in value.shape)
        if isinstance(handle.module, nn.ConvTranspose2d):
            shape = (shape[1], shape[0], *shape[2:])
        return shape

    def param_counts(self, handle: LayerHandle) -> tuple[int, int]:
        params = list(handle.module.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def total_params(self) -> tuple[int, int]:
        params = list(self.model.parameters())  # nn.Module.parameters() already de-duplicates
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


def _is_unflattened(model: Any) -> bool:
    """An ``UnflattenedModule``/``InterpreterModule`` from ``torch.export.unflatten`` (by class name)."""
    return type(model).__name__ in ("UnflattenedModule", "InterpreterModule") and hasattr(model, "graph")


def exported_types(model: Any) -> dict[str, str]:
    """Module path -> original class name, from the ``nn_module_stack`` metadata that ``torch.export``
    keeps on graph nodes; empty for ordinary modules. The root model is ``""``."""
    if not _is_unflattened(model):
        return {}
    found: dict[str, str] = {}
    for module in model.modules():
        graph = getattr(module, "graph", None)
        for node in getattr(graph, "nodes", ()):
            for entry in (node.meta.get("nn_module_stack") or {}).values():
                path, kind = entry[0], entry[1]
                name = kind if isinstance(kind, str) else getattr(kind, "__qualname__", str(kind))
                found.setdefault(str(path).split("@")[0], name.rsplit(".", 1)[-1])
    return found


def exported_input_shape(model: Any) -> tuple[int | None, ...] | None:
    """One sample's shape (no batch) of an unflattened export's first input, from its example input's
    metadata; symbolic (dynamic) sizes become ``None``. ``None`` for ordinary modules."""
    if not _is_unflattened(model) or type(model).__name__ != "UnflattenedModule":
        return None
    for node in model.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if shape is None or len(shape) < 2:
                return None
            return tuple(d if isinstance(d, int) else None for d in shape[1:])
    return None
