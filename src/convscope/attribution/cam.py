"""The class-activation-map family: one layer's feature maps A^k weighted and summed.

With ``A`` the layer output ``(K, h, w)`` and ``g = ∂y_c/∂A`` the gradient of the target logit, every
method returns ``ReLU(Σ_k w_k ⊙ A^k)`` on the layer grid (``relu=False`` keeps the sign) and differs only
in :meth:`CAM.weights`:

* ``gradcam``   w_k = mean_ij g^k_ij (Selvaraju et al. 2017)
* ``gradcam++`` w_k = Σ_ij α^k_ij ReLU(g^k_ij), α = g² / (2g² + Σ_ab A^k_ab · g³) — eq. 19 of
  Chattopadhyay et al. 2018 (α = 0 where the denominator is 0). The authors' released code and
  tf-keras-vis also divide α by Σ_ij α^k_ij; ``alpha_norm=True`` reproduces that variant.
* ``hirescam``  w = g element-wise (Draelos & Carin 2020); for conv → flatten → linear heads
  ``Σ_ij`` of the map (with ``relu=False``) is the logit minus the bias.
* ``xgradcam``  w_k = Σ_ij g^k_ij A^k_ij / Σ_ab A^k_ab (Fu et al. 2020; 0 where Σ A = 0)
* ``layercam``  w = ReLU(g) element-wise (Jiang et al. 2021)
* ``eigencam``  projection of A onto its first right-singular vector (Muhammad & Yeasin 2020), no
  gradients and no target; the SVD's sign is fixed so the map correlates positively with the
  activation energy Σ_k |A^k| (by its sum when that correlation is 0). ``center=False`` follows
  the paper; ``center=True`` subtracts the per-channel mean first, as pytorch-grad-cam does.

``guided_gradcam`` multiplies guided backprop by Grad-CAM upsampled (bilinear) and scaled to [0, 1].

Example::

    att = scope.attribute(x, method="gradcam++", target=281, layer="features.29")
"""

from __future__ import annotations

from typing import ClassVar

import torch

from convscope.attribution.base import Grid, Method, Raw
from convscope.attribution.engine import Job, LayerPass
from convscope.attribution.gradients import GuidedBackprop


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


class CAM(Method):
    """Base of the CAM family: override :meth:`weights` (or :meth:`combine` for non-linear rules).

    Options (defaults): ``relu=True`` — clip negative evidence, as every paper here does.
    """

    grid = Grid.LAYER
    uses_layer = True
    uses_grad: ClassVar[bool] = True
    defaults = {"relu": True}

    def compute(self, job: Job) -> Raw:
        relu = self.bool_option("relu")
        self.validate()
        p = job.layer_pass(grad=self.uses_grad)
        cam = self.combine(p, job)
        return Raw(cam.clamp(min=0) if relu else cam)

    def validate(self) -> None:
        """Check method-specific options before any pass (default: nothing to check)."""

    def combine(self, p: LayerPass, job: Job) -> torch.Tensor:
        """``(N, h, w)`` map before the final ReLU: ``Σ_k weights ⊙ A^k``."""
        return (self.weights(p, job) * p.act).sum(dim=1)

    def weights(self, p: LayerPass, job: Job) -> torch.Tensor:
        """Channel weights ``(N, K, 1, 1)`` or element-wise weights ``(N, K, h, w)``."""
        raise NotImplementedError


class GradCAM(CAM):
    """Grad-CAM: feature maps weighted by their spatially averaged gradients (Selvaraju et al. 2017)."""

    name = "gradcam"

    def weights(self, p: LayerPass, job: Job) -> torch.Tensor:
        assert p.grad is not None
        return p.grad.mean(dim=(2, 3), keepdim=True)


class GradCAMPlusPlus(CAM):
    """Grad-CAM++: positive gradients weighted by higher-order α (Chattopadhyay et al. 2018, eq. 19).

    Options (defaults): ``alpha_norm=False`` — True divides α by its spatial sum (authors' code).
    """

    name = "gradcam++"
    defaults = {"alpha_norm": False}

    def validate(self) -> None:
        self.bool_option("alpha_norm")

    def weights(self, p: LayerPass, job: Job) -> torch.Tensor:
        assert p.grad is not None
        g, a = p.grad.double(), p.act.double()
        g2 = g * g
        alpha = _safe_div(g2, 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g)
        if self.options["alpha_norm"]:
            alpha = _safe_div(alpha, alpha.sum(dim=(2, 3), keepdim=True))
        return (alpha * g.clamp(min=0)).sum(dim=(2, 3), keepdim=True).to(p.act.dtype)


class HiResCAM(CAM):
    """HiResCAM: feature maps multiplied element-wise by their gradients (Draelos & Carin 2020)."""

    name = "hirescam"

    def weights(self, p: LayerPass, job: Job) -> torch.Tensor:
        assert p.grad is not None
        return p.grad


class XGradCAM(CAM):
    """XGrad-CAM: gradients averaged with activation-proportional weights (Fu et al. 2020)."""

    name = "xgradcam"

    def weights(self, p: LayerPass, job: Job) -> torch.Tensor:
        assert p.grad is not None
        total = p.act.sum(dim=(2, 3), keepdim=True)
        return _safe_div((p.grad * p.act).sum(dim=(2, 3), keepdim=True), total)


class LayerCAM(CAM):
    """LayerCAM: feature maps weighted element-wise by their positive gradients (Jiang et al. 2021)."""

    name = "layercam"

    def weights(self, p: LayerPass, job: Job) -> torch.Tensor:
        assert p.grad is not None
        return p.grad.clamp(min=0)


class EigenCAM(CAM):
    """Eigen-CAM: the layer's first principal component, class-agnostic (Muhammad & Yeasin 2020).

    Options (defaults): ``center=False`` — True subtracts channel means before the SVD.
    """

    name = "eigencam"
    uses_grad = False
    uses_target = False
    score_power = 0
    defaults = {"center": False}

    def validate(self) -> None:
        self.bool_option("center")

    def combine(self, p: LayerPass, job: Job) -> torch.Tensor:
        n, k, h, w = p.act.shape
        m = p.act.double().reshape(n, k, h * w).transpose(1, 2)  # (N, hw, K)
        if self.options["center"]:
            m = m - m.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        proj = (m @ vh[:, 0, :, None])[..., 0]  # (N, hw)
        energy = p.act.double().abs().sum(dim=1).reshape(n, h * w)
        agree = ((proj - proj.mean(dim=1, keepdim=True)) * (energy - energy.mean(dim=1, keepdim=True))).sum(dim=1)
        agree = torch.where(agree == 0, proj.sum(dim=1), agree)
        sign = torch.where(agree < 0, -1.0, 1.0).to(proj.dtype)
        return (proj * sign[:, None]).reshape(n, h, w).to(p.act.dtype)


class GuidedGradCAM(Method):
    """Guided Grad-CAM: guided backprop times upsampled Grad-CAM scaled to [0, 1] (Selvaraju et al. 2017).

    Options (defaults): ``reduce="abs_max"``.
    """

    name = "guided_gradcam"
    uses_layer = True
    defaults = {"reduce": "abs_max"}

    def compute(self, job: Job) -> Raw:
        self.reduce()
        cam = job.upsample(GradCAM().compute(job).values)
        top = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
        cam = _safe_div(cam, top.expand_as(cam))
        guided = GuidedBackprop().compute(job).values
        return Raw(job.pixel_mask(guided, cam))
