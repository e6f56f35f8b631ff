"""Scope(model) accepts PyTorch modules and every kind of Keras 3 model; other backends get BackendError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import convscope as cs
from convscope.adapters import adapt
from convscope.adapters.keras import KerasAdapter
from convscope.adapters.torch import TorchAdapter

X_NHWC = np.random.default_rng(7).normal(size=(2, 8, 8, 3)).astype("float32")


def _predict(keras: Any, model: Any, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    outs = keras.Model(model.inputs, [model.get_layer(n).output for n in names]).predict(x, verbose=0)
    return outs if isinstance(outs, list) else [outs]


def test_torch_module_gets_torch_adapter_with_dotted_names(torch_net: torch.nn.Module) -> None:
    scope = cs.Scope(torch_net)
    assert isinstance(scope.adapter, TorchAdapter)
    assert scope.framework == "torch" and scope.layout.value == "NCHW"
    assert scope.layer_names == [
        "stem", "layer1", "layer1.0", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu",
        "layer1.0.conv2", "act", "pool", "flat", "fc",
    ]  # fmt: skip
    assert scope.layer("layer1.0.conv1").module is torch_net.layer1[0].conv1


def test_keras_sequential(keras: Any, keras_seq: Any) -> None:
    scope = cs.Scope(keras_seq)
    assert isinstance(scope.adapter, KerasAdapter)
    assert scope.framework == "keras" and scope.layout.value == "NHWC"
    assert scope.layer_names == ["input_layer", "bn", "conv_1", "drop", "flat", "dense"]
    names = ["input_layer", "conv_1"]
    acts = scope.activations(X_NHWC, layers=names)
    for name, want in zip(names, _predict(keras, keras_seq, names, X_NHWC), strict=True):
        np.testing.assert_allclose(acts[name].numpy(), want, rtol=0, atol=1e-6)


def test_keras_functional_with_nested_sequential(keras: Any, keras_nested: Any) -> None:
    scope = cs.Scope(keras_nested)
    assert scope.layer_names == [
        "img",
        "f_conv",
        "block",
        "s_conv",
        "s_bn",
        "s_relu",
        "frozen",
        "gap",
        "head",
    ]
    block = keras_nested.get_layer("block")
    for short in ("s_conv", "s_bn", "s_relu"):
        by_name, by_path = scope.layer(short), scope.layer(f"block.{short}")
        assert by_name is by_path
        assert by_name.module is block.get_layer(short)
        assert by_name.path == f"block.{short}" and by_name.depth == 1
    assert scope.layer("block").is_leaf is False

    acts = scope.activations(X_NHWC, layers=["f_conv", "block.s_conv", "s_relu", "block"])
    f_conv = _predict(keras, keras_nested, ["f_conv"], X_NHWC)[0]
    # the nested layers, run on the outer layer's output by Keras itself
    inner = keras.Model(block.inputs, [block.get_layer("s_conv").output, block.get_layer("s_relu").output])
    s_conv, s_relu = inner.predict(f_conv, verbose=0)
    np.testing.assert_allclose(acts["f_conv"].numpy(), f_conv, rtol=0, atol=1e-6)
    np.testing.assert_allclose(acts["s_conv"].numpy(), s_conv, rtol=0, atol=1e-6)
    np.testing.assert_allclose(acts["s_relu"].numpy(), s_relu, rtol=0, atol=1e-6)
    np.testing.assert_allclose(acts["block"].numpy(), s_relu, rtol=0, atol=1e-6)  # the sub-model's output


def test_keras_functional_with_nested_functional_input_layer(keras: Any) -> None:
    """A nested functional model lists its own InputLayer; its activation is the sub-model's input."""
    layers = keras.layers
    keras.utils.set_random_seed(5)
    sub_in = keras.Input((6, 6, 4), name="sub_in")
    sub = keras.Model(sub_in, layers.Conv2D(2, 1, name="sub_conv")(sub_in), name="sub")
    inp = keras.Input((8, 8, 3), name="outer_in")
    model = keras.Model(inp, sub(layers.Conv2D(4, 3, name="c0")(inp)), name="outer")
    scope = cs.Scope(model)
    assert scope.layer("sub.sub_in").type_name == "InputLayer"

    acts = scope.activations(X_NHWC, layers=["outer_in", "c0", "sub_in"])
    np.testing.assert_array_equal(acts["outer_in"].numpy(), X_NHWC)
    assert acts["sub_in"].shape == (2, 6, 6, 4)
    np.testing.assert_array_equal(acts["sub_in"].numpy(), acts["c0"].numpy())
    every = scope.activations(X_NHWC)  # the default "every spatial layer" path records it too
    np.testing.assert_array_equal(every["sub_in"].numpy(), acts["c0"].numpy())


