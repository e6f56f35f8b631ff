"""Activation maximisation works, visibly, on the demo's trained digit CNN (in Keras and in PyTorch).

* ``logit(k)`` images are classified as ``k`` with probability >= 0.9, for every digit.
* channel images on ``conv_1`` beat every real digit's activation for >= 90 % of the channels.
* in a batch of 16 channel objectives, image i excites channel i more than any other image does, for
  >= 90 % of i — on the conv layer's own (pre-ReLU) output in both models: ``conv_1`` in PyTorch,
  ``conv_1:pre`` in Keras, whose Conv2D fuses the ReLU. (On the Keras post-ReLU output only 9-11 of 16
  win: where the ReLU zeroes most positions the gradient is flat, and several channels stop in weak
  optima that another channel's image beats.)

Each model is trained once per test session (conftest's ``digit_twins``: ``trained_twins()`` defaults).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import convscope as cs  # noqa: E402
from convscope.optim import objectives as O  # noqa: E402

pytest.importorskip("keras")
pytest.importorskip("sklearn")
FRAMEWORKS = ("keras", "torch")


@pytest.fixture(scope="module")
def twins(digit_twins: Any) -> dict[str, tuple[Any, Any, np.ndarray]]:
    """framework -> (model, scope, every digit image as model input); the session's trained models."""
    from convscope.demo.data import as_nchw, as_nhwc

    keras_model, torch_model, split, accuracies = digit_twins
    assert min(accuracies.values()) > 0.9
    digits = np.concatenate([split.x_train, split.x_test])
    return {
        "keras": (keras_model, cs.Scope(keras_model), as_nhwc(digits)),
        "torch": (torch_model, cs.Scope(torch_model, input_shape=(1, 28, 28)), as_nchw(digits)),
    }


def channel_means(scope: Any, x: Any, layer: str = "conv_1") -> np.ndarray:
    """(N, C) spatial means of ``layer``, recomputed independently of the optimiser."""
    return scope.activations(x, layers=layer)[layer].channels_first().mean(axis=(2, 3))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_logit_images_are_classified_as_their_class(twins: Any, fw: str) -> None:
    model, scope, _ = twins[fw]
    vis = scope.maximize(O.logit(range(10)), steps=64, seed=0)
    with torch.no_grad():
        probs = torch.as_tensor(model(vis.inputs)).numpy()  # the model's own softmax output
    assert probs.argmax(1).tolist() == list(range(10))
    assert probs[np.arange(10), np.arange(10)].min() >= 0.9, probs.round(3)
    assert (vis.history[-8:].mean(0) > vis.history[:8].mean(0)).all(), "the logits did not rise"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_channel_images_beat_every_real_digit(twins: Any, fw: str) -> None:
    _, scope, digits = twins[fw]
    real_max = channel_means(scope, digits).max(axis=0)
    vis = scope.maximize(O.channel("conv_1", range(64)), steps=128, seed=0, recipe="plain")
    reached = channel_means(scope, vis.inputs)[np.arange(64), np.arange(64)]
    assert np.allclose(reached, vis.values, atol=1e-4)
    share = float(np.mean(reached > real_max))
    assert share >= 0.9, f"{share:.0%}; losing channels {np.where(reached <= real_max)[0].tolist()}"


# The same tensor in both models: PyTorch's ``conv_1`` is the Conv2d output, its ReLU a separate module;
# Keras fuses the ReLU into Conv2D, so the equivalent tensor is the fused activation's input.
PRE_RELU = {"keras": "conv_1:pre", "torch": "conv_1"}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_each_image_excites_its_own_channel_most(twins: Any, fw: str) -> None:
    _, scope, digits = twins[fw]
    layer = PRE_RELU[fw]
    vis = scope.maximize(O.channel(layer, range(16)), steps=128, seed=0, recipe="plain")
    means = channel_means(scope, vis.inputs, layer)[:, :16]  # (image, channel)
    assert np.allclose(means.diagonal(), vis.values, atol=1e-4)
    own = means.diagonal()
    others = np.where(np.eye(16, dtype=bool), -np.inf, means).max(axis=0)
    share = float(np.mean(own > others))
    assert share >= 0.9, f"{share:.0%}; channels losing to another image: {np.where(own <= others)[0].tolist()}"
    assert float(np.mean(own > channel_means(scope, digits, layer)[:, :16].max(axis=0))) >= 0.9
