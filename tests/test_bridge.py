"""Issue 10: Keras models on the TensorFlow and JAX backends, through a torch-backend worker process.

The per-backend checks live in tests/bridge_checks.py and run in a fresh interpreter per backend
(Keras picks its backend once per process); both backends run at the same time, each checking the
seed ConvNet and keras.applications VGG16/ResNet50/MobileNetV2.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import convscope as cs
from convscope.bridge import needs_bridge

CHECKS = Path(__file__).with_name("bridge_checks.py")
EXPECTED = ["activations_equal_submodel_predict", "large_results_stay_intact", "summary_equals_keras", "gradcam_and_saliency_equal_tape",
            "graph_tensors_are_a_clear_error", "every_method_runs", "one_more_fit_step_is_reflected", "killed_worker_errors_then_restarts",
            "close_and_with", "unmovable_models_are_clear_errors"]  # fmt: skip
RUNS = {"tensorflow": ["apps"], "jax": ["apps"]}


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess[str]]:
    for name in ("tensorflow", "jax"):
        pytest.importorskip(name)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    procs = {b: subprocess.Popen([sys.executable, str(CHECKS), b, *extra], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
             for b, extra in RUNS.items()}  # fmt: skip
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    for b, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        out[b] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("backend", list(RUNS))
def test_every_check_passes(runs: dict[str, Any], backend: str) -> None:
    run = runs[backend]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    done = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("ok ")]
    assert [d for d in done if d != "application"] == EXPECTED
    if "apps" in RUNS[backend]:
        assert {line.split()[2] for line in run.stdout.splitlines() if line.startswith("ok application")} == {
            "VGG16", "ResNet50", "MobileNetV2"}
    assert "ALL OK" in run.stdout


@pytest.mark.parametrize("backend", list(RUNS))
def test_interpreter_exit_stops_the_worker(runs: dict[str, Any], backend: str) -> None:
    line = next(line for line in runs[backend].stdout.splitlines() if line.startswith("ATEXIT_PID="))
    pid = int(line.split("=")[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"worker {pid} outlived its interpreter")


def test_keras2_models_are_one_clear_error() -> None:
    fake = type("Sequential", (), {"__module__": "tf_keras.src.engine.sequential"})()
    with pytest.raises(cs.ConvscopeError, match="Keras 2.*Keras 3.*load_model"):
        cs.Scope(fake)


def test_torch_models_and_torch_keras_do_not_bridge(torch_net: Any) -> None:
    assert not needs_bridge(torch_net)
    assert not needs_bridge(None)
    assert type(cs.Scope(torch_net)).__name__ == "Scope"


def test_wire_moves_large_and_odd_buffers_intact() -> None:
    import torch

    from convscope.bridge import wire

    a, b = socket.socketpair()
    ours, theirs = Connection(a.detach()), Connection(b.detach())
    big = np.arange(3 * 2**20, dtype=np.float32).reshape(3, 1024, 1024)  # larger than a socket buffer
    value = {"big": big, "t": torch.arange(12.0).reshape(3, 4).T, "strided": big[:, ::7, 3], "empty": np.zeros(0)}
    sender = threading.Thread(target=wire.send, args=(ours, wire.encode(value)))
    sender.start()
    got = wire.recv(theirs)
    sender.join()
    np.testing.assert_array_equal(got["big"], big)
    np.testing.assert_array_equal(got["strided"], big[:, ::7, 3])
    assert torch.equal(got["t"], value["t"]) and got["empty"].shape == (0,)
    ours.close()
    with pytest.raises(EOFError):
        wire.recv(theirs)


class _SharedPair:
    """Both ends of a worker connection in one process, with the worker's Arena and the parent's Regions."""

    def __init__(self) -> None:
        from convscope.bridge import wire

        a, b = socket.socketpair()
        self.parent, self.worker = Connection(a.detach()), Connection(b.detach())
        self.regions, self.arena = wire.Regions(self.parent), wire.Arena(self.worker)

    def reply(self, value: Any) -> Any:
        from convscope.bridge import wire

        free, dropped = self.regions.offer()
        self.arena.forget(dropped)
        sender = threading.Thread(target=wire.send, args=(self.worker, wire.encode(value), self.arena, free))
        sender.start()
        got = wire.recv(self.parent, self.regions)
        sender.join()
        return got


def test_large_replies_share_memory_and_kept_results_are_never_overwritten() -> None:
    import gc

    import torch

    from convscope.bridge import wire

    if not wire.SHARED:
        pytest.skip("no memfd here: every reply uses the socket")
    pair = _SharedPair()
    a = np.arange(2**20, dtype=np.float32)  # 4 MB
    first = pair.reply({"a": a, "t": torch.arange(6.0).reshape(2, 3), "small": np.ones(3)})
    second = pair.reply({"a": a * 2})
    assert len(pair.arena.maps) == 2 and pair.regions.free == []  # both kept: two regions
    np.testing.assert_array_equal(first["a"], a)
    np.testing.assert_array_equal(second["a"], a * 2)
    assert torch.equal(first["t"], torch.arange(6.0).reshape(2, 3))
    # no copy on arrival: the parent's array is the worker's memory
    region = next(iter(pair.arena.maps.values()))
    region[:4] = np.frombuffer(np.float32(7).tobytes(), np.uint8)
    assert first["a"][0] == 7
    del first, region
    gc.collect()
    assert len(pair.regions.free) == 1
    third = pair.reply({"a": a + 1})
    assert len(pair.arena.maps) == 2 and pair.regions.free == []  # the released region was reused
    np.testing.assert_array_equal(third["a"], a + 1)
    np.testing.assert_array_equal(second["a"], a * 2)
    assert pair.reply({"small": np.arange(5)})["small"].tolist() == [0, 1, 2, 3, 4]  # by socket
    kept = [pair.reply({"a": a * i}) for i in range(wire.KEEP_FREE + 2)]
    for i, got in enumerate(kept):
        np.testing.assert_array_equal(got["a"], a * i)
    del kept, got, second, third
    gc.collect()
    assert sorted(pair.regions.free) == sorted(pair.regions.maps) and len(pair.regions.free) > wire.KEEP_FREE
    pair.reply({"x": 1})  # the next request unmaps all but KEEP_FREE, here and (told so) in the worker
    assert len(pair.regions.maps) == wire.KEEP_FREE and sorted(pair.arena.maps) == sorted(pair.regions.maps)


def test_a_reply_falls_back_to_the_socket_without_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.bridge import wire

    if not wire.SHARED:
        pytest.skip("no memfd here")

    def no_memory(*args: Any) -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "memfd_create", no_memory)
    pair = _SharedPair()
    a = np.arange(2**20, dtype=np.float32)
    np.testing.assert_array_equal(pair.reply({"a": a})["a"], a)
    assert pair.arena.maps == {} and pair.regions.maps == {}


def test_graph_tensors_are_refused_with_what_why_and_instead() -> None:
    import torch

    from convscope.bridge import GraphCannotCrossError, wire
    from convscope.bridge.worker import Worker

    graph = torch.ones(2, requires_grad=True) * 2
    with pytest.raises(GraphCannotCrossError):
        wire.encode({"x": graph}, refuse_graphs=True)
    wire.encode(torch.nn.Parameter(torch.ones(2)), refuse_graphs=True)  # a leaf (weights) travels
    data, raws = Worker().reply(7, True, [graph], [], "scope.record(...)")
    rid, ok, failure, _ = pickle.loads(data, buffers=raws)
    assert (rid, ok) == (7, False) and isinstance(failure.exc, GraphCannotCrossError)
    assert isinstance(failure.exc, cs.ConvscopeError)
    for part in ("scope.record(...)", "autograd graph", "process boundary", "scope.attribute", "KERAS_BACKEND=torch"):
        assert part in str(failure.exc), part
