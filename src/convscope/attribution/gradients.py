"""Gradient methods on the input grid: saliency, gradient × input, guided backprop, deconvnet, SmoothGrad.

Raw values keep the model input's shape and layout and are signed; ``.maps`` reduce channels with the
``reduce`` option (:class:`~convscope.attribution.base.Reduce`).

* ``saliency`` — d y_c / d x (Simonyan et al. 2014); map: max over channels of |gradient|.
* ``gradient_x_input`` — x ⊙ d y_c / d x (Shrikumar et al. 2016); map: |sum over channels|.
* ``guided_backprop`` — gradient with ReLU backward ``g·[y>0]·[g>0]`` (Springenberg et al. 2015).
* ``deconvnet`` — gradient with ReLU backward ``relu(g)`` (Zeiler & Fergus 2014).
* ``smoothgrad`` — mean of a gradient method over ``samples`` noisy copies x + N(0, σ²),
  σ = ``noise`` · (max(x) − min(x)) per sample (Smilkov et al. 2017); ``smoothgrad_sq`` averages squares
  (SmoothGrad², Hooker et al. 2019), ``vargrad`` takes the variance (Adebayo et al. 2018).

Example::

    att = scope.attribute(x, method="smoothgrad", base="guided_backprop", samples=25, noise=0.1)
"""

from __future__ import annotations

from typing import ClassVar

import torch

from convscope.attribution.base import Method, Raw, Reduce, get_method
from convscope.attribution.engine import Job
from convscope.attribution.guided import ReluMode
from convscope.errors import OptionError


class GradientMethod(Method):
    """Input gradients combined with the input by :meth:`combine` (override that one step).

    Options (defaults): ``reduce="abs_max"`` — how ``.maps`` merge channels (:class:`Reduce`).
    """

    relu: ClassVar[ReluMode] = ReluMode.NORMAL
    defaults = {"reduce": "abs_max"}

    def compute(self, job: Job) -> Raw:
        self.reduce()  # validate before the pass
        grad, _ = job.input_grad(relu=self.relu)
        return Raw(self.combine(grad, job.x))

    def combine(self, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Raw attribution from the gradient and the input (default: the gradient itself)."""
        return grad


class Saliency(GradientMethod):
    """Vanilla gradient of the target score w.r.t. the input (Simonyan et al. 2014)."""

    name = "saliency"


class GradientXInput(GradientMethod):
    """Gradient times input (Shrikumar et al. 2016)."""

    name = "gradient_x_input"
    defaults = {"reduce": "abs_sum"}

    def combine(self, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return grad * x


class GuidedBackprop(GradientMethod):
    """Gradient with ReLUs passing only positive gradients where the input was positive (Springenberg 2015)."""

    name = "guided_backprop"
    relu = ReluMode.GUIDED


class Deconvnet(GradientMethod):
    """Gradient with ReLUs passing positive gradients regardless of the forward input (Zeiler & Fergus 2014)."""

    name = "deconvnet"
    relu = ReluMode.DECONV


class SmoothGrad(Method):
    """SmoothGrad: a gradient method averaged over noisy copies of the input (Smilkov et al. 2017).

    Options (defaults): ``base="saliency"`` — any input-grid gradient method (``saliency``,
    ``gradient_x_input``, ``guided_backprop``, ``deconvnet``, ``integrated_gradients``);
    ``samples=50`` (the paper's n); ``noise=0.15`` (σ as a fraction of each sample's value range, the
    paper recommends 0.1–0.2); ``seed=0`` — every sample gets the same ``samples`` noise draws (scaled
    by its own σ), so results do not depend on batch-mates; ``batch_size=8`` noisy copies per pass;
    ``reduce=None`` — the base method's default; ``base_options={}`` — options for the base method.
    Override :meth:`aggregate` for another statistic.
    """

    name = "smoothgrad"
    defaults = {"base": "saliency", "samples": 50, "noise": 0.15, "seed": 0, "batch_size": 8,
                "reduce": None, "base_options": {}}  # fmt: skip

    def reduce(self) -> Reduce:
        if self.options["reduce"] is None:
            return self._base().reduce()
        return super().reduce()

    def _base(self) -> Method:
        name = self.options["base"]
        cls = get_method(name)
        if not issubclass(cls, GradientMethod):
            raise OptionError(f"{self.name}: base={name!r} is not allowed; SmoothGrad wraps an input-grid "
                              "gradient method: 'saliency', 'gradient_x_input', 'guided_backprop', "
                              "'deconvnet' or 'integrated_gradients'")
        options = self.options["base_options"]
        if not isinstance(options, dict):
            raise OptionError(f"{self.name}: base_options={options!r} is not allowed; pass a dict")
        return cls(**options)

    def compute(self, job: Job) -> Raw:
        base = self._base()
        samples, size = self.int_option("samples"), self.int_option("batch_size")
        noise, seed = self.float_option("noise"), self.int_option("seed", minimum=0)
        self.reduce()
        job.ensure_targets()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        draws = torch.randn((samples, *job.x.shape[1:]), generator=gen, dtype=torch.float64)
        x = job.x.detach()
        spread = (x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1)).double() * noise  # σ per sample
        total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        total_sq = torch.zeros_like(total)
        pairs = torch.cartesian_prod(torch.arange(len(x)), torch.arange(samples)).long().view(-1, 2)
        for chunk in pairs.split(size):
            rows, k = chunk[:, 0], chunk[:, 1]
            eps = draws[k].to(x.device) * spread[rows.to(x.device)].view(-1, *[1] * (x.dim() - 1))
            noisy = (x[rows.to(x.device)].double() + eps).to(x.dtype)
            values = base.compute(job.sub(noisy, job.rows[rows])).values.double()
            total.index_add_(0, rows.to(x.device), values)
            total_sq.index_add_(0, rows.to(x.device), values * values)
        return Raw(self.aggregate(total / samples, total_sq / samples).to(x.dtype))

    def aggregate(self, mean: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
        """The statistic over noise samples from the per-element mean and mean of squares (here: mean)."""
        return mean


class SmoothGradSquared(SmoothGrad):
    """SmoothGrad²: mean of squared gradients over noisy copies (Hooker et al. 2019)."""

    name = "smoothgrad_sq"
    score_power = 2

    def aggregate(self, mean: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
        return mean_sq


class VarGrad(SmoothGrad):
    """VarGrad: variance of gradients over noisy copies (Adebayo et al. 2018)."""

    name = "vargrad"
    score_power = 2

    def aggregate(self, mean: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
        return (mean_sq - mean * mean).clamp(min=0)
