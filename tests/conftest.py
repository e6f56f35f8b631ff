"""Shared fixtures: tiny PyTorch and Keras (torch backend) CNNs, and a model-state snapshot helper.

``KERAS_BACKEND`` must be set before anything imports keras, so it is the first statement here.
Keras is imported lazily inside the Keras fixtures so that torch-only test files stay fast.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)  # 2 shared cores; tiny nets gain nothing from threads

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


# -- PyTorch models --------------------------------------------------------------------------------------
class Block(nn.Module):
    """A residual block: conv1 -> bn1 -> relu (in place) -> conv2, plus the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn1(self.conv1(x)))) + x


class TinyNet(nn.Module):
    """Input (3, 8, 8): stem conv -> layer1 (one residual Block) -> ReLU -> pool -> flatten -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.layer1 = nn.Sequential(Block(4))
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.act(self.layer1(self.stem(x))))))


class SharedNet(nn.Module):
    """One conv (and one ReLU) used twice: conv -> relu -> conv -> relu. Input (2, 5, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(self.relu(self.conv(x))))


class Split(nn.Module):
    """Returns a tuple: (2 * x, channel mean of x)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * x, x.mean(1)


class TupleNet(nn.Module):
    """``split`` returns a tuple of a (N, 3, 4, 4) and a (N, 4, 4) tensor. Input (3, 4, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.split = Split()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.split(x)
        return self.conv(a) + b[:, None]


class ModeNet(nn.Module):
    """Conv -> BatchNorm -> Dropout(0.5) -> frozen conv -> pool -> fc; input (3, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.frozen = nn.Conv2d(4, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.frozen(self.drop(self.bn(self.conv(x))))).flatten(1))


class FailingNet(nn.Module):
    """Raises ``RuntimeError('boom')`` in its second layer; input (3, 6, 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.bad = Boom()
        self.conv2 = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.bad(self.conv(x)))


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.fixture
def torch_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def shared_net() -> SharedNet:
    torch.manual_seed(1)
    return SharedNet().eval()


@pytest.fixture
def tuple_net() -> TupleNet:
    torch.manual_seed(2)
    return TupleNet().eval()


@pytest.fixture
def mode_net() -> ModeNet:
    """Arrives in train mode (the way a model looks mid-training)."""
    torch.manual_seed(3)
    return ModeNet().train()


@pytest.fixture
def failing_net() -> FailingNet:
    torch.manual_seed(4)
    return FailingNet()


# -- Keras models (torch backend) ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def keras() -> Any:
    keras = pytest.importorskip("keras")
    assert keras.backend.backend() == "torch"
    return keras


@pytest.fixture
def keras_seq(keras: Any) -> Any:
    """A Sequential whose first Conv2D is named ``input_layer`` (as in many Keras examples).

    img (8, 8, 3) -> input_layer Conv2D(4, 3, relu) -> bn -> conv_1 Conv2D(8, 3) -> drop -> flat -> dense(5).
    """
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3), name="img"),
            layers.Conv2D(4, 3, activation="relu", name="input_layer"),
            layers.BatchNormalization(name="bn"),
            layers.Conv2D(8, 3, name="conv_1"),
            layers.Dropout(0.5, name="drop"),
            layers.Flatten(name="flat"),
            layers.Dense(5, name="dense"),
        ],
        name="tiny_seq",
    )
    bn = model.get_layer("bn")  # non-trivial moving statistics
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.uniform(-0.5, 0.5, 4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 4).astype("float32"))
    return model


