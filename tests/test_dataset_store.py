"""Scan stores (issue 8, points 4-5 and 7): layout, atomic parts, resume, a real SIGKILL, mismatches,
``Scan.open`` without the model, shard/batch-size invariance, mask patches and the ``scan``/``top`` CLI.

Run as a script (``python test_dataset_store.py FOLDER STORE``) it is the subprocess the SIGKILL test kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope as cs
from convscope.dataset.shard import By
from keras_nets import small_keras_cnn


class Slow(nn.Module):
    """Identity that sleeps per batch when ``CONVSCOPE_TEST_SLOW`` is set (so a kill lands mid-scan)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(float(os.environ.get("CONVSCOPE_TEST_SLOW", "0")))
        return x


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        Slow(), nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    )  # fmt: skip


def make_folder(root: Path, n: int = 20, seed: int = 0) -> Path:
    data = np.random.default_rng(seed).integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
    for i in range(n):
        path = root / ("ab"[i % 2]) / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data[i]).save(path)
    (root / "a" / "broken.png").write_bytes(b"not an image")
    return root


def same(a: Any, b: Any) -> None:
    """Two scans hold bit-identical tables and statistics."""
    assert list(a.layers) == list(b.layers)
    for name in a.layers:
        la, lb = a.layers[name], b.layers[name]
        for by in By:
            for f in ("values", "seqs", "positions"):
                assert torch.equal(getattr(la.top[by], f), getattr(lb.top[by], f)), (name, by, f)
        for f in ("mean", "m2", "min", "max", "positive", "counts"):
            assert np.array_equal(getattr(la.stats, f), getattr(lb.stats, f)), (name, f)
        assert la.stats.count == lb.stats.count and la.grid == lb.grid
        for c in range(la.stats.channels):
            assert a.top(name, c).ids == b.top(name, c).ids


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data")


def scope_of(seed: int = 0, **options: Any) -> Any:
    return cs.Scope(net(seed), input_shape=(3, 12, 12), **options)


