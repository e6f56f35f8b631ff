"""Adapter for plain PyTorch ``nn.Module`` models (NCHW)."""

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
        for path, module in self.model.named_modules(remove_duplicate=False):
            if path == "":
                continue
            handles.append(
                LayerHandle(
                    name=path,
                    path=path,
                    module=module,
                    type_name=type(module).__name__,
                    index=len(handles),
                    depth=path.count("."),
                    is_leaf=next(iter(module.children()), None) is None,
                )
            )
        return handles

    def model_input_shape(self) -> tuple[int | None, ...] | None:
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

    def param_counts(self, handle: LayerHandle) -> tuple[int, int]:
        params = list(handle.module.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def total_params(self) -> tuple[int, int]:
        params = list(self.model.parameters())  # nn.Module.parameters() already de-duplicates
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)
