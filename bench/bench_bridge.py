"""Keras bridge (issue 10): start-up, and per-call overhead of a TensorFlow-backend Scope vs torch, side by side.

``python bench/bench_bridge.py`` runs in a TensorFlow-backend process. It times ``cs.Scope(model)``
(worker spawn + model transfer) for the seed ConvNet and VGG16, then saves the VGG16 as ``.keras`` and
starts a *reference* process on the torch backend holding a plain ``Scope`` of the same file, driven by
one-line commands on a pipe. Calls alternate bridged, reference, bridged, reference, ... so that load
drift hits both alike (the median of the per-pair ratios is the most load-robust figure); the reference
reports the time of the call itself (no pipe), the bridged side the whole call as a user sees it. Both engines run with the same torch thread count. Target:
bridged / reference ≤ 1.10.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

REPEATS = 5
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
        ref = subprocess.Popen([sys.executable, __file__, "--reference", path], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
        assert ref.stdin is not None and ref.stdout is not None
        ready = ref.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        ref_threads = int(ready[1])

        def on_reference(name: str) -> float:
            ref.stdin.write(name + "\n")  # type: ignore[union-attr]
            ref.stdin.flush()  # type: ignore[union-attr]
            return float(ref.stdout.readline())  # type: ignore[union-attr]

        bridged = _calls(scope, vgg)
        times: dict[str, dict[str, list[float]]] = {k: {"bridged": [], "torch": []} for k in bridged}
        for name, fn in bridged.items():
            fn(), on_reference(name)  # warm-up
            for _ in range(REPEATS):
                t = time.perf_counter()
                fn()
                times[name]["bridged"].append(time.perf_counter() - t)
                times[name]["torch"].append(on_reference(name))
        ref.stdin.close()
        ref.wait(60)
    scope.close()
    load.append(os.getloadavg()[0])

    print(f"torch threads: worker {worker_threads}, reference {ref_threads}; "
          f"1-min load average {load[0]:.2f} at start, {load[1]:.2f} at end ({os.cpu_count()} CPUs)")  # fmt: skip
    print(f"start-up (worker spawn + model transfer): ConvNet {startup['ConvNet']:.2f} s, "
          f"VGG16 {startup['VGG16']:.2f} s")  # fmt: skip
    for name, t in times.items():
        b, r = statistics.median(t["bridged"]), statistics.median(t["torch"])
        paired = statistics.median(x / y for x, y in zip(t["bridged"], t["torch"], strict=True))
        print(f"VGG16 {SIZE}² {name}: bridged {b:.3f} s vs torch {r:.3f} s (medians of {REPEATS}, interleaved) "
              f"-> {b / r:.3f}x, median of paired ratios {paired:.3f}x (target <= 1.10); "
              f"bridged {[round(v, 3) for v in t['bridged']]}, "
              f"torch {[round(v, 3) for v in t['torch']]}")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reference"]:
        reference(sys.argv[2])
    else:
        main()
