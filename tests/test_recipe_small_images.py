"""The default recipe is scaled to the image size: it works on 28×28 gray digits and is unchanged from 128 px on.

* On the demo's trained digit CNN (PyTorch and Keras), 16 ``channel`` objectives on the second conv layer
  with the *default* recipe at its default steps: image i has the highest mean activation of channel i
  for >= 15 of 16 channels (before the scaling: 13-14 in PyTorch, 12-13 in Keras; ``plain``: 16).
* At 128 and 224 px the recipe is Lucid's as before (pad ``side / 16``, jitter ``2p``, zoom 0.9-1.1,
  ±10°, Fourier image, colour decorrelation, sigmoid), so the VGG bench figure cannot drop.
* For one-channel images colour decorrelation is a no-op; the recipe descriptions speak user terms.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import convscope as cs  # noqa: E402
from convscope.optim import RECIPES  # noqa: E402
from convscope.optim import objectives as O  # noqa: E402
from convscope.optim import transforms as T  # noqa: E402
from convscope.optim.params import ParamKind, Squash, colour_matrix, make_param  # noqa: E402
from convscope.optim.recipes import resolve_settings  # noqa: E402

# The same tensor in both nets: PyTorch's Conv2d output (its ReLU is a separate module) and the input of the
# ReLU that Keras fuses into Conv2D. On Keras' post-ReLU output dead positions tie at zero.
SECOND_CONV = {"torch": "conv_1", "keras": "conv_1:pre"}


def own_channel_wins(scope: Any, layer: str, inputs: Any, n: int = 16, tie: float = 1e-3) -> int:
    """Channels i whose highest mean activation over the n images is image i's, recomputed independently.

    Image i also wins when it comes within ``tie`` (0.1 %) of the best image: channels whose optimum is a
    saturated (all-bright) image are reached by several images, which then differ only in rounding.
    """
    means = scope.activations(inputs, layers=layer)[layer].channels_first().mean(axis=(2, 3))[:, :n]
    best = means.max(axis=0)
    own = means[np.arange(n), np.arange(n)]
    return int((own >= best - tie * np.abs(best)).sum())


@pytest.mark.parametrize("fw", ["torch", "keras"])
def test_default_recipe_gives_each_image_its_own_channel_on_a_trained_digit_cnn(digit_twins: Any, fw: str) -> None:
    pytest.importorskip("keras")
    keras_model, torch_model, _, accuracies = digit_twins
    assert min(accuracies.values()) > 0.9
    scope = cs.Scope(torch_model, input_shape=(1, 28, 28)) if fw == "torch" else cs.Scope(keras_model)
    layer = SECOND_CONV[fw]
    vis = scope.maximize(O.channel(layer, range(16)), seed=0, progress=False)  # recipe="default", its steps
    assert vis.meta["recipe"] == "default" and vis.meta["steps"] == RECIPES["default"].steps
    assert vis.meta["param"] == "pixel"  # a 28-px image: the scaled recipe's pixel image
    wins = own_channel_wins(scope, layer, vis.inputs)
    assert wins >= 15, f"{wins}/16 channels are maximised by their own image"
    assert float(vis.images.std()) > 20, "the images are flat"
    assert (vis.history[-8:].mean(0) > vis.history[:8].mean(0)).all(), "an objective did not rise"


def _lucid(side: int) -> T.Compose:
    p = max(1, round(side / 16))
    return T.compose(T.pad(p), T.jitter(2 * p), T.random_scale(0.9, 1.1), T.random_rotate(10.0))


@pytest.mark.parametrize("side", [128, 160, 224, 299, 512])
def test_recipe_from_128_px_on_is_unchanged(side: int) -> None:
    assert T.standard_transforms((side, side)) == _lucid(side)
    assert T.standard_transforms((side, side + 40)) == _lucid(side)
    s = resolve_settings(recipe="default", declared_size=(side, side))
    assert (s.param, s.decorrelate, s.squash, s.lr, s.steps) == (ParamKind.FFT, True, Squash.SIGMOID, 0.05, 256)
    assert s.transforms == _lucid(side)


def test_224_px_transforms_are_lucids() -> None:
    expected = T.compose(T.pad(14), T.jitter(28), T.random_scale(0.9, 1.1), T.random_rotate(10.0))
    assert T.standard_transforms((224, 224)) == expected


def test_small_images_get_milder_transforms_and_a_pixel_image() -> None:
    s = resolve_settings(recipe="default", declared_size=(28, 28))
    assert (s.param, s.decorrelate, s.squash) == (ParamKind.PIXEL, False, Squash.CLAMP)
    assert s.transforms == T.compose(T.pad(1), T.jitter(2), T.random_scale(0.98, 1.02), T.random_rotate(2.0))
    assert resolve_settings(recipe="default", declared_size=(63, 80)).param is ParamKind.PIXEL
    assert resolve_settings(recipe="default", declared_size=(64, 64)).param is ParamKind.FFT
    strengths = [T.transform_strength((side, side)) for side in range(8, 200)]
    assert strengths[0] == 0.0 and strengths[-1] == 1.0 and strengths == sorted(strengths)
    rotations = [T.standard_transforms((side, side)).transforms[3].high for side in range(8, 200)]  # type: ignore[attr-defined]
    assert rotations == sorted(rotations) and rotations[0] == 2.0 and rotations[-1] == 10.0
    explicit = resolve_settings(recipe="default", declared_size=(28, 28), param="fft", decorrelate=True)
    assert (explicit.param, explicit.squash, explicit.decorrelate) == ("fft", Squash.SIGMOID, True)


def test_colour_decorrelation_is_a_no_op_for_one_channel() -> None:
    assert colour_matrix(True, 1) is None
    for kind in ("fft", "pixel"):
        on, off = (make_param(kind, n=2, channels=1, size=(28, 28), decorrelate=d, generator=torch.Generator().manual_seed(0))
                   for d in (True, False))  # fmt: skip
        assert torch.equal(on(), off())


def test_recipe_descriptions_speak_user_terms() -> None:
    for recipe in RECIPES.values():
        text = recipe.description.lower()
        assert not any(word in text for word in ("seed", "twin", "tutorial")), recipe.description
    assert "Erhan et al. 2009" in RECIPES["plain"].description
    assert "Olah et al. 2017" in RECIPES["default"].description
    assert "image size" in RECIPES["default"].description
