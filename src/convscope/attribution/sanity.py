"""Sanity check for attribution methods: cascading model-parameter randomisation (Adebayo et al. 2018).

On a deep copy of the model, the layers that own parameters are re-initialised one at a time from the
output layer down (cumulatively); after each step the attribution is recomputed for the *same* targets
and layer and compared with the original map by Spearman rank correlation. A method that explains the
model should lose its map as the learned weights go; one that only reflects the input (edges) will not.

Re-initialisation: every parameter tensor is drawn from a truncated normal (±2σ) with σ the tensor's own
standard deviation (0.01 where that is 0), so each layer keeps its scale and only its learned structure
is destroyed. Correlations use ``.maps``; a map that becomes constant gets ρ = 0. The verdict passes when
the mean |ρ| over samples after the last step is below ``threshold``.

Example::

    report = scope.sanity_check(x, method="gradcam")
    print(report)            # one row per randomised layer
    report.passed
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from convscope.attribution.result import Attribution
from convscope.capture import Capture, Target
from convscope.errors import ConvscopeError, OptionError

if TYPE_CHECKING:
    from convscope.scope import Scope


@dataclass(frozen=True)
class SanityReport:
    """Result of :func:`sanity_check`.

    ``layers`` are randomised cumulatively in this order (output side first); ``correlations``
    ``(len(layers), N)`` is Spearman ρ between the map after each step and the original; ``maps``
    ``(len(layers) + 1, N, H, W)`` holds the original maps first, then one set per step.
    """

    method: str
    layers: tuple[str, ...]
    correlations: np.ndarray
    maps: np.ndarray
    threshold: float
    passed: bool

    def __str__(self) -> str:
        width = max([len("randomised down to"), *map(len, self.layers)])
        lines = [f"Sanity check of {self.method!r} (cascading randomisation, Spearman rho vs original map)",
                 f"{'randomised down to':<{width}}  mean rho  per sample"]  # fmt: skip
        for name, row in zip(self.layers, self.correlations, strict=True):
            shown = " ".join(f"{v:+.2f}" for v in row[:8]) + (" ..." if len(row) > 8 else "")
            lines.append(f"{name:<{width}}  {row.mean():+8.3f}  {shown}")
        final = float(np.abs(self.correlations[-1]).mean()) if len(self.layers) else float("nan")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: mean |rho| after randomising every layer = {final:.3f} "
                     f"({'<' if self.passed else '>='} threshold {self.threshold})")  # fmt: skip
        return "\n".join(lines)

    def grid(self, index: int = 0, *, cmap: str = "turbo") -> Image.Image:
        """Sample ``index``'s original map followed by its map after each step, in one row."""
        from convscope.render import apply_cmap
        from convscope.render.overlay import tile

        return tile([apply_cmap(m, cmap) for m in self.maps[:, index]], cols=len(self.maps))


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
    clone = Scope(model, input_shape=scope.adapter.input_shape, scale=scope.scale, mean=scope.mean, std=scope.std)
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


def randomise(scope: Scope, target: Target, generator: torch.Generator) -> None:
    """Re-initialise a layer's parameters in place (truncated normal with each tensor's own σ)."""
    for p in _owned_parameters(scope, target):
        current = torch.as_tensor(np.asarray(p.numpy() if scope.framework == "keras" else p.detach().cpu()))
        sigma = float(current.double().std()) if current.numel() > 1 else 0.0
        sigma = sigma if sigma > 0 else 0.01
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
    """See :meth:`convscope.Scope.sanity_check`. ``init_seed`` seeds the re-initialisation (default 0)."""
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
    passed = bool(np.abs(corr[-1]).mean() < threshold)
    return SanityReport(original.method, tuple(names), corr, np.stack(maps), float(threshold), passed)
