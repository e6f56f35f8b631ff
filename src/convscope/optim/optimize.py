"""The optimisation loop behind ``Scope.maximize``: synthesise images that maximise an objective.

One :class:`~convscope.capture.Capture` holds the hooks for a whole run: parameters frozen (no weight
gradients), the pass stopped after the deepest layer the objective reads, softmax stripped when it reads
the model output; everything is restored when the run ends, fails or is interrupted.

Example::

    vis = maximize(scope, cs.objectives.channel("conv_1", range(16)), steps=128, seed=0)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from convscope.adapters.base import Layout
from convscope.capture import Capture, Recording, Target
from convscope.errors import ModelError, OptionError
from convscope.optim.base import Context, Objective, ObjectiveLike, Shapes, as_objective
from convscope.optim.params import ParamFactory, ParamKind, make_param
from convscope.optim.progress import Progress, Steps, check_progress
from convscope.optim.recipes import Recipe, Settings, resolve_settings
from convscope.optim.regularizers import Regularizer
from convscope.optim.relu import redirect_relu
from convscope.optim.transforms import Transform, apply_transforms
from convscope.optim.visualization import Visualization, to_uint8, warn_if_blank

_BYTES_PER_VALUE = 4 * 4  # float32, times about 4 copies: saved activation, its gradient, temporaries
_CPU_BUDGET = 4 << 30


@dataclass(frozen=True)
class Probe:
    """What one shapes-only pass taught: the shapes objectives check, and memory per image."""

    shapes: Shapes
    bytes_per_image: int


class Runner:
    """Runs the steps of one maximisation for a scope, an objective and resolved :class:`Settings`."""

    def __init__(self, scope: Any, objective: Objective, settings: Settings) -> None:
        self.scope, self.objective, self.settings = scope, objective, settings
        self.adapter = scope.adapter
        self.layout: Layout = scope.layout
        self.targets = {q: _one_target(scope, q) for q in objective.layers}
        spec = scope.input_spec()
        if spec.channels is None:
            raise OptionError("the number of input channels of this model is unknown; pass "
                              "Scope(model, input_shape=(C, H, W)) (PyTorch) or (H, W, C) (Keras)")  # fmt: skip
        self.channels = spec.channels
        self.device = self.adapter.device
        self._factor = 255.0 * spec.scale
        self._mean = _per_channel(spec.mean, self.channels, self.device)
        self._std = _per_channel(spec.std, self.channels, self.device)
        self._bgr = spec.bgr and self.channels == 3  # e.g. preprocess="caffe": the model takes BGR

    # -- pieces ----------------------------------------------------------------------------------
    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] -> model input: scaled, normalised, in the model's layout."""
        x = images.flip(1) if self._bgr else images
        x = x * self._factor if self._factor != 1.0 else x
        if self._mean is not None:
            x = x - self._mean
        if self._std is not None:
            x = x / self._std
        return x.permute(0, 2, 3, 1) if self.layout is Layout.NHWC else x

    def capture(self) -> Capture:
        targets = list(dict.fromkeys(self.targets.values()))
        stop = bool(targets) and not self.objective.needs_output
        return Capture(self.adapter, targets, grad=True, stop=stop, freeze=True, logits=self.objective.needs_output)

    def evaluate(self, cap: Capture, objective: Objective, x: torch.Tensor) -> torch.Tensor:
        """One forward pass of ``x`` under ``cap`` and the objective's (N,) values."""
        cap.recording = Recording()
        cap.ran.clear()
        output = cap.run(x)
        acts = {q: cap.recording.get(t.key) for q, t in self.targets.items()}
        n = len(x)
        values = objective(Context(acts, output, self.layout, n))
        if not isinstance(values, torch.Tensor) or values.shape not in ((n,), () if n == 1 else (n,)):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise OptionError(f"objective {objective.name!r} returned {got}; an objective returns one value per "
                              f"image, shape ({n},)")  # fmt: skip
        return values.reshape(n)

    # -- probe -----------------------------------------------------------------------------------
    def probe(self) -> Probe:
        """One no-grad pass on a grey image at the transformed size, stopped like the real steps: the
        shapes objectives check, and the memory one image needs."""
        h, w = self.settings.size
        grey = torch.full((1, self.channels, h, w), 0.5, device=self.device)
        view = apply_transforms(grey, self.settings.transforms, torch.Generator().manual_seed(0))
        leaves = [Target(hd) for hd in self.adapter.handles if hd.is_leaf]
        targets = list(dict.fromkeys(self.targets.values()))
        needs_output = self.objective.needs_output
        try:
            with torch.no_grad(), Capture(self.adapter, leaves, shapes_only=True, skip_errors=True) as sizes, \
                    Capture(self.adapter, targets, stop=bool(targets) and not needs_output, logits=needs_output) as cap:  # fmt: skip
                output = cap.run(self.to_input(view))
        except ModelError as exc:
            declared = self.scope.input_spec().size
            seen = (int(view.shape[2]), int(view.shape[3]))
            if declared is None:
                raise OptionError(
                    f"the model rejected a {seen[0]}×{seen[1]} image ({exc}); its input size is unknown, so the "
                    f"default {h}×{w} was used. Pass size=(H, W) to maximize (CLI: --size) or give the scope its "
                    "input shape: Scope(model, input_shape=...) (CLI: --input-shape C,H,W)"
                ) from exc
            if declared == seen:
                raise
            raise OptionError(f"the model rejected a {seen[0]}×{seen[1]} image ({exc}); it declares {declared[0]}×"
                              f"{declared[1]} input. Images are {h}×{w} and transforms make them {seen[0]}×{seen[1]}: "
                              "keep size=None and use size-keeping transforms (pad(p) then jitter(2 * p))") from exc  # fmt: skip
        layers = {q: self._shape(cap.recording.get(t.key)) for q, t in self.targets.items()}
        out_shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
        if needs_output and isinstance(output, torch.Tensor):
            _warn_if_probabilities(output)
        names = {q: self._label(t) for q, t in self.targets.items()}
        own = {q: (None, *(int(d) for d in cap.recording.get(t.key).shape[1:])) for q, t in self.targets.items()}
        shapes = ModelShapes(layers, out_shape, names, own=own)
        self.objective.check(shapes)
        values = 3 * h * w * self.channels  # the image, its transformed view and their gradients
        for key, call in sizes.recording.events:
            shape = sizes.recording.shapes[key][call]
            if isinstance(shape, tuple) and len(shape) > 1:
                values += int(np.prod(shape[1:]))
        return Probe(shapes, values * _BYTES_PER_VALUE)

    def _label(self, t: Target) -> str:
        name = self.scope.index.display_name(t.handle) + ("" if t.item is None else f"[{t.item}]")
        return name + (":pre" if t.pre else "") + ("" if not t.call else f"@{t.call}")

    def _shape(self, value: torch.Tensor) -> tuple[int, ...]:
        """A recorded batch-of-one tensor's shape without batch, channel-first."""
        body = tuple(int(d) for d in value.shape[1:])
        if self.layout is Layout.NHWC and len(body) >= 2:
            body = (body[-1], *body[:-1])
        return body

    # -- one chunk -------------------------------------------------------------------------------
    def run(self, objective: Objective, n: int, generator: torch.Generator, steps: Steps) -> tuple[torch.Tensor, ...]:
        """Optimise ``n`` images for ``objective``; returns (images, inputs, values, history (steps, n))."""
        s = self.settings
        param = make_param(s.param, n=n, channels=self.channels, size=s.size, decorrelate=s.decorrelate,
                           squash=s.squash, generator=generator, device=self.device)  # fmt: skip
        optimizer = torch.optim.Adam(param.parameters(), lr=s.lr)
        history: list[torch.Tensor] = []
        with self.capture() as cap:
            for _ in range(s.steps):
                images = param()
                x = self.to_input(apply_transforms(images, s.transforms, generator))
                with redirect_relu() if s.relu_redirect else nullcontext():
                    values = self.evaluate(cap, objective, x)
                loss = -values.sum()
                for reg in s.regularizers:
                    loss = loss + reg(images).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                param.project()
                history.append(values.detach())
                steps.step(values)
            with torch.no_grad():
                images = param()
                x = self.to_input(images)
                final = self.evaluate(cap, objective, x)
        return images.detach(), x.detach().contiguous(), final.detach(), torch.stack(history)


