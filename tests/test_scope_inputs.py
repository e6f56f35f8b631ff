"""Inputs through Scope: image paths, PIL images and uint8 arrays become model input; float input is exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope as cs

RGB16 = np.random.default_rng(21).integers(0, 256, size=(16, 12, 3), dtype=np.uint8)  # H=16, W=12
GRAY8 = np.random.default_rng(22).integers(0, 256, size=(8, 8), dtype=np.uint8)


def _resized(img: np.ndarray, size: tuple[int, int] = (8, 8), mode: str | None = None) -> np.ndarray:
    """What the model should see, computed with Pillow directly: HWC float32 in [0, 1]."""
    pil = Image.fromarray(img)
    if mode is not None:
        pil = pil.convert(mode)
    a = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32) / 255
    return a[:, :, None] if a.ndim == 2 else a


@pytest.fixture
def rgb_torch() -> tuple[cs.Scope, nn.Module]:
    """Identity as layer '0' shows exactly what the model received; input (3, 8, 8)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.Conv2d(3, 2, 1)).eval()
    return cs.Scope(model, input_shape=(3, 8, 8)), model


def _seen(scope: cs.Scope, inputs: Any, layer: str) -> np.ndarray:
    return scope.activations(inputs, layers=layer)[layer].numpy()


def test_png_path_pil_and_uint8_array_give_the_same_resized_input(
    rgb_torch: tuple[cs.Scope, nn.Module], tmp_path: Path
) -> None:
    scope, _ = rgb_torch
    path = tmp_path / "img.png"
    Image.fromarray(RGB16).save(path)
    want = _resized(RGB16).transpose(2, 0, 1)[None]  # NCHW
    from_path = _seen(scope, path, "0")
    assert from_path.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(from_path, want, rtol=0, atol=1e-6)
    assert np.array_equal(_seen(scope, str(path), "0"), from_path)
    assert np.array_equal(_seen(scope, Image.fromarray(RGB16), "0"), from_path)
    assert np.array_equal(_seen(scope, RGB16, "0"), from_path)
    assert np.array_equal(_seen(scope, torch.from_numpy(RGB16.copy()), "0"), from_path)  # uint8 tensor
    batch = _seen(scope, [path, RGB16], "0")
    assert batch.shape == (2, 3, 8, 8) and np.array_equal(batch[1:], from_path)


def test_gray_image_to_rgb_model(rgb_torch: tuple[cs.Scope, nn.Module]) -> None:
    scope, _ = rgb_torch
    seen = _seen(scope, GRAY8, "0")[0]
    want = GRAY8.astype(np.float32) / 255
    for c in range(3):
        np.testing.assert_allclose(seen[c], want, rtol=0, atol=1e-6)


def test_rgb_image_to_gray_keras_model(keras: Any, tmp_path: Path) -> None:
    inp = keras.Input((8, 8, 1), name="gray")
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, name="c")(inp), name="gray_model")
    scope = cs.Scope(model)
    path = tmp_path / "rgb.png"
    Image.fromarray(RGB16).save(path)
    seen = _seen(scope, path, "gray")
    assert seen.shape == (1, 8, 8, 1)  # NHWC, resized to the model's declared (8, 8)
    np.testing.assert_allclose(seen[0], _resized(RGB16, mode="L"), rtol=0, atol=1e-6)


def test_keras_uint8_image_resized_to_declared_input(keras_nested: Any) -> None:
    scope = cs.Scope(keras_nested)
    seen = _seen(scope, Image.fromarray(RGB16), "img")
    assert seen.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(seen[0], _resized(RGB16), rtol=0, atol=1e-6)


def test_float_tensor_used_exactly_as_given(rgb_torch: tuple[cs.Scope, nn.Module]) -> None:
    scope, model = rgb_torch
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 300  # far outside [0, 1]
    before = x.clone()
    acts = scope.activations(x, layers="0")
    assert torch.equal(acts["0"].tensor, x)
    with torch.no_grad():
        assert torch.equal(acts.output, model(x))
    assert torch.equal(x, before)  # the caller's tensor is untouched
    one = scope.activations(x[0], layers="0")  # one 3-D sample gets a batch axis
    assert torch.equal(one["0"].tensor, x[:1])


def test_float_array_used_exactly_as_given_keras(keras_nested: Any) -> None:
    x = (np.random.default_rng(2).normal(size=(1, 8, 8, 3)) * 100).astype(np.float32)
    assert np.array_equal(_seen(cs.Scope(keras_nested), x, "img"), x)


def test_wrong_shape_raises_input_error_naming_expected(
    rgb_torch: tuple[cs.Scope, nn.Module], keras_nested: Any
) -> None:
    scope, _ = rgb_torch
    with pytest.raises(cs.InputError, match=r"\(N, 3, 8, 8\)"):
        scope.activations(torch.zeros(1, 3, 9, 9), layers="0")  # float input is never resized
    with pytest.raises(cs.InputError, match=r"\(N, 8, 8, 3\).*transpose"):
        cs.Scope(keras_nested).activations(np.zeros((1, 3, 8, 8), np.float32), layers="img")
    with pytest.raises(cs.InputError, match=r"\(N, 3, 8, 8\)"):
        scope.activations(torch.zeros(1, 1, 8, 8), layers="0")
    with pytest.raises(cs.InputError, match="does not exist"):
        scope.activations("no/such/file.png", layers="0")
    assert issubclass(cs.InputError, cs.ConvscopeError)


def test_fully_convolutional_model_takes_any_size_and_failures_do_not_stick() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    scope = cs.Scope(net)
    for size in (16, 9, 32):  # each size is used as given, whatever came before
        x = torch.rand(1, 3, size, size)
        assert torch.equal(scope.activations(x, layers="0")["0"].tensor, net[0](x))
    assert "(None, 4, 30, 30)" in str(scope.summary())  # the last input serves as summary example
    strict = cs.Scope(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)))
    with pytest.raises(cs.ModelError):
        strict.activations(torch.rand(1, 3, 10, 10))
    assert strict.activations(torch.rand(1, 3, 8, 8), layers="0")["0"].shape == (1, 4, 6, 6)


def test_input_shape_in_the_wrong_layout_is_refused_with_a_hint(keras: Any) -> None:
    with pytest.raises(cs.OptionError, match=r"takes \(3, \?, \?\).*\(C, H, W\)"):
        cs.Scope(nn.Sequential(nn.Conv2d(3, 4, 3)), input_shape=(224, 224, 3))
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(cs.OptionError, match=r"takes \(28, 28, 1\).*\(H, W, C\)"):
        cs.Scope(model, input_shape=(1, 28, 28))
    assert cs.Scope(model, input_shape=(28, 28, 1)).summary().total_params == model.count_params()
