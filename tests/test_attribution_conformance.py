"""Conformance suite every registered attribution method must pass, for a PyTorch and a Keras model.

Shapes and ranges of the result; after success *and* after a forced error: no hooks or function modes
left, train/eval modes, weights and ``requires_grad`` flags restored, Keras activations restored, and
the caller's input tensor unmodified. The state is read from every torch module *and* every (nested)
Keras layer (``conftest.all_modules``): ``model.modules()`` of a Keras model lists only its containers.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs
import convscope.attribution as attribution
from conftest import ModelState, all_modules
from convscope.attribution.base import Grid
from convscope.errors import ConvscopeError

pytestmark = pytest.mark.filterwarnings("ignore:the .* map is all zero", "ignore:.*raise steps")

# Small settings so the whole registry runs in seconds; methods not listed run with their defaults.
FAST: dict[str, dict[str, Any]] = {
    "smoothgrad": {"samples": 3},
    "smoothgrad_sq": {"samples": 3},
    "vargrad": {"samples": 3},
    "integrated_gradients": {"steps": 4},
    "occlusion": {"window": 4},
}
LAYERS = {"torch": "2", "keras": "conv_1"}


def torch_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(6 * 4 * 4, 3), nn.Softmax(dim=1),
    )  # fmt: skip
    model.train()  # arrives in train mode: attribution must run in eval and restore train
    model[0].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    return model


def keras_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_0"),
        layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_1"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Flatten(name="flatten"),
        layers.Dense(3, activation="softmax", name="predictions"),
    ])  # fmt: skip


@pytest.fixture(scope="module", params=["torch", "keras"])
def setup(request: pytest.FixtureRequest) -> tuple[str, cs.Scope, torch.Tensor]:
    if request.param == "torch":
        model = torch_model()
        x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    else:
        model = keras_model()
        x = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    return request.param, cs.Scope(model), x


def snapshot(scope: cs.Scope) -> tuple[ModelState, dict[int, Any]]:
    """Hooks, modes, ``requires_grad`` and tensors of every module and Keras layer, and their activations."""
    modules = all_modules(scope.model)
    return ModelState.of(scope.model), {id(m): getattr(m, "activation", None) for m in modules}


def assert_clean(scope: cs.Scope, before: tuple[ModelState, dict[int, Any]]) -> None:
    state, activations = before
    state.assert_same(scope.model)
    now = {id(m): getattr(m, "activation", None) for m in all_modules(scope.model)}
    assert now.keys() == activations.keys()
    changed = [k for k, a in activations.items() if now[k] is not a]
    assert not changed, "an activation was left swapped (Keras softmax -> linear)"
    assert torch._C._len_torch_function_stack() == 0  # no guided-ReLU mode left active


def test_clean_check_sees_every_keras_layer() -> None:
    """The check above must be able to fail for Keras: a hook on a Conv2D, a swapped Dense activation."""
    import keras

    scope = cs.Scope(keras_model())
    before = snapshot(scope)
    conv, dense = scope.model.get_layer("conv_1"), scope.model.get_layer("predictions")
    assert conv not in list(scope.model.modules())  # why model.modules() alone cannot see them
    handle = conv.register_forward_hook(lambda *args: None)
    with pytest.raises(AssertionError, match="hook"):
        assert_clean(scope, before)
    handle.remove()
    original, dense.activation = dense.activation, keras.activations.linear
    with pytest.raises(AssertionError, match="activation"):
        assert_clean(scope, before)
    dense.activation = original
    assert_clean(scope, before)


@pytest.mark.parametrize("method", attribution.methods())
def test_method_conforms(setup: tuple[str, cs.Scope, torch.Tensor], method: str) -> None:
    framework, scope, x = setup
    cls = attribution.get_method(method)
    layer = LAYERS[framework] if cls.uses_layer else None
    x_copy = x.clone()
    before = snapshot(scope)

    att = scope.attribute(x, method=method, layer=layer, **FAST.get(method, {}))

    assert torch.equal(x, x_copy)
    assert_clean(scope, before)
    n, (h, w) = len(x), ((x.shape[2], x.shape[3]) if framework == "torch" else (x.shape[1], x.shape[2]))
    assert att.method == method and len(att) == n
    assert att.maps.shape == (n, h, w) and att.maps.dtype == np.float32
    assert np.isfinite(att.maps).all() and att.maps.min() >= 0 and att.maps.max() <= 1
    expected_raw = {Grid.INPUT: tuple(x.shape), Grid.LAYER: (n, h, w), Grid.PIXEL: (n, h, w)}[cls.grid]
    assert att.raw.shape == expected_raw  # the chosen layers keep the 8x8 grid
    assert np.isfinite(att.raw).all()
    assert att.targets is not None and len(att.targets) == n
    assert att.layer == layer
    assert att.images.shape == (n, h, w, 3) and att.images.dtype == np.uint8
    assert att.overlay().size == (w, h)


@pytest.mark.parametrize("method", attribution.methods())
def test_state_restored_after_forced_error(
    setup: tuple[str, cs.Scope, torch.Tensor], method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    framework, scope, x = setup
    cls = attribution.get_method(method)
    layer = LAYERS[framework] if cls.uses_layer else None
    before = snapshot(scope)
    real_forward = scope.adapter.forward

    def forward_then_fail(inputs: torch.Tensor) -> Any:
        real_forward(inputs)  # hooks, frozen parameters and guided ReLUs are all live here
        raise RuntimeError("boom")

    monkeypatch.setattr(scope.adapter, "forward", forward_then_fail)
    with pytest.raises(ConvscopeError, match="boom"):
        scope.attribute(x, method=method, layer=layer, **FAST.get(method, {}))
    monkeypatch.undo()
    assert_clean(scope, before)

    if cls.uses_target:  # an error raised after the forward pass, from the target callable

        def bad_target(out: torch.Tensor) -> torch.Tensor:
            raise ValueError("bad target")

        with pytest.raises(ValueError, match="bad target"):
            scope.attribute(x, method=method, layer=layer, target=bad_target, **FAST.get(method, {}))
        assert_clean(scope, before)


def test_registry_lists_every_method_once() -> None:
    names = attribution.methods()
    expected = {"saliency", "gradient_x_input", "smoothgrad", "smoothgrad_sq", "vargrad", "integrated_gradients",
                "guided_backprop", "deconvnet", "gradcam", "guided_gradcam", "gradcam++", "hirescam", "xgradcam",
                "layercam", "scorecam", "eigencam", "occlusion"}  # fmt: skip
    assert expected <= set(names) and len(names) == len(set(names))
    for name in names:
        assert attribution.get_method(name).name == name


def test_a_new_method_is_one_small_class_and_instances_work() -> None:
    from convscope.attribution import base
    from convscope.attribution.cam import CAM, GradCAMPlusPlus

    class MaxGradCAM(CAM):
        """Grad-CAM with max-pooled gradients."""

        name = "test_maxgradcam"

        def weights(self, p: Any, job: Any) -> torch.Tensor:
            return p.grad.amax(dim=(2, 3), keepdim=True)

    try:
        assert "test_maxgradcam" in attribution.methods()
        scope = cs.Scope(torch_model())
        x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
        att = scope.attribute(x, method="test_maxgradcam", layer="2", relu=False)
        assert att.raw.shape == (2, 8, 8) and att.options == {"relu": False}
    finally:
        base._REGISTRY.pop("test_maxgradcam")
    by_name = scope.attribute(x, method="gradcam++", layer="2", alpha_norm=True).raw
    by_instance = scope.attribute(x, method=GradCAMPlusPlus(alpha_norm=True), layer="2").raw
    np.testing.assert_array_equal(by_name, by_instance)
    with pytest.raises(cs.OptionError, match="not both"):
        scope.attribute(x, method=GradCAMPlusPlus(), relu=False)


def test_warnings_point_at_the_callers_line() -> None:
    scope = cs.Scope(torch_model())
    x = torch.rand(1, 3, 8, 8)
    with pytest.warns(UserWarning, match="class-agnostic") as record:
        scope.attribute(x, method="eigencam", target=1)
    assert record[0].filename == __file__


def dead_net() -> nn.Module:
    """Every ReLU is dead for inputs in [0, 1]: gradients and maps are all zero."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
    with torch.no_grad():
        net[0].bias.fill_(-100.0)
    return net


