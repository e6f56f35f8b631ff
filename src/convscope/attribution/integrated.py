"""Integrated Gradients (Sundararajan et al. 2017) with batched path steps and a convergence delta.

``IG_i(x) = (x_i − x'_i) · ∫₀¹ ∂f(x' + α(x − x'))/∂x_i dα``, the integral taken by ``rule`` with ``steps``
points: Gauss–Legendre (default, as Captum) or a Riemann sum (left, right, middle, trapezoid). By
completeness ``Σ_i IG_i = f(x) − f(x')``; ``Attribution.delta`` holds ``Σ_i IG_i − (f(x) − f(x'))`` per
sample, the quadrature error — raise ``steps`` when it is large relative to ``f(x) − f(x')``.

Baselines ``x'`` (in model-input space, i.e. after scaling and normalisation): ``"zero"`` (default),
``"blur"`` (the input blurred by a Gaussian of ``sigma`` pixels, default ``max(H, W) / 16``, Sturmfels
et al. 2020), a number (a constant input), or an array/tensor shaped like one sample or like the batch.

Example::

    att = scope.attribute(x, method="integrated_gradients", baseline="blur", steps=64)
    att.delta            # per-sample completeness error
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F

from convscope.attribution.base import Raw
from convscope.attribution.engine import Job
from convscope.attribution.gradients import GradientMethod
from convscope.errors import OptionError


class Rule(str, Enum):
    """Quadrature rule for the path integral."""

    GAUSS_LEGENDRE = "gausslegendre"
    RIEMANN_LEFT = "riemann_left"
    RIEMANN_RIGHT = "riemann_right"
    RIEMANN_MIDDLE = "riemann_middle"
    RIEMANN_TRAPEZOID = "riemann_trapezoid"


def quadrature(rule: Rule, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``α`` in [0, 1] and weights summing to 1 for ``steps`` evaluations.

    Example: ``quadrature(Rule.RIEMANN_RIGHT, 1)`` is ``([1.0], [1.0])``: one gradient at x.
    """
    if rule is Rule.GAUSS_LEGENDRE:
        t, w = np.polynomial.legendre.leggauss(steps)
        return (t + 1) / 2, w / 2
    i = np.arange(steps, dtype=np.float64)
    if rule is Rule.RIEMANN_TRAPEZOID:
        if steps < 2:
            raise OptionError("integrated_gradients: rule='riemann_trapezoid' needs steps >= 2")
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
        return i / (steps - 1), w
    offset = {Rule.RIEMANN_LEFT: 0.0, Rule.RIEMANN_RIGHT: 1.0, Rule.RIEMANN_MIDDLE: 0.5}[rule]
    return (i + offset) / steps, np.full(steps, 1.0 / steps)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-channel Gaussian blur of an NCHW batch (edges replicated), kernel radius ``ceil(3σ)``."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class IntegratedGradients(GradientMethod):
    """Integrated Gradients along the straight path from a baseline (Sundararajan et al. 2017).

    Options (defaults): ``steps=50``; ``rule="gausslegendre"`` (see :class:`Rule`); ``baseline="zero"``
    (``"blur"``, a number, or an array/tensor); ``sigma=None`` (blur width in pixels, default
    ``max(H, W) / 16``); ``batch_size=8`` path points per pass; ``reduce="abs_sum"``.
    """

    name = "integrated_gradients"
    defaults = {"steps": 50, "rule": "gausslegendre", "baseline": "zero", "sigma": None, "batch_size": 8,
                "reduce": "abs_sum"}  # fmt: skip

    def compute(self, job: Job) -> Raw:
        steps, size = self.int_option("steps"), self.int_option("batch_size")
        alphas, weights = quadrature(self.enum_option("rule", Rule), steps)
        self.reduce()
        base = self.baseline(job)
        job.ensure_targets()
        x = job.x.detach()
        total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        a = torch.as_tensor(alphas, dtype=torch.float64, device=x.device)
        w = torch.as_tensor(weights, dtype=torch.float64, device=x.device)
        pairs = torch.cartesian_prod(torch.arange(len(x)), torch.arange(steps)).long().view(-1, 2)
        for chunk in pairs.to(x.device).split(size):
            rows, s = chunk[:, 0], chunk[:, 1]
            shape = (-1, *[1] * (x.dim() - 1))
            points = (base[rows].double() + a[s].view(shape) * (x[rows] - base[rows]).double()).to(x.dtype)
            grad, _ = job.input_grad(points, job.rows[rows.cpu()], relu=self.relu)
            total.index_add_(0, rows, grad.double() * w[s].view(shape))
        attr = (x - base).double() * total
        with job.scorer() as score:
            gap = score(x, job.rows).double() - score(base, job.rows).double()
        return Raw(attr.to(x.dtype), attr.flatten(1).sum(dim=1) - gap, gap)

    def baseline(self, job: Job) -> torch.Tensor:
        """The baseline batch, shaped like ``job.x``."""
        value, x = self.options["baseline"], job.x.detach()
        if isinstance(value, str):
            if value == "zero":
                return torch.zeros_like(x)
            if value == "blur":
                sigma = self.options["sigma"]
                sigma = max(job.spatial_size()) / 16 if sigma is None else self.float_option("sigma")
                blurred = gaussian_blur(job.to_nchw(x), sigma)
                return blurred if job.layout.value == "NCHW" else blurred.permute(0, 2, 3, 1).contiguous()
            raise OptionError(f"{self.name}: baseline={value!r} is not allowed; pass 'zero', 'blur', a number, "
                              "or an array/tensor shaped like one input sample or the batch")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return torch.full_like(x, float(value))
        b = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value.detach())
        b = b.to(dtype=x.dtype, device=x.device)
        if b.shape == x.shape[1:]:
            return b.expand_as(x).clone()
        if b.dim() == x.dim() and b.shape[1:] == x.shape[1:] and len(b) in (1, job.targets.n):
            return b.expand_as(x).clone() if len(b) == 1 else b[job.rows.to(b.device)].clone()
        raise OptionError(f"{self.name}: the baseline has shape {tuple(b.shape)}; pass one sample "
                          f"{tuple(x.shape[1:])} or a batch (N, {', '.join(map(str, x.shape[1:]))}) in the model layout")
