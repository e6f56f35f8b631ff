"""Dataset examples (issue 8, points 1-4): sources, exact streaming top-k, mergeable stats, receptive fields.

Every scan is checked against an independent brute-force sort over all activations; receptive fields
against hand-computed sizes, strides and offsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope as cs
from convscope.dataset.errors import EmptyDatasetError
from convscope.dataset.stats import ChannelStats, sample_positions, sample_step
from convscope.dataset.topk import TopK
from resnet_replica import ResNet18


# -- models -----------------------------------------------------------------------------------------------
def small_cnn(dead: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    )  # fmt: skip
    if dead:  # channel 2 of the ReLU "4" is zero for every image
        with torch.no_grad():
            net[3].weight[2].zero_()
            net[3].bias[2] = -1.0
    return net


def images(n: int, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# -- brute force -----------------------------------------------------------------------------------------
def brute_top(maps: np.ndarray, k: int, by: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, k) ids, values and flat argmax positions by (value desc, id asc), from all maps (N, C, H, W)."""
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    stat = flat.max(axis=2) if by == "max" else flat.mean(axis=2)
    argmax = flat.argmax(axis=2)
    ids = np.stack([np.lexsort((np.arange(len(stat)), -stat[:, c]))[:k] for c in range(stat.shape[1])])
    values = np.take_along_axis(stat.T, ids, 1)
    return ids, values, np.take_along_axis(argmax.T, ids, 1)


def check_against_brute(scan: Any, layer: str, maps: np.ndarray, k: int) -> None:
    width = maps.shape[3]
    for by in ("max", "mean"):
        ids, values, where = brute_top(maps, k, by)
        for c in range(maps.shape[1]):
            top = scan.top(layer, c, by=by)
            assert top.ids == ids[c].tolist(), (layer, by, c)
            np.testing.assert_allclose(top.values, values[c], rtol=1e-5, atol=1e-6)
            assert top.positions == [(int(p) // width, int(p) % width) for p in where[c]]


def channels_first(scope: Any, x: Any, layer: str) -> np.ndarray:
    return scope.activations(x, layers=[layer])[layer].channels_first()


# -- top-k ---------------------------------------------------------------------------------------------------
def test_scan_equals_brute_force_torch() -> None:
    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    data = images(37)
    scan = scope.scan(data, k=5, batch_size=8, progress=False)
    assert list(scan.layers) == ["0", "3"]  # default: every conv layer
    assert scan.count == 37
    for layer in ("0", "3"):
        check_against_brute(scan, layer, channels_first(scope, data, layer), 5)


def test_scan_equals_brute_force_keras(keras: Any) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv_0"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_1"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])  # fmt: skip
    scope = cs.Scope(model)
    data = np.random.default_rng(3).random((21, 10, 10, 3)).astype(np.float32)  # float: model input as is
    scan = scope.scan(data, k=4, batch_size=6, progress=False)
    assert list(scan.layers) == ["conv_0", "conv_1"]
    for layer in ("conv_0", "conv_1"):
        check_against_brute(scan, layer, channels_first(scope, data, layer), 4)


def test_dead_channel_ties_stable_across_batch_sizes() -> None:
    scope = cs.Scope(small_cnn(dead=True), input_shape=(3, 12, 12))
    data = images(30, seed=4)
    for batch_size in (1, 7, 64):
        top = scope.scan(data, layers="4", k=6, batch_size=batch_size, progress=False).top("4", 2)  # the ReLU
        assert top.ids == [0, 1, 2, 3, 4, 5]  # all zero: id ascending
        assert top.values.tolist() == [0.0] * 6
        assert top.positions == [(0, 0)] * 6  # the first maximum


def test_k_larger_than_dataset_returns_all() -> None:
    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    data = images(5)
    scan = scope.scan(data, layers=["0"], k=16, batch_size=2)  # with the default progress bar
    top = scan.top("0", 1, by="mean")
    assert sorted(top.ids) == [0, 1, 2, 3, 4]
    check_against_brute(scan, "0", channels_first(scope, data, "0"), 16)


def test_progress_off_a_terminal_is_one_line_per_shard(capsys: pytest.CaptureFixture[str]) -> None:
    """Piped (``| tail``) or logged: lines, never tqdm frames; a bar only where stderr and stdout are ttys."""
    from convscope._progress import bar_redraws

    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    scope.scan(images(10), layers="0", shard_size=4, batch_size=2)  # progress=True, the default
    err = capsys.readouterr().err.splitlines()
    assert [ln.split(" (")[0] for ln in err] == [f"scan: shard {i}/3 done" for i in (1, 2, 3)]
    assert not any("%|" in ln for ln in err) and not bar_redraws()


