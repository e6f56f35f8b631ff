"""Keras bridge (issue 10): start-up, and per-call overhead of a TensorFlow-backend Scope vs torch, side by side.

``python bench/bench_bridge.py`` runs in a TensorFlow-backend process. It times ``cs.Scope(model)``
(worker spawn + model transfer) for the seed ConvNet and VGG16, then saves the VGG16 as ``.keras`` and
starts a *reference* process on the torch backend holding a plain ``Scope`` of the same file, driven by
one-line commands on a pipe. Calls alternate bridged, reference, bridged, reference, ... so that load
drift hits both alike (the median of the per-pair ratios is the most load-robust figure); the reference
reports the time of the call itself (no pipe), the bridged side the whole call as a user sees it. Both engines run with the same torch thread count. Target:
bridged / reference ≤ 1.10. The bridge's own cost per call (the call as the user sees it minus the
time the worker spent inside ``Scope``: fingerprint, transfer, wake-ups) is printed too; unlike the
ratios it does not depend on how fast the engines happened to run. Two references run: a default
torch process (what a user's own process is) and one with the worker's glibc malloc settings
(:data:`convscope.bridge.client.MALLOC`, which spare a repeated call its page faults), so that the
worker's tuning and the bridge's cost can be told apart.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from convscope.bridge.client import MALLOC

REPEATS = 9
THREADS = int(os.environ.get("CONVSCOPE_BENCH_THREADS", min(os.cpu_count() or 1, 4)))
SIZE = 224


def _calls(scope, model):  # type: ignore[no-untyped-def]
    import numpy as np

    convs = [layer.name for layer in model.layers if "conv" in layer.name]
    assert len(convs) == 13, convs
    x = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    return {"activations_13_conv": lambda: scope.activations(x, layers=convs),
            "gradcam": lambda: scope.attribute(x, method="gradcam", target=1)}  # fmt: skip


def reference(path: str) -> None:
    """The torch side: ``Scope`` of the saved model; answers each command line with the call's seconds."""
    import keras
    import torch

    import convscope as cs

    torch.set_num_threads(THREADS)
    model = keras.saving.load_model(path, compile=False)
    calls = _calls(cs.Scope(model), model)
    print(f"ready {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        t = time.perf_counter()
        calls[line.strip()]()
        print(time.perf_counter() - t, flush=True)


def main() -> None:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    import convscope as cs

    load = [os.getloadavg()[0]]
    keras.utils.set_random_seed(0)
    convnet = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                                keras.layers.MaxPooling2D(), keras.layers.Conv2D(64, 3, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(10)])  # fmt: skip
    vgg = keras.applications.VGG16(weights=None, input_shape=(SIZE, SIZE, 3))
    startup = {}
    for name, m in (("ConvNet", convnet), ("VGG16", vgg)):
        t = time.perf_counter()
        scope = cs.Scope(m)
        startup[name] = time.perf_counter() - t
        if name == "ConvNet":
            scope.close()
    worker_threads = scope._client.request("threads", THREADS, what="bench")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vgg16.keras")
        vgg.save(path)
        env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        refs = {"torch": _Reference(path, env), "torch+malloc": _Reference(path, {**MALLOC, **env})}
        bridged = _calls(scope, vgg)
        times: dict[str, dict[str, list[float]]] = {k: {"bridged": [], "own": [], **{r: [] for r in refs}}
                                                    for k in bridged}  # fmt: skip
        for name, fn in bridged.items():
            fn(), [r.call(name) for r in refs.values()]  # warm-up
            for _ in range(REPEATS):
                t = time.perf_counter()
                fn()
                times[name]["bridged"].append(time.perf_counter() - t)
                times[name]["own"].append(times[name]["bridged"][-1] - scope._client.request("last_s", None, what="bench"))
                for r, ref in refs.items():
                    times[name][r].append(ref.call(name))
        ref_threads = {r: ref.close() for r, ref in refs.items()}
    scope.close()
    load.append(os.getloadavg()[0])

    print(f"torch threads: worker {worker_threads}, references {ref_threads}; "
          f"1-min load average {load[0]:.2f} at start, {load[1]:.2f} at end ({os.cpu_count()} CPUs)")  # fmt: skip
    print(f"start-up (worker spawn + model transfer): ConvNet {startup['ConvNet']:.2f} s, "
          f"VGG16 {startup['VGG16']:.2f} s")  # fmt: skip
    for name, t in times.items():
        b, own = statistics.median(t["bridged"]), statistics.median(t["own"])
        print(f"VGG16 {SIZE}² {name}: bridged {b:.3f} s (medians of {REPEATS}, interleaved; the bridge's own time "
              f"{1e3 * own:.1f} ms/call, {own / statistics.median(t['torch']):.1%} of torch)")  # fmt: skip
        for r in refs:
            m = statistics.median(t[r])
            paired = statistics.median(x / y for x, y in zip(t["bridged"], t[r], strict=True))
            print(f"    vs {r:<12} {m:.3f} s -> {b / m:.3f}x, median of paired ratios {paired:.3f}x (target <= 1.10); "
                  f"{[round(v, 3) for v in t[r]]}")  # fmt: skip
        print(f"    bridged calls {[round(v, 3) for v in t['bridged']]}")


class _Reference:
    """A torch-backend process holding a plain ``Scope`` of the saved model, driven line by line."""

    def __init__(self, path: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--reference", path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        ready = self.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        self.threads = int(ready[1])

    def call(self, name: str) -> float:
        self.stdin.write(name + "\n")
        self.stdin.flush()
        return float(self.stdout.readline())

    def close(self) -> int:
        self.stdin.close()
        self.proc.wait(60)
        return self.threads


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reference"]:
        reference(sys.argv[2])
    else:
        main()