def test_zero_map_warnings_point_at_the_call_of_attribute(tmp_path: Any) -> None:
    from pathlib import Path

    import convscope.attribution.cli as cli

    scope, x = cs.Scope(dead_net()), torch.rand(1, 3, 8, 8)
    with pytest.warns(UserWarning) as record:
        scope.attribute(x, method="gradcam", layer="0")  # zero layer gradient
        scope.attribute(x, method="saliency")  # all-zero map
    assert {Path(w.filename) for w in record} == {Path(__file__)} and len(record) == 2
    # called from inside convscope (the CLI): the CLI's call of scope.attribute, not the console script
    from convscope.cli import build_parser

    args = build_parser()[0].parse_args(["attribute", "model", "image", "--method", "saliency",
                                         "-o", str(tmp_path / "a.png")])  # fmt: skip
    args.image = [x]  # the CLI passes what it parsed straight to scope.attribute
    with pytest.warns(UserWarning, match="all zero") as record:
        cli.run_attribute(scope, args)
    assert Path(record[0].filename) == Path(cli.__file__)
    line = Path(cli.__file__).read_text().splitlines()[record[0].lineno - 1]
    assert "scope.attribute(" in line


@pytest.mark.parametrize("method", attribution.methods())
def test_near_zero_maps_warn_and_normal_maps_do_not(method: str) -> None:
    """A target whose logit is scaled by 1e-9 gives maps that are not zero but negligible: every method
    tied to the score's size warns once, at the caller's line; the unscaled model never warns."""
    import warnings

    cls = attribution.get_method(method)
    model = torch_model().eval()
    scaled = torch_model().eval()
    with torch.no_grad():
        scaled[7].weight[1] *= 1e-9
        scaled[7].bias[1] *= 1e-9
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    layer = LAYERS["torch"] if cls.uses_layer else None
    target = 1 if cls.uses_target else None
    for net, expect in ((model, False), (scaled, cls.score_power > 0 and cls.uses_target)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cs.Scope(net).attribute(x, method=method, target=target, layer=layer, **FAST.get(method, {}))
        near = [w for w in caught if "near zero" in str(w.message)]
        assert len(near) == int(expect), [str(w.message) for w in caught]
        assert all(w.filename == __file__ for w in near)
        assert all("\n" not in str(w.message) for w in near)