def test_topk_merge_equals_single_stream() -> None:
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.integers(0, 4, (50, 8)).astype(np.float32))  # many ties
    pos = torch.from_numpy(rng.integers(0, 9, (50, 8)))
    seqs = torch.arange(50)
    whole, a, b = TopK(8, 6), TopK(8, 6), TopK(8, 6)
    whole.update(values, seqs, pos)
    a.update(values[20:], seqs[20:], pos[20:])  # a worker that scanned the later shard
    b.update(values[:20], seqs[:20], pos[:20])
    merged = a.merge(b)
    assert torch.equal(merged.seqs, whole.seqs) and torch.equal(merged.values, whole.values)
    assert torch.equal(merged.positions, whole.positions)
    with pytest.raises(cs.OptionError):
        whole.update(values[:2], seqs[:2], pos[:2])  # sequence numbers must move forward


def test_topk_update_equals_brute_force_with_nan_and_signed_zeros() -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(-2, 3, (300, 7)).astype(np.float32)  # heavy ties
    values[rng.random(values.shape) < 0.1] = np.nan  # ranks as -inf
    values[values == 0] = np.where(rng.random(int((values == 0).sum())) < 0.5, -0.0, 0.0)  # -0.0 == 0.0
    table, start, calls = TopK(7, 9), 0, []
    for size in (1, 5, 64, 3, 100, 127):  # filling, then full with few and many candidates
        part = torch.from_numpy(values[start : start + size])

        def where(images: torch.Tensor, channels: torch.Tensor, first: int = start) -> torch.Tensor:
            calls.append(len(images))
            return (images + first) * 10 + channels  # a position that names the entry

        table.update(part, torch.arange(start, start + size), where)
        start += size
    ranked = np.nan_to_num(values, nan=-np.inf) + 0.0
    for c in range(7):
        order = np.lexsort((np.arange(300), -ranked[:, c].astype(np.float64)))[:9]
        assert table.seqs[c].tolist() == order.tolist(), c
        assert table.positions[c].tolist() == (order * 10 + c).tolist()
        np.testing.assert_array_equal(table.values[c].numpy(), ranked[order, c])
    assert sum(calls) < 300 * 7 / 2  # argmax positions were asked only for entries that went in


def test_torch_dataset_and_loader_labels() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    x = torch.from_numpy(images(12, seed=5)).permute(0, 3, 1, 2).float() / 255
    y = torch.arange(12) % 3
    dataset = TensorDataset(x, y)
    by_dataset = scope.scan(dataset, layers="3", k=4, batch_size=5, progress=False)
    by_loader = scope.scan(DataLoader(dataset, batch_size=5), layers="3", k=4, progress=False)
    maps = channels_first(scope, x, "3")
    for scan in (by_dataset, by_loader):
        check_against_brute(scan, "3", maps, 4)
        top = scan.top("3", 0)
        assert top.labels.tolist() == [int(i) % 3 for i in top.ids]
        assert sum(scan.class_counts("3", 0).values()) == 4
        assert len(top.images()) == 4  # read back by index


