"""Tests for convscope.inputs: images, arrays and tensors -> one model-input batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.errors import InputError, OptionError
from convscope.inputs import InputSpec, Layout, load_image, prepare

NCHW3 = InputSpec(Layout.NCHW, channels=3, size=(2, 2))


def _rgb(h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- spec -------------------------------------------------------------------------------------------


def test_expected_shape_per_layout_with_unknowns() -> None:
    assert InputSpec(Layout.NHWC, channels=1, size=(28, 28)).expected_shape() == "(N, 28, 28, 1)"
    assert InputSpec(Layout.NCHW, channels=3, size=(224, 224)).expected_shape() == "(N, 3, 224, 224)"
    assert InputSpec(Layout("NCHW"), channels=None, size=None).expected_shape() == "(N, ?, ?, ?)"
    assert InputSpec(Layout.NHWC, channels=3, size=None).expected_shape() == "(N, ?, ?, 3)"


def test_spec_coerces_layout_string_and_rejects_bad_options() -> None:
    assert InputSpec("nhwc", channels=1, size=None).layout is Layout.NHWC  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="NCHW"):
        InputSpec("NCWH", channels=1, size=None)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="one per channel"):
        InputSpec(Layout.NCHW, channels=3, size=None, mean=(0.5, 0.5))
    with pytest.raises(OptionError, match="non-zero"):
        InputSpec(Layout.NCHW, channels=1, size=None, std=(0.0,))
    with pytest.raises(OptionError, match="floating"):
        InputSpec(Layout.NCHW, channels=1, size=None, dtype=torch.int64)


# --- images -----------------------------------------------------------------------------------------


def test_uint8_hwc_to_nchw_hand_checked_values() -> None:
    x = np.array([[[255, 0, 51], [102, 255, 0]], [[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)  # H=2, W=2
    out = prepare(x, NCHW3)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    expected_r = torch.tensor([[1.0, 0.4], [0.0, 1.0]])
    expected_b = torch.tensor([[0.2, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(out[0, 0], expected_r)
    torch.testing.assert_close(out[0, 2], expected_b)
    assert out[0, 0, 0, 0].item() == 1.0 and out[0, 1, 0, 0].item() == 0.0


def test_mean_std_applied_after_scaling() -> None:
    x = np.array([[[255, 0, 51]]], dtype=np.uint8)  # one pixel
    spec = InputSpec(Layout.NCHW, channels=3, size=(1, 1), mean=(0.5, 0.25, 0.2), std=(0.25, 0.5, 0.1))
    out = prepare(x, spec)
    # (1.0 - 0.5) / 0.25 = 2, (0 - 0.25) / 0.5 = -0.5, (0.2 - 0.2) / 0.1 = 0
    torch.testing.assert_close(out.flatten(), torch.tensor([2.0, -0.5, 0.0]))


def test_nhwc_spec_keeps_channels_last() -> None:
    x = _rgb(2, 3)
    out = prepare(x, InputSpec(Layout.NHWC, channels=3, size=(2, 3), scale=1.0))
    assert out.shape == (1, 2, 3, 3)
    torch.testing.assert_close(out[0], torch.from_numpy(x).float())


def test_gray_to_rgb_replicates() -> None:
    gray = np.array([[0, 10], [200, 255]], dtype=np.uint8)
    out = prepare(gray, NCHW3)
    assert out.shape == (1, 3, 2, 2)
    for c in range(3):
        torch.testing.assert_close(out[0, c], torch.from_numpy(gray).float() / 255)


def test_rgb_to_gray_matches_pil_luma() -> None:
    rgb = _rgb(4, 6)
    out = prepare(rgb, InputSpec(Layout.NCHW, channels=1, size=(4, 6)))
    pil_l = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.float32) / 255
    assert out.shape == (1, 1, 4, 6)
    torch.testing.assert_close(out[0, 0], torch.from_numpy(pil_l))
    # independent check: ITU-R 601 luma, within PIL's rounding
    luma = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255
    assert np.abs(out[0, 0].numpy() - luma).max() <= 1 / 255


def test_rgba_drops_alpha() -> None:
    rgba = np.dstack([_rgb(2, 2), np.zeros((2, 2), np.uint8)])
    out = prepare(rgba, InputSpec(Layout.NHWC, channels=3, size=(2, 2), scale=1.0))
    torch.testing.assert_close(out[0], torch.from_numpy(rgba[:, :, :3]).float())


def test_resize_matches_pil_bilinear() -> None:
    rgb = _rgb(7, 5)
    out = prepare(rgb, InputSpec(Layout.NCHW, channels=3, size=(4, 6)))
    ref = np.asarray(Image.fromarray(rgb).resize((6, 4), Image.Resampling.BILINEAR)).astype(np.float32) / 255
    assert out.shape == (1, 3, 4, 6)
    torch.testing.assert_close(out[0].permute(1, 2, 0), torch.from_numpy(ref))


def test_chw_and_nchw_uint8_read_like_hwc() -> None:
    batch = np.stack([_rgb(3, 5, seed=s) for s in range(2)])  # NHWC; W=5 is no channel count
    spec = InputSpec(Layout.NCHW, channels=3, size=(3, 5))
    ref = prepare(batch, spec)
    assert ref.shape == (2, 3, 3, 5)
    torch.testing.assert_close(prepare(batch.transpose(0, 3, 1, 2), spec), ref)
    torch.testing.assert_close(prepare(batch[1].transpose(2, 0, 1), spec), ref[1:])
    torch.testing.assert_close(prepare(torch.from_numpy(batch), spec), ref)


def test_png_and_jpeg_paths_load(tmp_path: Path) -> None:
    rgb = _rgb(8, 8)
    ramp = np.broadcast_to(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 16, 3)).copy()
    png, jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(rgb).save(png)
    Image.fromarray(ramp).save(jpg, quality=95)
    spec = InputSpec(Layout.NHWC, channels=3, size=None, scale=1.0)
    torch.testing.assert_close(prepare(png, spec)[0], torch.from_numpy(rgb).float())  # PNG is exact
    torch.testing.assert_close(prepare(str(png), spec)[0], torch.from_numpy(rgb).float())
    from_jpg = prepare(jpg, spec)[0]
    with Image.open(jpg) as decoded:
        torch.testing.assert_close(from_jpg, torch.from_numpy(np.array(decoded.convert("RGB"))).float())
    assert (from_jpg - torch.from_numpy(ramp).float()).abs().max() <= 8  # lossy, but the same picture
    assert load_image(png).size == (8, 8) and load_image(png).mode == "RGB"


def test_missing_path_and_non_image_file_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match="nope.png"):
        prepare(missing, NCHW3)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.txt"):
        load_image(text)


def test_mixed_list_batches_in_order(tmp_path: Path) -> None:
    imgs = [_rgb(2, 2, seed=s) for s in range(4)]
    path = tmp_path / "p.png"
    Image.fromarray(imgs[0]).save(path)
    gray = np.array(Image.fromarray(imgs[3]).convert("L"))
    mixed = [path, Image.fromarray(imgs[1]), imgs[2].transpose(2, 0, 1), gray]
    out = prepare(mixed, NCHW3)
    assert out.shape == (4, 3, 2, 2)
    for i in range(3):
        torch.testing.assert_close(out[i], torch.from_numpy(imgs[i]).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(out[3], torch.from_numpy(gray).float().expand(3, 2, 2) / 255)


def test_list_mixing_images_and_float_tensor() -> None:
    sample = torch.rand(3, 2, 2)
    out = prepare((_rgb(2, 2), sample), NCHW3)
    assert out.shape == (2, 3, 2, 2)
    assert torch.equal(out[1], sample)


def test_images_of_different_sizes_need_a_size() -> None:
    spec = InputSpec(Layout.NCHW, channels=3, size=None)
    with pytest.raises(InputError, match="different sizes"):
        prepare([_rgb(2, 2), _rgb(3, 3)], spec)
    assert prepare([_rgb(2, 2), _rgb(3, 3)], InputSpec(Layout.NCHW, channels=3, size=(3, 3))).shape == (
        2,
        3,
        3,
        3,
    )


def test_unknown_channels_promote_gray_to_rgb_when_mixed() -> None:
    spec = InputSpec(Layout.NCHW, channels=None, size=None)
    assert prepare(np.zeros((2, 2), np.uint8), spec).shape == (1, 1, 2, 2)
    assert prepare([np.zeros((2, 2), np.uint8), _rgb(2, 2)], spec).shape == (2, 3, 2, 2)


# --- float model input ------------------------------------------------------------------------------


def test_float_tensor_passes_through_bit_identically() -> None:
    x = torch.randn(2, 3, 5, 5) * 1e3
    spec = InputSpec(Layout.NCHW, channels=3, size=(5, 5), mean=(0.5,), std=(2.0,))
    out = prepare(x, spec)
    assert out is not x and out.data_ptr() != x.data_ptr()
    assert torch.equal(out, x) and out.view(torch.int32).equal(x.view(torch.int32))
    out.add_(1)
    assert not torch.equal(out, x)  # caller's tensor untouched


def test_float_numpy_passes_through_and_is_cast() -> None:
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 1)).astype(np.float32)
    out = prepare(x, InputSpec(Layout.NHWC, channels=1, size=(4, 4)))
    assert np.array_equal(out.numpy(), x) and not np.shares_memory(out.numpy(), x)
    x64 = x.astype(np.float64)
    torch.testing.assert_close(
        prepare(x64, InputSpec(Layout.NHWC, channels=1, size=None)), torch.from_numpy(x)
    )
    out64 = prepare(x, InputSpec(Layout.NHWC, channels=1, size=None, dtype=torch.float64))
    assert out64.dtype == torch.float64


def test_float_sample_and_2d_get_batch_axes() -> None:
    assert prepare(torch.rand(3, 2, 2), NCHW3).shape == (1, 3, 2, 2)
    hw = np.array([[0.5, 2.0], [-1.0, 300.0]])
    out = prepare(hw, InputSpec(Layout.NHWC, channels=1, size=(2, 2)))
    assert out.shape == (1, 2, 2, 1)
    assert out[0, :, :, 0].tolist() == [[0.5, 2.0], [-1.0, 300.0]]  # not scaled
    assert prepare(hw, InputSpec(Layout.NCHW, channels=1, size=None)).shape == (1, 1, 2, 2)
    with pytest.raises(InputError, match="1-channel"):
        prepare(hw, NCHW3)


def test_requires_grad_input_is_detached_copy() -> None:
    x = torch.rand(1, 3, 2, 2, requires_grad=True)
    out = prepare(x, NCHW3)
    assert not out.requires_grad and torch.equal(out, x.detach())


def test_nhwc_float_for_nchw_model_gives_permute_hint() -> None:
    spec = InputSpec(Layout.NCHW, channels=1, size=(28, 28))
    with pytest.raises(InputError) as info:
        prepare(torch.zeros(1, 28, 28, 1), spec)
    msg = str(info.value)
    assert "(1, 28, 28, 1)" in msg and "(N, 1, 28, 28)" in msg and "x.permute(0, 3, 1, 2)" in msg
    with pytest.raises(InputError, match=r"x\.transpose\(0, 2, 3, 1\)"):
        prepare(np.zeros((1, 1, 28, 28), np.float32), InputSpec(Layout.NHWC, channels=1, size=(28, 28)))


def test_wrong_float_shape_without_layout_hint() -> None:
    with pytest.raises(InputError) as info:
        prepare(torch.zeros(1, 3, 10, 10), InputSpec(Layout.NCHW, channels=3, size=(28, 28)))
    msg = str(info.value)
    assert "(1, 3, 10, 10)" in msg and "(N, 3, 28, 28)" in msg and "permute" not in msg


# --- never mutate, reject the rest -------------------------------------------------------------------


def test_callers_arrays_unchanged() -> None:
    rgb, gray, flt = _rgb(3, 3), np.full((3, 3), 7, np.uint8), np.ones((1, 3, 3, 3), np.float32)
    copies = [rgb.copy(), gray.copy(), flt.copy()]
    spec = InputSpec(Layout.NCHW, channels=3, size=(3, 3), mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    out = prepare([rgb, gray, flt], spec)
    out.mul_(0)
    for original, copy in zip([rgb, gray, flt], copies, strict=True):
        assert np.array_equal(original, copy)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("definitely-not-a-file.png", "definitely-not-a-file.png"),
        ([], "empty list"),
        (np.zeros((2, 2), np.complex64), "complex64"),
        (np.zeros((2, 2), np.int64), "int64"),
        (np.zeros((1, 1, 2, 2, 3), np.uint8), "shape"),
        (torch.zeros(1, 1, 3, 2, 2), "5-D"),
        (torch.zeros(2, 2, dtype=torch.bool), "torch.bool"),
        ([[np.zeros((2, 2), np.uint8)]], "nested"),
        (3.5, "float"),
        (np.zeros((0, 3, 2, 2), np.float32), "empty"),
        (np.zeros((2, 2, 7), np.uint8), r"\(2, 2, 7\)"),
    ],
)
def test_bad_inputs_raise_input_error(bad: object, words: str) -> None:
    with pytest.raises(InputError, match=words) as info:
        prepare(bad, NCHW3)  # type: ignore[arg-type]
    assert "allowed" in str(info.value) or "pass" in str(info.value)  # says what would work


def test_device_argument_places_result() -> None:
    out = prepare(_rgb(2, 2), NCHW3, device="cpu")
    assert out.device == torch.device("cpu")


def test_uint8_stack_of_gray_images_is_a_batch_for_one_channel_models() -> None:
    rng = np.random.default_rng(1)
    for n in (3, 5):  # 3 must not be mistaken for one RGB image in CHW order
        stack = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        x = prepare(stack, InputSpec("NCHW", channels=1, size=(8, 8)))
        assert x.shape == (n, 1, 8, 8)
        assert torch.allclose(x[:, 0], torch.from_numpy(stack).float() / 255, atol=1e-7, rtol=0)
