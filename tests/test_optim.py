"""Activation maximisation on tiny PyTorch and Keras nets: objectives, transforms, params, the loop, errors.

Hand-computed values on small tensors, independent recomputation of reached activations, seeded
reproducibility, and model state (hooks, modes, requires_grad, weights) after runs that succeed or fail.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import convscope as cs  # noqa: E402
from convscope.adapters.base import Layout  # noqa: E402
from convscope.errors import ConvscopeError, LayerNotFoundError, ModelError, OptionError  # noqa: E402
from convscope.optim import RECIPES, Visualization, blur, l1, l2, objectives, total_variation  # noqa: E402
from convscope.optim import transforms as T  # noqa: E402
from convscope.optim.base import Context  # noqa: E402
from convscope.optim.cli import add_maximize_command, parse_indices, run_maximize  # noqa: E402
from convscope.optim.params import COLOR_DECORRELATION, colour_matrix, make_param  # noqa: E402
from convscope.optim.relu import RedirectedReLU, redirect_relu  # noqa: E402

O = objectives  # noqa: E741
HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


# -- models and state ------------------------------------------------------------------------------------
class Tiny(nn.Module):
    """(3, 12, 12) -> c0 conv 3x3 same -> r0 ReLU -> c1 conv 3x3 -> pool -> flat -> fc(3) -> softmax."""

    def __init__(self, channels: int = 3, after: nn.Module | None = None) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(channels, 4, 3, padding=1)
        self.r0 = nn.ReLU()
        self.c1 = nn.Conv2d(4, 6, 3)
        self.after = after if after is not None else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6, 3)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.fc(self.flat(self.pool(self.after(self.c1(self.r0(self.c0(x))))))))


class Bomb(nn.Module):
    """Raises after ``fuse`` calls (``fuse=0``: on the first)."""

    def __init__(self, fuse: int = 0) -> None:
        super().__init__()
        self.fuse, self.calls = fuse, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.fuse:
            raise RuntimeError("bomb")
        return x


def tiny(channels: int = 3, after: nn.Module | None = None, *, seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(channels, after).eval()


def keras_tiny() -> Any:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        layers.Conv2D(4, 3, padding="same", activation="relu", name="c0"),
        layers.Conv2D(6, 3, name="c1"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(3, activation="softmax", name="out"),
    ])  # fmt: skip


def state(model: Any) -> dict[str, Any]:
    """Hooks, modes, requires_grad and weights: everything a run must leave as it found it."""
    mods = list(model.modules()) + list(getattr(model, "layers", []))
    return {
        "hooks": [(id(m), d, list(getattr(m, d, {}))) for m in mods for d in HOOKS],
        "modes": [(id(m), m.training) for m in mods],
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "activation": [getattr(m, "activation", None) for m in getattr(model, "layers", [])],
    }


def assert_same_state(before: dict[str, Any], model: Any) -> None:
    after = state(model)
    assert after["hooks"] == before["hooks"], "a hook was left on a module"
    assert after["modes"] == before["modes"], "train/eval mode changed"
    assert after["grad"] == before["grad"], "requires_grad changed"
    assert after["activation"] == before["activation"], "a Keras activation was not restored"
    for k, v in before["weights"].items():
        assert torch.equal(after["weights"][k], v), f"{k} changed"


@pytest.fixture
def scope() -> Any:
    return cs.Scope(tiny(), input_shape=(3, 12, 12))


# -- objectives: hand-computed values --------------------------------------------------------------------
def ctx(t: torch.Tensor, layout: Layout = Layout.NCHW, output: Any = None, key: str = "l") -> Context:
    return Context({key: t}, output, layout, len(t))


def test_channel_neuron_layer_values_by_hand() -> None:
    t = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3, 3)  # (N, C, H, W)
    assert O.channel("l", 1)(ctx(t)).tolist() == [13.0, 40.0]  # mean of 9..17 and 36..44
    assert O.neuron("l", 2)(ctx(t)).tolist() == [22.0, 49.0]  # centre (1, 1) of channel 2
    assert O.neuron("l", 0, x=2, y=0)(ctx(t)).tolist() == [2.0, 29.0]
    assert O.layer("l")(ctx(t)).tolist() == pytest.approx([(t[0] ** 2).mean().item(), (t[1] ** 2).mean().item()])
    batched = O.channel("l", [2, 0])  # one channel per image
    assert batched(ctx(t)).tolist() == [22.0, 31.0]
    assert batched.labels == ("l · 2", "l · 0") and batched.size == 2


def test_objectives_read_keras_layout_the_same() -> None:
    t = torch.randn(2, 4, 5, 3)  # (N, C, H, W)
    nhwc = t.permute(0, 2, 3, 1)
    for obj in (O.channel("l", 2), O.neuron("l", 1, x=2, y=4), O.layer("l"), O.direction("l", [1, -2, 0.5, 3])):
        assert torch.allclose(obj(ctx(t)), obj(ctx(nhwc, Layout.NHWC)))


def test_direction_logit_and_dense_layers() -> None:
    t = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])  # (1, 2, 1, 2)
    assert O.direction("l", [1.0, 10.0])(ctx(t)).tolist() == [(1 + 20 + 3 + 0) / 2]
    dense = torch.tensor([[0.5, -1.0, 2.0], [3.0, 4.0, 5.0]])
    assert O.channel("l", 2)(ctx(dense)).tolist() == [2.0, 5.0]
    assert O.logit([1, 0])(ctx(dense[:, :0], output=dense)).tolist() == [-1.0, 3.0]


def test_diversity_by_hand() -> None:
    same = torch.ones(2, 2, 2, 2)
    assert O.diversity("l")(ctx(same)).tolist() == pytest.approx([-1.0, -1.0])
    orth = torch.zeros(2, 2, 1, 1)
    orth[0, 0], orth[1, 1] = 1.0, 1.0  # Gram matrices diag(1, 0) and diag(0, 1): cosine 0
    assert O.diversity("l")(ctx(orth)).tolist() == pytest.approx([0.0, 0.0])
    assert O.diversity("l")(ctx(torch.ones(1, 2, 2, 2))).tolist() == [0.0]


def test_composition_and_stacking() -> None:
    t = torch.randn(3, 4, 2, 2)
    a, b = O.channel("l", 0), O.channel("l", 3)
    combo = 2 * a - b / 4 + 0.5 * (a * b) - (-a)
    va, vb = a(ctx(t)), b(ctx(t))
    assert torch.allclose(combo(ctx(t)), 2 * va - vb / 4 + 0.5 * va * vb + va)
    mixed = O.channel("l", [0, 1, 2]) + O.channel("l", 3)  # batched + any-batch
    assert mixed.size == 3 and mixed.labels == ("l · 0", "l · 1", "l · 2")
    stacked = O.stack([O.channel("l", [1, 2]), O.neuron("l", 3)])
    full = stacked(ctx(t))
    assert stacked.size == 3 and torch.allclose(full, torch.stack([t[0, 1].mean(), t[1, 2].mean(), t[2, 3, 1, 1]]))
    part = stacked.slice(1, 3)  # chunks evaluate their own images only
    assert part.size == 2 and torch.allclose(part(ctx(t[1:])), full[1:])
    assert set(O.OBJECTIVES) == {"channel", "neuron", "layer", "logit", "direction", "diversity"}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: O.channel("l", -1), "negative"),
        (lambda: O.channel("l", "3"), "list/range of ints"),
        (lambda: O.channel("l", []), "non-empty"),
        (lambda: O.channel("l", [0, 1]) + O.channel("l", [0, 1, 2]), "same number of images"),
        (lambda: O.channel("l", 0) / O.channel("l", 1), "non-zero number"),
        (lambda: O.stack(["x"]), "Objective"),
    ],
)
def test_objective_errors(make: Any, match: str) -> None:
    with pytest.raises(OptionError, match=match):
        make()


# -- transforms ----------------------------------------------------------------------------------------
def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def crops(padded: np.ndarray, h: int, w: int) -> list[np.ndarray]:
    return [padded[..., i : i + h, j : j + w] for i in range(padded.shape[-2] - h + 1) for j in range(padded.shape[-1] - w + 1)]


@pytest.mark.parametrize(("mode", "np_mode"), [("reflect", "symmetric"), ("edge", "edge"), ("constant", "constant")])
def test_pad_and_jitter_are_exact_crops(mode: str, np_mode: str) -> None:
    img = torch.rand(1, 2, 6, 7)
    kwargs = {"constant_values": 0.25} if np_mode == "constant" else {}
    padded = np.pad(img.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode=np_mode, **kwargs)
    for seed in range(4):
        out = T.compose(T.pad(2, mode=mode, value=0.25), T.jitter(4))(img, gen(seed)).numpy()
        assert out.shape == img.shape
        assert any(np.allclose(out, c, atol=1e-5) for c in crops(padded, 6, 7)), "not an integer crop"


def test_rotate_and_scale_against_torch() -> None:
    img = torch.rand(2, 3, 8, 8)
    turned = T.random_rotate((90, 90))(img, gen())
    assert torch.allclose(turned, torch.rot90(img, 1, dims=(2, 3)), atol=1e-5)  # counter-clockwise on screen
    zoomed = T.random_scale(2.0, 2.0)(img, gen())
    expected = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)[:, :, 4:12, 4:12]
    assert torch.allclose(zoomed, expected, atol=1e-5)


def test_transforms_are_seeded_fused_and_differentiable() -> None:
    img = torch.rand(3, 1, 16, 16, requires_grad=True)
    ts = T.standard_transforms((16, 16))
    a, b, c = ts(img, gen(1)), ts(img, gen(1)), ts(img, gen(2))
    assert a.shape == img.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert T.apply_transforms(img, [], gen()) is img  # nothing to do: no resampling
    calls: list[int] = []
    with pytest.MonkeyPatch.context() as mp:  # a run of geometric transforms is ONE grid_sample
        real = F.grid_sample
        mp.setattr(T.F, "grid_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
        T.apply_transforms(img, [ts, lambda x, g: x * 2, T.jitter(1)], gen())
    assert len(calls) == 2


def test_transform_errors() -> None:
    with pytest.raises(OptionError, match="crops away"):
        T.jitter(9)(torch.rand(1, 1, 8, 8), gen())
    with pytest.raises(OptionError, match="one fill mode"):
        T.compose(T.pad(1), T.pad(1, mode="edge"))(torch.rand(1, 1, 8, 8), gen())
    with pytest.raises(OptionError, match="mode"):
        T.pad(1, mode="wrap")
    with pytest.raises(OptionError, match="low <= high"):
        T.random_scale(1.2, 1.1)
    with pytest.raises(OptionError, match="not a transform"):
        T.compose(3)  # type: ignore[arg-type]


# -- parameterisations and regularisers ------------------------------------------------------------------
def test_params_ranges_and_colour() -> None:
    plain = make_param("pixel", n=2, channels=3, size=(8, 8), decorrelate=False, squash="clamp", generator=gen())
    x = plain()
    assert x.shape == (2, 3, 8, 8) and x.min() >= 0.4 and x.max() <= 0.6
    with torch.no_grad():
        plain.parameters()[0].add_(5.0)
    plain.project()
    assert plain().max() == 1.0
    fft = make_param("fft", n=2, channels=3, size=(9, 8), generator=gen())
    img = fft()
    assert img.shape == (2, 3, 9, 8) and img.min() > 0 and img.max() < 1 and (img - 0.5).abs().max() < 0.05
    img.sum().backward()
    assert fft.parameters()[0].grad is not None
    m = colour_matrix(True, 3)
    assert m is not None and np.allclose(m.numpy(), COLOR_DECORRELATION)
    assert np.allclose(np.linalg.norm(COLOR_DECORRELATION, axis=0).max(), 1.0)
    assert colour_matrix(True, 1) is None and colour_matrix(True, 4) is None
    with pytest.raises(OptionError, match=r"\(4, 4\)"):
        colour_matrix(np.eye(3), 4)
    with pytest.raises(OptionError, match="param"):
        make_param("wavelet", n=1, channels=1, size=(8, 8), generator=gen())


def test_regularizers_by_hand() -> None:
    img = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])  # (1, 1, 2, 2)
    assert total_variation(1.0)(img).tolist() == [pytest.approx(0.5 + 0.5)]  # rows (1, 0) + cols (1, 0)
    assert l1(2.0)(img).tolist() == [2.0 * 0.5]
    assert l2(1.0, center=0.0)(img).tolist() == [0.75]
    assert blur(1.0)(torch.full((1, 3, 4, 4), 0.3)).tolist() == [pytest.approx(0.0, abs=1e-12)]
    with pytest.raises(OptionError):
        l1(-1.0)


def test_redirected_relu() -> None:
    x = torch.tensor([[-1.0, -2.0], [-1.0, 3.0]], requires_grad=True)
    with redirect_relu():
        y = F.relu(x)
    assert torch.equal(y, F.relu(x.detach()))
    (-y.sum()).backward()  # image 0 is all dead: the unit nearest to life is pushed; image 1: true gradient
    assert x.grad is not None and x.grad.tolist() == [[-1.0, 0.0], [0.0, -1.0]]
    z = torch.tensor([[-1.0, 2.0]], requires_grad=True)
    w = z * 1.0
    with redirect_relu():
        F.relu(w, inplace=True)  # in place keeps working
    assert w.tolist() == [[0.0, 2.0]] and issubclass(RedirectedReLU, torch.autograd.Function)


# -- the loop ------------------------------------------------------------------------------------------
def test_maximize_climbs_and_reports_exact_values(scope: Any) -> None:
    vis = scope.maximize(O.channel("c1", [0, 1, 2]), steps=30, seed=0)
    assert isinstance(vis, Visualization) and vis.images.shape == (3, 12, 12, 3) and vis.images.dtype == np.uint8
    assert vis.history.shape == (30, 3)
    assert (vis.history[-5:].mean(0) > vis.history[:5].mean(0) + 0.005).all(), "the objective did not rise"
    assert (vis.values > vis.history[0]).all()
    again = scope.activations(vis.inputs, layers="c1")["c1"].channels_first().mean(axis=(2, 3))
    assert np.allclose(again[np.arange(3), [0, 1, 2]], vis.values, atol=1e-5)
    assert vis.labels == ("c1 · 0", "c1 · 1", "c1 · 2") and vis.meta["steps"] == 30


def test_plain_recipe_is_projected_pixel_ascent(scope: Any) -> None:
    vis = scope.maximize(O.neuron("c1", 4), recipe="plain", steps=20)
    x = vis.inputs
    assert x.min() >= 0 and x.max() <= 1 and vis.history[-1, 0] > vis.history[0, 0] + 0.05
    assert RECIPES["plain"].param.value == "pixel" and not RECIPES["plain"].transforms((8, 8)).transforms


def test_same_seed_same_images(scope: Any) -> None:
    runs = [scope.maximize(O.channel("c1", [1, 2]), steps=8, seed=s) for s in (3, 3, 4)]
    assert np.array_equal(runs[0].images, runs[1].images) and torch.equal(runs[0].inputs, runs[1].inputs)
    assert not np.array_equal(runs[0].images, runs[2].images)


def test_chunks_cover_every_objective(scope: Any) -> None:
    objs = [O.channel("c1", 0), O.channel("c1", [1, 2, 3]), O.neuron("c0", 1)]
    vis = scope.maximize(objs, steps=4, batch_size=2)
    assert len(vis) == 5 and vis.meta["batch_size"] == 2 and vis.history.shape == (4, 5)
    assert vis.labels == ("c1 · 0", "c1 · 1", "c1 · 2", "c1 · 3", "c0 · 1")
    acts = scope.activations(vis.inputs, layers=["c0", "c1"])
    c1 = acts["c1"].channels_first().mean(axis=(2, 3))
    assert np.allclose(vis.values[:4], c1[np.arange(4), [0, 1, 2, 3]], atol=1e-5)
    assert np.isclose(vis.values[4], acts["c0"].channels_first()[4, 1, 6, 6], atol=1e-5)


def test_truncated_pass_and_logits() -> None:
    model = tiny(after=Bomb())  # anything after c1 would raise
    scope = cs.Scope(model, input_shape=(3, 12, 12))
    scope.maximize(O.channel("c1", 0), steps=3)  # stops after c1: the bomb never goes off
    assert model.after.calls == 0
    plain = cs.Scope(tiny(), input_shape=(3, 12, 12))
    vis = plain.maximize(O.logit([0, 2]), steps=25)
    logits = plain.model.fc(plain.model.flat(plain.model.pool(plain.model.c1(plain.model.r0(plain.model.c0(vis.inputs))))))
    assert np.allclose(vis.values, logits[[0, 1], [0, 2]].detach().numpy(), atol=1e-5)  # pre-softmax scores
    assert vis.history[-1].mean() > vis.history[0].mean()


def test_state_restored_after_success_and_failures() -> None:
    model = tiny(after=Bomb(fuse=1000)).train()
    model.c0.weight.requires_grad_(False)
    scope = cs.Scope(model, input_shape=(3, 12, 12))
    before = state(model)
    scope.maximize(O.logit(1) + O.channel("c1", 2), steps=3)
    assert_same_state(before, model)

    calls = {"n": 0}

    def flaky(c: Context) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("objective broke")
        return c.layer("c1").mean(dim=(1, 2, 3))

    with pytest.raises(RuntimeError, match="objective broke"):
        scope.maximize(O.Objective(flaky, layers=("c1",)), steps=10)
    assert_same_state(before, model)

    def interrupt(c: Context) -> torch.Tensor:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scope.maximize(O.Objective(interrupt, layers=("c1",)), steps=10)
    assert_same_state(before, model)

    model.after.fuse, model.after.calls = 2, 0  # the model itself raises on its third pass
    with pytest.raises(ModelError, match="bomb"):
        scope.maximize(O.logit(0), steps=10)
    assert_same_state(before, model)


def test_scale_mean_std_and_channel_counts() -> None:
    for channels in (1, 2, 4):
        scope = cs.Scope(tiny(channels), input_shape=(channels, 12, 12), mean=[0.5] * channels, std=[0.25] * channels)
        vis = scope.maximize(O.channel("c1", 3), steps=4)
        assert vis.images.shape == (1, 12, 12, channels)
        back = (vis.inputs.permute(0, 2, 3, 1).numpy() * 0.25 + 0.5) * 255  # undo std, mean, scale
        assert np.abs(back - vis.images).max() <= 0.5 + 1e-3
        assert vis.grid().mode == ("L" if channels < 3 else "RGB")
    raw = cs.Scope(tiny(1), input_shape=(1, 12, 12), scale=1.0)  # a model fed 0..255
    assert raw.maximize(O.channel("c1", 0), steps=2).inputs.max() > 2


def test_errors_name_what_is_allowed(scope: Any) -> None:
    with pytest.raises(OptionError, match=r"channel 9 out of range; layer 'c1' has 6 channels \(0-5\)"):
        scope.maximize(O.channel("c1", [0, 9]), steps=1)
    with pytest.raises(OptionError, match="outside layer 'c1'"):
        scope.maximize(O.neuron("c1", 0, x=10), steps=1)
    with pytest.raises(OptionError, match="3 classes"):
        scope.maximize(O.logit(3), steps=1)
    with pytest.raises(OptionError, match="one value per channel"):
        scope.maximize(O.direction("c1", [1.0, 2.0]), steps=1)
    with pytest.raises(LayerNotFoundError, match="closest: .*'c1'"):
        scope.maximize(O.channel("c2", 0), steps=1)
    with pytest.raises(LayerNotFoundError, match="matches 2 layers"):
        scope.maximize(O.channel("c*", 0), steps=1)
    with pytest.raises(OptionError, match="returned"):
        scope.maximize(O.Objective(lambda c: c.layer("c1").sum(), layers=("c1",), batch=2,
                                   slicer=lambda i, j: O.channel("c1", 0)), steps=1)  # fmt: skip
    for bad in ({"recipe": "fancy"}, {"steps": 0}, {"size": 3}, {"seed": -1}, {"batch_size": 0}, {"lr": -1.0},
                {"regularizers": ["tv"]}):  # fmt: skip
        with pytest.raises(OptionError):
            scope.maximize(O.channel("c1", 0), **{"steps": 1, **bad})
    with pytest.raises(OptionError, match="logit"):
        cs.Scope(nn.Sequential(nn.Conv2d(3, 2, 1)), input_shape=(3, 8, 8)).maximize(O.logit(0), steps=1)
    fixed = cs.Scope(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(200, 4)), input_shape=(3, 12, 12))
    with pytest.raises(OptionError, match="size-keeping transforms"):  # a jitter shrinks what the model sees
        fixed.maximize(O.logit(0), steps=1, transforms=[T.jitter(2)])
    assert (3 * O.channel("c1", 0) - O.logit(1) / 2).name == "3 * c1 · 0 - class 1 / 2"
    assert issubclass(OptionError, ConvscopeError)


def test_redirect_revives_a_dead_channel() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight.fill_(0.2)
        model[0].bias.fill_(-1.5)  # 1.8 * mean(x) - 1.5: dead for a grey start, alive near white
    scope = cs.Scope(model, input_shape=(1, 10, 10))
    on = scope.maximize(O.channel("1", 0), steps=40, recipe="plain")
    off = scope.maximize(O.channel("1", 0), steps=40, recipe=dataclasses.replace(RECIPES["plain"], relu_redirect=False))
    assert off.values[0] == 0.0 and on.values[0] > 0.0


def test_warns_when_output_looks_like_probabilities() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.softmax(self.conv(x).mean(dim=(2, 3)), dim=1)

    with pytest.warns(UserWarning, match="probabilities"):
        cs.Scope(Functional(), input_shape=(3, 8, 8)).maximize(O.logit(0), steps=1)


def test_keras_twin_layout_logits_and_state() -> None:
    model = keras_tiny()
    scope = cs.Scope(model)
    before = state(model)
    vis = scope.maximize([O.channel("c1", 2), O.logit(1)], steps=25)
    assert vis.inputs.shape == (2, 12, 12, 3) and vis.images.shape == (2, 12, 12, 3)  # NHWC model input
    c1 = scope.activations(vis.inputs, layers="c1")["c1"].numpy()  # (N, H, W, C)
    assert np.isclose(vis.values[0], c1[0, :, :, 2].mean(), atol=1e-5)
    assert (vis.history[-3:].mean(0) > vis.history[:3].mean(0)).all()
    assert_same_state(before, model)  # softmax activation back, hooks gone, weights untouched
    with pytest.raises(OptionError, match="6 channels"):
        scope.maximize(O.channel("c1", 6), steps=1)

    def boom(c: Context) -> torch.Tensor:
        raise RuntimeError("midway")

    with pytest.raises(RuntimeError, match="midway"):
        scope.maximize(O.logit(0) + O.Objective(boom), steps=3)
    assert_same_state(before, model)


# -- pictures and CLI ------------------------------------------------------------------------------------
def test_grid_png_and_maximize_layer(scope: Any, tmp_path: Any, capsys: Any) -> None:
    vis = scope.maximize_layer("c1", channels=4, steps=2)
    assert len(vis) == 4 and vis.labels[3] == "c1 · 3"
    img = vis.grid(cols=2)
    assert img.mode == "RGB" and img.width == 2 * 12 * 8 + 2  # 12 px tiles upscaled x8 for labels
    assert vis.grid(labels=False, scale=1, padding=0).size == (24, 24)
    png = vis._repr_png_()
    assert Image.open(io.BytesIO(png)).format == "PNG"
    path = vis.save(tmp_path / "gallery.png")
    assert Image.open(path).size == vis.grid().size
    assert len(scope.maximize_layer("c0", steps=1)) == 4  # every channel by default
    assert "c1 · 0" in repr(vis) and vis.image(-1).size == (12, 12)
    scope.maximize(O.channel("c1", 0), steps=3, progress=True)
    assert "maximize c1 · 0" in capsys.readouterr().err  # the tqdm bar
    with pytest.raises(OptionError):
        scope.maximize_layer("c1", channels=7, steps=1)


def test_progress_callable_gets_every_step_up_to_total(scope: Any, capsys: Any) -> None:
    calls: list[tuple[int, int]] = []
    scope.maximize(O.channel("c1", 0), steps=5, progress=lambda step, total: calls.append((step, total)))
    assert calls == [(s, 5) for s in range(1, 6)]  # increasing, ending at total
    calls.clear()
    vis = scope.maximize_layer("c1", channels=3, steps=4, batch_size=2, progress=lambda s, t: calls.append((s, t)))
    assert len(vis) == 3 and calls == [(s, 8) for s in range(1, 9)]  # two batches of 4 steps: one count
    assert capsys.readouterr().err == ""  # a callable replaces the bar and the summary line
    scope.maximize(O.channel("c1", 0), steps=2, progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(OptionError, match="callable f\\(step, total\\)"):
        scope.maximize(O.channel("c1", 0), steps=2, progress="yes")
    for wrong in (lambda: None, lambda step: None):  # refused before the first step, not a TypeError in it
        with pytest.raises(OptionError, match="cannot be called as progress\\(step, total\\)"):
            scope.maximize(O.channel("c1", 0), steps=2, progress=wrong)


def test_cli_parses_and_writes(scope: Any, tmp_path: Any, capsys: Any) -> None:
    assert parse_indices("0-2,7,1") == [0, 1, 2, 7]
    with pytest.raises(OptionError, match="0-15"):
        parse_indices("3-1")
    parser = argparse.ArgumentParser()
    add_maximize_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "m.png"
    args = parser.parse_args(["maximize", "model.pt", "--layer", "c1", "--channels", "0-1", "--steps", "2",
                              "--recipe", "plain", "-o", str(out)])  # fmt: skip
    assert run_maximize(scope, args) == 0 and out.exists()
    assert "2 image(s)" in capsys.readouterr().out
    args = parser.parse_args(["maximize", "model.pt", "--class", "0-2", "--steps", "2", "-o", str(out)])
    assert run_maximize(scope, args) == 0
    with pytest.raises(SystemExit):  # --layer and --class exclude each other
        parser.parse_args(["maximize", "m", "--layer", "c1", "--class", "1"])
