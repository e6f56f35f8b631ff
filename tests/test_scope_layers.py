"""Layer lookup by name, dotted path, index, glob and type; errors with close names; rename()."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs
from convscope.errors import LayerNotFoundError as ErrorsLayerNotFoundError


def test_exact_name_and_dotted_path_torch(torch_net: Any) -> None:
    scope = cs.Scope(torch_net)
    h = scope.layer("layer1.0.conv1")
    assert h.module is torch_net.layer1[0].conv1
    assert (h.name, h.path, h.type_name, h.depth, h.is_leaf) == (
        "layer1.0.conv1",
        "layer1.0.conv1",
        "Conv2d",
        2,
        True,
    )
    assert scope.layer("layer1.0").module is torch_net.layer1[0] and not scope.layer("layer1.0").is_leaf
    assert scope.layer("fc").module is torch_net.fc


def test_index_positive_and_negative(torch_net: Any, keras_seq: Any) -> None:
    scope = cs.Scope(torch_net)
    assert scope.layer(0).module is torch_net.stem
    assert scope.layer(3).module is torch_net.layer1[0].conv1
    assert scope.layer(-1).module is torch_net.fc
    assert scope.layer(-2).module is torch_net.flat
    with pytest.raises(cs.LayerNotFoundError, match=r"out of range.*11 layers"):
        scope.layer(11)
    with pytest.raises(cs.LayerNotFoundError, match="out of range"):
        scope.layer(-12)
    kscope = cs.Scope(keras_seq)
    assert kscope.layer(0).module is keras_seq.get_layer("input_layer")
    assert kscope.layer(-1).module is keras_seq.get_layer("dense")


def test_glob(torch_net: Any, keras_seq: Any) -> None:
    scope = cs.Scope(torch_net)
    assert [h.name for h in scope.layers("layer1.0.conv*")] == ["layer1.0.conv1", "layer1.0.conv2"]
    assert [h.name for h in scope.layers("*conv?")] == ["layer1.0.conv1", "layer1.0.conv2"]
    assert [h.name for h in cs.Scope(keras_seq).layers("conv*")] == ["conv_1"]
    with pytest.raises(cs.LayerNotFoundError, match=r"pattern 'nope\*'"):
        scope.layers("nope*")
    with pytest.raises(cs.LayerNotFoundError, match="matches 2 layers"):  # one layer wanted, two found
        scope.layer("layer1.0.conv*")


def test_type_string_and_class(torch_net: Any, keras: Any, keras_nested: Any) -> None:
    scope = cs.Scope(torch_net)
    convs = ["stem", "layer1.0.conv1", "layer1.0.conv2"]
    assert [h.name for h in scope.layers(nn.Conv2d)] == convs
    assert [h.name for h in scope.layers("Conv2d")] == convs
    assert [h.name for h in scope.layers("Conv2D")] == convs  # the Keras spelling works on torch too
    assert [h.name for h in scope.layers(nn.BatchNorm2d)] == ["layer1.0.bn1"]
    kscope = cs.Scope(keras_nested)
    assert [h.name for h in kscope.layers("Conv2D")] == ["f_conv", "s_conv", "frozen"]  # nested one included
    assert [h.name for h in kscope.layers(keras.layers.Conv2D)] == ["f_conv", "s_conv", "frozen"]
    assert [h.name for h in kscope.layers(keras.layers.BatchNormalization)] == ["s_bn"]
    with pytest.raises(cs.LayerNotFoundError, match=r"no layer of type LSTM; types present: .*Conv2d"):
        scope.layers(nn.LSTM)


def test_layer_list_keeps_query_order_without_repeats(torch_net: Any) -> None:
    scope = cs.Scope(torch_net)
    got = scope.layers(["fc", "stem", "Conv2d", -1])
    assert [h.name for h in got] == ["fc", "stem", "layer1.0.conv1", "layer1.0.conv2"]


def test_unknown_name_raises_layer_not_found_naming_closest(torch_net: Any, keras_nested: Any) -> None:
    assert cs.LayerNotFoundError is ErrorsLayerNotFoundError
    assert issubclass(cs.LayerNotFoundError, cs.ConvscopeError)
    scope = cs.Scope(torch_net)
    with pytest.raises(cs.LayerNotFoundError) as info:
        scope.layer("layer1.0.conv3")
    msg = str(info.value)
    assert msg.startswith("no layer 'layer1.0.conv3'")
    assert "'layer1.0.conv1'" in msg and "'layer1.0.conv2'" in msg
    with pytest.raises(cs.ConvscopeError, match=r"no layer 'f_con'; closest: 'f_conv'"):
        cs.Scope(keras_nested).layer("f_con")
    with pytest.raises(cs.LayerNotFoundError, match="cannot find a layer by float"):
        scope.layer(1.5)  # type: ignore[arg-type]


def test_rename_torch_both_names_resolve(torch_net: Any) -> None:
    scope = cs.Scope(torch_net)
    assert scope.rename("layer1.0.conv1", "first") is scope
    assert scope.layer("first") is scope.layer("layer1.0.conv1")
    assert "first" in scope.layer_names and "layer1.0.conv1" not in scope.layer_names
    acts = scope.activations(torch.zeros(1, 3, 8, 8), layers=["layer1.0.conv1"])
    assert list(acts) == ["first"]


def test_rename_keras_input_layer_to_conv_0(keras: Any, keras_seq: Any) -> None:
    """A model whose first Conv2D is named 'input_layer'; rename it and read activations by the new name."""
    scope = cs.Scope(keras_seq)
    scope.rename("input_layer", "conv_0")
    conv = keras_seq.get_layer("input_layer")
    assert scope.layer("conv_0").module is conv and scope.layer("input_layer").module is conv
    assert scope.layer_names[0] == "conv_0"
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    acts = scope.activations(x, layers=["conv_0", "conv_1"])
    assert list(acts) == ["conv_0", "conv_1"]
    want = keras.Model(keras_seq.inputs, conv.output).predict(x, verbose=0)
    np.testing.assert_allclose(acts["conv_0"].numpy(), want, rtol=0, atol=1e-6)
    assert list(scope.activations(x, layers="input_layer")) == ["conv_0"]  # old name still resolves
    assert "conv_0" in scope.activations(x)  # and the default pass uses the alias as well
    assert conv.name == "input_layer"  # the model itself is not touched


def test_rename_to_taken_name_raises_option_error(torch_net: Any, keras_seq: Any) -> None:
    scope = cs.Scope(torch_net)
    with pytest.raises(cs.OptionError, match=r"'fc' already names layer 'fc'"):
        scope.rename("stem", "fc")
    with pytest.raises(cs.OptionError, match="already names"):
        scope.rename("stem", "layer1.0.conv1")
    kscope = cs.Scope(keras_seq).rename("input_layer", "conv_0")
    with pytest.raises(cs.OptionError, match="'conv_0' already names layer 'input_layer'"):
        kscope.rename("conv_1", "conv_0")  # an alias is taken as well
    with pytest.raises(cs.OptionError, match="non-empty"):
        kscope.rename("conv_1", "c*")
    assert kscope.layer("conv_0").module is keras_seq.get_layer("input_layer")
    kscope.rename("conv_0", "conv_0")  # renaming a layer to its own alias is allowed
