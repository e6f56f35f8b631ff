"""scope.summary(): rows, totals and the text table, checked against Keras' own numbers and by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import convscope as cs

GOLDEN = Path(__file__).parent / "golden"


def _n(weights: Any) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


# -- Keras: every number equals Keras' own -------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["keras_seq", "keras_nested", "keras_subclassed"])
def test_keras_rows_and_totals_equal_keras_numbers(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    s = cs.Scope(model, input_shape=(8, 8, 3) if fixture == "keras_subclassed" else None).summary()
    assert [r.name for r in s.rows] == [layer.name for layer in model.layers]
    for row, layer in zip(s.rows, model.layers, strict=True):
        assert row.type == type(layer).__name__
        assert row.params == layer.count_params(), row.name
        assert row.trainable_params == _n(layer.trainable_weights), row.name
        assert row.trainable is layer.trainable, row.name  # as Keras' summary(show_trainable=True)
        if fixture != "keras_subclassed":
            assert row.output_shape == tuple(layer.output.shape), row.name
    assert s.total_params == model.count_params()
    assert s.trainable_params == _n(model.trainable_weights)
    assert s.non_trainable_params == _n(model.non_trainable_weights)
    assert s.non_trainable_params > 0  # BatchNormalization statistics (and a frozen conv) are counted


def test_keras_nested_frozen_and_batchnorm_rows(keras_nested: Any) -> None:
    rows = {r.name: r for r in cs.Scope(keras_nested).summary().rows}
    assert rows["img"].output_shape == (None, 8, 8, 3) and rows["img"].params == 0
    assert (rows["f_conv"].params, rows["f_conv"].trainable_params, rows["f_conv"].trainable) == (
        112,
        112,
        True,
    )
    # block: s_conv 4*9*4+4 = 148 trainable; s_bn gamma, beta trainable (8) + moving mean/var (8);
    # the layer itself is trainable (Keras shows "Y" for it), its BN statistics are not
    assert (rows["block"].params, rows["block"].trainable_params, rows["block"].trainable) == (
        164,
        156,
        True,
    )
    assert (rows["frozen"].params, rows["frozen"].trainable_params, rows["frozen"].trainable) == (
        10,
        0,
        False,
    )
    assert rows["gap"].output_shape == (None, 2)
    assert rows["head"].output_shape == (None, 3) and rows["head"].params == 9


def test_keras_subclassed_shapes_come_from_one_pass(keras_subclassed: Any) -> None:
    s = cs.Scope(keras_subclassed, input_shape=(8, 8, 3)).summary()
    assert [r.output_shape for r in s.rows] == [
        (None, 6, 6, 4),
        (None, 6, 6, 4),
        (None, 6, 6, 4),
        (None, 4),
        (None, 2),
    ]


# -- PyTorch: totals equal numel sums, shapes equal a hand-run forward -----------------------------------
def test_torch_rows_shapes_by_hand(torch_net: Any) -> None:
    s = cs.Scope(torch_net, input_shape=(3, 8, 8)).summary()
    m, x = torch_net, torch.zeros(1, 3, 8, 8)
    with torch.no_grad():
        stem = m.stem(x)
        b = m.layer1[0]
        conv1 = b.conv1(stem)
        bn1 = b.bn1(conv1)
        relu = torch.relu(bn1)
        conv2 = b.conv2(relu)
        act = m.act(conv2 + stem)
        pool = m.pool(act)
        flat = m.flat(pool)
        fc = m.fc(flat)
    want = [
        ("stem", "Conv2d", stem), ("layer1.0.conv1", "Conv2d", conv1), ("layer1.0.bn1", "BatchNorm2d", bn1),
        ("layer1.0.relu", "ReLU", relu), ("layer1.0.conv2", "Conv2d", conv2), ("act", "ReLU", act),
        ("pool", "AdaptiveAvgPool2d", pool), ("flat", "Flatten", flat), ("fc", "Linear", fc),
    ]  # fmt: skip
    assert [(r.name, r.type, r.output_shape) for r in s.rows] == [
        (n, t, (None, *v.shape[1:])) for n, t, v in want
    ]
    for row in s.rows:
        module = m.get_submodule(row.name)
        assert row.params == sum(p.numel() for p in module.parameters())
    assert s.total_params == sum(p.numel() for p in m.parameters()) == 426
    assert s.trainable_params == s.total_params and s.non_trainable_params == 0


def test_torch_trainable_counts_with_frozen_params(mode_net: Any) -> None:
    s = cs.Scope(mode_net, input_shape=(3, 8, 8)).summary()
    params = list(mode_net.parameters())
    assert s.total_params == sum(p.numel() for p in params)
    assert s.trainable_params == sum(p.numel() for p in params if p.requires_grad)
    assert s.non_trainable_params == 20  # frozen 1x1 conv: 4*4 + 4
    rows = {r.name: r for r in s.rows}
    assert (rows["frozen"].params, rows["frozen"].trainable_params, rows["frozen"].trainable) == (
        20,
        0,
        False,
    )
    assert rows["conv"].trainable and rows["drop"].trainable and rows["drop"].params == 0


def test_torch_shared_module_listed_per_call_and_counted_once(shared_net: Any) -> None:
    s = cs.Scope(shared_net, input_shape=(2, 5, 5)).summary()
    assert [(r.name, r.params) for r in s.rows] == [("conv", 38), ("relu", 0), ("conv@1", 0), ("relu@1", 0)]
    assert all(r.output_shape == (None, 2, 5, 5) for r in s.rows)
    assert s.total_params == sum(p.numel() for p in shared_net.parameters()) == 38
    assert sum(r.params for r in s.rows) == s.total_params


def test_torch_module_under_two_names_called_once_is_one_row() -> None:
    class Alias(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = torch.nn.Conv2d(1, 1, 1)
            self.dec = self.enc  # weight tying by a second attribute

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.enc(x)

    s = cs.Scope(Alias(), input_shape=(1, 3, 3)).summary()
    assert [(r.name, r.params, r.output_shape) for r in s.rows] == [("enc", 2, (None, 1, 3, 3))]
    assert s.total_params == 2


def test_torch_tuple_output_row_lists_every_shape(tuple_net: Any) -> None:
    rows = cs.Scope(tuple_net, input_shape=(3, 4, 4)).summary().rows
    assert rows[0].name == "split" and rows[0].output_shape == [(None, 3, 4, 4), (None, 4, 4)]


def test_torch_summary_needs_an_input_shape(torch_net: Any) -> None:
    scope = cs.Scope(torch_net)
    with pytest.raises(cs.OptionError, match="input_shape"):
        scope.summary()
    scope.activations(torch.zeros(1, 3, 10, 10), layers="stem")  # the last input's shape is used then
    assert scope.summary().rows[0].output_shape == (None, 4, 8, 8)


# -- text table: golden files --------------------------------------------------------------------------
def test_torch_table_matches_golden(torch_net: Any) -> None:
    s = cs.Scope(torch_net, input_shape=(3, 8, 8)).summary()
    assert str(s) == (GOLDEN / "summary_torch.txt").read_text(encoding="utf-8").rstrip("\n")
    assert repr(s) == str(s)


def test_keras_table_matches_golden(keras_nested: Any) -> None:
    s = cs.Scope(keras_nested).summary()
    assert str(s) == (GOLDEN / "summary_keras.txt").read_text(encoding="utf-8").rstrip("\n")


def test_table_uses_aliases_and_thousands_separators(keras_seq: Any) -> None:
    scope = cs.Scope(keras_seq).rename("input_layer", "conv_0")
    text = str(scope.summary())
    assert "conv_0 (Conv2D)" in text and "input_layer (Conv2D)" not in text
    assert f"Total params: {keras_seq.count_params():,}" in text and "1,069" in text
