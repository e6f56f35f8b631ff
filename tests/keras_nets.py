"""Small Keras CNNs shared by test files (Keras is imported by the caller's fixture, on the torch backend)."""

from __future__ import annotations

from typing import Any


def small_keras_cnn(keras: Any, seed: int = 2) -> Any:
    """(10, 10, 3) input: conv_0 (same, ReLU) -> pool -> conv_1 (valid, ReLU) -> global pool -> Dense(2)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((10, 10, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_0"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(6, 3, activation="relu", name="conv_1"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])  # fmt: skip
