"""scope.activations(): one forward pass, exact values, in-place ops, tuples, repeated calls, eval mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs

X_NCHW = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(11))
X_NHWC = np.random.default_rng(11).normal(size=(2, 8, 8, 3)).astype("float32")


@contextmanager
def count_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count calls of the root model (a pre-hook on it; works for Keras models, which are nn.Modules)."""
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def _by_hand(m: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """TinyNet's forward written out, out of place."""
    with torch.no_grad():
        b = m.layer1[0]
        out = {"stem": m.stem(x)}
        out["layer1.0.conv1"] = b.conv1(out["stem"])
        out["layer1.0.bn1"] = b.bn1(out["layer1.0.conv1"])
        out["layer1.0.relu"] = torch.relu(out["layer1.0.bn1"])
        out["layer1.0.conv2"] = b.conv2(out["layer1.0.relu"])
        out["layer1.0"] = out["layer1.0.conv2"] + out["stem"]
        out["act"] = torch.relu(out["layer1.0"])
        out["pool"] = m.pool(out["act"])
        out["fc"] = m.fc(out["pool"].flatten(1))
    return out


# -- one pass ------------------------------------------------------------------------------------------
def test_torch_one_forward_pass_for_many_layers(torch_net: Any) -> None:
    scope = cs.Scope(torch_net)
    names = [
        "stem",
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.relu",
        "layer1.0.conv2",
        "layer1.0",
        "act",
        "pool",
    ]
    with count_calls(torch_net) as calls:
        acts = scope.activations(X_NCHW, layers=names)
    assert calls[0] == 1
    with count_calls(torch_net) as calls:
        scope.activations(X_NCHW)
    assert calls[0] == 1
    want = _by_hand(torch_net, X_NCHW)
    assert list(acts) == names
    for name in names:
        torch.testing.assert_close(acts[name].tensor, want[name], rtol=0, atol=0)
    torch.testing.assert_close(acts.output, want["fc"], rtol=0, atol=0)


def test_keras_one_forward_pass_and_values_equal_predict(keras: Any, keras_nested: Any) -> None:
    scope = cs.Scope(keras_nested)
    with count_calls(keras_nested) as calls, count_calls(keras_nested.get_layer("block")) as block_calls:
        acts = scope.activations(
            X_NHWC, layers=["img", "f_conv", "s_conv", "s_bn", "s_relu", "frozen", "gap"]
        )
    assert calls[0] == 1 and block_calls[0] == 1
    top = ["f_conv", "block", "frozen", "gap", "head"]
    f_conv, block, frozen, gap, head = keras.Model(
        keras_nested.inputs, [keras_nested.get_layer(n).output for n in top]
    ).predict(X_NHWC, verbose=0)
    sub = keras_nested.get_layer("block")
    s_conv, s_bn, s_relu = keras.Model(
        sub.inputs, [sub.get_layer(n).output for n in ("s_conv", "s_bn", "s_relu")]
    ).predict(f_conv, verbose=0)
    # Exact equality holds: the same torch kernels run in predict() and in our pass.
    assert np.array_equal(acts["img"].numpy(), X_NHWC)
    assert np.array_equal(acts["f_conv"].numpy(), f_conv)
    assert np.array_equal(acts["s_conv"].numpy(), s_conv)
    assert np.array_equal(acts["s_bn"].numpy(), s_bn)
    assert np.array_equal(acts["s_relu"].numpy(), s_relu)
    assert np.array_equal(s_relu, block)
    assert np.array_equal(acts["frozen"].numpy(), frozen)
    assert np.array_equal(acts["gap"].numpy(), gap)
    assert np.array_equal(keras.ops.convert_to_numpy(acts.output), head)


def test_keras_sequential_values_equal_predict(keras: Any, keras_seq: Any) -> None:
    names = ["input_layer", "bn", "conv_1", "drop", "flat", "dense"]
    acts = cs.Scope(keras_seq).activations(X_NHWC, layers=names)
    want = keras.Model(keras_seq.inputs, [keras_seq.get_layer(n).output for n in names]).predict(
        X_NHWC, verbose=0
    )
    for name, w in zip(names, want, strict=True):
        assert np.array_equal(acts[name].numpy(), w), name


# -- in-place ops --------------------------------------------------------------------------------------
def test_inplace_relu_after_captured_layer(torch_net: Any) -> None:
    """layer1.0.bn1 is followed by ReLU(inplace=True): the recorded value must be the BN output."""
    want = _by_hand(torch_net, X_NCHW)
    assert (want["layer1.0.bn1"] < 0).any()  # otherwise the ReLU would not change anything
    acts = cs.Scope(torch_net).activations(X_NCHW, layers=["layer1.0.bn1", "layer1.0.relu"])
    torch.testing.assert_close(acts["layer1.0.bn1"].tensor, want["layer1.0.bn1"], rtol=0, atol=0)
    torch.testing.assert_close(acts["layer1.0.relu"].tensor, want["layer1.0.relu"], rtol=0, atol=0)

    # The naive approach (keep the hook's tensor without cloning) is overwritten by the in-place ReLU.
    kept: list[torch.Tensor] = []
    handle = torch_net.layer1[0].bn1.register_forward_hook(lambda m, a, out: kept.append(out.detach()))
    try:
        with torch.no_grad():
            torch_net(X_NCHW)
    finally:
        handle.remove()
    assert not torch.equal(kept[0], want["layer1.0.bn1"])
    assert torch.equal(kept[0], want["layer1.0.relu"])


# -- tuple outputs and repeated calls ------------------------------------------------------------------
def test_tuple_output_selected_by_index(tuple_net: Any) -> None:
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    acts = cs.Scope(tuple_net).activations(x, layers=["split[0]", "split[1]", "conv"])
    assert list(acts) == ["split[0]", "split[1]", "conv"]
    torch.testing.assert_close(acts["split[0]"].tensor, 2 * x, rtol=0, atol=0)
    torch.testing.assert_close(acts["split[1]"].tensor, x.mean(1), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(acts["conv"].tensor, tuple_net.conv(2 * x), rtol=0, atol=0)
    last = cs.Scope(tuple_net).activations(x, layers="split[-1]")
    torch.testing.assert_close(last["split[-1]"].tensor, x.mean(1), rtol=0, atol=0)


def test_unselected_tuple_output_raises_capture_error_with_shapes(tuple_net: Any, model_state: Any) -> None:
    snap = model_state(tuple_net)
    scope = cs.Scope(tuple_net)
    with pytest.raises(cs.CaptureError) as info:
        scope.activations(torch.zeros(1, 3, 4, 4), layers="split")
    msg = str(info.value)
    assert "returns 2 outputs" in msg and "(1, 3, 4, 4)" in msg and "(1, 4, 4)" in msg and "'split[i]'" in msg
    with pytest.raises(cs.CaptureError, match=r"no tensor output \[2\]"):
        scope.activations(torch.zeros(1, 3, 4, 4), layers="split[2]")
    with pytest.raises(cs.CaptureError, match="single tensor"):
        scope.activations(torch.zeros(1, 3, 4, 4), layers="conv[1]")
    snap.assert_same(tuple_net)
    assert "split" not in scope.activations(torch.zeros(1, 3, 4, 4))  # the default pass skips tuples


def test_keras_tuple_output(keras: Any, model_state: Any) -> None:
    class Pair(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 2, x + 1

    inp = keras.Input((4, 4, 2), name="i")
    a, b = Pair(name="pair")(inp)
    model = keras.Model(inp, keras.layers.Add(name="add")([a, b]), name="pairs")
    x = np.random.default_rng(6).normal(size=(1, 4, 4, 2)).astype("float32")
    scope = cs.Scope(model)
    snap = model_state(model)
    with pytest.raises(cs.CaptureError) as info:
        scope.activations(x, layers="pair")
    # our own message, not Keras' "Exception encountered when calling ..." re-wrapped copy
    assert str(info.value) == (
        "layer 'pair' returns 2 outputs ([0] (1, 4, 4, 2), [1] (1, 4, 4, 2)); select one as 'pair[i]'"
    )
    snap.assert_same(model)
    acts = scope.activations(x, layers=["pair[0]", "pair[1]"])
    np.testing.assert_array_equal(acts["pair[0]"].numpy(), x * 2)
    np.testing.assert_array_equal(acts["pair[1]"].numpy(), x + 1)


def test_module_called_twice_recorded_per_call(shared_net: Any) -> None:
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(5))
    acts = cs.Scope(shared_net).activations(x, layers=["conv", "relu"])
    assert list(acts) == ["conv", "conv@1", "relu", "relu@1"]
    with torch.no_grad():
        c0 = shared_net.conv(x)
        r0 = torch.relu(c0)
        c1 = shared_net.conv(r0)
        r1 = torch.relu(c1)
    for name, want in {"conv": c0, "relu": r0, "conv@1": c1, "relu@1": r1}.items():
        torch.testing.assert_close(acts[name].tensor, want, rtol=0, atol=0)
        assert acts[name].name == name
    assert not torch.equal(c0, c1)


def test_keras_shared_layer_recorded_per_call(keras: Any) -> None:
    inp = keras.Input((6, 6, 2), name="i")
    shared = keras.layers.Conv2D(2, 3, padding="same", name="shared")
    model = keras.Model(inp, shared(shared(inp)), name="twice")
    x = np.random.default_rng(4).normal(size=(1, 6, 6, 2)).astype("float32")
    acts = cs.Scope(model).activations(x, layers="shared")
    assert list(acts) == ["shared", "shared@1"]
    with torch.no_grad():
        c0 = shared(x)
        c1 = shared(c0)
    assert np.array_equal(acts["shared"].numpy(), keras.ops.convert_to_numpy(c0))
    assert np.array_equal(acts["shared@1"].numpy(), keras.ops.convert_to_numpy(c1))
    assert np.array_equal(keras.ops.convert_to_numpy(acts.output), model.predict(x, verbose=0))


# -- what is kept --------------------------------------------------------------------------------------
def test_only_requested_layers_kept_without_graph(torch_net: Any) -> None:
    acts = cs.Scope(torch_net).activations(X_NCHW, layers=["layer1.0.conv2", "stem"])
    assert set(acts) == {"stem", "layer1.0.conv2"} and len(acts) == 2
    assert list(acts) == ["stem", "layer1.0.conv2"]  # in the order the layers ran
    with pytest.raises(cs.LayerNotFoundError, match="recorded: 'stem', 'layer1.0.conv2'"):
        acts["fc"]
    assert "fc" not in acts and "stem" in acts and acts.get("fc") is None and acts.get("stem") is acts["stem"]
    for fm in acts.values():
        assert fm.tensor.requires_grad is False and fm.tensor.grad_fn is None
    assert acts.output.requires_grad is False


def test_grad_true_keeps_the_graph(torch_net: Any) -> None:
    acts = cs.Scope(torch_net).activations(X_NCHW, layers=["stem", "layer1.0.bn1"], grad=True)
    for fm in acts.values():
        assert fm.tensor.requires_grad and fm.tensor.grad_fn is not None
    want = _by_hand(torch_net, X_NCHW)  # the value before the in-place ReLU, also with the graph kept
    torch.testing.assert_close(acts["layer1.0.bn1"].tensor.detach(), want["layer1.0.bn1"], rtol=0, atol=0)
    (g,) = torch.autograd.grad(acts["layer1.0.bn1"].tensor.sum(), torch_net.stem.weight)
    assert g.shape == torch_net.stem.weight.shape and g.abs().sum() > 0


def test_keras_no_graph_by_default_and_graph_with_grad(keras_seq: Any) -> None:
    scope = cs.Scope(keras_seq)
    plain = scope.activations(X_NHWC, layers="conv_1")["conv_1"].tensor
    assert plain.requires_grad is False and plain.grad_fn is None
    graph = scope.activations(X_NHWC, layers="conv_1", grad=True)["conv_1"].tensor
    assert graph.requires_grad and graph.grad_fn is not None
    assert torch.equal(plain, graph.detach())


# -- inference mode ------------------------------------------------------------------------------------
def test_torch_pass_runs_in_eval_and_leaves_buffers(mode_net: Any) -> None:
    assert mode_net.training and mode_net.drop.training
    buffers = {k: v.clone() for k, v in mode_net.named_buffers()}
    scope = cs.Scope(mode_net)
    names = ["bn", "drop", "frozen"]
    a = scope.activations(X_NCHW, layers=names)
    b = scope.activations(X_NCHW, layers=names)
    with torch.no_grad():  # by hand, in inference: BatchNorm on running stats, Dropout off
        m = mode_net
        bn = (m.conv(X_NCHW) - m.bn.running_mean[:, None, None]) / torch.sqrt(
            m.bn.running_var[:, None, None] + m.bn.eps
        )
        bn = bn * m.bn.weight[:, None, None] + m.bn.bias[:, None, None]
    for name in names:
        assert torch.equal(a[name].tensor, b[name].tensor)
    torch.testing.assert_close(a["bn"].tensor, bn, rtol=1e-5, atol=1e-6)
    assert torch.equal(a["drop"].tensor, a["bn"].tensor)  # Dropout did nothing
    for k, v in mode_net.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert int(mode_net.bn.num_batches_tracked) == 0
    assert all(mod.training for mod in mode_net.modules())  # train mode given back


def test_keras_pass_in_inference_and_moving_stats_unchanged(keras: Any, keras_seq: Any) -> None:
    bn = keras_seq.get_layer("bn")
    mean, var = np.array(bn.moving_mean.numpy()), np.array(bn.moving_variance.numpy())
    scope = cs.Scope(keras_seq)
    a = scope.activations(X_NHWC, layers=["bn", "drop"])
    b = scope.activations(X_NHWC, layers=["bn", "drop"])
    assert np.array_equal(a["drop"].numpy(), b["drop"].numpy())
    conv_1 = keras_seq.get_layer("conv_1")
    with torch.no_grad():
        want_drop = keras.ops.convert_to_numpy(conv_1(a["bn"].tensor))
    assert np.array_equal(a["drop"].numpy(), want_drop)  # Dropout(0.5) passed everything through
    with torch.no_grad():  # BatchNormalization on moving statistics
        conv0 = keras.ops.convert_to_numpy(keras_seq.get_layer("input_layer")(X_NHWC))
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    np.testing.assert_allclose(
        a["bn"].numpy(), (conv0 - mean) / np.sqrt(var + bn.epsilon) * gamma + beta, rtol=1e-5, atol=1e-5
    )
    assert np.array_equal(bn.moving_mean.numpy(), mean) and np.array_equal(bn.moving_variance.numpy(), var)


# -- default layers ------------------------------------------------------------------------------------
def test_default_layers_every_spatial_leaf_torch(torch_net: Any) -> None:
    acts = cs.Scope(torch_net).activations(X_NCHW)
    assert list(acts) == [
        "stem",
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.relu",
        "layer1.0.conv2",
        "act",
        "pool",
    ]
    assert all(fm.tensor.dim() == 4 for fm in acts.values())  # flat (N, 4) and fc (N, 2) are left out
    want = _by_hand(torch_net, X_NCHW)
    for name, fm in acts.items():
        torch.testing.assert_close(fm.tensor, want[name], rtol=0, atol=0)


def test_default_layers_every_spatial_leaf_keras(keras_seq: Any, keras_nested: Any) -> None:
    assert list(cs.Scope(keras_seq).activations(X_NHWC)) == ["input_layer", "bn", "conv_1", "drop"]
    acts = cs.Scope(keras_nested).activations(X_NHWC)
    assert list(acts) == ["img", "f_conv", "s_conv", "s_bn", "s_relu", "frozen"]  # not gap (N, 2), head
    assert all(fm.numpy().ndim == 4 for fm in acts.values())


def test_requested_layer_that_never_ran_raises() -> None:
    class Skip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = torch.nn.Conv2d(1, 1, 1)
            self.unused = torch.nn.Conv2d(1, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(cs.CaptureError, match="'unused' did not run"):
        cs.Scope(Skip()).activations(torch.zeros(1, 1, 2, 2), layers=["used", "unused"])


def test_pre_activation_of_a_fused_keras_activation(keras: Any) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="relu", name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype("float32")
    acts = cs.Scope(model).activations(x, layers=["c", "c:pre"])
    layer = model.get_layer("c")
    linear = keras.layers.Conv2D(3, 3, name="lin")
    linear.build((None, 6, 6, 2))
    linear.set_weights(layer.get_weights())
    pre = linear(x).detach().cpu().numpy()
    assert np.allclose(acts["c:pre"].numpy(), pre, atol=1e-6) and (pre < 0).any()
    assert np.array_equal(acts["c"].numpy(), np.maximum(acts["c:pre"].numpy(), 0))
    assert layer.activation.__name__ == "relu" and layer.activation is keras.activations.relu  # restored
    torch_net = nn.Sequential(nn.Conv2d(2, 3, 3))
    xt = torch.rand(1, 2, 6, 6)
    got = cs.Scope(torch_net).activations(xt, layers="0:pre")["0:pre"].tensor
    assert torch.equal(got, torch_net(xt))  # PyTorch modules have no fused activation: the output itself
