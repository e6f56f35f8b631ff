"""No silent blanks (issue 7, points 4 and 10): a flat maximisation, a dead or vanishing layer and a vector
layer are said out loud or drawn legibly; denormal ranges and Keras variables convert without warnings."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import warnings  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import convscope as cs  # noqa: E402
from convscope.adapters.base import Layout  # noqa: E402
from convscope.featuremaps import FeatureMaps  # noqa: E402
from convscope.render import COLORMAPS, grid_image  # noqa: E402
from convscope.render.colormaps import Normalize, normalize_to_uint8  # noqa: E402
from convscope.render.grid import GridOptions  # noqa: E402
from convscope.render.strip import render_strip, strip_image  # noqa: E402

O = cs.objectives  # noqa: E741
THIS_FILE = os.path.abspath(__file__)


def dead_net() -> tuple[nn.Sequential, nn.Conv2d]:
    """(1, 10, 10) -> conv (channel 0: zero weights, bias -1, so ReLU(-1) = 0 everywhere; channel 1 alive) -> ReLU."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3)
    with torch.no_grad():
        conv.weight[0].zero_()
        conv.bias[0] = -1.0
        conv.weight[1] = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])  # a checkerboard
        conv.bias[1] = 0.1
    return nn.Sequential(conv, nn.ReLU()).eval(), conv


def the_warning(record: Any, match: str) -> warnings.WarningMessage:
    hits = [w for w in record if match in str(w.message)]
    assert len(hits) == 1, [str(w.message) for w in record]
    return hits[0]


# -- point 4, first bullet: maximize whose objective barely moved -----------------------------------------
def test_maximize_warns_with_start_and_end_values_at_the_users_line() -> None:
    scope = cs.Scope(dead_net()[0], input_shape=(1, 10, 10))
    with pytest.warns(UserWarning, match=r"barely moved over 20 steps for 1 of 1 image.*'1 · 0': 0 -> 0\): a dead or "
                      r"vanishing channel") as record:  # fmt: skip
        vis = scope.maximize(O.channel("1", 0), steps=20, progress=False)
    w = the_warning(record, "barely moved")
    assert w.filename == THIS_FILE  # stacklevel: the user's call, not convscope's insides
    assert "\n" not in str(w.message)
    assert vis.values[0] == 0.0


