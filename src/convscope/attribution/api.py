"""``attribute()``: validate a request, run the method, turn raw values into an :class:`Attribution`.

Example::

    from convscope.attribution.api import attribute
    att = attribute(scope, x, method="integrated_gradients", target=3, steps=64)
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from convscope.attribution.base import Grid, Method, Raw, Reduce, get_method, user_stacklevel
from convscope.attribution.engine import Job
from convscope.attribution.layer_choice import default_layer
from convscope.attribution.result import Attribution
from convscope.attribution.targets import TargetLike, TargetSpec
from convscope.capture import Target
from convscope.errors import OptionError

if TYPE_CHECKING:
    from convscope.scope import Scope


def attribute(
    scope: Scope,
    inputs: Any,
    *,
    method: str | Method = "gradcam",
    target: TargetLike = None,
    layer: Any = None,
    **options: Any,
) -> Attribution:
    """See :meth:`convscope.Scope.attribute`."""
    algo = make_method(method, options)
    x = scope.prepare(inputs)
    job = build_job(scope, x, algo, target=target, layer=layer)
    return finish(scope, job, algo, algo.compute(job))


def make_method(method: str | Method, options: dict[str, Any]) -> Method:
    """A configured method from a registry name and options, or a ready :class:`Method` instance."""
    if isinstance(method, Method):
        if options:
            raise OptionError(f"pass options either to the method instance or to attribute(), not both; "
                              f"received {sorted(options)}")  # fmt: skip
        return method
    if not isinstance(method, str):
        raise OptionError(f"method={method!r} is not allowed; pass a name from cs.attribution.methods()")
    return get_method(method)(**options)


def resolve_layer(scope: Scope, layer: Any, x: torch.Tensor) -> Target:
    """The CAM layer: ``layer`` (any query Scope understands, ``'name[i]'`` for tuple outputs) or, for
    ``None``, the last spatial tensor the whole output depends on — the last block's output (rule in
    :mod:`convscope.attribution.layer_choice`; found once per input shape, then cached on the scope)."""
    if layer is None:
        cache: dict[tuple[int, ...], Target] = scope.__dict__.setdefault("_attribution_layers", {})
        key = tuple(x.shape[1:])
        if key not in cache:
            cache[key] = default_layer(scope.adapter, x)
        return cache[key]
    found = scope.targets(layer)
    if len(found) != 1:
        from convscope.layers import ambiguous

        raise ambiguous(layer, [layer_name(scope, t) for t in found], "CAM methods explain one layer")
    return found[0]


def layer_name(scope: Scope, t: Target) -> str:
    name = scope.index.display_name(t.handle) + ("" if t.item is None else f"[{t.item}]")
    return name + ("" if not t.call else f"@{t.call}")


def build_job(scope: Scope, x: torch.Tensor, algo: Method, *, target: TargetLike, layer: Any) -> Job:
    """Validate targets and layer for ``algo`` and bundle them with the prepared batch ``x``."""
    if x.dim() != 4:
        raise OptionError(f"attribution maps need image-like inputs, a 4-D batch; received shape {tuple(x.shape)}")
    if target is not None and not algo.uses_target:
        warnings.warn(f"{algo.name!r} is class-agnostic: target={target!r} is ignored", stacklevel=user_stacklevel())
    spec = TargetSpec(target, len(x))
    if not algo.uses_layer:
        if layer is not None:
            raise OptionError(f"method {algo.name!r} works on the input, so layer={layer!r} does not apply; "
                              "layers are for the CAM methods (gradcam, gradcam++, hirescam, xgradcam, "
                              "layercam, scorecam, eigencam, guided_gradcam)")
        return Job(scope.adapter, x, spec)
    t = resolve_layer(scope, layer, x)
    return Job(scope.adapter, x, spec, layer=t, layer_name=layer_name(scope, t))


def to_maps(algo: Method, values: torch.Tensor, job: Job) -> torch.Tensor:
    """``(N, H, W)`` maps in [0, 1] at input resolution from raw values on ``algo``'s grid."""
    v = values.detach().float()
    if algo.grid is Grid.LAYER:
        m = job.upsample(v)
    elif algo.grid is Grid.PIXEL:
        m = v.clamp(min=0) if algo.reduce() is Reduce.POSITIVE_SUM else v.abs()
    else:
        m = reduce_channels(job.to_nchw(v), algo.reduce())
    return normalise(m)


