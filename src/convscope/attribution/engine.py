"""The passes every attribution method is built from, all run under :class:`~convscope.capture.Capture`.

* :meth:`Job.input_grad` — d score / d input (optionally with guided/deconvnet ReLUs);
* :meth:`Job.layer_pass` — a layer's output A and d score / d A, NCHW whatever the framework;
* :meth:`Job.scorer` — scores of many modified inputs, no graph.

Every pass runs the model in eval mode with parameters frozen (restored afterwards), reads class scores
as logits and never writes to the caller's tensors. The gradient at a layer is taken w.r.t. the layer's
own output *before* any in-place op that follows it (``nn.ReLU(inplace=True)``), and the backward pass
stops at that layer.

Example::

    job = Job(scope.adapter, x, TargetSpec(3, len(x)), layer=Target(scope.layer("conv_1")))
    p = job.layer_pass()
    weights = p.grad.mean(dim=(2, 3), keepdim=True)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

try:
    from torch.autograd.graph import GradientEdge
except ImportError:  # torch < 2.2: fall back to a full backward and Capture's tensor hook
    GradientEdge = None  # type: ignore[assignment,misc]

from convscope.adapters.base import LayerHandle, Layout, ModelAdapter
from convscope.attribution.base import user_stacklevel
from convscope.attribution.guided import ReluMode, ReluReport, relu_override
from convscope.attribution.targets import TargetSpec
from convscope.capture import Capture, Target
from convscope.errors import ConvscopeError, OptionError


@dataclass
class LayerPass:
    """One pass recorded at a layer: activations and gradients ``(B, K, h, w)``, scores ``(B,)``."""

    act: torch.Tensor
    grad: torch.Tensor | None
    scores: torch.Tensor


@dataclass
class Job:
    """One attribution request: model, input batch (model layout), targets and (for CAMs) the layer.

    ``rows[i]`` is the original sample of row ``i`` of ``x`` (sub-jobs for noisy or interpolated copies
    keep pointing at their sample, for targets and per-sample baselines).
    """

    adapter: ModelAdapter
    x: torch.Tensor
    targets: TargetSpec
    layer: Target | None = None
    layer_name: str | None = None
    rows: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    zero_grad: set[int] = field(default_factory=set)  # samples already warned about (shared by sub-jobs)

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.x):
            self.rows = torch.arange(len(self.x))

    # -- geometry ------------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return self.adapter.layout

    def spatial_size(self) -> tuple[int, int]:
        hw = self.x.shape[2:4] if self.layout is Layout.NCHW else self.x.shape[1:3]
        return int(hw[0]), int(hw[1])

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.layout is Layout.NCHW or t.dim() != 4 else t.permute(0, 3, 1, 2)

    def pixel_mask(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``x`` (model layout) times per-row masks ``(B, H, W)``, broadcast over channels."""
        return x * (masks[:, None] if self.layout is Layout.NCHW else masks[..., None])

    def upsample(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` or ``(B, K, h, w)`` maps resized bilinearly to the input's (H, W)."""
        size = self.spatial_size()
        squeeze = maps.dim() == 3
        m = maps[:, None] if squeeze else maps
        if tuple(m.shape[-2:]) != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        return m[:, 0] if squeeze else m

    def sub(self, x: torch.Tensor, rows: torch.Tensor) -> Job:
        """A job over modified copies ``x`` of the samples ``rows`` (same targets and layer)."""
        return replace(self, x=x, rows=rows)

    # -- passes --------------------------------------------------------------------------------
    def ensure_targets(self) -> None:
        """Resolve top-1 targets from the unmodified inputs (methods that never run them as-is)."""
        if not self.targets.resolved:
            with self.scorer() as score:
                score(self.x, self.rows)

    @contextmanager
    def scorer(self, *, probability: bool = False) -> Iterator[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """Yields ``score(x, rows) -> (B,)``: target scores of inputs, no graph (softmax-ed if ``probability``)."""

        def score(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            out = cap.run(x)
            scores = self.targets.select(out, rows).detach()  # validates (and resolves) the targets
            if probability and self.targets.fn is None:
                return torch.softmax(out.float(), dim=1).gather(1, self._classes(rows, out))[:, 0]
            return scores

        with torch.no_grad(), Capture(self.adapter, [], logits=True) as cap:
            yield score

    def _classes(self, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        assert self.targets.indices is not None
        return self.targets.indices[rows.cpu()].to(out.device)[:, None]

    def input_grad(
        self, x: torch.Tensor | None = None, rows: torch.Tensor | None = None, relu: ReluMode = ReluMode.NORMAL
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(d score / d input in model layout, scores) for ``x`` (default: the job's inputs)."""
        x = self.x if x is None else x
        rows = self.rows if rows is None else rows
        x_in = x.detach().clone().requires_grad_(True)
        with torch.enable_grad(), Capture(self.adapter, [], grad=True, freeze=True, logits=True) as cap:
            with relu_override(relu, self.adapter.model) as seen:
                out = cap.run(x_in)
            _check_relus(relu, seen)
            scores = self.targets.select(out, rows)
            (grad,) = _autograd(scores, [x_in])
        return (torch.zeros_like(x) if grad is None else grad.detach()), scores.detach()

    def layer_pass(self, *, grad: bool = True) -> LayerPass:
        """The layer's output and (if ``grad``) d score / d output, both NCHW, for the job's inputs."""
        if self.layer is None:
            raise OptionError("this method needs a layer; pass layer=...")
        x_in = self.x.detach().clone().requires_grad_(grad)
        context = torch.enable_grad() if grad else torch.no_grad()
        with context, Capture(self.adapter, [self.layer], grad=grad, freeze=True, logits=True) as cap:
            out = cap.run(x_in)
            scores = self.targets.select(out, self.rows)
            value = self._recorded(cap)
            g = self._layer_grad(cap, value, scores, x_in) if grad else None
        act = self.to_nchw(value.detach())
        return LayerPass(act, None if g is None else self.to_nchw(g), scores.detach())

    def _recorded(self, cap: Capture) -> torch.Tensor:
        assert self.layer is not None
        key = self.layer.key
        value = cap.recording.get(key)
        if cap.recording.calls(key) > 1:
            raise OptionError(f"layer {self.layer_name!r} ran {cap.recording.calls(key)} times in one pass (a "
                              f"reused module, such as the one ReLU of a ResNet block); CAM methods need a "
                              f"layer that runs once — name one call, {f'{self.layer_name}@1'!r} for the second, "
                              f"or {_once_hint(self.layer.handle)}")
        if value.dim() != 4:
            raise OptionError(f"layer {self.layer_name!r} outputs shape {tuple(value.shape)}; CAM methods need a "
                              "spatial 4-D output (a conv or pooling layer); leave layer=None for the last one")
        return value

    def _layer_grad(self, cap: Capture, value: torch.Tensor, scores: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        edge = _own_edge(value)
        if edge is not None:
            (g,) = _autograd(scores, [edge])
        else:  # not a clone of the layer output: full backward, gradient from Capture's tensor hook
            _autograd(scores, [x_in])
            g = cap.recording.grads.get(self.layer.key if self.layer else "", {}).get(0)
        if g is None:
            g = torch.zeros_like(value)
        zero = (g.flatten(1).abs().amax(dim=1) == 0).nonzero().flatten().tolist()
        if zero:
            self.zero_grad.update(int(self.rows[i]) for i in zero)
            warnings.warn(
                f"the gradient of the target score at layer {self.layer_name!r} is zero for sample(s) {zero}: "
                "the score does not depend on this layer there (dead ReLUs, saturation, or a branch the "
                "target does not use); gradient-based maps are empty — try another layer or target",
                stacklevel=user_stacklevel(),
            )
        return g.detach()


def _own_edge(value: torch.Tensor) -> Any:
    """The autograd edge of the tensor ``value`` was cloned from: its value before any in-place op."""
    fn = value.grad_fn
    if GradientEdge is None or fn is None or type(fn).__name__ != "CloneBackward0" or not fn.next_functions:
        return None
    node, nr = fn.next_functions[0]
    if node is None:
        return None
    variable = getattr(node, "variable", None)  # AccumulateGrad: the layer output is the input itself
    return variable if isinstance(variable, torch.Tensor) else GradientEdge(node, nr)


def _autograd(scores: torch.Tensor, inputs: list[Any]) -> tuple[torch.Tensor | None, ...]:
    if not scores.requires_grad:
        raise ConvscopeError(
            "the target score does not depend differentiably on the input (the model detaches, rounds or "
            "leaves torch); gradient methods cannot run — use 'occlusion' or 'scorecam'"
        )
    return torch.autograd.grad(scores.sum(), inputs, allow_unused=True)


def _check_relus(mode: ReluMode, seen: ReluReport) -> None:
    if mode is ReluMode.NORMAL:
        return
    if seen.relus == 0:
        raise ConvscopeError(
            f"{mode.value} backprop found no ReLU in this model's forward pass (it rewrites nn.ReLU, F.relu, "
            "torch.relu, clamp(min=0) and Keras activation='relu'); it is undefined without ReLUs — use "
            "'saliency' or 'integrated_gradients'"
        )
    if seen.others:
        warnings.warn(
            f"{mode.value} backprop rewrites only ReLUs; these nonlinearities keep their ordinary gradient: "
            f"{', '.join(sorted(seen.others))}",
            stacklevel=user_stacklevel(),
        )


def _once_hint(handle: LayerHandle) -> str:
    """What to pass instead of a reused module: the block that contains it, or the default."""
    if "." in handle.path:
        return f"the block that contains it, layer={handle.path.rsplit('.', 1)[0]!r}, or leave layer=None"
    return "pick another layer, or leave layer=None for the default (the last block's output)"
