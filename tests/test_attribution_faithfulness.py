"""Faithfulness: deletion/insertion curves by hand, and the cascading-randomisation sanity check on a
trained digit model (the demo twins)."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs
from convscope.attribution import metrics
from convscope.attribution.sanity import rank, spearman
from convscope.errors import OptionError

pytestmark = pytest.mark.filterwarnings("ignore:the .* map is all zero")


def linear_pixels() -> tuple[cs.Scope, torch.Tensor, np.ndarray]:
    """y_0 = Σ w·x + 0.5 on a 2x2 one-channel image; contributions w·x are known exactly."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[4.0, -1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))
        net[1].bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([1.0, 2.0, 0.5, -1.0]).view(1, 1, 2, 2)
    contributions = np.array([4.0, -2.0, 1.0, -3.0])
    return cs.Scope(net), x, contributions


def test_deletion_and_insertion_curves_by_hand() -> None:
    scope, x, contrib = linear_pixels()
    maps = contrib.reshape(1, 2, 2)  # order: pixel 0 (4), 2 (1), 1 (-2), 3 (-3)
    dele = metrics.deletion(scope, maps, inputs=x, target=0, steps=4, score="logit")
    want = 0.5 + contrib.sum() - np.array([0.0, 4.0, 5.0, 3.0, 0.0])  # removes 4, then 1, -2, -3
    np.testing.assert_allclose(dele.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(dele.scores[0], want, rtol=1e-6)
    np.testing.assert_allclose(dele.auc, [np.sum((want[1:] + want[:-1]) / 2 * 0.25)], rtol=1e-6)
    ins = metrics.insertion(scope, maps, inputs=x, target=0, steps=4, score="logit", baseline="zero")
    np.testing.assert_allclose(ins.scores[0], 0.5 + np.array([0.0, 4.0, 5.0, 3.0, 0.0]), rtol=1e-6)
    prob = metrics.deletion(scope, maps, inputs=x, target=0, steps=4)
    logits = np.stack([want, np.zeros(5)], axis=1)
    expected = np.exp(logits[:, 0]) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(prob.scores[0], expected, rtol=1e-5)
    assert "deletion" in repr(prob) and 0 < prob.mean_auc < 1


def test_metrics_read_inputs_and_targets_from_an_attribution() -> None:
    scope, x, contrib = linear_pixels()
    att = scope.attribute(x, method="gradient_x_input", target=0)
    np.testing.assert_allclose(att.raw.ravel(), contrib, rtol=1e-6)
    dele = metrics.deletion(scope, att, steps=4, score="logit")
    assert dele.scores.shape == (1, 5) and dele.scores[0, 0] == pytest.approx(0.5 + contrib.sum())
    ins = metrics.insertion(scope, att, steps=2, batch_size=1)
    assert ins.scores.shape == (1, 3)
    with pytest.raises(OptionError, match="inputs="):
        metrics.deletion(scope, att.maps)
    with pytest.raises(OptionError, match="score"):
        metrics.deletion(scope, att, score="accuracy")
    with pytest.raises(OptionError, match="steps"):
        metrics.insertion(scope, att, steps=0)


# -- the trained digit model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[Any, torch.Tensor]:
    from convscope.demo.data import DigitsSplit, as_nchw, load_digits_28
    from convscope.demo.models import torch_digits_model, train_torch

    split = load_digits_28(seed=0)
    small = DigitsSplit(split.x_train[:720], split.y_train[:720], split.x_test, split.y_test)
    model = torch_digits_model(seed=0)
    accuracy = train_torch(model, small, epochs=2, seed=0)
    assert accuracy > 0.8
    return model, torch.from_numpy(as_nchw(split.x_test[:6]))


def test_gradcam_changes_under_cascading_randomisation(digits: tuple[Any, torch.Tensor]) -> None:
    model, x = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scope = cs.Scope(model)
    report = scope.sanity_check(x, method="gradcam", layer="conv_1")
    assert report.layers == ("predictions", "dense_0", "conv_1", "conv_0")  # output side first
    assert report.correlations.shape == (4, len(x)) and report.maps.shape == (5, len(x), 28, 28)
    assert report.passed and np.abs(report.correlations[-1]).mean() < 0.5
    assert "PASS" in str(report) and report.grid().size[1] == 28
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model untouched
    assert not model.training
    guided = scope.sanity_check(x, method="guided_backprop")  # known to survive randomisation (Adebayo 2018)
    assert np.abs(guided.correlations[-1]).mean() > np.abs(report.correlations[-1]).mean()


def test_deletion_ranks_a_real_map_above_its_reverse(digits: tuple[Any, torch.Tensor]) -> None:
    model, x = digits
    scope = cs.Scope(model)
    att = scope.attribute(x, method="integrated_gradients", steps=16)
    good = metrics.deletion(scope, att, steps=20, batch_size=64)
    reverse = metrics.deletion(scope, 1 - att.maps, inputs=x, target=list(att.targets or ()), steps=20, batch_size=64)
    assert good.mean_auc < reverse.mean_auc


def test_sanity_check_on_keras_copies_the_model() -> None:
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu", name="conv_0"),
                              keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax", name="predictions")])  # fmt: skip
    before = [np.array(w) for w in model.get_weights()]
    report = cs.Scope(model).sanity_check(torch.rand(2, 6, 6, 1), method="saliency", init_seed=1)
    assert report.layers == ("predictions", "conv_0")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    with pytest.raises(OptionError, match="threshold"):
        cs.Scope(model).sanity_check(torch.rand(1, 6, 6, 1), threshold=2)


def test_spearman_matches_definition() -> None:
    np.testing.assert_allclose(rank(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    a = np.array([0.1, 0.4, 0.4, 0.9, 0.0])
    b = np.array([1.0, 2.0, 5.0, 7.0, 3.0])
    ra, rb = rank(a), rank(b)
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.ones(5)) == 0.0