def test_maximize_names_only_the_dead_channel_and_stays_quiet_when_it_climbs() -> None:
    scope = cs.Scope(dead_net()[0], input_shape=(1, 10, 10))
    with pytest.warns(UserWarning, match=r"for 1 of 2 image\(s\) \('1 · 0': 0 -> 0\)"):
        scope.maximize(O.channel("1", [0, 1]), steps=20, recipe="plain", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the live channel alone: no warning
        vis = scope.maximize(O.channel("1", 1), steps=20, recipe="plain", progress=False)
    assert vis.history[0, 0] < vis.values[0]


def test_maximize_warns_on_a_vanishing_objective_with_its_values() -> None:
    model, conv = dead_net()
    with torch.no_grad():  # channel 1 alive but ~1e-10: a vanishing channel, as on a random-init MobileNetV2
        conv.weight[1].fill_(1e-11)
        conv.bias[1] = 1e-10
    scope = cs.Scope(model, input_shape=(1, 10, 10))
    with pytest.warns(UserWarning, match=r"barely moved.*'1 · 1': 1\.\d+e-10 -> 1\.\d+e-10"):
        scope.maximize(O.channel("1", 1), steps=20, progress=False)


def test_maximize_warns_when_an_image_comes_out_flat() -> None:
    from convscope.optim.visualization import Visualization, warn_if_blank

    images = np.full((2, 4, 4, 1), 128, dtype=np.uint8)
    images[1, 0, 0] = 200  # image 1 has contrast
    history = np.linspace(0, 1, 20)[:, None] * np.ones((1, 2))
    vis = Visualization(images, torch.zeros(2, 1, 4, 4), np.ones(2), history, ("a", "b"), Layout.NCHW)
    with pytest.warns(UserWarning, match=r"1 of 2 image\(s\) came out flat, near-constant \('a': pixels 128..128\): "
                      "the gradient barely reached"):  # fmt: skip
        warn_if_blank(vis)
    images[0] = 255
    with pytest.warns(UserWarning, match=r"'a': pixels 255..255\): saturated"):
        warn_if_blank(vis)


# -- point 4, second bullet: vector layers as a labelled strip of units ------------------------------------
def cell_colours(img: Any, geo: Any, n: int) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"))
    out = []
    for i in range(n):
        x0, y0, x1, y1 = geo.box(i)
        cell = arr[y0:y1, x0:x1].reshape(-1, 3)
        assert (cell == cell[0]).all(), f"cell {i} is not one colour"
        out.append(cell[0])
    return np.array(out)


def test_strip_has_one_cell_per_unit_in_order_coloured_by_value() -> None:
    values = np.array([-1.2, 0.3, 3.4, 0.0, 1.1, -0.5, 2.0, 0.7, -0.9, 1.5])
    img, geo, index = render_strip(values, GridOptions(cmap="viridis"), name="fc")
    assert index.tolist() == list(range(10))
    lut = COLORMAPS["viridis"]
    expected = lut[np.floor((values - values.min()) / np.ptp(values) * 255 + 0.5).astype(int)]  # hand min-max
    got = cell_colours(img, geo, 10)
    np.testing.assert_array_equal(got, expected)
    assert len({tuple(c) for c in got}) == 10  # one distinct colour per unit
    xs = [geo.box(i)[0] for i in range(10)]
    assert xs == sorted(xs) and len(set(xs)) == 10  # left to right, in unit order


def test_strip_wraps_large_vectors_and_sorts() -> None:
    values = np.random.default_rng(0).normal(size=1000)
    img, geo, _ = render_strip(values, GridOptions(), name="predictions")
    assert (geo.cols, geo.rows) == (64, 16)
    got = cell_colours(img, geo, 1000)
    np.testing.assert_array_equal(got, COLORMAPS["viridis"][normalize_to_uint8(values[None], Normalize.LAYER)[0]])
    _, geo, index = render_strip(values[:10], GridOptions(sort="max"))
    assert index.tolist() == np.argsort(-values[:10], kind="stable").tolist()


def test_torch_and_keras_vector_layers_render_as_strips(torch_net: nn.Module, keras_nested: Any, tmp_path: Any) -> None:
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    acts = cs.Scope(torch_net).activations(x, layers=["pool", "fc"])  # (1, 4, 1, 1) and (1, 2)
    for name, units in (("pool", 4), ("fc", 2)):
        fm = acts[name]
        assert fm.is_vector
        img = fm.grid()
        assert img.mode == "RGB" and img.width > 60 and img.height > 30  # not 1x1 tiles
        vec = fm.channels_first()[0].reshape(-1)
        ref, geo, _ = render_strip(vec, GridOptions(), name=name)
        np.testing.assert_array_equal(np.asarray(img), np.asarray(ref))
        got = cell_colours(img, geo, units)
        np.testing.assert_array_equal(got, COLORMAPS["viridis"][normalize_to_uint8(vec[None], Normalize.LAYER)[0]])
    assert acts["fc"].save(tmp_path / "fc.png").exists()
    kacts = cs.Scope(keras_nested).activations(x.permute(0, 2, 3, 1).numpy(), layers=["gap", "head"])
    assert kacts["gap"].is_vector and kacts["head"].shape == (1, 3)
    assert kacts["head"].grid(labels=True).mode == "RGB"
    assert not cs.Scope(torch_net).activations(x, layers="stem")["stem"].is_vector
    kept = FeatureMaps("gap", torch.arange(5.0).reshape(1, 1, 1, 5), Layout.NHWC)  # keepdims=True pooling
    _, geo, _ = render_strip(np.arange(5.0), GridOptions(), name="gap")
    assert kept.is_vector and cell_colours(kept.grid(), geo, 5).tolist() == cell_colours(
        strip_image(np.arange(5.0), name="gap"), geo, 5).tolist()  # fmt: skip


def test_strip_title_writes_the_value_range() -> None:
    from convscope.render.strip import strip_title

    assert strip_title("fc", np.array([0.5, -1.2, 3.4])) == "fc: 3 units, min -1.2 (unit 1) max 3.4 (unit 2)"
    img = strip_image(np.array([0.5, -1.2, 3.4]), name="fc")
    ink = np.asarray(img)[2:14].min(axis=2) < 100  # the title row holds dark text
    assert ink.sum() > 50


# -- point 10: denormal ranges, dead layers said out loud ------------------------------------------------
def test_denormal_layer_renders_without_runtime_warnings_and_says_it_vanished() -> None:
    rng = np.random.default_rng(0)
    maps = (rng.random((4, 5, 5)) * 1e-39).astype(np.float32)  # denormal float32, as on a random EfficientNet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for norm in ("channel", "layer", "symmetric"):
            tiles = np.asarray(grid_image(maps, normalize=norm, scale=1, padding=0))
            assert tiles.max() > 200  # the pattern is stretched, not a black square
        strip_image(maps[:, 0, 0], normalize="layer")
        big = normalize_to_uint8(rng.random((2, 3)) * 1e-310, Normalize.CHANNEL)  # float64 denormals
        assert big.max() == 255
    fm = FeatureMaps("conv_3", torch.from_numpy(maps[None]), Layout.NCHW)
    peak = f"{maps.max():.3g}"  # 9.97e-40
    with pytest.warns(UserWarning, match=rf"conv_3: the values have vanished for this input: max \|v\| = {peak},"):
        fm.grid()


def test_dead_layer_warns_and_dead_channels_are_labelled() -> None:
    zeros = FeatureMaps("conv_3", torch.zeros(1, 64, 3, 3), Layout.NCHW)
    with pytest.warns(UserWarning, match="conv_3: all 64 channels are zero for this input") as record:
        zeros.grid()
    assert record[0].filename == THIS_FILE
    steps = FeatureMaps("m", torch.arange(3.0)[None, :, None, None] * torch.ones(1, 3, 4, 4), Layout.NCHW)
    with pytest.warns(UserWarning, match=r"m: every channel is constant for this input \(values 0, 1, 2\), so with "
                      "normalize='channel'"):  # fmt: skip
        steps.grid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps.grid(normalize="layer")  # the tiles differ: nothing to say
    units = FeatureMaps("fc", torch.zeros(2, 10), Layout.NCHW)
    with pytest.warns(UserWarning, match="fc: all 10 units are zero for input 1"):
        units.grid(1)
    partly = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    partly[0, 1] = 0
    fm = FeatureMaps("conv", partly, Layout.NCHW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a few dead channels: labelled, not warned
        marked = np.asarray(fm.grid(labels=True))
    plain = np.asarray(grid_image(partly[0].numpy(), labels=["0", "1", "2"]))
    assert marked.shape == plain.shape and (marked != plain).any()  # "1=0" differs from "1"
    same = np.asarray(grid_image(partly[0].numpy(), labels=["0", "1=0", "2"]))
    np.testing.assert_array_equal(marked, same)


# -- point 10: no Keras __array__ DeprecationWarnings from our calls -------------------------------------
def test_keras_calls_raise_no_deprecation_warnings(keras_nested: Any) -> None:
    x = np.random.default_rng(0).random((1, 8, 8, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        scope = cs.Scope(keras_nested)
        str(scope.summary())
        acts = scope.activations(x, layers=["f_conv", "gap", "head"])
        acts["f_conv"].grid()
        acts["head"].grid()
        scope.filters("f_conv").grid()
        assert scope.filters("frozen").weights.shape == (2, 4, 1, 1)