# -- sources ---------------------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = images(6, size=12, seed=7)
    for i, (cls, name) in enumerate([("cat", "b.png"), ("cat", "a.png"), ("dog", "z/c.png"),
                                     ("dog", "d.png"), ("ant", "e.png"), ("ant", "f.png")]):  # fmt: skip
        path = tmp_path / cls / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data[i]).save(path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    return tmp_path


def test_folder_labels_ids_and_unreadable_skipped(folder: Path) -> None:
    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    scan = scope.scan(folder, layers="0", k=8, batch_size=3, progress=False)
    assert scan.classes == ["ant", "cat", "dog"]
    assert scan.count == 6
    assert [i for i, _ in scan.skipped] == ["dog/broken.png"]
    order = ["ant/e.png", "ant/f.png", "cat/a.png", "cat/b.png", "dog/d.png", "dog/z/c.png"]
    top = scan.top("0", 3)
    assert sorted(top.ids) == order
    assert [scan.classes[int(lab)] for lab in top.labels] == [i.split("/")[0] for i in top.ids]
    x = [str(folder / p) for p in order]
    check_against_brute_ids = brute_top(channels_first(scope, x, "0"), 8, "max")[0]
    assert [order.index(i) for i in top.ids] == check_against_brute_ids[3].tolist()
    counts = scan.class_counts("0", 3)
    assert counts == {"ant": 2, "cat": 2, "dog": 2}


def test_empty_folder_and_bad_options(tmp_path: Path) -> None:
    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(EmptyDatasetError, match="holds no images"):
        scope.scan(tmp_path, progress=False)
    with pytest.raises(
        cs.OptionError, match="one-pass stream: use backend='local'"
    ):  # Ray reads shards itself
        scope.scan(iter([torch.zeros(2, 3, 12, 12)]), backend="ray", progress=False)
    with pytest.raises(cs.OptionError, match="k=0"):
        scope.scan(images(2), k=0, progress=False)
    scan = scope.scan(images(3), layers="0", progress=False)
    with pytest.raises(cs.OptionError, match="out of range"):
        scan.top("0", 6)
    with pytest.raises(cs.LayerNotFoundError, match="was not scanned"):
        scan.top("3", 0)
    with pytest.raises(cs.OptionError, match="'max'"):
        scan.top("0", 0, by="median")


# -- statistics ------------------------------------------------------------------------------------------
def test_stats_merge_equals_numpy_over_all_data() -> None:
    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    data = images(23, seed=9)
    scan = scope.scan(data, layers=["0"], batch_size=4, progress=False)
    maps = channels_first(scope, data, "0").astype(np.float64)
    per_channel = maps.transpose(1, 0, 2, 3).reshape(6, -1)
    stats = scan.stats("0")
    assert stats.count == per_channel.shape[1]
    # float32 per-map sums, combined in float64: float32 rounding only
    np.testing.assert_allclose(stats.mean, per_channel.mean(1), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(stats.std, per_channel.std(1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.min, per_channel.min(1))  # exact
    np.testing.assert_allclose(stats.max, per_channel.max(1))
    np.testing.assert_allclose(stats.fraction_positive, (per_channel > 0).mean(1))
    # the histogram holds the same fixed sample of positions of every map: 64 of a 20 x 20 map
    assert (sample_step(144), sample_step(400), sample_step(576), sample_step(1024)) == (
        (1, 144),
        (3, 64),
        (7, 64),
        (15, 64),
    )
    sample = sample_positions(144).numpy()
    assert stats.sampled == 23 * 144
    sampled = maps.reshape(23, 6, -1)[:, :, sample].transpose(1, 0, 2).reshape(6, -1)
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        expected = np.quantile(sampled, q, axis=1)
        assert np.all(np.abs(stats.quantile(q) - expected) <= np.abs(expected) / 16 + 1e-6), q
    assert "≈median" in str(stats) and f"{stats.count:,} positions" in str(stats)
    assert f"{stats.sampled:,} sampled positions" in str(stats)
    picture = stats.histogram(0)
    assert isinstance(picture, Image.Image) and picture.size == (320, 160)


def test_quantile_in_the_zero_bin_is_exactly_zero() -> None:
    """ReLU maps with ~25 % positive values: the median is 0, not a value interpolated inside the zero bin."""
    x = torch.relu(torch.randn(50, 3, 9, 9, generator=torch.Generator().manual_seed(0)) - 0.67)
    stats = ChannelStats(3)
    stats.update(x)
    assert np.all((stats.fraction_positive > 0.2) & (stats.fraction_positive < 0.3))
    assert stats.quantile(0.5).tolist() == [0.0, 0.0, 0.0]
    assert np.all(stats.quantile(0.9) > 0)
    assert " 0 " in str(stats).splitlines()[2]  # the table shows the median 0


def test_stats_of_channels_last_views_equal_channels_first() -> None:
    x = torch.randn(7, 5, 6, 4)  # NHWC, as a Keras layer gives it
    a, b = ChannelStats(4), ChannelStats(4)
    a.update(x.permute(0, 3, 1, 2))  # a strided view: summarised without a copy
    b.update(x.permute(0, 3, 1, 2).contiguous())
    for f in ("mean", "m2", "min", "max", "positive", "counts"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-6, err_msg=f)


def test_std_of_near_constant_maps_keeps_its_digits() -> None:
    """Variance tiny next to the mean: float32 sum of squares would cancel; those maps are redone shifted."""
    g = torch.Generator().manual_seed(3)
    x = 1000 + 1e-3 * torch.randn(6, 2, 20, 20, generator=g)
    x[:, 1] = torch.randn(6, 20, 20, generator=g)  # an ordinary channel beside it
    stats = ChannelStats(2)
    stats.update(x)
    ref = x.double().permute(1, 0, 2, 3).reshape(2, -1).numpy()
    np.testing.assert_allclose(stats.std, ref.std(1), rtol=1e-3)
    np.testing.assert_allclose(stats.mean, ref.mean(1), rtol=1e-7)


def test_stats_worker_merge_is_exact() -> None:
    x = torch.randn(40, 3, 5, 5, dtype=torch.float32) * 3
    whole, left, right = ChannelStats(3), ChannelStats(3), ChannelStats(3)
    whole.update(x)
    left.update(x[:13])
    right.update(x[13:])
    merged = right.merge(left)
    assert np.array_equal(merged.counts, whole.counts)  # the fixed bins add up exactly
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-10)


# -- receptive fields -------------------------------------------------------------------------------------
def test_resnet18_receptive_fields_follow_the_graph() -> None:
    model = ResNet18(widths=(2, 4, 8, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scope = cs.Scope(model, input_shape=(3, 512, 512))
    expected = {"layer1": (43, 4), "layer2": (99, 8), "layer3": (211, 16), "layer4": (435, 32)}
    for layer, (size, stride) in expected.items():
        rf = scope.receptive_field(layer)
        assert (rf.size, rf.stride) == ((size, size), (stride, stride)), layer
        assert rf.box(0, 0) == (-(size // 2), -(size // 2), size // 2 + 1, size // 2 + 1)  # centred on 0
    rf = scope.receptive_field("layer4")
    assert rf.box(15, 15) == (480 - 217, 480 - 217, 480 + 218, 480 + 218)
    assert rf.box(15, 15, clip=True) == (263, 263, 512, 512)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights untouched
    assert model.layer1[0].conv1.weight.grad is None


def test_dilated_net_receptive_field() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.ReLU(),  # 5 px, stride 1
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),  # 5 + 2 = 7 px, stride 2
        nn.Conv2d(4, 4, 3, padding=3, dilation=3),  # 7 + 2 * 3 * 2 = 19 px, stride 2
        nn.MaxPool2d(3, stride=1, padding=1, dilation=2),  # 19 + 2 * 2 * 2 = 27 px
    )  # fmt: skip
    scope = cs.Scope(net, input_shape=(3, 40, 40))
    got = {layer: scope.receptive_field(layer) for layer in ("0", "2", "4", "5")}
    assert {k: (v.size[0], v.stride[0]) for k, v in got.items()} == {
        "0": (5, 1),
        "2": (7, 2),
        "4": (19, 2),
        "5": (27, 2),
    }
    assert got["4"].box(0, 0) == (-9, -9, 10, 10)
    assert got["5"].box(1, 2) == (4 - 11, 2 - 11, 4 + 16, 2 + 16)  # pool unit 0: layer-4 units -1, 1, 3


def test_keras_same_padding_receptive_field(keras: Any) -> None:
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Conv2D(2, 3, strides=2, padding="same", name="c0"),  # pads 0 left, 1 right
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c1"),
        keras.layers.Conv2D(2, 3, strides=2, padding="same", name="c2"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])  # fmt: skip
    weights = [w.copy() for w in model.get_weights()]
    scope = cs.Scope(model)
    expected = {
        "c0": (3, 2, (0, 0)),
        "pool": (5, 4, (0, 0)),
        "c1": (13, 4, (-4, -4)),
        "c2": (21, 8, (-4, -4)),
    }
    for layer, (size, stride, offset) in expected.items():
        rf = scope.receptive_field(layer)
        assert (rf.size, rf.stride, rf.offset) == ((size, size), (stride, stride), offset), layer
    assert scope.receptive_field("c2").box(3, 3, clip=True) == (20, 20, 32, 32)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


# -- pictures -------------------------------------------------------------------------------------------
def test_patches_crop_at_receptive_field_boxes() -> None:
    scope = cs.Scope(small_cnn(), input_shape=(3, 12, 12))
    data = images(9, seed=11)
    scan = scope.scan(data, layers="3", k=4, progress=False)
    rf = scope.receptive_field("3")
    assert (rf.size, rf.stride) == ((8, 8), (2, 2))  # 3 + 1 (pool) + 2 * 2
    top = scan.top("3", 1)
    pictures = top.images()
    assert [p.size for p in pictures] == [(12, 12)] * 4
    assert np.array_equal(np.asarray(pictures[0]), data[top.ids[0]])  # the image the model saw
    for patch, (y, x) in zip(scan.patches("3", 1), top.positions, strict=True):
        left, top_, right, bottom = rf.box(y, x, clip=True)
        assert patch.size == (right - left, bottom - top_)
    assert all(p.size == (8, 8) for p in scan.patches("3", 1, border="pad"))
    assert isinstance(top.grid(), Image.Image) and isinstance(top.grid(patches=True), Image.Image)
