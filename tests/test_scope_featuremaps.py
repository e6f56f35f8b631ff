"""FeatureMaps layout and grids, and scope.filters() in (out, in, kh, kw) order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope as cs
from convscope.adapters.base import Layout
from convscope.featuremaps import FeatureMaps

X_NCHW = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(31))
X_NHWC = X_NCHW.permute(0, 2, 3, 1).contiguous().numpy()


@pytest.fixture
def wide_torch() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 36, 2)).eval()


@pytest.fixture
def wide_keras(keras: Any) -> Any:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(32, 3, name="c32"), keras.layers.Flatten(name="fl"),
         keras.layers.Dense(2, name="out")],
        name="wide",
    )  # fmt: skip


def test_numpy_layout_torch_nchw_keras_nhwc(torch_net: Any, keras_nested: Any) -> None:
    t = cs.Scope(torch_net).activations(X_NCHW, layers="stem")["stem"]
    assert t.layout is Layout.NCHW and t.numpy().shape == (1, 4, 6, 6) and t.num_channels == 4
    with torch.no_grad():
        np.testing.assert_array_equal(t.numpy(), torch_net.stem(X_NCHW).numpy())
    k = cs.Scope(keras_nested).activations(X_NHWC, layers="f_conv")["f_conv"]
    assert k.layout is Layout.NHWC and k.numpy().shape == (1, 6, 6, 4) and k.num_channels == 4
    assert k.channels_first().shape == (1, 4, 6, 6)
    np.testing.assert_array_equal(k.channels_first(), k.numpy().transpose(0, 3, 1, 2))
    a = t.numpy()
    a[...] = 0  # a copy: the recorded value is untouched
    assert t.tensor.abs().sum() > 0


def test_grid_32_maps_is_4_by_8(wide_torch: nn.Module, wide_keras: Any) -> None:
    fm = cs.Scope(wide_torch).activations(X_NCHW, layers="0")["0"]
    assert fm.shape == (1, 32, 6, 6)
    img = fm.grid(scale=1, padding=1)
    assert isinstance(img, Image.Image)
    assert img.size == (8 * 6 + 7, 4 * 6 + 3)  # (width, height): 8 columns, 4 rows, 1 px between tiles
    assert fm.grid(scale=1, padding=0).size == (48, 24)
    assert fm.grid(cols=8, scale=2, padding=0).size == (96, 48)
    kfm = cs.Scope(wide_keras).activations(X_NHWC, layers="c32")["c32"]
    assert kfm.shape == (1, 6, 6, 32)
    assert kfm.grid(scale=1, padding=1).size == (55, 27)


def test_grid_same_picture_for_either_layout() -> None:
    """Tile i shows channel i whatever the layout: channel i is constant i, so tiles brighten row by row."""
    maps = torch.arange(32, dtype=torch.float32)[None, :, None, None].expand(1, 32, 3, 3).contiguous()
    nchw = FeatureMaps("m", maps, Layout.NCHW).grid(normalize="layer", scale=1, padding=0)
    nhwc = FeatureMaps("m", maps.permute(0, 2, 3, 1).contiguous(), Layout.NHWC).grid(
        normalize="layer", scale=1, padding=0
    )
    a, b = np.asarray(nchw), np.asarray(nhwc)
    assert np.array_equal(a, b)
    levels = [int(a[r * 3 + 1, c * 3 + 1]) for r in range(4) for c in range(8)]  # tile centres, row-major
    assert levels == sorted(levels) and levels[0] < levels[-1] and len(set(levels)) > 16


def test_filters_torch_equal_weight(torch_net: Any) -> None:
    f = cs.Scope(torch_net).filters("layer1.0.conv1")
    assert f.weights.shape == (4, 4, 3, 3)
    assert np.array_equal(f.numpy(), torch_net.layer1[0].conv1.weight.detach().numpy())
    assert np.array_equal(f.bias, torch_net.layer1[0].conv1.bias.detach().numpy())
    assert f.name == "layer1.0.conv1"
    assert cs.Scope(torch_net).filters("stem").numpy().shape == (4, 3, 3, 3)


def test_filters_keras_equal_transposed_kernel(keras_seq: Any) -> None:
    scope = cs.Scope(keras_seq).rename("input_layer", "conv_0")
    for name, layer_name, shape in (
        ("conv_0", "input_layer", (4, 3, 3, 3)),
        ("conv_1", "conv_1", (8, 4, 3, 3)),
    ):
        f = scope.filters(name)
        layer = keras_seq.get_layer(layer_name)
        assert f.weights.shape == shape and f.name == name
        assert np.array_equal(f.weights, np.asarray(layer.kernel.numpy()).transpose(3, 2, 0, 1))
        assert np.array_equal(f.bias, np.asarray(layer.bias.numpy()))
    assert isinstance(scope.filters("conv_0").grid(), Image.Image)


def test_filters_of_non_conv_layer_raise_option_error(torch_net: Any, keras_seq: Any) -> None:
    for layer in ("fc", "layer1.0.bn1", "act"):
        with pytest.raises(cs.OptionError) as info:
            cs.Scope(torch_net).filters(layer)
        msg = str(info.value)
        assert f"'{layer}'" in msg and "conv layers: 'stem', 'layer1.0.conv1', 'layer1.0.conv2'" in msg
    with pytest.raises(cs.OptionError, match=r"'dense' \(Dense\).*conv layers: 'input_layer', 'conv_1'"):
        cs.Scope(keras_seq).filters("dense")


def test_figure_and_notebook_png_show_the_same_grid(wide_torch: nn.Module) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    fm = cs.Scope(wide_torch).activations(X_NCHW, layers=0)
    name = next(iter(fm))
    maps = fm[name]
    fig = maps.figure()
    assert fig.axes and fig._suptitle is not None and name in fig._suptitle.get_text()
    png = Image.open(io.BytesIO(maps._repr_png_()))
    assert np.array_equal(np.asarray(png), np.asarray(maps.grid()))
    with pytest.raises(cs.OptionError, match="out of range"):
        maps.grid(index=3)


def test_depthwise_kernels_are_one_single_channel_kernel_per_output(keras: Any) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")])
    kernel = model.get_layer("dw").kernel.numpy()  # (3, 3, 4, 2)
    got = cs.Scope(model).filters("dw").weights
    assert got.shape == (8, 1, 3, 3)
    # Keras output channel c * mult + m comes from input channel c with multiplier m
    assert np.array_equal(got[2 * 2 + 1, 0], kernel[:, :, 2, 1])


def test_single_input_channel_filters_tile_near_square(torch_net: Any) -> None:
    conv = nn.Conv2d(1, 32, 3)
    img = cs.Scope(nn.Sequential(conv)).filters("0").grid(scale=1, padding=1)
    assert img.size == (8 * 3 + 7, 4 * 3 + 3)  # 4 x 8 kernels, not one column of 32