def test_keras_subclassed(keras: Any, keras_subclassed: Any) -> None:
    scope = cs.Scope(keras_subclassed, input_shape=(8, 8, 3))
    assert scope.layer_names == ["sc1", "sbn", "sdrop", "sgap", "sout"]
    acts = scope.activations(X_NHWC, layers=["sc1", "sbn"])
    m = keras_subclassed
    sc1 = m.c1(X_NHWC)
    sbn = m.bn(sc1, training=False)
    np.testing.assert_allclose(acts["sc1"].numpy(), keras.ops.convert_to_numpy(sc1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(acts["sbn"].numpy(), keras.ops.convert_to_numpy(sbn), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(acts.output), m.predict(X_NHWC, verbose=0), rtol=0, atol=1e-6
    )


def test_adapt_returns_an_adapter_unchanged(torch_net: torch.nn.Module) -> None:
    adapter = adapt(torch_net)
    assert adapt(adapter) is adapter
    assert cs.Scope(adapter).adapter is adapter


def test_keras_model_on_another_backend_raises_backend_error(
    keras: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Keras model that is not an nn.Module (what tensorflow/jax backends give) is refused clearly."""
    fake_cls = type("Functional", (), {"__module__": "keras.src.models.functional"})
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    for call in (adapt, cs.Scope):
        with pytest.raises(cs.BackendError) as info:
            call(fake_cls())
        msg = str(info.value)
        assert "KERAS_BACKEND=torch" in msg
        assert "'tensorflow'" in msg
        assert isinstance(info.value, cs.ConvscopeError)


def test_non_model_is_refused_with_a_convscope_error() -> None:
    with pytest.raises(cs.ConvscopeError, match=r"torch\.nn\.Module or a Keras 3 model") as info:
        cs.Scope(object())
    assert not isinstance(info.value, cs.BackendError)
    assert "builtins.object" in str(info.value)


def test_kernel_shape_reads_the_variable_shape_without_copying(keras: Any) -> None:
    """``kernel_shape`` (used to find conv layers without copying a 400 MB dense kernel) equals the shape
    of the kernel ``weights`` returns, for every layer kind: conv, transposed conv, depthwise, dense."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ConvTranspose2d(4, 6, 2, groups=2),
                              torch.nn.BatchNorm2d(6), torch.nn.Flatten(), torch.nn.Linear(6 * 7 * 7, 5))  # fmt: skip
    layers = keras.layers
    km = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3), layers.DepthwiseConv2D(3, depth_multiplier=2),
                           layers.SeparableConv2D(5, 1), layers.Conv2DTranspose(3, 2), layers.Flatten(),
                           layers.Dense(7)])  # fmt: skip
    checked = 0
    for model in (net, km):
        adapter = cs.Scope(model).adapter
        for h in adapter.handles:
            kernel = adapter.weights(h).get("kernel")
            assert adapter.kernel_shape(h) == (None if kernel is None else kernel.shape), h.name
            checked += kernel is not None
    assert checked == 4 + 5  # BatchNorm2d.weight is a (1-D) kernel too