# -- helpers -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShapes(Shapes):
    """:class:`Shapes` plus each layer's shape as the model sees it (its own layout, ``None`` batch)."""

    own: dict[Any, tuple[int | None, ...]] = field(default_factory=dict)

    def model_shape(self, query: Any) -> tuple[int | None, ...] | None:
        return self.own.get(query)


def _one_target(scope: Any, query: Any) -> Target:
    targets = scope.targets(query)
    if len(targets) != 1:
        from convscope.layers import ambiguous

        raise ambiguous(query, [scope.index.display_name(t.handle) for t in targets],
                        "an objective reads one layer, so name one of them")  # fmt: skip
    return targets[0]  # type: ignore[no-any-return]


def _per_channel(values: Sequence[float] | None, channels: int, device: torch.device) -> torch.Tensor | None:
    if values is None:
        return None
    t = torch.tensor(list(values), dtype=torch.float32, device=device)
    if len(t) not in (1, channels):
        raise OptionError(f"mean/std has {len(t)} values but the model takes {channels} channels")
    return t.reshape(1, -1, 1, 1)


def _warn_if_probabilities(output: torch.Tensor) -> None:
    if output.dim() != 2 or output.shape[1] < 2 or not bool((output >= 0).all()):
        return
    if torch.allclose(output.sum(1), torch.ones(len(output), device=output.device), atol=1e-4):
        warnings.warn("the model output looks like probabilities (rows sum to 1) and no final softmax layer "
                      "was found to strip; logit() then climbs saturating probabilities. Return logits from "
                      "the model (or end it in nn.Softmax / a softmax activation) for better images.",
                      stacklevel=4)  # fmt: skip


