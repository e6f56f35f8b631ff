"""Faithfulness of attribution maps: deletion and insertion curves (Petsiuk et al. 2018, RISE).

Pixels are ranked by the map (highest first). **Deletion** replaces the top-ranked fraction of pixels
by a baseline (default zeros) in ``steps`` equal increments; a faithful map makes the target score fall
fast, so *lower* AUC is better. **Insertion** starts from a baseline (default a blurred copy) and puts
the top-ranked pixels back; the score should rise fast, so *higher* AUC is better. The score is the
target class probability (softmax over the model's logits, as in the paper) or, with
``score="logit"``, the logit; a callable target (given here, or the one an :class:`Attribution` was
made with) is used as is. AUC is the trapezoid area over the removed/inserted fraction in [0, 1].
Ties in the ranking keep pixel order (row-major).

Example::

    att = scope.attribute(x, method="gradcam")
    cs.metrics.deletion(scope, att).auc      # per sample; lower is better
    cs.metrics.insertion(scope, att).auc     # higher is better
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convscope.attribution.engine import Job
from convscope.attribution.integrated import gaussian_blur
from convscope.attribution.result import Attribution
from convscope.attribution.targets import TargetLike, TargetSpec
from convscope.errors import ConvscopeError, OptionError, check_choice

if TYPE_CHECKING:
    from convscope.scope import Scope

__all__ = ["Curve", "deletion", "insertion"]


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve per sample.

    ``fractions`` ``(steps + 1,)`` of pixels removed/inserted, ``scores`` ``(N, steps + 1)``, ``auc``
    ``(N,)`` trapezoid area under each curve.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())

    def __repr__(self) -> str:
        return f"Curve({self.kind}, steps={len(self.fractions) - 1}, auc={np.round(self.auc, 4).tolist()})"


def deletion(
    scope: Scope,
    attribution: Attribution | np.ndarray,
    *,
    inputs: Any = None,
    target: TargetLike = None,
    steps: int = 50,
    baseline: Any = "zero",
    score: str = "probability",
    batch_size: int = 32,
) -> Curve:
    """Deletion curve: target score as the top-ranked pixels are replaced by ``baseline``.

    Args:
        scope: the model's :class:`~convscope.Scope`.
        attribution: an :class:`Attribution` (its inputs and targets are reused) or maps ``(N, H, W)``.
        inputs: the inputs the maps explain (required with plain maps; default: the attribution's).
        target: default: the attribution's targets — its class indices, or the callable it was made
            with (scored as is, ``score`` then does not apply); top-1 class for plain maps.
        steps: increments from 0 to all pixels (default 50).
        baseline: ``"zero"`` (default), ``"blur"``, a number, or an array/tensor like the input batch.
        score: ``"probability"`` (default) or ``"logit"``.
        batch_size: modified inputs per forward pass (default 32).

    Example: ``deletion(scope, att, steps=20).mean_auc``.
    """
    return _curve("deletion", scope, attribution, inputs, target, steps, baseline, score, batch_size)


def insertion(
    scope: Scope,
    attribution: Attribution | np.ndarray,
    *,
    inputs: Any = None,
    target: TargetLike = None,
    steps: int = 50,
    baseline: Any = "blur",
    score: str = "probability",
    batch_size: int = 32,
) -> Curve:
    """Insertion curve: target score as the top-ranked pixels are copied from the input into ``baseline``.

    Arguments as :func:`deletion`; ``baseline`` defaults to ``"blur"`` (Gaussian, σ = max(H, W) / 16).

    Example: ``insertion(scope, att).auc``.
    """
    return _curve("insertion", scope, attribution, inputs, target, steps, baseline, score, batch_size)


def _curve(
    kind: str,
    scope: Scope,
    attribution: Attribution | np.ndarray,
    inputs: Any,
    target: TargetLike,
    steps: int,
    baseline: Any,
    score: str,
    batch_size: int,
) -> Curve:
    if getattr(scope, "bridged", False):  # Keras on TensorFlow/JAX: computed in the scope's worker process
        return scope._call(f"convscope.attribution.metrics:{kind}", attribution, inputs=inputs, target=target,  # type: ignore[attr-defined, no-any-return]
                           steps=steps, baseline=baseline, score=score, batch_size=batch_size)  # fmt: skip
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"{kind}: {name}={value!r} is not allowed; pass a positive int")
    probability = check_choice("score", score, ["probability", "logit"]) == "probability"
    maps, x, target = _unpack(scope, attribution, inputs, target)
    job = Job(scope.adapter, x, TargetSpec(target, len(x)))
    if tuple(maps.shape) != (len(x), *job.spatial_size()):
        raise OptionError(f"{kind}: maps have shape {tuple(maps.shape)} but the inputs need "
                          f"{(len(x), *job.spatial_size())}")  # fmt: skip
    job.ensure_targets()
    base = _baseline(job, baseline, kind)
    start, end = (x, base) if kind == "deletion" else (base, x)
    rank = torch.empty_like(maps, dtype=torch.long).flatten(1)
    order = torch.argsort(-maps.flatten(1), dim=1, stable=True)
    rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    counts = torch.round(torch.linspace(0, order.shape[1], steps + 1)).long()
    out = torch.zeros((len(x), steps + 1), dtype=torch.float64)
    pairs = torch.cartesian_prod(torch.arange(len(x)), torch.arange(steps + 1)).long().view(-1, 2)
    with job.scorer(probability=probability) as run:
        for chunk in pairs.split(batch_size):
            n, i = chunk[:, 0], chunk[:, 1]
            changed = (rank[n] < counts[i][:, None]).view(len(chunk), *maps.shape[1:]).to(x.dtype).to(x.device)
            n_dev = n.to(x.device)
            images = job.pixel_mask(start[n_dev], 1 - changed) + job.pixel_mask(end[n_dev], changed)
            out[n, i] = run(images, n).double().cpu()
    fractions = (counts.double() / order.shape[1]).numpy()
    scores = out.numpy()
    auc = ((scores[:, 1:] + scores[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)  # trapezoid rule
    return Curve(kind, fractions, scores, auc)


def _unpack(scope: Scope, attribution: Any, inputs: Any, target: TargetLike) -> tuple[torch.Tensor, torch.Tensor, Any]:
    if isinstance(attribution, Attribution):
        x = scope.prepare(inputs) if inputs is not None else torch.from_numpy(attribution.inputs)
        if target is None:
            target = list(attribution.targets) if attribution.targets is not None else attribution.target_fn
        if target is None:  # no silent switch to the top-1 class
            raise ConvscopeError(
                f"this {attribution.method} Attribution records neither class targets nor the callable it "
                "explained, so its score is unknown; pass target=... (a class index, one per sample, or the "
                "same callable)"
            )
        maps = attribution.maps
    else:
        if inputs is None:
            raise OptionError("plain maps need inputs=...: the images the maps explain")
        x, maps = scope.prepare(inputs), attribution
    m = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    if m.dim() == 2:
        m = m[None]
    return m, x.to(scope.adapter.device), target


def _baseline(job: Job, baseline: Any, kind: str) -> torch.Tensor:
    x = job.x
    if isinstance(baseline, str):
        choice = check_choice(f"{kind}: baseline", baseline, ["zero", "blur"])
        if choice == "zero":
            return torch.zeros_like(x)
        blurred = gaussian_blur(job.to_nchw(x), max(job.spatial_size()) / 16)
        return blurred if job.layout.value == "NCHW" else blurred.permute(0, 2, 3, 1).contiguous()
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(np.asarray(baseline) if not isinstance(baseline, torch.Tensor) else baseline.detach())
    try:
        return b.to(dtype=x.dtype, device=x.device).expand_as(x).clone()
    except RuntimeError:
        raise OptionError(f"{kind}: baseline of shape {tuple(b.shape)} does not fit inputs {tuple(x.shape)}") from None
