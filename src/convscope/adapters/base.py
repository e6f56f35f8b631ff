"""The adapter protocol: what convscope needs to know about a model, whatever its framework."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch


class Layout(str, Enum):
    """Tensor layout of images and feature maps."""

    NCHW = "NCHW"
    NHWC = "NHWC"

    @property
    def channel_axis(self) -> int:
        return 1 if self is Layout.NCHW else -1


@dataclass(eq=False)
class LayerHandle:
    """One layer of a model: its name, dotted path, module and type.

    ``name`` is the canonical name (PyTorch: the dotted module path; Keras: the layer's name).
    """

    name: str
    path: str
    module: torch.nn.Module
    type_name: str
    index: int
    depth: int = 0
    is_leaf: bool = True
    aliases: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"LayerHandle({self.name!r}, type={self.type_name})"


class ModelAdapter(abc.ABC):
    """Framework-specific knowledge behind :class:`convscope.Scope`."""

    framework: str
    layout: Layout
    model: Any

    def __init__(self, model: Any, *, input_shape: tuple[int, ...] | None = None) -> None:
        self.model = model
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.handles: list[LayerHandle] = self._build_handles()

    # -- structure -------------------------------------------------------------------------
    @abc.abstractmethod
    def _build_handles(self) -> list[LayerHandle]:
        """All layers in model order (the root model itself excluded)."""

    @abc.abstractmethod
    def model_input_shape(self) -> tuple[int | None, ...] | None:
        """Input shape without batch, in the model's layout, when the model declares it."""

    @abc.abstractmethod
    def weights(self, handle: LayerHandle) -> dict[str, np.ndarray]:
        """The layer's weights by role (``kernel`` in torch layout (out, in, kh, kw), ``bias``)."""

    def kernel_shape(self, handle: LayerHandle) -> tuple[int, ...] | None:
        """The shape of the layer's ``kernel`` as :meth:`weights` gives it (torch layout), or ``None``;
        read from the variable's shape, nothing copied (a VGG16 ``fc1`` kernel is 400 MB)."""
        kernel = self.weights(handle).get("kernel")
        return None if kernel is None else tuple(kernel.shape)

    @abc.abstractmethod
    def param_counts(self, handle: LayerHandle) -> tuple[int, int]:
        """(all, trainable) parameters owned by the layer."""

    @abc.abstractmethod
    def total_params(self) -> tuple[int, int]:
        """(all, trainable) parameters of the model, shared ones counted once."""

    # -- running ---------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> Any:
        """Run the model in inference mode (no dropout, BatchNorm on running statistics)."""

    def modules(self) -> Iterator[torch.nn.Module]:
        """Every torch module of the model (for mode save/restore)."""
        return iter(self.model.modules())

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(self.model.parameters())

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def input_channels(self) -> int | None:
        shape = self.input_shape or self.model_input_shape()
        if shape is None or len(shape) != 3:
            return None
        c = shape[0] if self.layout is Layout.NCHW else shape[-1]
        return int(c) if c is not None else None

    def input_size(self) -> tuple[int, int] | None:
        shape = self.input_shape or self.model_input_shape()
        if shape is None or len(shape) != 3:
            return None
        hw = shape[1:] if self.layout is Layout.NCHW else shape[:2]
        if hw[0] is None or hw[1] is None:
            return None
        return int(hw[0]), int(hw[1])