def reduce_channels(v: torch.Tensor, how: Reduce) -> torch.Tensor:
    """NCHW values to one non-negative value per pixel, ``(N, H, W)``."""
    if how is Reduce.ABS_MAX:
        return v.abs().amax(dim=1)
    if how is Reduce.ABS_SUM:
        return v.sum(dim=1).abs()
    if how is Reduce.POSITIVE_SUM:
        return v.sum(dim=1).clamp(min=0)
    return v.norm(dim=1)


def normalise(m: torch.Tensor) -> torch.Tensor:
    """Per sample: divide by the maximum (min-max if any value is negative); constant maps become 0."""
    flat = m.flatten(1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    lo = torch.where(lo < 0, lo, torch.zeros_like(lo))
    span = (hi - lo).view(-1, 1, 1)
    out = (m - lo.view(-1, 1, 1)) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, out, torch.zeros_like(out)).clamp(0, 1)


def finish(scope: Scope, job: Job, algo: Method, raw: Raw) -> Attribution:
    """Package raw values, maps and pictures; warn about samples whose map came out empty."""
    maps = to_maps(algo, raw.values, job)
    empty = [i for i in (maps.flatten(1).amax(dim=1) == 0).nonzero().flatten().tolist() if i not in job.zero_grad]
    if empty:
        warnings.warn(f"the {algo.name} map is all zero for sample(s) {empty}: nothing in the input (or layer) "
                      "raises the target score by this method's measure", stacklevel=user_stacklevel())  # fmt: skip
    _warn_if_near_zero(algo, raw.values, job, skip=set(empty) | job.zero_grad)
    if raw.delta is not None and raw.gap is not None:
        _warn_if_not_converged(algo, raw.delta, raw.gap)
    x = job.x.detach().cpu().float().numpy()
    images = scope.input_spec().to_display(x)  # inverts scale, mean, std and BGR
    return Attribution(
        method=algo.name,
        raw=raw.values.detach().cpu().float().numpy(),
        maps=maps.cpu().numpy().astype("float32"),
        targets=job.targets.classes(),
        layer=job.layer_name,
        images=images,
        inputs=x,
        delta=None if raw.delta is None else raw.delta.detach().cpu().double().numpy(),
        options=dict(algo.options),
        target_fn=job.targets.fn,
        resize=scope.resize.value,
    )


#: A map is near zero when its peak |raw value| is below this fraction of the sample's largest |logit|:
#: one float32 rounding step (2**-23), a change the model's own output could not even represent.
NEAR_ZERO = float(torch.finfo(torch.float32).eps)


def _warn_if_near_zero(algo: Method, values: torch.Tensor, job: Job, *, skip: set[int]) -> None:
    """Warn about maps that are not zero but negligible next to the model's output scale.

    Raw values are the target score's gradients or score contributions (times input or activation
    values of order 1), so they are compared with the logits' scale: ``peak ** (1 / score_power)``
    against ``NEAR_ZERO × max |logit|``. Normalised, such a map would show rounding noise as if it were
    evidence. Skipped for callable targets and for methods whose size is not tied to the score.
    """
    if algo.score_power == 0 or not algo.uses_target or job.targets.fn is not None:
        return
    peak = values.detach().abs().flatten(1).amax(dim=1).double().cpu() ** (1.0 / algo.score_power)
    scale = job.targets.output_scale
    near = [i for i in ((peak > 0) & (peak < NEAR_ZERO * scale)).nonzero().flatten().tolist() if i not in skip]
    if near:
        worst = min(near, key=lambda i: float(peak[i] / scale[i]))
        warnings.warn(f"the {algo.name} map is near zero for sample(s) {near}: its peak is "
                      f"{float(peak[worst] / scale[worst]):.1e} of the largest |logit| (below {NEAR_ZERO:.1e}), "
                      "so the target score barely depends on the input (or layer) and the normalised map shows "
                      "rounding noise; check the target and the layer", stacklevel=user_stacklevel())  # fmt: skip


def _warn_if_not_converged(algo: Method, delta: torch.Tensor, gap: torch.Tensor) -> None:
    """Integrated Gradients: warn when the completeness error exceeds 1 % of f(x) − f(x')."""
    relative = delta.abs() / gap.abs().clamp(min=1e-12)
    bad = ((relative > 0.01) & (gap.abs() > 1e-6)).nonzero().flatten().tolist()
    if bad:
        worst = float(relative[bad].max())
        warnings.warn(f"{algo.name}: the attributions miss completeness by up to {worst:.1%} of f(x) - f(baseline) "
                      f"for sample(s) {bad}; raise steps (now {algo.options.get('steps')}) or try another rule",
                      stacklevel=user_stacklevel())  # fmt: skip
