"""Attribution speed on a plain PyTorch VGG16 (in-place ReLUs, random weights, CPU). Prints figures.

    .venv/bin/python bench/bench_attribution.py            # ~2-4 minutes on 2 cores
    .venv/bin/python bench/bench_attribution.py --size 112 --batch 4 --repeats 1   # quicker

Figures (median wall time of ``--repeats`` runs after one warm-up):

* one forward + backward: ``model(x)[:, c].sum().backward()`` with every parameter requiring grad
  (what a training step or a naive Grad-CAM pays), and the same with only the input requiring grad;
* Grad-CAM at batch 1 (default layer, which is cached after the first call) and per image at ``--batch``;
* Score-CAM masked passes: ``--channels`` channels scored with ``batch_size=32`` vs ``batch_size=1``
  (one pass per channel), at the default layer — the full 512 channels take minutes on a CPU;
* Integrated Gradients: ``--steps`` path points with ``batch_size=steps`` vs ``batch_size=1``.

No torchvision: the VGG16 below is written out (configuration "D" of Simonyan & Zisserman 2015).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import convscope as cs
from convscope.attribution.engine import Job
from convscope.attribution.perturbation import ScoreCAM
from convscope.attribution.targets import TargetSpec

_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(num_classes: int = 1000) -> nn.Module:
    """VGG16 with in-place ReLUs, laid out like torchvision's (``features``, ``avgpool``, ``classifier``)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(*layers))
    model.add_module("avgpool", nn.AdaptiveAvgPool2d(7))
    model.add_module("flatten", nn.Flatten())
    model.add_module("classifier", nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(4096, num_classes),
    ))  # fmt: skip
    return model.eval()


def timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (allocator, default-layer cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward(model: nn.Module, x: torch.Tensor, *, weights: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(weights)
    leaf = x.clone().requires_grad_(not weights)
    model(leaf)[:, 1].sum().backward()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)


def scorecam_passes(scope: cs.Scope, x: torch.Tensor, channels: int, batch_size: int) -> None:
    job = Job(scope.adapter, x, TargetSpec(1, len(x)), layer=scope.targets("features.30")[0], layer_name="features.30")
    p = job.layer_pass(grad=False)
    p.act = p.act[:, :channels]
    ScoreCAM(batch_size=batch_size).weights(p, job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input side (default 224)")
    parser.add_argument("--batch", type=int, default=8, help="batch for the per-image figure (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per figure (default 2)")
    parser.add_argument("--channels", type=int, default=32, help="Score-CAM channels timed (default 32)")
    parser.add_argument("--steps", type=int, default=16, help="Integrated Gradients steps (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = vgg16()
    scope = cs.Scope(model)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.rand(1, 3, args.size, args.size, generator=gen)
    xb = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    r = args.repeats
    print(f"VGG16, {args.size}x{args.size}, CPU, {torch.get_num_threads()} threads, median of {r} after warm-up")

    fb_full = timed(lambda: forward_backward(model, x1, weights=True), r)
    fb_input = timed(lambda: forward_backward(model, x1, weights=False), r)
    cam1 = timed(lambda: scope.attribute(x1, method="gradcam", target=1), r)
    camb = timed(lambda: scope.attribute(xb, method="gradcam", target=1), r) / args.batch
    print(f"forward+backward (weights+input grads) : {fb_full * 1e3:8.1f} ms")
    print(f"forward+backward (input grads only)    : {fb_input * 1e3:8.1f} ms")
    print(f"Grad-CAM, batch 1 (layer {scope.attribute(x1, method='gradcam').layer}) : {cam1 * 1e3:8.1f} ms"
          f"  = {cam1 / fb_full:.2f}x fwd+bwd (weights), {cam1 / fb_input:.2f}x fwd+bwd (input only)")
    print(f"Grad-CAM, batch {args.batch}, per image      : {camb * 1e3:8.1f} ms  = {camb / cam1:.2f}x batch-1 cost")

    k = args.channels
    one = timed(lambda: scorecam_passes(scope, x1, k, 1), max(1, r - 1))
    for size in (8, 32):
        batched = timed(lambda size=size: scorecam_passes(scope, x1, k, size), max(1, r - 1))
        print(f"Score-CAM masked passes, {k} channels: {one:6.2f} s one per channel, {batched:6.2f} s in batches "
              f"of {size:2d} -> {one / batched:.2f}x speed-up; full layer (512 ch) ~ {batched * 512 / k:.0f} s")

    s = args.steps
    ig1 = timed(lambda: scope.attribute(x1, method="integrated_gradients", target=1, steps=s, batch_size=1), 1)
    for size in (8, s):
        igb = timed(lambda size=size: scope.attribute(x1, method="integrated_gradients", target=1, steps=s,
                                                       batch_size=size), 1)  # fmt: skip
        print(f"Integrated Gradients, {s} steps: {ig1:6.2f} s one step per pass, {igb:6.2f} s in batches of "
              f"{size:2d} -> {ig1 / igb:.2f}x speed-up")

if __name__ == "__main__":
    main()