@pytest.fixture
def keras_nested(keras: Any) -> Any:
    """Functional model containing a Sequential sub-model ``block`` and a frozen conv.

    img (8, 8, 3) -> f_conv -> block[s_conv (same), s_bn, s_relu] -> frozen (1x1, trainable=False)
    -> gap -> head Dense(3).
    """
    keras.utils.set_random_seed(1)
    layers = keras.layers
    block = keras.Sequential(
        [
            layers.Conv2D(4, 3, padding="same", name="s_conv"),
            layers.BatchNormalization(name="s_bn"),
            layers.ReLU(name="s_relu"),
        ],
        name="block",
    )
    inp = keras.Input((8, 8, 3), name="img")
    h = layers.Conv2D(4, 3, name="f_conv")(inp)
    h = block(h)
    frozen = layers.Conv2D(2, 1, name="frozen")
    h = frozen(h)
    frozen.trainable = False
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(3, name="head")(h)
    return keras.Model(inp, out, name="nested")


@pytest.fixture
def keras_subclassed(keras: Any) -> Any:
    """A subclassed model (built by one call): sc1 Conv2D(4, 3) -> sbn -> sdrop -> sgap -> sout Dense(2)."""
    keras.utils.set_random_seed(2)
    layers = keras.layers

    class Sub(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="subclassed")
            self.c1 = layers.Conv2D(4, 3, name="sc1")
            self.bn = layers.BatchNormalization(name="sbn")
            self.drop = layers.Dropout(0.5, name="sdrop")
            self.gap = layers.GlobalAveragePooling2D(name="sgap")
            self.out = layers.Dense(2, name="sout")

        def call(self, x: Any, training: Any = None) -> Any:
            h = self.drop(self.bn(self.c1(x), training=training), training=training)
            return self.out(self.gap(h))

    model = Sub()
    model(np.zeros((1, 8, 8, 3), "float32"))
    return model


# -- model state -----------------------------------------------------------------------------------------
def all_modules(model: Any) -> list[torch.nn.Module]:
    """Every torch module of ``model``; for Keras also every (nested) layer, which torch does not list."""
    found: dict[int, torch.nn.Module] = {}

    def walk(obj: Any) -> None:
        if id(obj) in found or not isinstance(obj, torch.nn.Module):
            return
        found[id(obj)] = obj
        for m in obj.modules():
            walk(m)
        for layer in getattr(obj, "layers", None) or []:
            walk(layer)

    walk(model)
    return list(found.values())


@dataclass
class ModelState:
    """Everything a public call must leave untouched."""

    hooks: dict[int, dict[str, list[int]]]
    modes: dict[int, bool]
    requires_grad: dict[str, bool]
    tensors: dict[str, torch.Tensor]

    @classmethod
    def of(cls, model: Any) -> ModelState:
        mods = all_modules(model)
        return cls(
            hooks={id(m): {d: list(getattr(m, d, {})) for d in HOOK_DICTS} for m in mods},
            modes={id(m): m.training for m in mods},
            requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
            tensors={k: v.detach().clone() for k, v in model.state_dict().items()},
        )

    def assert_same(self, model: Any) -> None:
        now = ModelState.of(model)
        assert now.hooks == self.hooks, "a hook was left on (or removed from) a module"
        assert now.modes == self.modes, "train/eval mode of some module changed"
        assert now.requires_grad == self.requires_grad, "requires_grad of some parameter changed"
        assert now.tensors.keys() == self.tensors.keys()
        for k, v in self.tensors.items():
            assert torch.equal(now.tensors[k], v), f"{k} changed"


@pytest.fixture
def model_state() -> Callable[[Any], ModelState]:
    """``snap = model_state(model)``; later ``snap.assert_same(model)``."""
    return ModelState.of


@pytest.fixture(scope="session")
def digit_twins(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo's trained digit ConvNet, in Keras and in PyTorch, trained once per test session.

    The weights are cached in a session folder, so tests that need a *fresh* copy of a trained model
    can call ``trained_digit_models(digit_twins_cache)`` again cheaply.
    """
    from convscope.demo.models import trained_twins

    return trained_twins(tmp_path_factory.getbasetemp() / "twins-cache")


@pytest.fixture(scope="session")
def digit_twins_cache(digit_twins: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "twins-cache"
