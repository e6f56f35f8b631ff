"""Faithfulness: deletion/insertion curves by hand, and the cascading-randomisation sanity check on a
trained digit model (the demo's Keras and PyTorch digit CNN)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs
from convscope.attribution import metrics
from convscope.attribution.sanity import Verdict, parameter_layers, randomise, rank, spearman
from convscope.errors import ConvscopeError, OptionError

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


def test_metrics_score_the_callable_an_attribution_was_made_with() -> None:
    scope, x, _ = linear_pixels()
    fn = lambda out: out[:, 1] - out[:, 0]  # noqa: E731  (top-1 is class 0: y_0 = 0.5 > y_1 = 0)
    att = scope.attribute(x, method="gradient_x_input", target=fn)
    assert att.targets is None and att.target_fn is fn
    order = np.argsort(-att.maps.ravel(), kind="stable")
    want = []
    for k in range(5):  # steps=4: remove 0..4 of the 4 pixels, highest-ranked first
        kept = torch.ones(4)
        kept[torch.as_tensor(order[:k].copy())] = 0
        with torch.no_grad():
            want.append(float(fn(scope.model(x * kept.view(1, 1, 2, 2)))[0]))
    for score in ("probability", "logit"):  # a callable is scored as is
        np.testing.assert_allclose(metrics.deletion(scope, att, steps=4, score=score).scores[0], want, rtol=1e-6)
    ins = metrics.insertion(scope, att, steps=4, baseline="zero")
    np.testing.assert_allclose(ins.scores[0, [0, -1]], [want[-1], want[0]], rtol=1e-6)
    anonymous = dataclasses.replace(att, target_fn=None)
    with pytest.raises(ConvscopeError, match="pass target="):
        metrics.deletion(scope, anonymous)
    assert metrics.deletion(scope, anonymous, target=fn, steps=4).scores[0, 0] == pytest.approx(want[0])


def test_sanity_check_is_inconclusive_when_the_map_is_constant() -> None:
    """Dead ReLUs: the saliency map is all zero before and after randomisation (Spearman 0 at every step)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2))
    with torch.no_grad():
        net[0].bias.fill_(-100.0)  # every ReLU is dead for inputs in [0, 1]
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="inconclusive.*dead ReLUs") as record:
        report = cs.Scope(net).sanity_check(x, method="saliency")
    assert report.verdict is Verdict.INCONCLUSIVE and report.verdict == "inconclusive"
    assert report.passed is None and report.constant == (0, 1)
    assert np.isnan(report.correlations).all()
    text = str(report)
    assert "INCONCLUSIVE" in text and "PASS" not in text and "dead ReLUs" in text
    assert [w.filename for w in record if "inconclusive" in str(w.message)] == [__file__]


def test_randomise_keeps_each_tensors_magnitude() -> None:
    """Each tensor is redrawn zero-mean with its own RMS: BatchNorm gamma ~ 1 keeps magnitude ~ 1, not ~ 0.1."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 256, 3), nn.BatchNorm2d(256), nn.Flatten(), nn.Linear(256, 2))
    with torch.no_grad():
        net[1].weight.copy_(1 + 0.1 * torch.randn(256))  # a trained-looking gamma; beta stays all zero
    scope = cs.Scope(net)
    before = {k: v.clone().double() for k, v in net.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for t in parameter_layers(scope, torch.rand(1, 1, 3, 3)):
        randomise(scope, t, generator)
    after = {k: v.double() for k, v in net.state_dict().items()}
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight"):
        rms = float(before[name].square().mean().sqrt()) or 0.01  # all-zero beta: 0.01
        new = after[name]
        assert not torch.equal(before[name], new), name
        assert float(new.square().mean().sqrt()) == pytest.approx(rms, rel=0.15), name
        assert abs(float(new.mean())) < 0.2 * rms, name  # zero-mean: the learned offset is gone
        assert float(new.abs().max()) <= 2 * rms / 0.8796 + 1e-6, name  # truncated at ±2σ
    assert float(after["1.weight"].abs().mean()) > 0.6  # |gamma| stays of order 1 (random signs)


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
    assert report.passed and report.verdict is Verdict.PASS and np.abs(report.correlations[-1]).mean() < 0.5
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
