"""CAM family against independent computations: Grad-CAM, CAM, HiResCAM, Grad-CAM++, XGrad-CAM, LayerCAM,
Eigen-CAM, Score-CAM, Guided Grad-CAM; layer handling (in-place ReLU, tuple outputs, nested modules,
train mode, frozen parameters, zero gradients) and Keras models."""

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
from convscope.errors import OptionError


def conv_net(inplace: bool, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=inplace), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5),
    )  # fmt: skip


def layer_and_grad(head: nn.Module, tail: nn.Module, x: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent reference: A = head(x) as a leaf, g = d tail(A)[:, target] / dA."""
    a = head(x).detach().requires_grad_(True)
    y = tail(a)[:, target].sum()
    (g,) = torch.autograd.grad(y, a)
    return a.detach(), g


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_gradcam_equals_textbook_definition(x: torch.Tensor) -> None:
    net = conv_net(inplace=False)
    a, g = layer_and_grad(net[:3], net[3:], x, target=2)
    alpha = g.mean(dim=(2, 3), keepdim=True)
    expected = F.relu((alpha * a).sum(dim=1))
    assert (expected.flatten(1).amax(1) > 0).all()  # a non-trivial map for every sample
    att = cs.Scope(net).attribute(x, method="gradcam", target=2, layer="2")
    np.testing.assert_allclose(att.raw, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert att.layer == "2" and att.targets == (2, 2, 2)
    up = F.interpolate(expected[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(att.maps, (up / up.flatten(1).amax(1).view(-1, 1, 1)).numpy(), rtol=1e-5, atol=1e-6)


def test_inplace_relu_after_target_layer_gives_the_out_of_place_result(x: torch.Tensor) -> None:
    inplace, twin = conv_net(inplace=True), conv_net(inplace=False)
    twin.load_state_dict(inplace.state_dict())
    # the trap: a hook that keeps the layer's output tensor sees it overwritten by the in-place ReLU
    kept: list[torch.Tensor] = []
    handle = inplace[2].register_forward_hook(lambda m, i, o: kept.append(o))
    with torch.no_grad():
        inplace(x)
    handle.remove()
    assert (kept[0] >= 0).all() and (twin[:3](x) < 0).any()
    for method in ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam"):
        target = None if method == "eigencam" else 1
        got = cs.Scope(inplace).attribute(x, method=method, target=target, layer="2", relu=False).raw
        want = cs.Scope(twin).attribute(x, method=method, target=target, layer="2", relu=False).raw
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=method)
    a, g = layer_and_grad(twin[:3], twin[3:], x, target=0)
    want = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
    assert (want.flatten(1).amax(1) > 0).all()
    got = cs.Scope(inplace).attribute(x, method="gradcam", target=0, layer="2").raw
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-7)


def test_full_backward_fallback_gives_the_same_gradients(x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.attribution import engine

    net = conv_net(inplace=True)
    fast = cs.Scope(net).attribute(x, method="hirescam", target=0, layer="2", relu=False).raw
    monkeypatch.setattr(engine, "GradientEdge", None)  # as on torch < 2.2: Capture's tensor hook supplies dA
    slow = cs.Scope(net).attribute(x, method="hirescam", target=0, layer="2", relu=False).raw
    np.testing.assert_allclose(slow, fast, rtol=1e-6, atol=1e-9)
    assert np.abs(fast).max() > 0


def test_gradcam_with_gap_linear_head_is_the_class_activation_map(x: torch.Tensor) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))
    with torch.no_grad():
        features = net[:2](x)
    cams = torch.einsum("ck,nkhw->cnhw", net[4].weight.detach(), features)  # Zhou et al. 2016, per class
    c = int(cams.clamp(min=0).flatten(1).sum(1).argmax())
    cam = cams[c]
    assert (cam.flatten(1).amax(1) > 0).all() and (cam < 0).any()
    att = cs.Scope(net).attribute(x, method="gradcam", target=c, layer="1", relu=False)
    np.testing.assert_allclose(att.raw * 64, cam.numpy(), rtol=1e-4, atol=1e-6)  # α_k = w_k / (h·w)
    att = cs.Scope(net).attribute(x, method="gradcam", target=c, layer="1")
    np.testing.assert_allclose(att.raw * 64, F.relu(cam).numpy(), rtol=1e-4, atol=1e-6)


def test_hirescam_on_flatten_linear_head_sums_to_logit_minus_bias(x: torch.Tensor) -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 6))
    with torch.no_grad():
        logits = net(x)
    att = cs.Scope(net).attribute(x, method="hirescam", target=[0, 4, 5], layer="1", relu=False)
    bias = net[3].bias.detach()
    want = logits[torch.arange(3), torch.tensor([0, 4, 5])] - bias[[0, 4, 5]]
    np.testing.assert_allclose(att.raw.sum(axis=(1, 2)), want.numpy(), rtol=1e-4, atol=1e-6)


def test_gradcam_plus_plus_xgradcam_layercam_formulas(x: torch.Tensor) -> None:
    net = conv_net(inplace=True)
    twin = conv_net(inplace=False)
    a, g = layer_and_grad(twin[:3], twin[3:], x, target=4)
    a64, g64 = a.double(), g.double()
    s = a64.sum(dim=(2, 3), keepdim=True)
    den = 2 * g64**2 + s * g64**3
    alpha = torch.where(den != 0, g64**2 / torch.where(den != 0, den, 1), 0)
    pp = F.relu(((alpha * F.relu(g64)).sum(dim=(2, 3), keepdim=True) * a64).sum(1))
    norm = alpha / torch.where(alpha.sum(dim=(2, 3), keepdim=True) != 0, alpha.sum(dim=(2, 3), keepdim=True), 1)
    pp_norm = F.relu(((norm * F.relu(g64)).sum(dim=(2, 3), keepdim=True) * a64).sum(1))
    xw = torch.where(s != 0, (g64 * a64).sum(dim=(2, 3), keepdim=True) / torch.where(s != 0, s, 1), 0)
    xg = F.relu((xw * a64).sum(1))
    lc = F.relu((F.relu(g64) * a64).sum(1))
    scope = cs.Scope(net)
    for method, options, want in (("gradcam++", {}, pp), ("gradcam++", {"alpha_norm": True}, pp_norm),
                                  ("xgradcam", {}, xg), ("layercam", {}, lc)):  # fmt: skip
        got = scope.attribute(x, method=method, target=4, layer="2", **options).raw
        np.testing.assert_allclose(got, want.float().numpy(), rtol=1e-4, atol=1e-7, err_msg=method)


def test_eigencam_is_first_principal_component(x: torch.Tensor) -> None:
    net = conv_net(inplace=False)
    with torch.no_grad():
        a = net[:4](x).double()  # post-ReLU, non-negative
    for center in (False, True):
        att = cs.Scope(net).attribute(x, method="eigencam", layer="3", center=center, relu=False)
        for i in range(len(x)):
            m = a[i].reshape(8, -1).T.numpy()
            m = m - m.mean(axis=0) if center else m
            proj = (m @ np.linalg.svd(m, full_matrices=False)[2][0]).reshape(8, 8)
            assert np.allclose(att.raw[i], proj, atol=1e-5) or np.allclose(att.raw[i], -proj, atol=1e-5)
            energy = a[i].abs().sum(0).numpy()
            assert np.corrcoef(att.raw[i].ravel(), energy.ravel())[0, 1] > 0


def test_scorecam_weights_follow_the_chosen_formula(x: torch.Tensor) -> None:
    net = conv_net(inplace=False)
    xi = x[:1]
    with torch.no_grad():
        a = net[:4](xi)[0]  # (8, 8, 8) post-ReLU
        masks = [(c - c.min()) / (c.max() - c.min()) if c.max() > c.min() else None for c in a]
        logits = [net(xi * m) if m is not None else None for m in masks]
        base = net(torch.zeros_like(xi))[0, 2]
    valid = torch.tensor([m is not None for m in masks])
    s = torch.tensor([float(lg[0, 2]) if lg is not None else 0.0 for lg in logits], dtype=torch.float64)
    probs = torch.tensor([float(torch.softmax(lg, 1)[0, 2]) if lg is not None else 0.0 for lg in logits],
                         dtype=torch.float64)  # fmt: skip
    weights = {
        "softmax": torch.softmax((s - float(base)).masked_fill(~valid, float("-inf")), 0),
        "probability": probs,
        "increase": torch.where(valid, s - float(base), 0.0),
    }
    for mode, w in weights.items():
        want = F.relu((w[:, None, None] * a.double()).sum(0))
        got = cs.Scope(net).attribute(xi, method="scorecam", target=2, layer="3", weights=mode, batch_size=3).raw[0]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6, err_msg=mode)


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(x: torch.Tensor) -> None:
    net = conv_net(inplace=True)
    scope = cs.Scope(net)
    gg = scope.attribute(x, method="guided_gradcam", target=0, layer="4").raw
    gb = scope.attribute(x, method="guided_backprop", target=0).raw
    cam = torch.from_numpy(scope.attribute(x, method="gradcam", target=0, layer="4").raw)
    up = F.interpolate(cam[:, None], size=(8, 8), mode="bilinear", align_corners=False)
    up = up / up.flatten(1).amax(1).view(-1, 1, 1, 1)
    np.testing.assert_allclose(gg, gb * up.numpy(), rtol=1e-5, atol=1e-8)


# -- layers -------------------------------------------------------------------------------------------------


class Split(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :3], x[:, 3:]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.split = Split()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(F.relu(self.conv(x)))


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.block = Block()
        self.head = nn.Linear(3 * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.block(x)
        return self.head((first * 2 + second[:, :1]).flatten(1))


def test_tuple_outputs_and_nested_layers(x: torch.Tensor) -> None:
    net = TupleNet()
    scope = cs.Scope(net)
    with torch.no_grad():
        a = F.relu(net.block.conv(x))
    leaf = a[:, :3].clone().requires_grad_(True)
    y = net.head((leaf * 2 + a[:, 3:4]).flatten(1))[:, 1].sum()
    (g,) = torch.autograd.grad(y, leaf)
    want = (g.mean(dim=(2, 3), keepdim=True) * leaf.detach()).sum(1)
    assert want.abs().amax() > 0
    att = scope.attribute(x, method="gradcam", target=1, layer="block.split[0]", relu=False)
    assert att.layer == "block.split[0]"
    np.testing.assert_allclose(att.raw, want.numpy(), rtol=1e-5, atol=1e-7)
    nested = scope.attribute(x, method="gradcam", target=1, layer="block.conv")
    assert nested.raw.shape == (3, 8, 8)
    with pytest.raises(cs.CaptureError, match=r"select one as 'block.split\[i\]'"):
        scope.attribute(x, method="gradcam", layer="block.split")


def test_default_layer_is_last_spatial_and_errors_are_clear(x: torch.Tensor) -> None:
    scope = cs.Scope(conv_net(inplace=True))
    assert scope.attribute(x, method="gradcam").layer == "4"  # MaxPool2d: last 4-D output
    with pytest.raises(OptionError, match="spatial 4-D output"):
        scope.attribute(x, method="gradcam", layer="5")
    with pytest.raises(OptionError, match="matches 2 layers"):
        scope.attribute(x, method="gradcam", layer="Conv2d")
    with pytest.raises(OptionError, match="does not apply"):
        scope.attribute(x, method="saliency", layer="2")
    with pytest.raises(OptionError, match="has no option 'step'.*steps"):
        scope.attribute(x, method="integrated_gradients", step=3)
    with pytest.raises(OptionError, match="gradcam"):
        scope.attribute(x, method="gradcan")


def test_train_mode_and_frozen_parameters(x: torch.Tensor) -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Dropout(0.5),
                        nn.Flatten(), nn.Linear(4 * 64, 3))  # fmt: skip
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    net[1].running_mean.uniform_(-0.5, 0.5)
    net.eval()
    reference = cs.Scope(net).attribute(x, method="gradcam", target=0, layer="1").raw
    net.train()
    got = cs.Scope(net).attribute(x, method="gradcam", target=0, layer="1").raw
    np.testing.assert_allclose(got, reference, rtol=1e-6)  # ran in eval: BatchNorm running stats, no dropout
    assert net.training and all(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    assert np.abs(got).max() > 0


def test_zero_gradient_at_layer_warns(x: torch.Tensor) -> None:
    net = conv_net(inplace=False)
    with torch.no_grad():
        net[6].weight[2] = 0  # class 2 ignores every feature
    with pytest.warns(UserWarning, match="gradient of the target score at layer '2' is zero"):
        att = cs.Scope(net).attribute(x, method="gradcam", target=2, layer="2")
    assert (att.maps == 0).all()


# -- Keras ---------------------------------------------------------------------------------------------------


def keras_net() -> Any:
    import keras

    keras.utils.set_random_seed(5)
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_0")(inputs)
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_1")(h)
    h = layers.MaxPooling2D(2, name="pool")(h)
    outputs = layers.Dense(3, activation="softmax", name="predictions")(layers.Flatten(name="flatten")(h))
    return keras.Model(inputs, outputs)


def test_keras_gradcam_matches_independent_computation_on_logits() -> None:
    model = keras_net()
    xk = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(6))
    conv0, conv1, dense = (model.get_layer(n) for n in ("conv_0", "conv_1", "predictions"))
    a = conv1(conv0(xk)).detach().requires_grad_(True)  # (N, 8, 8, 6), after conv_1's ReLU
    pooled = F.max_pool2d(a.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).flatten(1)
    kernel = torch.as_tensor(np.asarray(dense.kernel.numpy()))
    logits = pooled @ kernel + torch.as_tensor(np.asarray(dense.bias.numpy()))  # no softmax
    (g,) = torch.autograd.grad(logits[:, 1].sum(), a)
    want = F.relu((g.mean(dim=(1, 2), keepdim=True) * a.detach()).sum(-1))
    att = cs.Scope(model).attribute(xk, method="gradcam", target=1, layer="conv_1")
    np.testing.assert_allclose(att.raw, want.numpy(), rtol=1e-4, atol=1e-7)
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    assert cs.Scope(model).attribute(xk, method="gradcam").layer == "pool"
