"""Activation maximisation cost and strength on a VGG16-like net (random init, eval, 128x128, one channel).

Goal: one step of the default recipe (Fourier image, colour decorrelation, pad/jitter/scale/rotate, the
redirected-ReLU pass, Adam) costs <= 1.3x one forward+backward of the model truncated after the target
layer, on the same batch. A step's cost is measured as (time of a long run - time of a short run) /
(extra steps), so the one-off set-up (shape probe, hooks) cancels. Also: the objective each recipe
reaches at equal steps.

Run: ``KERAS_BACKEND=torch .venv/bin/python bench/bench_maximize.py [steps]``
"""

from __future__ import annotations

import sys
import time

import torch
from common import VGG16, interleaved
from torch import nn

import convscope as cs
from convscope.optim import objectives

LAYER, INDEX, CHANNEL, SIZE = "features.17", 17, 7, 128  # conv4_1, pre-ReLU


def truncated_step(model: VGG16, *, frozen: bool) -> tuple[object, object]:
    """One forward+backward of ``features[:18]`` for a (1, 3, 128, 128) input (channel mean as loss)."""
    trunk = nn.Sequential(*list(model.features)[: INDEX + 1])
    params = list(trunk.parameters())
    x = torch.rand(1, 3, SIZE, SIZE, requires_grad=True)

    def step() -> object:
        for p in params:
            p.requires_grad_(not frozen)
            p.grad = None
        x.grad = None
        loss = -trunk(x)[:, CHANNEL].mean()
        loss.backward()
        for p in params:
            p.requires_grad_(True)
        return loss

    return step, trunk


def per_step(scope: cs.Scope, recipe: str, short: int, long: int) -> dict[str, float]:
    obj = objectives.channel(LAYER, CHANNEL)

    def run(steps: int) -> object:
        return scope.maximize(obj, steps=steps, size=SIZE, recipe=recipe, progress=False)

    t = interleaved({"short": lambda: run(short), "long": lambda: run(long)}, repeats=3, warmup=1)
    return {"step_s": (t["long"] - t["short"]) / (long - short), "setup_s": t["short"]}


def main(steps: int = 48) -> None:
    torch.manual_seed(0)
    model = VGG16().eval()
    scope = cs.Scope(model, input_shape=(3, SIZE, SIZE))
    frozen, _ = truncated_step(model, frozen=True)
    trainable, _ = truncated_step(model, frozen=False)
    base = interleaved({"frozen": frozen, "trainable": trainable}, repeats=7, warmup=2)
    print(f"threads={torch.get_num_threads()}  VGG16 random init, {LAYER} (conv4_1) channel {CHANNEL}, {SIZE}x{SIZE}")
    print(f"truncated fwd+bwd, params frozen:    {base['frozen'] * 1e3:7.1f} ms")
    print(f"truncated fwd+bwd, params trainable: {base['trainable'] * 1e3:7.1f} ms")
    for recipe in ("default", "plain"):
        r = per_step(scope, recipe, short=2, long=12)
        print(f"maximize step, recipe={recipe:8s}     {r['step_s'] * 1e3:7.1f} ms   ratio vs frozen "
              f"{r['step_s'] / base['frozen']:.2f}x, vs trainable {r['step_s'] / base['trainable']:.2f}x "
              f"(set-up + 2 steps {r['setup_s']:.2f} s)")  # fmt: skip

    start = time.perf_counter()
    reached = {}
    for recipe in ("default", "plain"):
        vis = scope.maximize(objectives.channel(LAYER, [CHANNEL, CHANNEL + 1, CHANNEL + 2]), steps=steps,
                             size=SIZE, recipe=recipe, progress=False)  # fmt: skip
        reached[recipe] = vis.values
        first = vis.history[0].mean()
        print(f"reached after {steps} steps, recipe={recipe:8s}: {', '.join(f'{v:.3f}' for v in vis.values)} "
              f"(start {first:.3f})")  # fmt: skip
    ratio = reached["default"].mean() / reached["plain"].mean()
    print(f"reached activation default / plain at {steps} steps: {ratio:.2f}x ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48)