# -- layout, reopening ----------------------------------------------------------------------------------
def test_store_layout_and_open_without_the_model(folder: Path, tmp_path: Path) -> None:
    store = tmp_path / "scan"
    scan = scope_of().scan(folder, k=4, store=store, shard_size=6, batch_size=3, progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    assert (
        manifest["complete"] and manifest["k"] == 4 and manifest["shards"] == 4 and manifest["images"] == 20
    )
    assert manifest["layers"] == ["1", "4"] and manifest["statistic"] == ["max", "mean"]
    assert len(manifest["model"]) == 64 and manifest["data"]["kind"] == "folder"
    assert manifest["preprocessing"]["resize"] == "squash" and manifest["convscope_version"] == cs.__version__
    assert manifest["skipped"][0][0] == "a/broken.png"
    assert manifest["receptive_fields"]["4"]["size"] == [8, 8]
    assert sorted(p.name for p in (store / "parts").iterdir()) == [f"shard-{i:05d}.parquet" for i in range(4)]
    assert not [p for p in store.rglob("*") if ".tmp-" in p.name]  # temporaries all renamed
    assert {p.name for p in store.iterdir()} == {"manifest.json", "parts", "result.parquet", "images.parquet"}

    opened = cs.Scan.open(store)
    assert opened.scope is None and opened.count == 20 and opened.classes == ["a", "b"]
    same(scan, opened)
    assert opened.skipped == scan.skipped and opened.skipped[0][0] == "a/broken.png"
    top, again = scan.top("4", 2, by="mean"), opened.top("4", 2, by="mean")
    assert again.labels.tolist() == top.labels.tolist() == [int(i.startswith("b")) for i in top.ids]
    rf, rf_opened = scan.receptive_field("4"), opened.receptive_field("4")
    assert rf == rf_opened and [rf_opened.box(*p) for p in again.positions] == [
        rf.box(*p) for p in top.positions
    ]
    assert [np.asarray(i).tolist() for i in again.images()] == [np.asarray(i).tolist() for i in top.images()]
    assert [p.size for p in opened.patches("4", 2)] == [p.size for p in scan.patches("4", 2)]
    np.testing.assert_array_equal(opened.stats("1").quantile(0.5), scan.stats("1").quantile(0.5))

    moved = tmp_path / "moved"
    folder.rename(moved)  # the store keeps ids, not pixels: say where the images went
    with pytest.raises(cs.InputError, match="not reachable"):
        cs.Scan.open(store).top("4", 2).images()
    assert len(cs.Scan.open(store, root=moved).top("4", 2).images()) == 4
    with pytest.raises(cs.OptionError, match="needs the activation maps"):
        cs.Scan.open(store, root=moved).patches("4", 2, mode="mask")


def test_resume_skips_finished_shards(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "scan"
    whole = scope_of().scan(folder, k=3, store=store, shard_size=4, progress=False)
    parts = sorted((store / "parts").iterdir())
    assert len(parts) == 6  # 21 files (one unreadable) in shards of 4
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}
    parts[2].unlink()  # as if the scan had stopped before shard 2
    calls = []
    scope = scope_of()
    scope.model[1].register_forward_hook(
        lambda m, i, o: calls.append(len(i[0])) if not torch.is_grad_enabled() else None
    )
    resumed = scope.scan(folder, k=3, store=store, shard_size=4, progress=True)
    assert "resuming: 5 of 6 shards already done" in capsys.readouterr().err
    assert sum(calls) == 4 and resumed.resumed == 5  # only shard 2's four images were forwarded
    same(whole, resumed)
    assert {p.name: p.stat().st_mtime_ns for p in parts if p != parts[2]} == {
        k: v for k, v in stamps.items() if k != parts[2].name}  # fmt: skip


def test_sigkill_midway_then_resume_equals_uninterrupted(folder: Path, tmp_path: Path) -> None:
    store = tmp_path / "killed"
    env = {**os.environ, "CONVSCOPE_TEST_SLOW": "0.25", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, __file__, str(folder), str(store)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list((store / "parts").glob("shard-*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = list((store / "parts").glob("shard-*.parquet"))
    assert 1 <= len(done) < 11 and not json.loads((store / "manifest.json").read_text())["complete"]
    resumed = scope_of().scan(folder, k=3, store=store, shard_size=2, batch_size=1, progress=False)
    assert resumed.resumed >= 1
    uninterrupted = scope_of().scan(
        folder, k=3, store=tmp_path / "whole", shard_size=2, batch_size=1, progress=False
    )
    same(resumed, uninterrupted)
    same(cs.Scan.open(store), uninterrupted)


# -- mismatches -----------------------------------------------------------------------------------------
def test_mismatch_errors_name_what_differs(folder: Path, tmp_path: Path) -> None:
    store = tmp_path / "scan"
    scope_of().scan(folder, layers="4", k=3, store=store, shard_size=8, progress=False)
    cases = [
        (scope_of(seed=1), {}, "model (architecture or weights)"),
        (scope_of(mean=0.5), {}, "preprocessing"),
        (scope_of(), {"k": 4}, "k: stored 3, now 4"),
        (scope_of(), {"layers": ["1", "4"]}, "layer set"),
        (scope_of(), {"shard_size": 5}, "shard size"),
    ]
    for scope, change, what in cases:
        options = {"layers": "4", "k": 3, "shard_size": 8, **change}
        with pytest.raises(cs.StoreMismatchError, match="what differs") as info:
            scope.scan(folder, store=store, progress=False, **options)
        assert what in str(info.value) and "overwrite=True" in str(info.value)
        assert isinstance(info.value, cs.ConvscopeError)
    with pytest.raises(cs.StoreMismatchError, match="data"):
        scope_of().scan(make_folder(tmp_path / "other", n=9, seed=3), layers="4", k=3, store=store,
                        shard_size=8, progress=False)  # fmt: skip
    fresh = scope_of(seed=1).scan(folder, layers="4", k=4, store=store, overwrite=True, progress=False)
    same(fresh, cs.Scan.open(store))
    assert json.loads((store / "manifest.json").read_text())["k"] == 4
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(cs.StoreMismatchError, match="other files"):
        scope_of().scan(folder, store=tmp_path / "busy", progress=False)


# -- invariance ----------------------------------------------------------------------------------------
def test_results_do_not_depend_on_shard_size() -> None:
    """Bit-identical for every shard size: shards are read in whole batches aligned to their start, so the
    forward batches are the same (a shard size that is not a multiple of the batch size is refused; the
    default 1024 is rounded down to one). Across batch sizes the backend's conv kernels themselves differ
    by ~1 ulp (oneDNN picks kernels by batch size; plain inference does the same), so values agree to
    float32 rounding there. Statistics merge in another grouping: mean/M2 agree to the last bits."""
    from convscope.dataset.driver import shard_plan

    data = np.random.default_rng(1).integers(0, 4, (23, 12, 12, 3), dtype=np.uint8) * 60  # many ties
    scope = scope_of()
    ref = scope.scan(data, k=5, shard_size=1024, batch_size=4, progress=False)
    for shard_size, batch_size, exact in ((4, 4, True), (8, 4, True), (12, 4, True), (None, 4, True), (3, 8, False),
                                          (1, 1, False)):  # fmt: skip
        other = scope.scan(data, k=5, shard_size=shard_size, batch_size=batch_size, progress=False)
        for name in ref.layers:
            for by in By:
                a, b = ref.layers[name].top[by], other.layers[name].top[by]
                if exact:
                    assert all(
                        torch.equal(getattr(a, f), getattr(b, f)) for f in ("values", "seqs", "positions")
                    )
                else:
                    torch.testing.assert_close(b.values, a.values, rtol=1e-5, atol=1e-6)
            a, b = ref.stats(name), other.stats(name)
            if exact:
                assert np.array_equal(a.counts, b.counts) and np.array_equal(a.positive, b.positive)
                assert np.array_equal(a.min, b.min) and np.array_equal(a.max, b.max)
            assert a.count == b.count
            np.testing.assert_allclose(b.mean, a.mean, rtol=1e-6, atol=1e-9)  # merge order: last bits only
            np.testing.assert_allclose(b.m2, a.m2, rtol=1e-6)
    with pytest.raises(
        cs.OptionError, match=r"shard_size=5 is not a multiple of batch_size=4.*shard_size=4 or 8"
    ):
        scope.scan(data, k=5, shard_size=5, batch_size=4, progress=False)
    assert (shard_plan(100, None), shard_plan(100, 1024), shard_plan(64, 1024), shard_plan(2000, None)) == (
        1000, 1000, 1024, 2000)  # fmt: skip

    from torch.utils.data import DataLoader, TensorDataset  # a stream: shards cut from the batches it gives

    x = scope.prepare(data)
    stream = scope.scan(DataLoader(TensorDataset(x, torch.arange(23) % 2), batch_size=4), k=5, shard_size=8,
                        progress=False)  # fmt: skip
    assert all(torch.equal(stream.layers["4"].top[by].seqs, ref.layers["4"].top[by].seqs) for by in By)


# -- Keras ------------------------------------------------------------------------------------------------
def test_keras_store_resume_and_open(keras: Any, tmp_path: Path) -> None:
    model = small_keras_cnn(keras)
    data = np.random.default_rng(4).integers(0, 256, (17, 10, 10, 3), dtype=np.uint8)
    store = tmp_path / "scan"
    scope = cs.Scope(model)
    scan = scope.scan(data, k=4, store=store, shard_size=6, batch_size=3, progress=False)
    (store / "parts" / "shard-00001.parquet").unlink()
    resumed = scope.scan(data, k=4, store=store, shard_size=6, batch_size=3, progress=False)
    assert resumed.resumed == 2
    same(scan, resumed)
    opened = cs.Scan.open(store)
    same(scan, opened)
    assert opened.receptive_field("conv_1") == scope.receptive_field("conv_1")
    assert opened.receptive_field("conv_1").size == (8, 8)
    with pytest.raises(cs.InputError, match="pixels are not in the store"):
        opened.top("conv_1", 0).images()
    again = cs.Scan.open(store, data=data).top("conv_1", 0)
    assert np.array_equal(np.asarray(again.images()[0]), data[again.ids[0]])
    keras.utils.set_random_seed(3)
    other = keras.models.clone_model(model)  # same architecture, other weights
    with pytest.raises(cs.StoreMismatchError, match="model"):
        cs.Scope(other).scan(data, k=4, store=store, shard_size=6, progress=False)


# -- mask patches -----------------------------------------------------------------------------------------
def test_mask_patches_show_where_the_map_is_high() -> None:
    data = np.random.default_rng(5).integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    scope = scope_of()
    scan = scope.scan(data, layers="5", k=3, progress=False)  # the ReLU after the second conv: 6x6 maps
    calls = []
    scope.model[1].register_forward_hook(
        lambda m, i, o: calls.append(len(i[0])) if not torch.is_grad_enabled() else None
    )
    c = int(np.argmax(scan.stats("5").fraction_positive))  # a lively channel
    masks = scan.patches("5", c, mode="mask", quantile=0.9)
    top = scan.top("5", c)
    threshold = scan.stats("5").quantile(0.9)[c]
    maps = scope.activations(data[top.ids], layers=["5"])["5"].channels_first()[:, c]
    calls.clear()
    for channel in range(5):  # every channel: images forwarded once, the maps cached for all channels
        scan.patches("5", channel, mode="mask")
    assert sum(calls) == len({i for c in range(5) for i in scan.top("5", c).ids} - set(top.ids))
    for mask, img, m in zip(masks, top.images(), maps, strict=True):
        assert mask.size == img.size == (12, 12)
        shown, orig = np.asarray(mask).astype(int), np.asarray(img).astype(int)
        up = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=(12, 12), mode="bilinear")[
            0, 0
        ]
        keep = up.numpy() > threshold
        assert keep.any() and not keep.all()
        assert np.array_equal(shown[keep], orig[keep])  # above the quantile: the image as it is
        dimmed = (orig[~keep] * np.float32(0.2) + np.array([0, 0, 40], np.float32)).clip(0, 255).astype(int)
        assert np.array_equal(shown[~keep], dimmed)  # below: dimmed to a fifth, tinted blue
    with pytest.raises(cs.OptionError, match="'crop'"):
        scan.patches("5", 1, mode="outline")
    assert scan.top("5", 1).grid(patches=True, mode="mask").size[0] > 0


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_scan_and_top_end_to_end(keras: Any, folder: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from convscope.cli import main

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv_0"),
                              keras.layers.Conv2D(3, 3, name="conv_1"), keras.layers.Flatten(),
                              keras.layers.Dense(2)])  # fmt: skip
    path = tmp_path / "m.keras"
    model.save(path)
    store = tmp_path / "scan"
    argv = [
        "scan",
        str(path),
        str(folder),
        "-o",
        str(store),
        "-k",
        "4",
        "--shard-size",
        "8",
        "--batch-size",
        "4",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "scanned 20 images (1 skipped) over 2 layers" in out
    assert [ln for ln in err.splitlines() if ln.startswith("scan: shard")][-1].startswith(
        "scan: shard 3/3 done"
    )
    assert main(argv) == 0
    assert "resuming: 3 of 3 shards already done" in capsys.readouterr().err
    assert main([*argv[:5], "-k", "5", "--shard-size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convscope: error:") and "k: stored 4, now 5" in err and "--overwrite" in err
    assert len(err.splitlines()) == 1
    out_png = tmp_path / "top.png"
    assert (
        main(["top", str(store), "--layer", "conv_1", "--channel", "2", "--by", "mean", "-o", str(out_png)])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("conv_1 channel 2: top 4 by mean ->") and Image.open(out_png).size[0] > 0
    ids = [ln.split("\t")[0] for ln in lines[:-1] if "\t" in ln]  # (a --scale note may precede them)
    assert ids == cs.Scan.open(store).top("conv_1", 2, by="mean").ids
    assert (
        main(
            [
                "top",
                str(store),
                "--layer",
                "conv_0",
                "--channel",
                "0",
                "--patches",
                "-o",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    for bad, says in ((["--layer", "conv_0", "--channel", "9"], "out of range"),
                      (["--layer", "conv_9", "--channel", "0"], "was not scanned"),
                      (["--layer", "conv_0", "--channel", "0", "--by", "median"], "'mean'")):  # fmt: skip
        assert main(["top", str(store), *bad, "-o", str(out_png)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("convscope: error:") and says in err, err
    assert main(["top", str(tmp_path), "--layer", "conv_0", "--channel", "0"]) == 2
    assert "not a scan store" in capsys.readouterr().err


if __name__ == "__main__":  # the subprocess the SIGKILL test kills midway
    torch.set_num_threads(1)  # as in the test process (conftest): conv kernels are picked by thread count
    scope_of().scan(
        Path(sys.argv[1]), k=3, store=Path(sys.argv[2]), shard_size=2, batch_size=1, progress=False
    )
