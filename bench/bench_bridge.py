"""Keras bridge (issue 10): start-up and per-call overhead of a TensorFlow-backend Scope vs torch in-process.

Each side runs in its own interpreter (Keras picks its backend once per process): the TensorFlow side
times ``cs.Scope(model)`` (worker spawn + model transfer) and the bridged calls; the torch side times the
same calls on the same architecture and weights in-process. Target: bridged / torch ≤ 1.10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SIDE = sys.argv[1] if len(sys.argv) > 1 else None
REPEATS = 3


def side(backend: str) -> dict[str, float]:
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    import convscope as cs

    sys.path.insert(0, os.path.dirname(__file__))
    from common import interleaved

    out: dict[str, float] = {}
    convnet = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                                keras.layers.MaxPooling2D(), keras.layers.Conv2D(64, 3, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(10)])  # fmt: skip
    vgg = keras.applications.VGG16(weights=None)
    keras.utils.set_random_seed(0)
    for name, m in (("convnet", convnet), ("vgg16", vgg)):
        t = time.perf_counter()
        s = cs.Scope(m)
        out[f"startup_{name}"] = time.perf_counter() - t
        if name == "convnet" and hasattr(s, "close"):
            s.close()
    convs = [layer.name for layer in vgg.layers if "conv" in layer.name]
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    out.update(interleaved({"activations_13_conv": lambda: s.activations(x, layers=convs),
                            "gradcam": lambda: s.attribute(x, method="gradcam", target=1)}, repeats=REPEATS))  # fmt: skip
    if hasattr(s, "close"):
        s.close()
    return out


if __name__ == "__main__":
    if SIDE is not None:
        print(json.dumps(side(SIDE)))
        sys.exit(0)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    results = {}
    for backend in ("torch", "tensorflow"):
        run = subprocess.run([sys.executable, __file__, backend], capture_output=True, text=True, env=env, check=False)
        if run.returncode != 0:
            print(f"bench_bridge: {backend} side failed:\n{run.stderr[-2000:]}")
            sys.exit(0)
        results[backend] = json.loads(run.stdout.strip().splitlines()[-1])
    tf_, torch_ = results["tensorflow"], results["torch"]
    print(f"start-up (spawn + transfer): ConvNet {tf_['startup_convnet']:.2f} s, VGG16 {tf_['startup_vgg16']:.2f} s")
    for call in ("activations_13_conv", "gradcam"):
        ratio = tf_[call] / torch_[call]
        print(f"VGG16 224² {call}: bridged {tf_[call]:.3f} s vs torch in-process {torch_[call]:.3f} s "
              f"-> {ratio:.2f}x (target <= 1.10)")  # fmt: skip
