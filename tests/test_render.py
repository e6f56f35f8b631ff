"""Renderers: hand-computed pixels for tiling, normalisation, colour maps, labels and filters."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from convscope.errors import InputError, OptionError
from convscope.render import (
    COLORMAPS,
    Normalize,
    apply_cmap,
    filter_image,
    grid_figure,
    grid_image,
    save_png,
    to_png_bytes,
)
from convscope.render.colormaps import normalize_to_uint8
from convscope.render.grid import default_layout, resolve_layout, resolve_scale


def pixels(img: Image.Image) -> np.ndarray:
    """RGB pixels for palette images, raw values for gray ones."""
    return np.asarray(img.convert("RGB") if img.mode == "P" else img)


def luminance(lut: np.ndarray) -> np.ndarray:
    return lut.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


# --- tiling -------------------------------------------------------------------------------------------


def test_tile_r_c_sits_at_exact_offsets_with_padding() -> None:
    values = np.array([0.0, 0.2, 0.4, 0.6, 0.8])  # uint8: floor(v * 255 + 0.5)
    maps = np.broadcast_to(values[:, None, None], (5, 2, 3)).copy()
    img = grid_image(maps, cols=3, normalize="none", padding=2, scale=1)
    arr = pixels(img)
    assert img.mode == "L"
    assert arr.shape == (2 * 2 + 2, 3 * 3 + 2 * 2)  # rows*h + pad, cols*w + 2 pads
    expected = [0, 51, 102, 153, 204]
    for i, value in enumerate(expected):
        r, c = divmod(i, 3)
        y, x = r * (2 + 2), c * (3 + 2)
        assert (arr[y : y + 2, x : x + 3] == value).all(), (i, arr[y : y + 2, x : x + 3])
    assert (arr[2:4, :] == 255).all()  # padding row between tile rows
    assert (arr[:, 3:5] == 255).all() and (arr[:, 8:10] == 255).all()  # padding columns
    assert (arr[4:6, 10:13] == 255).all()  # sixth cell is blank


def test_32_maps_of_26_make_a_4x8_grid_of_52px_tiles() -> None:
    maps = np.arange(32, dtype=np.float32)[:, None, None] * np.ones((32, 26, 26))
    img = grid_image(maps, normalize="layer")
    assert img.size == (8 * 52 + 7, 4 * 52 + 3)
    arr = pixels(img)
    assert arr[53, 0] == round(8 / 31 * 255)  # tile 8 starts row 1
    assert arr[0, 7 * 53] == round(7 / 31 * 255)  # tile 7 ends row 0


def test_default_layouts_are_near_square_and_wide() -> None:
    assert default_layout(32) == (4, 8)
    assert default_layout(64) == (8, 8)
    assert default_layout(512) == (16, 32)
    assert default_layout(3) == (1, 3)
    rows, cols = default_layout(10)
    assert cols >= rows and rows * cols >= 10
    assert resolve_layout(10, None, 4) == (3, 4)
    assert resolve_layout(10, 2, None) == (2, 5)
    with pytest.raises(OptionError, match="hold 6 tiles but 10"):
        resolve_layout(10, 2, 3)


def test_scale_repeats_pixels_exactly() -> None:
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    img = grid_image(maps, scale=3)
    expected = np.kron(np.array([[0, 85], [170, 255]]), np.ones((3, 3), dtype=int))
    np.testing.assert_array_equal(pixels(img), expected)


def test_automatic_scale_makes_tiny_maps_32px_tall() -> None:
    assert resolve_scale(None, 7) == 5
    assert resolve_scale(None, 26) == 2
    assert resolve_scale(None, 32) == 1
    assert resolve_scale(None, 112) == 1
    assert grid_image(np.random.default_rng(0).random((1, 7, 7))).size == (35, 35)


# --- normalisation ------------------------------------------------------------------------------------


TWO = np.array([[[0.0, 1.0], [2.0, 3.0]], [[0.0, 2.0], [4.0, 6.0]]])


def test_channel_normalisation_hand_computed() -> None:
    arr = pixels(grid_image(TWO, cols=2, padding=0, scale=1))
    np.testing.assert_array_equal(arr, [[0, 85, 0, 85], [170, 255, 170, 255]])


def test_layer_normalisation_hand_computed() -> None:
    arr = pixels(grid_image(TWO, cols=2, padding=0, scale=1, normalize="layer"))
    # one range 0..6: v * 255 / 6 rounded half up -> 0, 43, 85, 128 | 0, 85, 170, 255
    np.testing.assert_array_equal(arr, [[0, 43, 0, 85], [85, 128, 170, 255]])


def test_clip_percentiles_replace_min_and_max() -> None:
    maps = np.arange(5, dtype=float).reshape(1, 1, 5)  # median 2
    arr = pixels(grid_image(maps, clip=(0, 50), scale=1))
    np.testing.assert_array_equal(arr, [[0, 128, 255, 255, 255]])


def test_symmetric_maps_zero_to_the_middle_colour() -> None:
    maps = np.array([[[-2.0, 0.0, 1.0, 2.0]]])
    gray = pixels(grid_image(maps, normalize="symmetric", cmap="gray", scale=1))
    np.testing.assert_array_equal(gray, [[0, 128, 191, 255]])  # 1 -> floor(1 / 2 * 127.5 + 128.5)
    img = grid_image(maps, normalize="symmetric", scale=1)  # auto cmap -> coolwarm palette image
    assert img.mode == "P"
    rgb = pixels(img)[0]
    assert tuple(rgb[1]) == (221, 220, 220)  # coolwarm's middle anchor
    assert np.abs(rgb[1].astype(int) - COLORMAPS["coolwarm"][128]).max() <= 2
    assert tuple(rgb[0]) == tuple(COLORMAPS["coolwarm"][0])  # -max -> blue end
    assert tuple(rgb[3]) == tuple(COLORMAPS["coolwarm"][255])  # +max -> red end


@pytest.mark.parametrize(
    ("norm", "value", "expected"),
    [("channel", 5.0, 0), ("layer", 5.0, 0), ("symmetric", 0.0, 128), ("symmetric", -5.0, 0), ("none", 5.0, 255)],
)
def test_constant_channels_give_defined_values(norm: str, value: float, expected: int) -> None:
    maps = np.full((2, 3, 3), value)
    arr = pixels(grid_image(maps, normalize=norm, cmap="gray", padding=0, scale=1))
    assert (arr == expected).all()
    levels = normalize_to_uint8(np.zeros((2, 3, 3)), Normalize(norm))
    assert levels.dtype == np.uint8 and not np.isnan(levels.astype(float)).any()


def test_non_finite_maps_raise_input_error() -> None:
    maps = np.ones((2, 3, 3))
    maps[1, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        grid_image(maps)


# --- channel selection --------------------------------------------------------------------------------


def tile_values(img: Image.Image, n: int) -> list[int]:
    """The top-left pixel of each 1x1 tile laid out in one row with padding 1."""
    return [int(pixels(img)[0, 2 * i]) for i in range(n)]


def test_channels_subset_keeps_the_given_order() -> None:
    maps = np.arange(4, dtype=float)[:, None, None] * np.ones((4, 1, 1))  # layer range 0..3
    img = grid_image(maps, channels=[3, 1], normalize="layer", cols=2, scale=1)
    assert tile_values(img, 2) == [255, 0]  # the layer range is that of the shown channels: 1..3


def test_sort_by_mean_and_by_max() -> None:
    maps = np.array([[[0.0, 0.0, 0.0, 10.0]], [[4.0, 4.0, 4.0, 4.0]], [[1.0, 1.0, 1.0, 1.0]]])
    by_mean = pixels(grid_image(maps, sort="mean", normalize="layer", cols=3, scale=1))
    by_max = pixels(grid_image(maps, sort="max", normalize="layer", cols=3, scale=1))
    # tiles are 1x4 with padding 1: tile i starts at column 5 * i
    assert [by_mean[0, 5 * i + 3] for i in range(3)] == [102, 255, 26]  # means 4, 2.5, 1
    assert [by_max[0, 5 * i + 3] for i in range(3)] == [255, 102, 26]  # maxima 10, 4, 1


# --- colour maps --------------------------------------------------------------------------------------


def test_colormaps_are_256_by_3_uint8() -> None:
    for name, lut in COLORMAPS.items():
        assert lut.shape == (256, 3) and lut.dtype == np.uint8, name
    np.testing.assert_array_equal(COLORMAPS["diverging"], COLORMAPS["coolwarm"])


@pytest.mark.parametrize("name", ["gray", "viridis", "magma", "inferno", "plasma"])
def test_sequential_maps_have_monotone_luminance(name: str) -> None:
    luma = luminance(COLORMAPS[name])
    assert (np.diff(luma) >= -0.5).all()  # rounding each channel to uint8 moves luma by at most 0.5
    assert (np.diff(luma[::8]) > 0).all()


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("viridis", (68, 1, 84), (253, 231, 37)),
        ("magma", (0, 0, 4), (252, 253, 191)),
        ("inferno", (0, 0, 4), (252, 255, 164)),
        ("plasma", (13, 8, 135), (240, 249, 33)),
        ("coolwarm", (59, 76, 192), (180, 4, 38)),
        ("gray", (0, 0, 0), (255, 255, 255)),
    ],
)
def test_colormap_endpoints_match_the_published_ones(name: str, first: tuple, last: tuple) -> None:
    lut = COLORMAPS[name].astype(int)
    assert np.abs(lut[0] - first).max() <= 1 and np.abs(lut[-1] - last).max() <= 1


def test_colormaps_match_matplotlib_within_9_levels() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    for name in ["viridis", "magma", "inferno", "plasma", "turbo", "coolwarm"]:
        theirs = np.round(matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255)
        assert np.abs(COLORMAPS[name] - theirs).max() <= 9, name


def test_apply_cmap_gives_three_channels_and_never_nan() -> None:
    values = np.array([[0.0, 0.5], [1.0, np.nan]])
    out = apply_cmap(values, "viridis")
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (68, 1, 84) and tuple(out[1, 0]) == (253, 231, 37)
    assert tuple(out[1, 1]) == (68, 1, 84)  # NaN -> first colour
    np.testing.assert_array_equal(apply_cmap(np.array([0.5]), "gray"), [[128, 128, 128]])


def test_colour_grid_is_a_palette_image_with_exact_end_colours() -> None:
    maps = np.array([[[0.0, 1.0]], [[0.0, 1.0]]])
    img = grid_image(maps, cmap="viridis", scale=1)
    rgb = pixels(img)
    assert img.mode == "P"
    assert tuple(rgb[0, 0]) == (68, 1, 84) and tuple(rgb[0, 1]) == (253, 231, 37)
    assert tuple(rgb[0, 2]) == (255, 255, 255)  # padding stays white
    red = pixels(grid_image(maps, cmap="gray", pad_value=(255, 0, 0), scale=1))
    assert tuple(red[0, 2]) == (255, 0, 0) and tuple(red[0, 1]) == (255, 255, 255)


# --- labels -------------------------------------------------------------------------------------------


def test_labels_change_pixels_only_in_the_label_strip() -> None:
    maps = np.random.default_rng(1).random((6, 16, 16))
    plain = pixels(grid_image(maps, cols=3, padding=2))
    labelled_img = grid_image(maps, cols=3, padding=2, labels=True)
    labelled = pixels(labelled_img)
    assert labelled.shape[1] == plain.shape[1]
    strip = (labelled.shape[0] - plain.shape[0]) // 2  # two rows of tiles
    assert strip > 0
    cell = 32 + 2
    for r in range(2):
        top = r * (strip + cell)
        band = labelled[top : top + strip]
        assert (band != 255).any()  # text drawn
        np.testing.assert_array_equal(labelled[top + strip : top + strip + 32], plain[r * cell : r * cell + 32])
    named = grid_image(maps, cols=3, padding=2, labels=[f"c{i}" for i in range(6)])
    assert named.size == labelled_img.size
    assert (pixels(named)[:strip] != labelled[:strip]).any()  # other text, same strip


def test_label_list_must_have_one_string_per_channel() -> None:
    with pytest.raises(OptionError, match="one string per channel"):
        grid_image(np.zeros((3, 4, 4)), labels=["a", "b"])


# --- filters ------------------------------------------------------------------------------------------


def test_filter_rgb_mode_gives_colour_patches_of_kh_times_scale() -> None:
    weights = np.zeros((2, 3, 3, 3))
    weights[0, 0] = 1.0  # red only
    weights[1, 1], weights[1, 2] = 0.5, 1.0  # half green, full blue
    img = filter_image(weights)
    assert img.mode == "RGB" and img.size == (2 * 24 + 1, 24)  # 3x3 kernels x8
    arr = pixels(img)
    assert (arr[:, :24] == (255, 0, 0)).all()
    assert (arr[:, 24] == 255).all()  # padding column
    assert (arr[:, 25:] == (0, 128, 255)).all()


def test_filter_modes_and_their_layouts() -> None:
    rng = np.random.default_rng(0)
    channels = filter_image(rng.standard_normal((2, 4, 3, 3)))  # auto -> channels: 2 rows of 4
    assert channels.mode == "L" and channels.size == (4 * 24 + 3, 2 * 24 + 1)
    capped = filter_image(rng.standard_normal((2, 6, 5, 5)), mode="channels", max_in=2)
    assert capped.size == (2 * 25 + 1, 2 * 25 + 1)  # 5x5 kernels x5
    weights = rng.standard_normal((4, 16, 3, 3))
    mean = filter_image(weights)  # auto -> mean
    np.testing.assert_array_equal(pixels(mean), pixels(grid_image(weights.mean(axis=1), scale=8)))


def test_filter_options_are_checked() -> None:
    weights = np.zeros((2, 4, 3, 3))
    with pytest.raises(OptionError, match="3 input channels"):
        filter_image(weights, mode="rgb")
    with pytest.raises(OptionError, match="'auto', 'rgb', 'channels', 'mean'"):
        filter_image(weights, mode="colour")
    with pytest.raises(OptionError, match="cols"):
        filter_image(weights, mode="channels", cols=3)
    with pytest.raises(InputError, match="4 dims"):
        filter_image(np.zeros((2, 3, 3)))


# --- errors and output --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"normalize": "chanel"}, ["'channel'", "'layer'", "'symmetric'", "'none'", "closest: 'channel'"]),
        ({"cmap": "virdis"}, ["'viridis'", "'coolwarm'", "'diverging'", "closest: 'viridis'"]),
        ({"sort": "median"}, ["'mean'", "'max'"]),
        ({"pad_value": "white"}, ["(r, g, b)"]),
        ({"clip": (50, 10)}, ["low_pct"]),
        ({"channels": [0, 9]}, ["[0, 2]", "bad: [9]"]),
        ({"scale": 0}, ["positive int"]),
        ({"padding": -1}, ["int >= 0"]),
        ({"rows": 1, "cols": 2}, ["hold 2 tiles but 3"]),
    ],
)
def test_bad_options_raise_option_error_naming_the_allowed_values(options: dict, names: list[str]) -> None:
    with pytest.raises(OptionError) as info:
        grid_image(np.zeros((3, 4, 4)), **options)
    for name in names:
        assert name in str(info.value)


def test_png_helpers_round_trip(tmp_path) -> None:
    img = grid_image(np.random.default_rng(2).random((4, 8, 8)), cmap="magma")
    again = Image.open(io.BytesIO(to_png_bytes(img)))
    np.testing.assert_array_equal(pixels(again), pixels(img))
    save_png(img, tmp_path / "grid.png")
    np.testing.assert_array_equal(pixels(Image.open(tmp_path / "grid.png")), pixels(img))


def test_grid_figure_writes_one_title_per_tile() -> None:
    pytest.importorskip("matplotlib")
    fig = grid_figure(np.zeros((3, 4, 4)), titles=["a", "b", "c"], cmap="viridis")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c"]
    with pytest.raises(OptionError, match="option='colour'"):
        grid_figure(np.zeros((3, 4, 4)), colour="red")
