"""Preprocessing a user can state: presets (torch, caffe, tf) against Keras' own ``preprocess_input``,
resize modes (squash, crop, pad) on non-square images, the display inverse, overlays on the original
photo, top-k predictions and the CLI flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope as cs
from convscope.errors import InputError, OptionError
from convscope.inputs import InputSpec, prepare
from convscope.predictions import top_k
from convscope.preprocessing import Placement
from convscope.render.overlay import overlay_on_photo

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def rgb_net(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, classes))  # fmt: skip


# -- presets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["torch", "caffe", "tf"])
def test_presets_equal_keras_preprocess_input(mode: str) -> None:
    from keras.applications import imagenet_utils

    expected = imagenet_utils.preprocess_input(PHOTO.astype(np.float32)[None], mode=mode)
    got = prepare(PHOTO, InputSpec("NHWC", channels=3, size=(5, 7), preprocess=mode))
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), rtol=0, atol=2e-5)


def test_caffe_on_a_known_pixel_is_bgr_minus_the_bgr_mean() -> None:
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)  # R, G, B
    x = prepare(pixel, InputSpec("NCHW", channels=3, size=(1, 1), preprocess="caffe"))
    expected = [30 - 103.939, 20 - 116.779, 10 - 123.68]  # B, G, R
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), expected, rtol=0, atol=1e-5)
    tf = prepare(np.array([[[0, 51, 255]]], np.uint8), InputSpec("NHWC", size=(1, 1), preprocess="tf"))
    np.testing.assert_allclose(tf[0, 0, 0].numpy(), [-1.0, 51 / 127.5 - 1, 1.0], atol=1e-6)
    torch_ = prepare(pixel, InputSpec("NCHW", size=(1, 1), preprocess="torch"))
    hand = [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(torch_[0, :, 0, 0].numpy(), hand, atol=1e-6)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", [None, "torch", "caffe", "tf"])
def test_to_display_inverts_every_preset(layout: str, mode: str | None) -> None:
    spec = InputSpec(layout, channels=3, size=(5, 7), preprocess=mode)
    np.testing.assert_array_equal(spec.to_display(prepare(PHOTO, spec)), PHOTO[None])


def test_preset_conflicts_and_unknown_names_are_clear() -> None:
    with pytest.raises(
        OptionError, match=r"preprocess='caffe' sets scale, mean and std itself.*your own mean"
    ):
        InputSpec("NCHW", preprocess="caffe", mean=(0.5, 0.5, 0.5))
    with pytest.raises(OptionError, match=r"own std"):
        cs.Scope(rgb_net(), input_shape=(3, 5, 7), preprocess="torch", std=(0.2, 0.2, 0.2))
    assert InputSpec("NCHW", preprocess="torch", mean=(0.485, 0.456, 0.406)).std == (0.229, 0.224, 0.225)
    with pytest.raises(OptionError, match=r"preprocess='caffee' is not allowed.*closest: 'caffe'"):
        cs.Scope(rgb_net(), preprocess="caffee")
    with pytest.raises(OptionError, match=r"resize='croop' is not allowed.*closest: 'crop'"):
        cs.Scope(rgb_net(), resize="croop")
    with pytest.raises(OptionError, match="made for 3-channel"):
        cs.Scope(nn.Conv2d(1, 2, 3), input_shape=(1, 8, 8), preprocess="caffe")
    gray = cs.Scope(nn.Conv2d(1, 2, 3), input_shape=(1, 8, 8), preprocess="tf")  # tf fits any channel count
    assert float(gray.prepare(np.zeros((8, 8), np.uint8)).min()) == -1.0


# -- resize modes -------------------------------------------------------------------------------------
def test_placement_geometry_on_a_non_square_photo() -> None:
    crop = Placement.of((100, 200), (50, 50), "crop")  # short side 100 -> 50: 50x100, centre 50 columns
    assert (crop.scaled, crop.offset) == ((50, 100), (0, -25))
    assert crop.input_box() == (0, 0, 50, 50) and crop.photo_box() == (50, 0, 150, 100)
    pad = Placement.of((100, 200), (50, 50), "pad")  # long side 200 -> 50: 25x50, (50 - 25) // 2 = 12 on top
    assert (pad.scaled, pad.offset) == ((25, 50), (12, 0))
    assert pad.input_box() == (0, 12, 50, 37) and pad.photo_box() == (0, 0, 200, 100)
    squash = Placement.of((100, 200), (50, 50), "squash")
    assert squash.input_box() == (0, 0, 50, 50) and squash.photo_box() == (0, 0, 200, 100)


def test_crop_and_pad_keep_the_pixels_exactly_when_no_resampling_is_needed() -> None:
    img = np.repeat(np.arange(0, 240, 30, dtype=np.uint8)[None, :, None], 4, axis=0)  # 4x8, column values
    crop = prepare(img, InputSpec("NHWC", channels=1, size=(4, 4), scale=1.0, resize="crop"))
    np.testing.assert_array_equal(crop[0, :, :, 0].numpy(), np.tile([60, 90, 120, 150], (4, 1)))
    pad = prepare(img, InputSpec("NCHW", channels=1, size=(8, 8), scale=1.0, resize="pad"))[0, 0].numpy()
    np.testing.assert_array_equal(pad[2:6], img[:, :, 0])
    assert not pad[:2].any() and not pad[6:].any()  # black bars above and below
    squash = prepare(img, InputSpec("NHWC", channels=1, size=(4, 4), scale=1.0))
    assert (
        squash.shape == (1, 4, 4, 1) and float(squash[0, 0, 0, 0]) < 30
    )  # squeezed: the first column blends


def test_scope_resize_reaches_prepare() -> None:
    photo = np.zeros((10, 20, 3), np.uint8)
    photo[:, :5] = 255  # a white stripe on the left quarter: cropped away, kept by squash and pad
    for mode, white_left in (("crop", False), ("squash", True), ("pad", True)):
        x = cs.Scope(rgb_net(), input_shape=(3, 10, 10), resize=mode).prepare(photo)
        assert x.shape == (1, 3, 10, 10)
        assert (float(x[0, :, 5, 0].min()) > 0.5) is white_left, mode


# -- overlays on the original photo ---------------------------------------------------------------------
def test_overlay_on_photo_undoes_crop_and_pad() -> None:
    photo = np.full((4, 8), 100, np.uint8)
    ones = np.ones((4, 4), np.float32)
    crop = np.asarray(overlay_on_photo(photo, ones, resize="crop", alpha=1.0, cmap="gray"))[:, :, 0]
    assert crop.shape == (4, 8)
    assert (crop[:, 2:6] == 255).all() and (crop[:, :2] == 100).all() and (crop[:, 6:] == 100).all()
    bars = np.zeros((8, 8), np.float32)
    bars[2:6] = 1.0  # the photo's rows of a padded 8x8 input: the zero bars must not reach the photo
    pad = np.asarray(overlay_on_photo(photo, bars, resize="pad", alpha=1.0, cmap="gray"))
    assert pad.shape == (4, 8, 3) and (pad == 255).all()
    squash = np.asarray(overlay_on_photo(photo, ones, resize="squash", alpha=0.5, cmap="gray"))
    assert (squash == 178).all()  # round(0.5 * 100 + 0.5 * 255)


def test_attribution_overlay_on_the_original_photo(tmp_path: object) -> None:
    scope = cs.Scope(rgb_net(), input_shape=(3, 8, 8), preprocess="caffe", resize="crop")
    big = RNG.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    att = scope.attribute(big, method="gradcam", target=1, layer="1")
    assert att.resize == "crop" and att.images.shape == (1, 8, 8, 3)
    expected = np.asarray(Image.fromarray(big).resize((13, 8), Image.Resampling.BILINEAR).crop((2, 0, 10, 8)))
    np.testing.assert_array_equal(att.images[0], expected)  # the display picture is the crop, BGR undone
    on = att.overlay(on=Image.fromarray(big), alpha=1.0, cmap="gray")
    assert on.size == (50, 30)
    out = np.asarray(on)
    np.testing.assert_array_equal(out[:, :6], big[:, :6])  # outside the centre crop: the photo untouched
    assert att.grid(on=[big]).size == (50, 30)
    with pytest.raises(OptionError, match="one photo per map"):
        att.grid(on=[big, big])


# -- predictions ----------------------------------------------------------------------------------------
def test_predict_gives_softmax_of_logits_with_names(tmp_path: object) -> None:
    model = rgb_net(classes=6)
    scope = cs.Scope(nn.Sequential(model, nn.Softmax(dim=1)), input_shape=(3, 5, 7))
    x = scope.prepare([PHOTO, PHOTO[::-1].copy()])
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    names = [f"class_{i}" for i in range(6)]
    preds = scope.predict([PHOTO, PHOTO[::-1].copy()], k=5, labels=names)
    top = probs.topk(5, dim=1)
    np.testing.assert_array_equal(preds.indices, top.indices.numpy())
    np.testing.assert_allclose(preds.probabilities, top.values.numpy(), atol=1e-6)
    assert preds.names is not None and preds.names[0][0] == f"class_{int(top.indices[0, 0])}"
    text = str(preds)
    assert (
        "input 1:" in text
        and f"class_{int(top.indices[1, 0])}" in text
        and "rank   class     prob  name" in text
    )
    assert scope.predict(PHOTO, k=50).indices.shape == (1, 6)  # k capped at the class count
    with pytest.raises(OptionError, match="has 3 names but the model outputs 6 classes"):
        scope.predict(PHOTO, labels=["a", "b", "c"])
    with pytest.raises(OptionError, match=r"\(N, classes\)"):
        top_k(torch.zeros(1, 2, 3, 3))
    with pytest.raises(InputError, match="does not exist"):
        scope.predict(PHOTO, labels="no-such-labels.txt")


# -- CLI -------------------------------------------------------------------------------------------------
@pytest.fixture()
def cli_model(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> str:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "preprocess_cli_model.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def make():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(4, 6))\n"
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(root)
    Image.fromarray(RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "photo.png")
    (root / "labels.txt").write_text("".join(f"name{i}\n" for i in range(6)))
    (root / "short.txt").write_text("a\nb\n")
    return "preprocess_cli_model:make"


def test_cli_attribute_on_original_prints_named_predictions(
    cli_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from convscope.cli import main

    code = main(["attribute", cli_model, "photo.png", "--input-shape", "3,8,8", "--preprocess", "caffe",
                 "--resize", "pad", "--layer", "1", "--on-original", "--labels", "labels.txt", "-o", "heat.png"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and Image.open("heat.png").size == (30, 20)
    assert "top-5 predictions for photo.png:" in out and "name" in out.splitlines()[2]
    assert main(["maps", cli_model, "photo.png", "--layer", "0", "--input-shape", "3,8,8",
                 "--mean", "0.5", "--std", "0.25,0.25,0.25", "--labels", "labels.txt", "-o", "m.png"]) == 0  # fmt: skip
    assert "top-5 predictions for photo.png:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--preprocess", "cafe"],
            "--preprocess 'cafe' is not allowed; choose one of: 'torch', 'caffe', 'tf' (closest: 'caffe')",
        ),
        (
            ["--resize", "padd"],
            "--resize 'padd' is not allowed; choose one of: 'squash', 'crop', 'pad' (closest: 'pad')",
        ),
        (
            ["--preprocess", "torch", "--mean", "0.5"],
            "--preprocess torch sets the mean and std itself; drop --mean",
        ),
        (["--mean", "a,b"], "--mean 'a,b' is not a list of numbers"),
        (["--labels", "short.txt"], "labels file 'short.txt' has 2 names but the model outputs 6 classes"),
    ],
)
def test_cli_bad_preprocessing_is_one_line(cli_model: str, capsys: pytest.CaptureFixture[str], flags: list[str],
                                           message: str) -> None:  # fmt: skip
    from convscope.cli import main

    code = main(["maps", cli_model, "photo.png", "--layer", "0", "--input-shape", "3,8,8", *flags])
    lines = [
        line for line in capsys.readouterr().err.splitlines() if not line.startswith("convscope: warning:")
    ]
    assert (
        code == 2 and len(lines) == 1 and message in lines[0] and lines[0].startswith("convscope: error:")
    ), lines


@pytest.mark.filterwarnings("ignore")
def test_maximize_inputs_follow_the_preset_and_display_round_trips() -> None:
    scope = cs.Scope(rgb_net(), input_shape=(3, 8, 8), preprocess="caffe")
    vis = scope.maximize(cs.objectives.channel("0", 1), steps=2, recipe="plain", progress=False)
    spec = scope.input_spec()
    np.testing.assert_array_equal(spec.to_display(vis.inputs), vis.images)  # BGR and mean undone exactly
    pixels = torch.from_numpy(vis.images.astype(np.float32)).permute(0, 3, 1, 2)
    np.testing.assert_allclose(vis.inputs.detach().numpy(), spec.normalise(pixels).numpy(), atol=0.6)
