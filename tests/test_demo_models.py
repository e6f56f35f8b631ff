"""The bundled demo data and the digit ConvNet built in Keras and in PyTorch (convscope.demo.data, convscope.demo.models)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from convscope.demo import data, models  # noqa: E402
from convscope.errors import InputError, OptionError  # noqa: E402

PARAMS = {  # hand-computed: weights + biases
    "conv_0": 3 * 3 * 1 * 32 + 32,
    "conv_1": 3 * 3 * 32 * 64 + 64,
    "pool": 0,
    "dropout_0": 0,
    "flatten": 0,
    "dense_0": 12 * 12 * 64 * 128 + 128,
    "dropout_1": 0,
    "predictions": 128 * 10 + 10,
}


@pytest.fixture(scope="module")
def split() -> data.DigitsSplit:
    return data.load_digits_28()


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[models.Twins, Path]]:
    cache = tmp_path_factory.mktemp("twins")
    yield models.trained_twins(cache), cache


def _tiny_split(split: data.DigitsSplit, n: int = 128) -> data.DigitsSplit:
    return data.DigitsSplit(split.x_train[:n], split.y_train[:n], split.x_test[:n], split.y_test[:n])


def _zscore(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# -- data -------------------------------------------------------------------------------------------------
def test_digits_shapes_ranges_and_stratified_labels(split: data.DigitsSplit) -> None:
    assert split.x_train.shape == (1437, 28, 28) and split.x_test.shape == (360, 28, 28)
    assert split.x_train.dtype == split.x_test.dtype == np.float32
    assert split.y_train.shape == (1437,) and split.y_test.shape == (360,)
    for x in (split.x_train, split.x_test):
        assert x.min() == 0.0 and 0.99 < x.max() <= 1.0
    train_counts = np.bincount(split.y_train, minlength=10)
    test_counts = np.bincount(split.y_test, minlength=10)
    assert train_counts.sum() + test_counts.sum() == 1797
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.02)


def test_digits_split_is_seeded(split: data.DigitsSplit) -> None:
    again = data.load_digits_28(seed=0)
    np.testing.assert_array_equal(again.x_test, split.x_test)
    np.testing.assert_array_equal(again.y_train, split.y_train)
    assert not np.array_equal(data.load_digits_28(seed=1).y_test, split.y_test)
    assert data.load_digits_28(test_fraction=0.5).x_test.shape[0] in (898, 899)


def test_digits_resized_back_match_sklearn_originals(split: data.DigitsSplit) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    originals = raw.images.reshape(len(raw.images), -1) / 16.0
    x = np.concatenate([split.x_train, split.x_test])
    y = np.concatenate([split.y_train, split.y_test])
    back = np.stack(
        [np.asarray(Image.fromarray(im, mode="F").resize((8, 8), Image.Resampling.LANCZOS)) for im in x]
    ).reshape(len(x), -1)
    corr = _zscore(back) @ _zscore(originals).T  # every image against every original
    best = corr.argmax(axis=1)
    assert corr.max(axis=1).min() > 0.95
    np.testing.assert_array_equal(raw.target[best], y)


def test_bilinear_matrix_matches_pillow() -> None:
    image = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    m = data.bilinear_matrix(28, 8)
    expected = np.asarray(Image.fromarray(image, mode="F").resize((28, 28), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(m @ image @ m.T, expected, atol=1e-5)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)


def test_channel_helpers(split: data.DigitsSplit) -> None:
    x = split.x_test[:5]
    assert data.as_nhwc(x).shape == (5, 28, 28, 1)
    assert data.as_nchw(x).shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(data.as_nchw(x)[:, 0], data.as_nhwc(x)[..., 0])
    with pytest.raises(InputError, match=r"shape \(28, 28\)"):
        data.as_nchw(x[0])


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.2"])
def test_bad_test_fraction(bad: object) -> None:
    with pytest.raises(OptionError, match="test_fraction"):
        data.load_digits_28(test_fraction=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", data.PHOTOS)
def test_sample_photo_shape(name: str) -> None:
    photo = data.sample_photo(name)
    assert photo.shape == (224, 224, 3) and photo.dtype == np.uint8
    assert photo.std() > 10  # a real picture, not a flat fill


def test_sample_photo_is_a_centre_crop() -> None:
    from skimage import data as skdata

    cat = skdata.chelsea()  # (300, 451, 3): the centre square starts at column 75
    np.testing.assert_array_equal(data.sample_photo("chelsea", size=300), cat[:, 75:375])
    assert data.sample_photo("coffee", size=32).shape == (32, 32, 3)


def test_sample_photo_rejects_unknown_names_and_sizes() -> None:
    with pytest.raises(OptionError, match="'chelsea'"):
        data.sample_photo("chelsey")
    with pytest.raises(OptionError, match="size=0"):
        data.sample_photo(size=0)


def test_import_stays_light() -> None:
    code = (
        "import sys, convscope.demo.models; print(sorted({'keras', 'sklearn', 'skimage'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- models -----------------------------------------------------------------------------------------------
def test_twin_layers_have_equal_parameter_counts() -> None:
    keras_model = models.keras_digits_model(seed=0)
    torch_model = models.torch_digits_model(seed=0)
    assert [layer.name for layer in keras_model.layers] == list(PARAMS)
    for name, expected in PARAMS.items():
        torch_count = sum(p.numel() for p in getattr(torch_model, name).parameters())
        assert keras_model.get_layer(name).count_params() == torch_count == expected, name
    assert keras_model.count_params() == sum(p.numel() for p in torch_model.parameters())
    assert torch_model.relu_0.inplace and torch_model.relu_1.inplace
    assert not torch_model.training


def test_twins_return_probabilities(split: data.DigitsSplit) -> None:
    x = split.x_test[:4]
    keras_probs = np.asarray(models.keras_digits_model(seed=0).predict(data.as_nhwc(x), verbose=0))
    torch_model = models.torch_digits_model(seed=0)
    with torch.no_grad():
        inputs = torch.from_numpy(data.as_nchw(x))
        torch_probs = torch_model(inputs)
        from_logits = torch.softmax(torch_model.logits(inputs), dim=1)
    for probs in (keras_probs, torch_probs.numpy()):
        assert probs.shape == (4, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    torch.testing.assert_close(torch_probs, from_logits)


def test_torch_seeding_is_local_and_repeatable(split: data.DigitsSplit) -> None:
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    first, second = models.torch_digits_model(seed=3), models.torch_digits_model(seed=3)
    tiny = _tiny_split(split)
    models.train_torch(first, tiny, epochs=1, seed=5, threads=1)
    models.train_torch(second, tiny, epochs=1, seed=5, threads=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not first.training


def test_keras_training_is_repeatable(split: data.DigitsSplit) -> None:
    tiny = _tiny_split(split)
    runs = []
    for _ in range(2):
        model = models.keras_digits_model(seed=3)
        models.train_keras(model, tiny, epochs=1, seed=5)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_training_options(split: data.DigitsSplit) -> None:
    with pytest.raises(OptionError, match="epochs=0"):
        models.train_torch(models.torch_digits_model(), split, epochs=0)
    with pytest.raises(OptionError, match="batch_size=2.5"):
        models.train_keras(models.keras_digits_model(), split, batch_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="threads=0"):
        models.train_torch(models.torch_digits_model(), split, threads=0)


def test_trained_twins_reach_95_percent(twins: tuple[models.Twins, Path]) -> None:
    (keras_model, torch_model, split, accuracies), _ = twins
    assert accuracies["keras"] >= 0.95 and accuracies["torch"] >= 0.95
    assert models.keras_accuracy(keras_model, split) == accuracies["keras"]
    assert models.torch_accuracy(torch_model, split) == accuracies["torch"]
    keras_pred = np.asarray(keras_model.predict(data.as_nhwc(split.x_test), verbose=0)).argmax(1)
    with torch.no_grad():
        torch_pred = torch_model(torch.from_numpy(data.as_nchw(split.x_test))).argmax(1).numpy()
    assert (keras_pred == torch_pred).mean() > 0.9  # the two independently trained models mostly agree


def test_trained_twins_reload_from_cache(twins: tuple[models.Twins, Path]) -> None:
    trained, cache = twins
    assert sorted(p.name for p in cache.iterdir()) == [
        "digits_keras_s0_e6.weights.h5",
        "digits_torch_glorot_s0_e6.pt",
    ]
    reloaded = models.trained_twins(cache)
    assert reloaded.accuracies == trained.accuracies
    for a, b in zip(trained.keras_model.get_weights(), reloaded.keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for name, tensor in trained.torch_model.state_dict().items():
        assert torch.equal(tensor, reloaded.torch_model.state_dict()[name]), name
