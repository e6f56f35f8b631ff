"""Capturing all 13 conv outputs of VGG16 vs a bare forward (PyTorch and Keras), and the seed way.

Goal: convscope's one-pass capture costs <= 1.05x a bare forward. The seed way builds one Keras
sub-model per layer and runs each.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from common import VGG16, interleaved

import convscope as cs


def bench_torch(size: int) -> dict[str, float]:
    model = VGG16().eval()
    scope = cs.Scope(model)
    convs = [h.name for h in scope.layers(torch.nn.Conv2d)]
    assert len(convs) == 13
    x = torch.rand(1, 3, size, size)

    def bare() -> object:
        with torch.no_grad():
            return model(x)

    t = interleaved({"bare": bare, "convscope": lambda: scope.activations(x, layers=convs)})
    return {"bare_s": t["bare"], "capture_s": t["convscope"], "ratio": t["convscope"] / t["bare"]}


def bench_keras(size: int) -> dict[str, float]:
    import keras

    model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    scope = cs.Scope(model)
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    x = np.random.rand(1, size, size, 3).astype("float32")
    xt = torch.from_numpy(x)
    subs = [keras.Model(model.inputs, model.get_layer(n).output) for n in convs]

    def bare() -> object:
        with torch.no_grad():
            return model(xt, training=False)

    def seed_way() -> object:
        return [s.predict(x, verbose=0) for s in subs]

    t = interleaved({"bare": bare, "convscope": lambda: scope.activations(x, layers=convs), "seed": seed_way}, repeats=3)
    return {"bare_s": t["bare"], "capture_s": t["convscope"], "seed_s": t["seed"],
            "ratio": t["convscope"] / t["bare"], "seed_ratio": t["seed"] / t["bare"]}  # fmt: skip


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 224
    torch.manual_seed(0)
    r = bench_torch(size)
    print(f"VGG16 torch {size}²: bare {r['bare_s']*1e3:.0f} ms, capture 13 convs {r['capture_s']*1e3:.0f} ms "
          f"-> ratio {r['ratio']:.3f} (goal <= 1.05)")  # fmt: skip
    k = bench_keras(size)
    print(f"VGG16 keras {size}²: bare {k['bare_s']*1e3:.0f} ms, capture {k['capture_s']*1e3:.0f} ms -> ratio "
          f"{k['ratio']:.3f} (goal <= 1.05); seed way (13 sub-models) {k['seed_s']*1e3:.0f} ms = "
          f"{k['seed_ratio']:.1f}x bare")  # fmt: skip


if __name__ == "__main__":
    main()
