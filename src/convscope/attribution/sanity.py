"""Sanity check for attribution methods: cascading model-parameter randomisation (Adebayo et al. 2018).

On a deep copy of the model, the layers that own parameters are re-initialised one at a time from the
output layer down (cumulatively); after each step the attribution is recomputed for the *same* targets
and layer and compared with the original map by Spearman rank correlation. A method that explains the
model should lose its map as the learned weights go; one that only reflects the input (edges) will not.

Re-initialisation: every parameter tensor is redrawn, independently per entry, from a zero-mean normal
truncated at ±2σ and scaled so that its expected root-mean-square equals the tensor's own RMS
``sqrt(mean(p²))`` (0.01 for an all-zero tensor). Each tensor keeps its *magnitude*; its learned
structure — pattern, signs and mean — is destroyed. So conv and dense weights (mean ≈ 0) get new random
weights of the same spread, and BatchNorm γ ≈ 1 becomes values of magnitude ≈ 1 with random signs
rather than collapsing to ≈ 0. The mean is deliberately not kept: a small learned mean of a weight
matrix, summed over a large fan-in, would shift every unit and can kill all ReLUs after it.
Correlations use ``.maps``; a randomised map that becomes constant gets ρ = 0.

Verdict (:class:`Verdict`): ``"pass"`` when the mean |ρ| over samples after the last step is below
``threshold``, ``"fail"`` otherwise, and ``"inconclusive"`` when any *original* map is constant (all
zero after normalisation: dead ReLUs, an untrained model, or a layer the target does not depend on) —
rank correlation with a constant map is undefined, so nothing can be concluded; those samples' ρ are
NaN and a warning says so. ``report.passed`` is ``True``, ``False``, or ``None`` when inconclusive.

Example::

    report = scope.sanity_check(x, method="gradcam")
    print(report)            # one row per randomised layer, then the verdict
    report.verdict           # Verdict.PASS / FAIL / INCONCLUSIVE
    report.passed            # True / False / None
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from convscope.attribution.base import user_stacklevel
from convscope.attribution.result import Attribution
from convscope.capture import Capture, Target
from convscope.errors import ConvscopeError, OptionError

if TYPE_CHECKING:
    from convscope.scope import Scope


class Verdict(str, Enum):
    """Outcome of :func:`sanity_check`."""

    PASS = "pass"  # the maps lost their structure: the method depends on the learned weights
    FAIL = "fail"  # the maps survived randomisation
    INCONCLUSIVE = "inconclusive"  # some original map is constant, so rank correlation says nothing


@dataclass(frozen=True)
class SanityReport:
    """Result of :func:`sanity_check`.

    ``layers`` are randomised cumulatively in this order (output side first); ``correlations``
    ``(len(layers), N)`` is Spearman ρ between the map after each step and the original (NaN for the
    samples in ``constant``); ``maps`` ``(len(layers) + 1, N, H, W)`` holds the original maps first, then
    one set per step; ``constant`` lists the samples whose original map is constant; ``verdict`` is a
    :class:`Verdict`.
    """

    method: str
    layers: tuple[str, ...]
    correlations: np.ndarray
    maps: np.ndarray
    threshold: float
    verdict: Verdict
    constant: tuple[int, ...] = ()

    @property
    def passed(self) -> bool | None:
        """``True`` (pass), ``False`` (fail), or ``None`` when the check is inconclusive."""
        return None if self.verdict is Verdict.INCONCLUSIVE else self.verdict is Verdict.PASS

    def __str__(self) -> str:
        width = max([len("randomised down to"), *map(len, self.layers)])
        lines = [f"Sanity check of {self.method!r} (cascading randomisation, Spearman rho vs original map)",
                 f"{'randomised down to':<{width}}  mean rho  per sample"]  # fmt: skip
        for name, row in zip(self.layers, self.correlations, strict=True):
            shown = " ".join(f"{v:+.2f}" for v in row[:8]) + (" ..." if len(row) > 8 else "")
            lines.append(f"{name:<{width}}  {_mean(row):+8.3f}  {shown}")
        if self.verdict is Verdict.INCONCLUSIVE:
            lines.append(f"INCONCLUSIVE: the original map of sample(s) {list(self.constant)} is constant (all "
                         "zero), so rank correlation cannot show whether randomisation changes it; check for "
                         "dead ReLUs, an untrained model, or a layer the target does not depend on")  # fmt: skip
            return "\n".join(lines)
        final = _mean(np.abs(self.correlations[-1])) if len(self.layers) else float("nan")
        passed = self.verdict is Verdict.PASS
        lines.append(f"{'PASS' if passed else 'FAIL'}: mean |rho| after randomising every layer = {final:.3f} "
                     f"({'<' if passed else '>='} threshold {self.threshold})")  # fmt: skip
        return "\n".join(lines)

    def grid(self, index: int = 0, *, cmap: str = "turbo") -> Image.Image:
        """Sample ``index``'s original map followed by its map after each step, in one row."""
        from convscope.render import apply_cmap
        from convscope.render.overlay import tile

        return tile([apply_cmap(m, cmap) for m in self.maps[:, index]], cols=len(self.maps))


