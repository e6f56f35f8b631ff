"""``Capture``: the only code in convscope that registers hooks on a model.

It records the outputs (and, on request, the gradients) of chosen layers during one forward pass,
runs the model in inference mode, and restores every module's train/eval mode and every parameter's
``requires_grad`` in ``finally`` — also when the user's model raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from convscope.adapters.base import LayerHandle, ModelAdapter
from convscope.errors import CaptureError, ConvscopeError, ModelError


@dataclass(frozen=True)
class Target:
    """One layer output to record: a layer, for tuple outputs the element index, and ``pre`` to record
    the input of a Keras layer's fused activation (``Conv2D(..., activation="relu")``) instead of its
    output. Layers without a fused activation (every PyTorch module) record their output either way.
    ``call`` records only that call (0-based) of a module that runs several times in one pass (key
    ``'name@k'``); ``None`` (default) records every call.
    """

    handle: LayerHandle
    item: int | None = None
    pre: bool = False
    call: int | None = None

    @property
    def key(self) -> str:
        key = self.handle.name if self.item is None else f"{self.handle.name}[{self.item}]"
        return key + (":pre" if self.pre else "") + ("" if self.call is None else f"@{self.call}")


@dataclass
class Recording:
    """What a :class:`Capture` saw: per recorded key, one tensor per call of the layer."""

    values: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    grads: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    shapes: dict[str, list[Any]] = field(default_factory=dict)
    events: list[tuple[str, int]] = field(default_factory=list)
    edges: dict[str, list[tuple[Any, int] | None]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    """Per ``'name@k'`` key: how many times the module ran (to explain a call that never came)."""

    def get(self, key: str, call: int = 0) -> torch.Tensor:
        calls = self.values.get(key)
        if not calls and key in self.seen:
            base, _, k = key.rpartition("@")
            raise CaptureError(f"layer {base!r} ran {self.seen[key]} time(s) in this pass, so {key!r} (call {k}, "
                               f"counting from 0) does not exist")  # fmt: skip
        if not calls:
            raise CaptureError(
                f"layer {key!r} did not run during the forward pass; it may sit on a branch the model "
                "skipped for this input, or after the point where the pass stopped"
            )
        if not -len(calls) <= call < len(calls):
            raise CaptureError(f"layer {key!r} ran {len(calls)} time(s); call={call} does not exist")
        return calls[call]

    def calls(self, key: str) -> int:
        return len(self.values.get(key, []))


class _StopForward(Exception):
    """Raised by a hook once every requested layer has run, to skip the rest of the model."""


def _select(output: Any, item: int | None, key: str) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        if item not in (None, 0):
            raise CaptureError(f"layer {key!r} returns a single tensor; drop the [index] to record it")
        return output
    if isinstance(output, list | tuple):
        tensors = list(output)
        if item is None:
            shapes = ", ".join(
                f"[{i}] {tuple(t.shape)}" if isinstance(t, torch.Tensor) else f"[{i}] {type(t).__name__}"
                for i, t in enumerate(tensors)
            )
            raise CaptureError(
                f"layer {key!r} returns {len(tensors)} outputs ({shapes}); select one as '{key}[i]'"
            )
        if not -len(tensors) <= item < len(tensors) or not isinstance(tensors[item], torch.Tensor):
            raise CaptureError(f"layer {key!r} has no tensor output [{item}]; it returns {len(tensors)} items")
        return tensors[item]
    return None


def _shape_of(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, list | tuple):
        return [_shape_of(o) for o in output]
    return None


def _edge_of(output: Any) -> tuple[Any, int] | None:
    if isinstance(output, torch.Tensor) and output.grad_fn is not None:
        return output.grad_fn, int(output.output_nr)
    return None


class Capture:
    """Context manager that records layer outputs during a forward pass.

    Args:
        adapter: the model's adapter.
        targets: the layer outputs to record.
        grad: keep the autograd graph (recorded values stay differentiable) and record gradients
            flowing into each target during a later ``backward``. Default ``False``: no graph is built.
        stop: stop the forward pass once every target has run (the model's output is then ``None``).
        freeze: set ``requires_grad=False`` on every parameter for the duration (restored after).
        skip_errors: silently skip targets whose output cannot be recorded (tuple outputs, non-tensors);
            used when recording "every layer" rather than layers the user named.
        keep: predicate on the recorded tensor; outputs it rejects are dropped (e.g. spatial only).
        shapes_only: record only output shapes and call order (``recording.shapes``/``events``), no values;
            with ``grad`` also each call's autograd edge ``(grad_fn, output_nr)`` (``recording.edges``,
            ``None`` for non-tensor or graph-less outputs), which identifies the tensor as the graph saw it.
        logits: make a model that ends in softmax return its pre-softmax logits for the duration
            (see :mod:`convscope.softmax`).

    Example::

        with Capture(adapter, [Target(handle)]) as cap:
            out = cap.run(x)
        cap.recording.get(handle.name)
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        targets: Sequence[Target],
        *,
        grad: bool = False,
        stop: bool = False,
        freeze: bool = False,
        skip_errors: bool = False,
        keep: Any = None,
        shapes_only: bool = False,
        logits: bool = False,
    ) -> None:
        self.adapter = adapter
        self.targets = list(targets)
        self.grad = grad
        self.stop = stop
        self.freeze = freeze
        self.skip_errors = skip_errors
        self.keep = keep
        self.shapes_only = shapes_only
        self.logits = logits
        self._logits: Any = None
        self._swaps: list[tuple[Any, Any]] = []
        self.recording = Recording()
        self._handles: list[Any] = []
        self._modes: list[tuple[torch.nn.Module, bool]] = []
        self._requires_grad: list[tuple[torch.nn.Parameter, bool]] = []
        self._pending: set[str] = set()
        self.ran: list[str] = []
        self._error: ConvscopeError | None = None  # raised in a hook (Keras re-wraps it on the way out)

    # -- context -------------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        self._modes = [(m, m.training) for m in self.adapter.modules()]
        self._requires_grad = [(p, p.requires_grad) for p in self.adapter.parameters()]
        try:
            for module, _ in self._modes:
                module.train(False)
            if self.freeze:
                for p, _ in self._requires_grad:
                    p.requires_grad_(False)
            if self.logits:  # before the activation wraps below, which then wrap its identity
                from convscope.softmax import LogitsReader

                self._logits = LogitsReader(self.adapter)
                self._logits.install()
            by_module: dict[int, tuple[torch.nn.Module, str, list[Target]]] = {}
            fused: dict[int, list[Target]] = {}
            for t in self.targets:
                module = t.handle.module
                entry = by_module.setdefault(id(module), (module, t.handle.name, []))
                if t.pre and self._fused_activation(module) is not None:
                    fused.setdefault(id(module), []).append(t)
                else:
                    entry[2].append(t)
            for targets in fused.values():
                self._wrap_activation(targets)
            for module, name, targets in by_module.values():
                if isinstance(module, torch.jit.ScriptModule):
                    raise CaptureError(
                        f"layer {name!r} is a TorchScript module, which cannot take "
                        "hooks; load the model from a torch.export (.pt2) file or a package.module:factory instead"
                    )
                # also for fused-only modules: the hook counts the call and stops the pass when done
                self._handles.append(module.register_forward_hook(self._hook(name, targets)))
            for t in self.targets:  # a nested Keras model's InputLayer holds that sub-model's input
                parent = self._parent(t.handle) if t.handle.type_name == "InputLayer" else None
                if parent is not None:
                    self._handles.append(parent.register_forward_pre_hook(self._input_hook(t, parent)))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for layer, original in reversed(self._swaps):
            layer.activation = original
        self._swaps.clear()
        if self._logits is not None:
            self._logits.remove()
            self._logits = None
        for module, mode in self._modes:
            module.train(mode)
        for p, flag in self._requires_grad:
            if p.requires_grad != flag:
                p.requires_grad_(flag)

    # -- recording ---------------------------------------------------------------------------
    def _fused_activation(self, module: torch.nn.Module) -> Any:
        """A Keras layer's non-linear ``activation`` attribute, else ``None``."""
        if self.adapter.framework != "keras":
            return None
        act = getattr(module, "activation", None)
        return act if callable(act) and getattr(act, "__name__", "") != "linear" else None

    def _wrap_activation(self, targets: list[Target]) -> None:
        """Record what flows into a Keras layer's fused activation (restored in ``_restore``)."""
        layer: Any = targets[0].handle.module
        original = layer.activation

        def activation(x: Any, *args: Any, **kwargs: Any) -> Any:
            for t in targets:
                self._record(t, x)
            return original(x, *args, **kwargs)

        activation.__name__ = getattr(original, "__name__", "activation")
        self._swaps.append((layer, original))
        layer.activation = activation

    def _hook(self, name: str, targets: list[Target]) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.ran.append(name)
            try:
                for t in targets:
                    self._record(t, output)
            except ConvscopeError as exc:
                self._error = exc
                raise
            if self.stop and not self._pending:
                raise _StopForward
            return None  # Keras 3 layers must see None returned

        return hook

    def _parent(self, handle: LayerHandle) -> torch.nn.Module | None:
        """The nested model that owns ``handle`` (``None`` at the top level)."""
        if handle.depth == 0 or "." not in handle.path:
            return None
        path = handle.path.rsplit(".", 1)[0]
        return next((h.module for h in self.adapter.handles if h.path == path), None)

    def _input_hook(self, target: Target, parent: Any) -> Any:
        inputs = [layer for layer in getattr(parent, "layers", []) if type(layer).__name__ == "InputLayer"]
        position = next((i for i, layer in enumerate(inputs) if layer is target.handle.module), 0)

        def hook(module: torch.nn.Module, args: Any) -> None:
            value = args[0] if args else None
            if isinstance(value, list | tuple) and len(value) > position:
                value = value[position]
            self._record(target, value)
            return None

        return hook

    def _record(self, target: Target, output: Any) -> None:
        key = target.key
        if target.call is not None:  # 'name@k': only the k-th call of the module
            n = self.recording.seen.get(key, 0)
            self.recording.seen[key] = n + 1
            if n != target.call:
                return
        if self.shapes_only:
            shapes = self.recording.shapes.setdefault(key, [])
            self.recording.events.append((key, len(shapes)))
            shapes.append(_shape_of(output))
            if self.grad:
                self.recording.edges.setdefault(key, []).append(_edge_of(output))
            return
        try:
            tensor = _select(output, target.item, key)
        except CaptureError:
            if self.skip_errors:
                return
            raise
        if tensor is None or (self.keep is not None and not self.keep(tensor)):
            return
        # Clone: an in-place op after this layer (ReLU(inplace=True)) would overwrite the stored value.
        value = tensor.clone() if self.grad else tensor.detach().clone()
        calls = self.recording.values.setdefault(key, [])
        if not calls:
            self.recording.order.append(key)
        call = len(calls)
        calls.append(value)
        if self.grad and tensor.requires_grad:
            grads = self.recording.grads.setdefault(key, {})

            def save_grad(g: torch.Tensor, call: int = call) -> None:
                grads[call] = g.detach().clone()

            # A tensor hook registered before an in-place op receives the gradient w.r.t. this value.
            tensor.register_hook(save_grad)
        self._pending.discard(key)

    # -- running -----------------------------------------------------------------------------
    def run(self, x: torch.Tensor) -> Any:
        """Run the model on ``x`` (already model input) and return its output (``None`` if stopped)."""
        self._pending = {t.key for t in self.targets}
        for t in self.targets:  # Keras input layers are never called: their output is the input
            if t.handle.type_name == "InputLayer" and self._parent(t.handle) is None:
                self._record(t, x)
        try:
            with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
                output = self.adapter.forward(x)
            return self._logits.logits(output) if self._logits is not None else output
        except _StopForward:
            return None
        except Exception as exc:  # the user's model raised: name the layers that did run
            if self._error is not None:  # our own error from a hook, as raised (not Keras' re-wrapped copy)
                raise self._error from None
            if isinstance(exc, ConvscopeError):
                raise
            last = f"; last layer that ran: {self.ran[-1]!r}" if self.ran else ""
            raise ModelError(
                f"the model raised {type(exc).__name__} on input of shape {tuple(x.shape)}: {exc}{last}"
            ) from exc
