"""Every public call leaves the model exactly as found: hooks, train/eval modes, requires_grad, weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import convscope as cs


def _exercise(scope: cs.Scope, x: Any, conv: str, tensor_layer: str) -> None:
    """Call every public Scope method once (some with errors)."""
    scope.summary()
    scope.layer(conv)
    scope.layers("*conv*")
    scope.rename(conv, "renamed")
    scope.activations(x)
    scope.activations(x, layers=["renamed", tensor_layer])
    scope.activations(x, layers="renamed", grad=True)
    scope.record(x, "renamed", freeze=True)
    scope.filters("renamed")
    scope.prepare(x)
    scope.example_input()
    with pytest.raises(cs.LayerNotFoundError):
        scope.activations(x, layers="no_such_layer")
    with pytest.raises(cs.InputError):
        scope.activations(np.zeros((1, 2, 2), np.float32))


def test_torch_model_untouched_by_public_calls(mode_net: Any, model_state: Callable[[Any], Any]) -> None:
    mode_net.bn.eval()  # a mix of modes: root in train, bn in eval
    mode_net.conv.bias.requires_grad_(False)  # and a mix of frozen/unfrozen params
    user_hook = mode_net.conv.register_forward_hook(lambda *a: None)  # the user's own hooks stay
    snap = model_state(mode_net)
    assert snap.hooks[id(mode_net.conv)]["_forward_hooks"] == [user_hook.id]
    scope = cs.Scope(mode_net, input_shape=(3, 8, 8))
    _exercise(scope, torch.randn(1, 3, 8, 8), "conv", "frozen")
    snap.assert_same(mode_net)
    assert mode_net.training and not mode_net.bn.training and mode_net.drop.training


def test_keras_model_untouched_by_public_calls(keras_nested: Any, model_state: Callable[[Any], Any]) -> None:
    snap = model_state(keras_nested)
    assert any(not rg for rg in snap.requires_grad.values()) and any(snap.requires_grad.values())
    assert len(snap.hooks) > 5  # the nested Keras layers are checked too, not only torch's modules()
    scope = cs.Scope(keras_nested)
    _exercise(scope, np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype(np.float32), "f_conv", "s_bn")
    snap.assert_same(keras_nested)


def test_torch_forward_raising_midway(failing_net: Any, model_state: Callable[[Any], Any]) -> None:
    failing_net.train()
    failing_net.conv.weight.requires_grad_(False)
    snap = model_state(failing_net)
    scope = cs.Scope(failing_net, input_shape=(3, 6, 6))
    calls: list[Callable[[], Any]] = [
        lambda: scope.activations(torch.zeros(1, 3, 6, 6)),
        lambda: scope.activations(torch.zeros(1, 3, 6, 6), layers=["conv", "conv2"]),
        lambda: scope.activations(torch.zeros(1, 3, 6, 6), layers="conv", grad=True),
        lambda: scope.record(torch.zeros(1, 3, 6, 6), ["conv"], freeze=True),
        scope.summary,
    ]
    for call in calls:
        with pytest.raises(cs.ModelError) as info:
            call()
        err = info.value
        assert isinstance(err, cs.ConvscopeError)
        assert isinstance(err.__cause__, RuntimeError) and str(err.__cause__) == "boom"
        assert "RuntimeError" in str(err) and "boom" in str(err) and "(1, 3, 6, 6)" in str(err)
        snap.assert_same(failing_net)
    with pytest.raises(cs.ModelError, match="last layer that ran: 'conv'"):
        scope.activations(torch.zeros(1, 3, 6, 6), layers="conv")


def test_keras_forward_raising_midway(keras: Any, model_state: Callable[[Any], Any]) -> None:
    class Boom(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.fail = False

        def call(self, x: Any) -> Any:
            if self.fail:
                raise RuntimeError("boom")
            return x

    inp = keras.Input((6, 6, 3), name="img")
    conv = keras.layers.Conv2D(2, 3, name="conv")
    boom = Boom(name="boom")
    out = keras.layers.Conv2D(2, 1, name="conv2")(boom(conv(inp)))
    model = keras.Model(inp, out, name="failing")
    conv.trainable = False
    boom.fail = True
    snap = model_state(model)
    scope = cs.Scope(model)
    for layers in (None, ["conv", "conv2"]):
        with pytest.raises(cs.ModelError, match="boom") as info:
            scope.activations(np.zeros((1, 6, 6, 3), np.float32), layers=layers)
        cause = info.value.__cause__
        assert isinstance(cause, RuntimeError) and "boom" in str(cause)
        assert "'conv'" in str(info.value)  # the layer that ran before the failure
        snap.assert_same(model)
    assert conv.trainable is False and all(not w.value.requires_grad for w in conv.weights)


def test_state_check_detects_a_leaked_hook(torch_net: Any, model_state: Callable[[Any], Any]) -> None:
    """The snapshot helper itself can fail (so the tests above mean something)."""
    snap = model_state(torch_net)
    handle = torch_net.layer1[0].conv1.register_forward_hook(lambda *a: None)
    with pytest.raises(AssertionError, match="hook"):
        snap.assert_same(torch_net)
    handle.remove()
    torch_net.layer1[0].bn1.train()
    with pytest.raises(AssertionError, match="mode"):
        snap.assert_same(torch_net)
    torch_net.layer1[0].bn1.eval()
    with torch.no_grad():
        torch_net.fc.bias.add_(1e-3)
    with pytest.raises(AssertionError, match="fc.bias"):
        snap.assert_same(torch_net)
