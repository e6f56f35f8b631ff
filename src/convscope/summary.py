"""``ModelSummary``: per-layer table data (name, type, output shape, parameters), formatted separately."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from convscope.adapters.base import LayerHandle, ModelAdapter
from convscope.capture import Capture, Target

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class SummaryRow:
    """One layer call. ``output_shape`` has ``None`` for the batch; a list of shapes for tuple outputs."""

    name: str
    type: str
    output_shape: Shape | list[Any] | None
    params: int
    trainable_params: int
    trainable: bool = True
    """Keras: the layer's ``trainable`` flag (as ``model.summary(show_trainable=True)``); PyTorch: every
    parameter of the row requires grad (also true for rows without parameters)."""


@dataclass(frozen=True)
class ModelSummary:
    """What ``Scope.summary()`` returns: ``rows`` plus totals; ``str()`` is a Keras-like table."""

    model_name: str
    framework: str
    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def _cells(self) -> list[tuple[str, str, str]]:
        return [(f"{r.name} ({r.type})", _fmt_shape(r.output_shape), f"{r.params:,}") for r in self.rows]

    def __str__(self) -> str:
        head = ("Layer (type)", "Output Shape", "Param #")
        cells = self._cells()
        w = [max(len(head[i]), *(len(c[i]) for c in cells)) if cells else len(head[i]) for i in range(3)]
        rule = "-" * (w[0] + w[1] + w[2] + 4)

        def line(c: tuple[str, str, str]) -> str:
            return f"{c[0]:<{w[0]}}  {c[1]:<{w[1]}}  {c[2]:>{w[2]}}"

        out = [f'Model: "{self.model_name}" ({self.framework})', rule.replace("-", "="), line(head), rule]
        out += [line(c) for c in cells]
        out += [
            rule.replace("-", "="),
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
        ]
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in c) + "</tr>" for c in self._cells()
        )
        return (
            f"<table class='convscope-summary'><caption>{html.escape(self.model_name)}</caption>"
            "<tr><th>Layer (type)</th><th>Output Shape</th><th>Param #</th></tr>"
            f"{body}</table><p>Total params: {self.total_params:,} · Trainable: {self.trainable_params:,}"
            f" · Non-trainable: {self.non_trainable_params:,}</p>"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "framework": self.framework,
            "rows": [r.__dict__ | {"output_shape": _jsonable(r.output_shape)} for r in self.rows],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
        }


def _jsonable(shape: Any) -> Any:
    return list(shape) if isinstance(shape, tuple) else shape


def _fmt_shape(shape: Any) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return "[" + ", ".join(_fmt_shape(s) for s in shape) + "]"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _unbatch(shape: Any) -> Any:
    if isinstance(shape, tuple):
        return (None, *shape[1:])
    if isinstance(shape, list):
        return [_unbatch(s) for s in shape]
    return None


def torch_summary(adapter: ModelAdapter, x: torch.Tensor, display: Callable[[LayerHandle], str]) -> ModelSummary:
    """Rows for every call of every leaf module (and modules owning parameters), in execution order."""
    handles = [h for h in adapter.handles if h.is_leaf or any(True for _ in h.module.parameters(recurse=False))]
    first = {id(h.module): h for h in reversed(handles)}  # a module under two names: one row per call
    handles = [h for h in handles if first[id(h.module)] is h]
    by_key = {h.name: h for h in handles}
    scripted = isinstance(adapter.model, torch.jit.ScriptModule)  # no hooks: parameters, no shapes
    with Capture(adapter, [] if scripted else [Target(h) for h in handles], shapes_only=True) as cap:
        if not scripted:
            cap.run(x)
    seen: set[int] = set()
    rows: list[SummaryRow] = []

    def row(h: LayerHandle, shape: Any, call: int = 0) -> SummaryRow:
        fresh = [p for p in h.module.parameters(recurse=not any(True for _ in h.module.children()))
                 if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        n = sum(p.numel() for p in fresh)
        t = sum(p.numel() for p in fresh if p.requires_grad)
        name = display(h) + (f"@{call}" if call else "")  # a module run twice: 'name', 'name@1'
        return SummaryRow(name, h.type_name, _unbatch(shape), n, t, t == n)

    called: set[str] = set()
    for key, call in cap.recording.events:
        called.add(key)
        rows.append(row(by_key[key], cap.recording.shapes[key][call], call))
    for h in handles:  # modules that own parameters but never ran still count
        if h.name not in called and any(True for _ in h.module.parameters()):
            rows.append(row(h, None))
    total, trainable = adapter.total_params()
    name_of = getattr(adapter, "model_type_name", None)  # an unflattened export: the exported class
    name = name_of() if callable(name_of) else type(adapter.model).__name__
    return ModelSummary(name, "torch", tuple(rows), total, trainable)


def _keras_output_shape(layer: Any) -> Any:
    return layer.output.shape


def keras_summary(adapter: ModelAdapter, x: torch.Tensor | None, display: Callable[[LayerHandle], str]) -> ModelSummary:
    """Rows for the model's top-level layers, as Keras' own ``model.summary()`` lists them."""
    top = [h for h in adapter.handles if h.depth == 0]
    shapes: dict[str, Any] = {}
    for h in top:
        with contextlib.suppress(AttributeError, ValueError, RuntimeError):
            shapes[h.name] = tuple(_keras_output_shape(h.module))
    missing = [h for h in top if h.name not in shapes]
    if missing and x is not None:  # subclassed models: learn shapes from one forward pass
        with Capture(adapter, [Target(h) for h in missing], shapes_only=True, skip_errors=True) as cap:
            cap.run(x)
        for key, got in cap.recording.shapes.items():
            shapes[key] = _unbatch(got[0])
    rows = []
    for h in top:
        n, t = adapter.param_counts(h)
        rows.append(SummaryRow(display(h), h.type_name, shapes.get(h.name), n, t, bool(h.module.trainable)))
    total, trainable = adapter.total_params()
    return ModelSummary(str(adapter.model.name), "keras", tuple(rows), total, trainable)