def _available_memory(device: torch.device) -> int:
    """A fixed memory budget per chunk: never the *free* memory, so the automatic chunking (which the
    random draws depend on) is the same on every run and the same seed gives the same images."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.25)
    return _CPU_BUDGET


def chunk_size(n: int, bytes_per_image: int, device: torch.device, batch_size: int | None = None) -> int:
    """Images per chunk: ``batch_size`` when given, else as many as fit the memory budget (at least 1)."""
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size={batch_size!r} is not allowed; pass an int >= 1 or None (automatic)")
        return min(n, batch_size)
    return max(1, min(n, _available_memory(device) // max(bytes_per_image, 1)))


def maximize(
    scope: Any,
    objective: ObjectiveLike,
    *,
    steps: int | None = None,
    size: int | Sequence[int] | None = None,
    param: str | ParamKind | ParamFactory | None = None,
    transforms: Transform | Sequence[Transform] | None = None,
    regularizers: Sequence[Regularizer] | None = None,
    decorrelate: bool | np.ndarray | torch.Tensor | None = None,
    lr: float | None = None,
    seed: int = 0,
    recipe: str | Recipe = "default",
    batch_size: int | None = None,
    progress: Progress = None,
) -> Visualization:
    """Synthesise one image per objective entry by gradient ascent; see :meth:`convscope.Scope.maximize`.

    ``progress`` (default ``None``: a tqdm bar for runs of 100 steps or more; ``True`` always, ``False``
    never) may be a callable, called as ``progress(step, total)`` after every optimiser step, ``step``
    running 1..``total`` (``total`` = steps × batches), instead of the bar. Example::

        maximize(scope, channel("conv_1", 0), steps=64, progress=lambda step, total: print(f"{step}/{total}"))
    """
    obj = as_objective(objective)
    check_progress(progress)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OptionError(f"seed={seed!r} is not allowed; pass an int >= 0")
    settings = resolve_settings(recipe=recipe, declared_size=scope.input_spec().size, steps=steps, size=size,
                                param=param, transforms=transforms, regularizers=regularizers,
                                decorrelate=decorrelate, lr=lr)  # fmt: skip
    runner = Runner(scope, obj, settings)
    probe = runner.probe()
    n = obj.size
    chunk = chunk_size(n, probe.bytes_per_image, runner.device, batch_size)
    bounds = [(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    generator = torch.Generator().manual_seed(seed)
    parts: list[tuple[torch.Tensor, ...]] = []
    with Steps(progress, settings.steps * len(bounds), f"maximize {obj.name}") as counter:
        for i, j in bounds:
            parts.append(runner.run(obj.slice(i, j), j - i, generator, counter))
    images, inputs, values, history = (torch.cat([p[k] for p in parts], dim=1 if k == 3 else 0) for k in range(4))
    meta = {"recipe": settings.recipe, "steps": settings.steps, "size": settings.size, "seed": seed,
            "lr": settings.lr, "param": str(getattr(settings.param, "value", settings.param)), "batch_size": chunk,
            "objective": obj.name}  # fmt: skip
    vis = Visualization(
        images=to_uint8(images),
        inputs=inputs,
        values=values.cpu().numpy().astype(np.float64),
        history=history.cpu().numpy().astype(np.float64),
        labels=obj.image_labels(),
        layout=runner.layout,
        meta=meta,
    )
    warn_if_blank(vis)  # a flat grey picture is said out loud, never returned silently
    return vis


def maximize_layer(
    scope: Any, layer: Any, *, channels: int | Sequence[int] | range | None = None, **options: Any
) -> Visualization:
    """One image per channel of ``layer`` (default every channel), optimised in memory-sized batches.

    ``channels`` may be an int (the first ``channels`` channels), a list or a range. Other options as for
    :func:`maximize`. Example: ``maximize_layer(scope, "conv_1", channels=range(16)).grid()``
    """
    from convscope.optim.objectives import channel

    if channels is None or (isinstance(channels, int) and not isinstance(channels, bool)):
        count = channel_count(scope, layer, size=options.get("size"))
        if channels is not None and not 1 <= channels <= count:
            raise OptionError(f"channels={channels} is not allowed; layer {layer!r} has {count} channels, so pass "
                              f"1..{count} or a list of indices")  # fmt: skip
        channels = range(count if channels is None else channels)
    return maximize(scope, channel(layer, channels), **options)


def channel_count(scope: Any, layer: Any, *, size: int | Sequence[int] | None = None) -> int:
    """Number of channels of ``layer``'s output (one shapes-only pass on a grey image)."""
    from convscope.optim.objectives import channel

    settings = resolve_settings(recipe="plain", declared_size=scope.input_spec().size, size=size, steps=1)
    probe = Runner(scope, channel(layer, 0), settings).probe()
    return probe.shapes.layer(layer)[0]