def _mean(values: np.ndarray) -> float:
    """Mean of the finite entries (NaN when there are none), without NumPy's empty-slice warning."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def rank(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array with ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(1, len(a) + 1)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (flattened); 0.0 when either is constant."""
    ra, rb = rank(np.ravel(a)), rank(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def copy_scope(scope: Scope) -> Scope:
    """A :class:`Scope` over a deep copy of the model, with the same preprocessing and aliases."""
    from convscope.scope import Scope

    try:
        model = copy.deepcopy(scope.model)
    except Exception as exc:  # locks, open files, C++ handles: say why instead of touching the original
        raise ConvscopeError(f"sanity_check randomises a deep copy of the model, but copy.deepcopy failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    clone = Scope(model, input_shape=scope.adapter.input_shape, **scope.preprocessing())
    for alias, handle in scope.index.aliases.items():
        clone.rename(handle.name, alias)
    return clone


def _owned_parameters(scope: Scope, target: Target) -> list[Any]:
    module: Any = target.handle.module
    if scope.framework == "keras":
        weights = module.trainable_weights if module.trainable else module.weights
        return [w for w in weights if not w.name.startswith("moving")]
    return list(module.parameters())


def parameter_layers(scope: Scope, x: torch.Tensor) -> list[Target]:
    """Leaf layers owning parameters, in reverse execution order (output side first)."""
    leaves = [Target(h) for h in scope.adapter.handles if h.is_leaf]
    leaves = [t for t in leaves if _owned_parameters(scope, t)]
    with Capture(scope.adapter, leaves, shapes_only=True, skip_errors=True) as cap:
        cap.run(x[:1])
    order = list(dict.fromkeys(key for key, _ in cap.recording.events))
    by_key = {t.key: t for t in leaves}
    return [by_key[k] for k in reversed(order)]


_TRUNCATED_STD = 0.8796256610342398  # standard deviation of a standard normal truncated at ±2


def randomise(scope: Scope, target: Target, generator: torch.Generator) -> None:
    """Re-initialise a layer's parameters in place: each tensor is redrawn zero-mean (normal truncated at
    ±2σ) with the expected root-mean-square of the tensor itself (0.01 for an all-zero tensor)."""
    for p in _owned_parameters(scope, target):
        if scope.framework == "keras":
            from convscope.adapters.keras import to_numpy

            current = torch.from_numpy(to_numpy(p))
        else:
            current = p.detach().cpu().clone()
        rms = float(current.double().square().mean().sqrt()) if current.numel() else 0.0
        sigma = (rms if rms > 0 else 0.01) / _TRUNCATED_STD
        z = torch.randn(current.shape, generator=generator, dtype=torch.float64)
        while (bad := z.abs() > 2).any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator, dtype=torch.float64)
        values = (z * sigma).to(current.dtype)
        if scope.framework == "keras":
            p.assign(values.numpy())
        else:
            with torch.no_grad():
                p.copy_(values.to(p.device))


def sanity_check(
    scope: Scope,
    inputs: Any,
    *,
    method: Any = "gradcam",
    target: Any = None,
    layer: Any = None,
    threshold: float = 0.5,
    init_seed: int = 0,
    **options: Any,
) -> SanityReport:
    """See :meth:`convscope.Scope.sanity_check` and this module's docstring for the verdict.

    ``threshold=0.5``; ``init_seed=0`` seeds the re-initialisation. Warns (and the verdict is
    ``"inconclusive"``) when any original map is constant.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise OptionError(f"threshold={threshold!r} is not allowed; pass a number in (0, 1]")
    clone = copy_scope(scope)
    original: Attribution = clone.attribute(inputs, method=method, target=target, layer=layer, **options)
    fixed = list(original.targets) if original.targets is not None else target
    x = torch.from_numpy(original.inputs).to(clone.adapter.device)
    layers = parameter_layers(clone, x)
    if not layers:
        raise OptionError("this model has no layers with parameters; there is nothing to randomise")
    generator = torch.Generator().manual_seed(int(init_seed))
    names, rows, maps = [], [], [original.maps]
    for t in layers:
        randomise(clone, t, generator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty maps are an expected outcome here
            att = clone.attribute(x, method=method, target=fixed, layer=original.layer, **options)
        names.append(clone.index.display_name(t.handle))
        rows.append([spearman(a, b) for a, b in zip(original.maps, att.maps, strict=True)])
        maps.append(att.maps)
    corr = np.asarray(rows, dtype=np.float64)
    verdict, constant = judge(original, corr, threshold)
    return SanityReport(original.method, tuple(names), corr, np.stack(maps), float(threshold), verdict, constant)


def judge(original: Attribution, corr: np.ndarray, threshold: float) -> tuple[Verdict, tuple[int, ...]]:
    """The verdict and the samples whose original map is constant (their ρ set to NaN in ``corr``)."""
    constant = tuple(i for i, m in enumerate(original.maps) if np.ptp(m) == 0)
    if not constant:
        return (Verdict.PASS if np.abs(corr[-1]).mean() < threshold else Verdict.FAIL), ()
    corr[:, list(constant)] = np.nan  # ρ against a constant map is undefined, not 0
    warnings.warn(
        f"sanity_check of {original.method!r} is inconclusive: the original map of sample(s) {list(constant)} "
        "is constant (all zero), so randomisation cannot be seen to change it. Typical causes: dead ReLUs, "
        "an untrained model, or a layer the target does not depend on; try another layer, target or inputs",
        stacklevel=user_stacklevel(),
    )
    return Verdict.INCONCLUSIVE, constant
