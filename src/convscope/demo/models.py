"""The classic Keras MNIST ConvNet, built the same in Keras and in PyTorch, with small deterministic trainers.

Both models share layer names (``conv_0``, ``conv_1``, ``pool``, ``dropout_0``, ``flatten``, ``dense_0``,
``dropout_1``, ``predictions``), the initialisation (Glorot-uniform weights, zero biases: Keras' defaults,
applied to the PyTorch layers too), the optimiser (Adam with Keras' ``epsilon=1e-7``) and return class
probabilities. Keras is imported lazily and always with the torch backend unless ``KERAS_BACKEND`` is
already set.

Example:
    >>> keras_model, torch_model, split, accuracies = trained_digit_models()  # about 30 s on one CPU core
    >>> min(accuracies.values()) >= 0.95
    True
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from convscope.demo.data import DIGITS_SIDE, DigitsSplit, as_nchw, as_nhwc, load_digits_28
from convscope.errors import OptionError

if TYPE_CHECKING:
    import keras

#: Training defaults shared by both models (chosen so each reaches >= 95 % hold-out accuracy).
EPOCHS = 6
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
ADAM_EPSILON = 1e-7  # Keras' default; PyTorch's is 1e-8
NUM_CLASSES = 10


def _keras() -> Any:
    """Import Keras, defaulting its backend to torch (the only one convscope drives)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _check_training(epochs: int, batch_size: int, threads: int | None) -> None:
    for option, value in (("epochs", epochs), ("batch_size", batch_size), ("threads", threads)):
        if option == "threads" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"{option}={value!r} is not allowed; pass a positive int")


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads (``None``: as set), restoring the count afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------- Keras


def keras_digits_model(*, seed: int | None = None) -> keras.Sequential:
    """The digits ConvNet as a ``keras.Sequential`` on ``(28, 28, 1)`` channels-last input.

    Args:
        seed: if given, ``keras.utils.set_random_seed(seed)`` runs first so the initial weights repeat
            (default ``None``: current global random state).

    Example:
        >>> [layer.name for layer in keras_digits_model().layers][:2]
        ['conv_0', 'conv_1']
    """
    keras = _keras()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((DIGITS_SIDE, DIGITS_SIDE, 1)),
            layers.Conv2D(32, (3, 3), activation="relu", name="conv_0"),
            layers.Conv2D(64, (3, 3), activation="relu", name="conv_1"),
            layers.MaxPooling2D((2, 2), name="pool"),
            layers.Dropout(0.25, name="dropout_0"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense_0"),
            layers.Dropout(0.5, name="dropout_1"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="predictions"),
        ],
        name="digits_convnet",
    )


def keras_accuracy(model: keras.Model, split: DigitsSplit) -> float:
    """Share of ``split``'s test images that ``model`` classifies correctly."""
    probs = np.asarray(model.predict(as_nhwc(split.x_test), batch_size=512, verbose=0))
    return float(np.mean(probs.argmax(axis=1) == split.y_test))


def train_keras(
    model: keras.Model,
    split: DigitsSplit,
    *,
    epochs: int = EPOCHS,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    threads: int | None = None,
) -> float:
    """Fit ``model`` on ``split`` with Adam and sparse cross-entropy; returns hold-out accuracy.

    Seeds Keras' global random state with ``seed`` (default 0) so runs repeat. Defaults: ``epochs=6``,
    ``batch_size=64``, ``learning_rate=2e-3``, ``threads=None`` (torch's current intra-op thread count;
    on a busy 2-core machine ``threads=1`` trains about 3x faster than 2). About 15 s on one core.

    Example:
        >>> train_keras(keras_digits_model(seed=0), load_digits_28()) >= 0.95
        True
    """
    _check_training(epochs, batch_size, threads)
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, epsilon=ADAM_EPSILON),
        loss="sparse_categorical_crossentropy",
    )
    with _torch_threads(threads):
        model.fit(
            as_nhwc(split.x_train),
            split.y_train,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=True,
            verbose=0,
        )
        return keras_accuracy(model, split)


# ---------------------------------------------------------------------------------------------- PyTorch


