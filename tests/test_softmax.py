"""Capture(logits=True): a final softmax is read as logits; a softmax inside the model is left alone."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import convscope as cs
from convscope.capture import Capture


def _logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    scope = cs.Scope(model)
    with Capture(scope.adapter, [], logits=True) as cap:
        return cap.run(x)


class AttentionLast(nn.Module):
    """A softmax used for attention, registered after the head: it must not be stripped."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.attn = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x * self.attn(x))


def test_torch_final_softmax_module_gives_the_linear_output() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
    x = torch.randn(2, 4)
    assert torch.equal(_logits(model, x), model[0](x))
    assert torch.allclose(model(x).sum(1), torch.ones(2))  # restored afterwards
    assert not model[1]._forward_hooks


def test_torch_inner_softmax_is_left_alone() -> None:
    torch.manual_seed(0)
    model = AttentionLast()
    x = torch.randn(2, 4)
    assert torch.equal(_logits(model, x), model(x))


def test_keras_dense_softmax_and_softmax_layer(keras: Any) -> None:
    keras.utils.set_random_seed(0)
    x = torch.randn(2, 4)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    layer = dense.layers[0]
    expected = x @ torch.as_tensor(layer.kernel.numpy()) + torch.as_tensor(layer.bias.numpy())
    assert torch.allclose(_logits(dense, x), expected, atol=1e-6)
    assert layer.activation.__name__ == "softmax"
    inp = keras.Input((4,))
    pre = keras.layers.Dense(3, name="pre")(inp)
    functional = keras.Model(inp, keras.layers.Softmax(name="sm")(pre))
    sub = keras.Model(inp, pre)
    assert torch.allclose(_logits(functional, x), sub(x, training=False), atol=1e-6)
    assert torch.allclose(functional(x, training=False).sum(1), torch.ones(2), atol=1e-6)
    assert not functional.get_layer("sm")._forward_hooks


def test_pre_activation_and_logits_on_the_same_layer_restore_the_softmax(keras: Any) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax", name="out")])
    scope = cs.Scope(model)
    x = torch.randn(2, 4)
    with Capture(scope.adapter, scope.targets("out:pre"), logits=True) as cap:
        logits = cap.run(x)
    assert torch.allclose(cap.recording.get("out:pre"), logits)
    assert model.get_layer("out").activation is keras.activations.softmax


def test_keras_softmax_inside_a_nested_head_is_read_as_logits(keras: Any) -> None:
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu")], name="backbone")
    head = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax", name="cls")], name="head")
    model = keras.Sequential([keras.Input((4,)), backbone, head])
    x = torch.randn(2, 4)
    dense = head.get_layer("cls")
    hidden = backbone(x, training=False)
    expected = hidden @ torch.as_tensor(dense.kernel.numpy()) + torch.as_tensor(dense.bias.numpy())
    assert torch.allclose(_logits(model, x), expected, atol=1e-6)
    assert dense.activation is keras.activations.softmax
