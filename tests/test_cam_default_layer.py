"""The default CAM layer (``layer=None``) is the last spatial tensor the whole output depends on — the last
block's output — on a torchvision-layout ResNet-18, ``keras.applications`` ResNet50 and MobileNetV2, a
VGG-style net and the digit nets; Grad-CAM there equals a hand computation; reused modules never make the
default raise."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convscope as cs
from convscope.demo.models import keras_digits_model, torch_digits_model
from convscope.errors import OptionError
from resnet_replica import ResNet18


# -- torchvision-layout ResNet-18 (narrow) ----------------------------------------------------------------
def resnet18() -> ResNet18:
    torch.manual_seed(0)
    net = ResNet18()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in a trained model
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return net.eval()


class VGG(nn.Module):
    """torchvision's VGG layout: ``features`` (conv/ReLU/pool), adaptive ``avgpool``, ``classifier``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))  # resamples 8x8 to 7x7 for the head: part of the head
        self.classifier = nn.Sequential(nn.Linear(16 * 49, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def gradcam_reference(features: Any, head: Any, x: torch.Tensor, target: int, nhwc: bool = False) -> np.ndarray:
    """Grad-CAM by hand: A = features(x) as a leaf, α = mean of d head(A)[:, target] / dA, ReLU(Σ α A)."""
    with torch.no_grad():
        a = features(x)
    a = a.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(head(a)[:, target].sum(), a)
    dims, channels = ((1, 2), -1) if nhwc else ((2, 3), 1)
    cam = F.relu((g.mean(dim=dims, keepdim=True) * a.detach()).sum(dim=channels))
    return cam.numpy()


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> None:
    assert want.reshape(len(want), -1).max(axis=1).min() > 0  # a non-trivial map for every sample
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6 * float(want.max()))


def test_torchvision_resnet18_default_is_the_last_block_and_never_raises() -> None:
    net = resnet18()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    scope = cs.Scope(net)
    att = scope.attribute(x, method="gradcam", target=3)
    assert att.layer == "layer4.1"  # the last block's output, after the skip-add and the block's second ReLU
    want = gradcam_reference(net.features, lambda a: net.fc(torch.flatten(net.avgpool(a), 1)), x, target=3)
    assert_close(att.raw, want)
    assert scope.attribute(x, method="gradcam++").layer == "layer4.1"
    # an explicitly requested reused module still raises, and says what to pass instead
    with pytest.raises(OptionError, match=r"'layer4\.1\.relu' ran 2 times.*layer='layer4\.1'"):
        scope.attribute(x, method="gradcam", layer="layer4.1.relu")


class ResidualTail(nn.Module):
    """The second failure seen: the last block's bn2 sits before the skip-add; the sum feeds the head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = F.relu(self.bn2(self.conv2(h)) + h)  # functional add and ReLU: no module returns the sum
        return self.head(h.mean(dim=(2, 3)))


def test_branch_before_the_skip_add_is_never_the_default() -> None:
    net = ResidualTail().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    att = cs.Scope(net).attribute(x, method="gradcam", target=1)
    assert att.layer == "stem"  # bn2 is not a cut: the shortcut bypasses it; the last cut a module returns
    want = gradcam_reference(lambda t: net.stem(t), lambda a: net.head(F.relu(net.bn2(net.conv2(F.relu(a)))
                                                                          + F.relu(a)).mean(dim=(2, 3))),
                             x, target=1)  # fmt: skip
    assert_close(att.raw, want)


def test_vgg_default_is_the_last_pool_before_the_head() -> None:
    net = VGG().eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    att = cs.Scope(net).attribute(x, method="gradcam", target=2)
    assert att.layer == "features.7"
    want = gradcam_reference(net.features, lambda a: net.classifier(torch.flatten(net.avgpool(a), 1)), x, target=2)
    assert_close(att.raw, want)


def test_digit_nets_default_is_the_pool_layer() -> None:
    tnet = torch_digits_model(seed=0)
    xt = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    att = cs.Scope(tnet).attribute(xt, method="gradcam", target=4)
    assert att.layer == "pool"

    def torch_head(a: torch.Tensor) -> torch.Tensor:
        return tnet.predictions(F.relu(tnet.dense_0(a.flatten(1))))

    want = gradcam_reference(lambda t: tnet.pool(F.relu(tnet.conv_1(F.relu(tnet.conv_0(t))))), torch_head, xt, 4)
    assert_close(att.raw, want)

    kmodel = keras_digits_model(seed=0)
    xk = xt.permute(0, 2, 3, 1).contiguous()
    pool, dense, out = (kmodel.get_layer(n) for n in ("pool", "dense_0", "predictions"))
    conv0, conv1 = kmodel.get_layer("conv_0"), kmodel.get_layer("conv_1")

    def keras_head(a: torch.Tensor) -> torch.Tensor:
        kernel, bias = (torch.as_tensor(np.asarray(v.numpy())) for v in (out.kernel, out.bias))
        return dense(a.flatten(1)) @ kernel + bias  # logits: the final softmax left out

    wants = [gradcam_reference(lambda t: pool(conv1(conv0(t))), keras_head, xk, c, nhwc=True) for c in range(10)]
    target = next(c for c, want in enumerate(wants) if want.reshape(2, -1).max(axis=1).min() > 0)
    att = cs.Scope(kmodel).attribute(xk, method="gradcam", target=target)
    assert att.layer == "pool"
    assert_close(att.raw, wants[target])


# -- keras.applications (random weights, 64x64) ------------------------------------------------------------
def _keras_tail(model: Any, start: str) -> Any:
    """A function running ``model``'s layers after ``start`` (a linear chain there) up to pre-softmax logits."""
    names = [layer.name for layer in model.layers]
    tail = model.layers[names.index(start) + 1 :]

    def run(a: torch.Tensor) -> torch.Tensor:
        for layer in tail[:-1]:
            a = layer(a, training=False)
        last = tail[-1]
        kernel, bias = (torch.as_tensor(np.asarray(v.numpy())) for v in (last.kernel, last.bias))
        return a @ kernel + bias

    return run


@pytest.mark.parametrize(("build", "expected"), [("ResNet50", "conv5_block3_out"), ("MobileNetV2", "out_relu")])
def test_keras_applications_default_is_the_last_block_output(build: str, expected: str) -> None:
    import keras

    keras.utils.set_random_seed(7)
    model = getattr(keras.applications, build)(weights=None, input_shape=(64, 64, 3), classes=5)
    x = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(8))
    att = cs.Scope(model).attribute(x, method="gradcam", target=1)
    assert att.layer == expected
    features = keras.Model(model.inputs, model.get_layer(expected).output)
    want = gradcam_reference(lambda t: features(t, training=False), _keras_tail(model, expected), x, 1, nhwc=True)
    assert_close(att.raw, want, rtol=1e-3)


class ReusedActivation(nn.Module):
    """One ``act`` (and one ``pw``) module applied twice: the last cut is returned only by reused modules."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.pw = nn.Conv2d(6, 6, 1)
        self.act = nn.SiLU()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.act(self.pw(x))
        x = self.act(self.pw(x))
        return self.head(x.mean((2, 3)))


def test_a_reused_module_is_named_by_its_call_when_it_alone_returns_the_last_cut() -> None:
    torch.manual_seed(0)
    net = ReusedActivation().eval()
    x = torch.rand(2, 3, 8, 8)
    att = cs.Scope(net).attribute(x, method="gradcam")
    assert att.layer == "act@1"  # the second call's output feeds the head; not the early 'stem'
    feats = {}
    with torch.no_grad():
        a = net.stem(x)
        a = a + net.act(net.pw(a))
    a = net.act(net.pw(a)).requires_grad_(True)
    logits = net.head(a.mean((2, 3)))
    target = logits.argmax(1)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    feats["cam"] = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1))
    assert np.allclose(np.asarray(att.raw).reshape(feats["cam"].shape), feats["cam"].detach().numpy(), atol=1e-5)
