"""``backend="ray"`` (issue 8, point 6): the same ShardScanner on a local Ray Data actor pool gives results
bit-identical to the local backend — tie order included — for PyTorch and Keras models, skips the shards a
store already holds, and runs from the CLI. One local Ray (1 CPU) for the whole file: start-up is slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs
from keras_nets import small_keras_cnn
from test_dataset_store import make_folder, same

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the workers: conv kernels are picked by thread count too
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        ray.shutdown()


def torch_net(dead: bool = True) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    )  # fmt: skip
    if dead:  # channel 2 of conv "3" is -1 everywhere for every image: all ties
        with torch.no_grad():
            net[3].weight[2].zero_()
            net[3].bias[2] = -1.0
    return net


def test_ray_equals_local_torch_with_store_resume(local_ray: None, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "data", n=30)
    scope = cs.Scope(torch_net(), input_shape=(3, 12, 12))
    options: dict[str, Any] = {"k": 4, "shard_size": 8, "batch_size": 4, "progress": False}
    local = scope.scan(folder, **options)
    store = tmp_path / "scan"
    remote = scope.scan(folder, backend="ray", store=store, **options)
    same(local, remote)
    assert remote.count == 30 and [i for i, _ in remote.skipped] == ["a/broken.png"]  # skipped on a worker
    dead = local.top("3", 2)  # a constant map (zero weights, bias -1): every image ties
    assert remote.top("3", 2).ids == dead.ids == sorted(dead.ids) and dead.values.tolist() == [-1.0] * 4
    (store / "parts" / "shard-00002.parquet").unlink()
    resumed = scope.scan(folder, backend="ray", store=store, **options)
    assert resumed.resumed == 3
    same(local, resumed)
    same(local, cs.Scan.open(store))


def test_ray_equals_local_keras(local_ray: None, keras: Any) -> None:
    model = small_keras_cnn(keras)
    data = np.random.default_rng(4).integers(0, 4, (17, 10, 10, 3), dtype=np.uint8) * 60  # many ties
    scope = cs.Scope(model)
    local = scope.scan(data, k=5, shard_size=6, batch_size=3, progress=False)
    remote = scope.scan(data, k=5, shard_size=6, batch_size=3, backend="ray", progress=False)
    same(local, remote)


def test_ray_cli_and_stream_refused(local_ray: None, keras: Any, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from convscope.cli import main

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv_0"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    path = tmp_path / "m.keras"
    model.save(path)
    folder = make_folder(tmp_path / "data", n=12)
    argv = ["scan", str(path), str(folder), "-o", str(tmp_path / "scan"), "-k", "3", "--shard-size", "4",
            "--batch-size", "4"]  # fmt: skip
    assert main([*argv, "--backend", "ray"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "scanned 12 images (1 skipped) over 1 layers" in out
    assert sorted(ln.split(" (")[0] for ln in err.splitlines() if ln.startswith("scan: shard")) == [
        f"scan: shard {i}/4 done" for i in (1, 2, 3, 4)
    ]  # one line per finished shard (not a tty), never bar frames
    assert "%|" not in err
    local = cs.Scope(model).scan(folder, k=3, shard_size=4, batch_size=4, progress=False)
    same(local, cs.Scan.open(tmp_path / "scan"))
    assert main([*argv, "--overwrite", "--ray-address", "127.0.0.1:1"]) == 2  # without --backend ray
    assert "needs --backend ray" in capsys.readouterr().err
    scope = cs.Scope(torch_net(), input_shape=(3, 12, 12))
    with pytest.raises(cs.OptionError, match="one-pass stream"):
        scope.scan(iter([torch.zeros(2, 3, 12, 12)]), backend="ray", progress=False)