class TorchDigitsNet(nn.Module):
    """The digits ConvNet in PyTorch: ``(N, 1, 28, 28)`` input, ``(N, 10)`` probabilities out.

    The ReLUs are separate in-place modules (``relu_0``, ``relu_1``, ``relu_2``), as in many real
    models; :meth:`logits` gives the pre-softmax scores used for training. Weights start Glorot-uniform
    and biases at zero, as in Keras (PyTorch's own default, Kaiming-uniform with random biases, left
    about three times as many Grad-CAM maps at ``relu_1`` empty: 40 of the 360 test digits against 13).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(1, 32, kernel_size=3)
        self.relu_0 = nn.ReLU(inplace=True)
        self.conv_1 = nn.Conv2d(32, 64, kernel_size=3)
        self.relu_1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.dropout_0 = nn.Dropout(0.25)
        self.flatten = nn.Flatten()
        pooled = (DIGITS_SIDE - 4) // 2
        self.dense_0 = nn.Linear(64 * pooled * pooled, 128)
        self.relu_2 = nn.ReLU(inplace=True)
        self.dropout_1 = nn.Dropout(0.5)
        self.predictions = nn.Linear(128, NUM_CLASSES)
        self.softmax = nn.Softmax(dim=1)
        layers: tuple[nn.Conv2d | nn.Linear, ...] = (self.conv_0, self.conv_1, self.dense_0, self.predictions)
        for layer in layers:
            nn.init.xavier_uniform_(layer.weight)  # Keras' glorot_uniform (same fans for conv kernels)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax class scores, shape ``(N, 10)``."""
        x = self.relu_0(self.conv_0(x))
        x = self.relu_1(self.conv_1(x))
        x = self.flatten(self.dropout_0(self.pool(x)))
        x = self.dropout_1(self.relu_2(self.dense_0(x)))
        return self.predictions(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities, shape ``(N, 10)``, like the Keras model."""
        return self.softmax(self.logits(x))


def torch_digits_model(*, seed: int | None = None) -> TorchDigitsNet:
    """A fresh :class:`TorchDigitsNet` in eval mode.

    Args:
        seed: if given, initial weights come from ``torch.manual_seed(seed)`` in a forked random state,
            leaving the global one untouched (default ``None``: current global random state).
    """
    if seed is None:
        return TorchDigitsNet().eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TorchDigitsNet().eval()


def torch_accuracy(model: TorchDigitsNet, split: DigitsSplit) -> float:
    """Share of ``split``'s test images that ``model`` classifies correctly (runs in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = model(torch.from_numpy(as_nchw(split.x_test)))
    finally:
        model.train(was_training)
    return float((probs.argmax(dim=1).numpy() == split.y_test).mean())


def train_torch(
    model: TorchDigitsNet,
    split: DigitsSplit,
    *,
    epochs: int = EPOCHS,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    threads: int | None = None,
) -> float:
    """Fit ``model`` on ``split`` with Adam and cross-entropy on its logits; returns hold-out accuracy.

    Shuffling and dropout draw from a forked torch random state seeded with ``seed`` (default 0), so
    runs repeat and the global state is untouched. Leaves ``model`` in eval mode. Defaults (``threads``
    included) as :func:`train_keras`. About 12 s on one core.
    """
    _check_training(epochs, batch_size, threads)
    x = torch.from_numpy(as_nchw(split.x_train))
    y = torch.from_numpy(split.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, eps=ADAM_EPSILON)
    with torch.random.fork_rng(devices=[]), _torch_threads(threads):
        torch.manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(batch_size):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model.logits(x[idx]), y[idx]).backward()
                optimizer.step()
        model.eval()
        return torch_accuracy(model, split)


# ---------------------------------------------------------------------------------------------- both


class DigitModels(NamedTuple):
    """Both trained models with their data; unpacks as ``keras_model, torch_model, split, accuracies``."""

    keras_model: Any
    torch_model: TorchDigitsNet
    split: DigitsSplit
    accuracies: dict[str, float]


def trained_digit_models(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    threads: int | None = None,
) -> DigitModels:
    """Build, train and score both models on :func:`load_digits_28` (``seed`` drives everything).

    Args:
        cache_dir: folder for trained weights (``digits_keras_s0_e6.weights.h5``, ``digits_torch_glorot_s0_e6.pt``);
            weights found there are loaded instead of retrained (default ``None``: always train).
        seed: seed of the split, initial weights and training (default 0).
        epochs: training epochs for each model (default 6).
        threads: torch intra-op threads while training (default ``None``: leave torch's setting).

    Example:
        >>> trained = trained_digit_models("/tmp/convscope-cache", threads=1)  # ~30 s once, then ~1 s
        >>> sorted(trained.accuracies)
        ['keras', 'torch']
    """
    split = load_digits_28(seed=seed)
    paths: dict[str, Path | None] = {"keras": None, "torch": None}
    if cache_dir is not None:
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        paths = {
            "keras": cache / f"digits_keras_s{seed}_e{epochs}.weights.h5",
            "torch": cache / f"digits_torch_glorot_s{seed}_e{epochs}.pt",
        }
    options = {"epochs": epochs, "seed": seed, "threads": threads}
    keras_model, keras_acc = _keras_model(split, paths["keras"], options)
    torch_model, torch_acc = _torch_model(split, paths["torch"], options)
    return DigitModels(keras_model, torch_model, split, {"keras": keras_acc, "torch": torch_acc})


def _keras_model(split: DigitsSplit, path: Path | None, options: dict[str, Any]) -> tuple[Any, float]:
    model = keras_digits_model(seed=options["seed"])
    if path is not None and path.exists():
        model.load_weights(path)
        return model, keras_accuracy(model, split)
    accuracy = train_keras(model, split, **options)
    if path is not None:
        model.save_weights(path)
    return model, accuracy


def _torch_model(
    split: DigitsSplit, path: Path | None, options: dict[str, Any]
) -> tuple[TorchDigitsNet, float]:
    model = torch_digits_model(seed=options["seed"])
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model, torch_accuracy(model, split)
    accuracy = train_torch(model, split, **options)
    if path is not None:
        torch.save(model.state_dict(), path)
    return model, accuracy


#: Earlier names, kept working.
Twins = DigitModels
trained_twins = trained_digit_models
