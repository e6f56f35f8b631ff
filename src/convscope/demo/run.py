"""``convscope demo``: train the seed tutorial's digit ConvNet twins and show what they learned.

Writes ``demo-output/`` with both summaries, feature-map grids of both conv layers for a test digit,
the learned filters, an RGB example through ``keras.applications.VGG16(weights=None)``, and an
``index.html`` that shows everything (images embedded, so the page works on its own).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from convscope.demo.page import Figure, Section, write_page

Step = Callable[[Path, dict[str, Any]], Section]


def _save(img: Any, path: Path) -> Path:
    from convscope.render import save_png

    save_png(img, path)
    return path


def _twins(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.models import trained_twins

    start = time.perf_counter()
    twins = trained_twins(state.get("cache_dir"))
    state.update(keras=twins.keras_model, torch=twins.torch_model, split=twins.split)
    acc = twins.accuracies
    return Section(
        "Training",
        f"The seed tutorial's MNIST ConvNet, trained as a Keras 3 model (torch backend) and as a PyTorch "
        f"module on scikit-learn's handwritten digits (28×28): hold-out accuracy Keras {acc['keras']:.1%}, "
        f"PyTorch {acc['torch']:.1%}, {time.perf_counter() - start:.0f} s for both.",
    )


def _summaries(out: Path, state: dict[str, Any]) -> Section:
    from convscope.scope import Scope

    texts = []
    for fw in ("keras", "torch"):
        scope = Scope(state[fw], input_shape=(28, 28, 1) if fw == "keras" else (1, 28, 28))
        state[f"scope_{fw}"] = scope
        text = str(scope.summary())
        (out / f"summary_{fw}.txt").write_text(text + "\n", encoding="utf-8")
        texts.append(text)
    return Section("Model summaries", "scope.summary() for both twins.", pre=texts)


def _feature_maps(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.data import as_nchw, as_nhwc

    split = state["split"]
    digit = split.x_test[:1]
    label = int(split.y_test[0])
    figures = []
    for fw, x in (("keras", as_nhwc(digit)), ("torch", as_nchw(digit))):
        acts = state[f"scope_{fw}"].activations(x, layers=["conv_0", "conv_1"])  # one forward pass
        for name, cmap in (("conv_0", "gray"), ("conv_1", "viridis")):
            fm = acts[name]
            file = _save(fm.grid(cmap=cmap), out / f"maps_{fw}_{name}.png")
            c, h = fm.num_channels, fm.channels_first().shape[-1]
            figures.append(Figure(file, f"{fw} · {name}: {c} maps of {h}×{h} (test digit {label}, {cmap})"))
    _save(_digit_image(digit[0]), out / "test_digit.png")
    figures.insert(0, Figure(out / "test_digit.png", f"the test digit (label {label})"))
    return Section("Feature maps", "Every channel of both conv layers for one test digit.", figures=figures)


def _digit_image(img: Any) -> Any:
    import numpy as np
    from PIL import Image

    return _upscale(Image.fromarray((np.clip(img, 0, 1) * 255).astype("uint8")), 4)


def _filters(out: Path, state: dict[str, Any]) -> Section:
    figures = []
    for fw in ("keras", "torch"):
        scope = state[f"scope_{fw}"]
        for name, mode in (("conv_0", "mean"), ("conv_1", "mean")):
            f = scope.filters(name)
            file = _save(f.grid(mode=mode, normalize="symmetric"), out / f"filters_{fw}_{name}.png")
            figures.append(Figure(file, f"{fw} · {name}: {f.weights.shape[0]} kernels {f.weights.shape[1:]} ({mode})"))
    return Section("Learned filters", "Kernel weights (blue negative, red positive).", figures=figures)


def _rgb_example(out: Path, state: dict[str, Any]) -> Section:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from convscope.demo.data import sample_photo
    from convscope.scope import Scope

    size = 96 if state["quick"] else 224
    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    scope = Scope(vgg)
    photo = sample_photo("chelsea", size=size)
    _save(_photo(photo), out / "photo.png")
    acts = scope.activations(photo, layers=["block1_conv1", "block3_conv3", "block5_conv3"])
    figures = [Figure(out / "photo.png", "scikit-image's chelsea photo")]
    for name in acts:
        fm = acts[name]
        file = _save(fm.grid(cmap="magma", channels=range(min(64, fm.num_channels))), out / f"vgg16_{name}.png")
        figures.append(Figure(file, f"VGG16 (random init) · {name}: first 64 of {fm.num_channels} maps"))
    state.update(vgg_scope=scope, photo=photo)
    f = scope.filters("block1_conv1")
    figures.append(Figure(_save(f.grid(), out / "vgg16_block1_conv1_filters.png"), "block1_conv1 kernels as RGB patches"))
    return Section("RGB example", "keras.applications.VGG16(weights=None) on a colour photo.", figures=figures)


def _attributions(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.data import as_nchw, as_nhwc

    digits = state["split"].x_test[:8]
    figures = []
    for fw, x in (("keras", as_nhwc(digits)), ("torch", as_nchw(digits))):
        scope = state[f"scope_{fw}"]
        for method, options in (("gradcam", {"layer": "conv_1"}), ("integrated_gradients", {})):
            att = scope.attribute(x, method=method, **options)
            file = _save(_upscale(att.grid(cols=8, alpha=0.5), 4), out / f"attr_{fw}_{method}.png")
            figures.append(Figure(file, f"{fw} · {method}: 8 test digits, target = predicted class {list(att.targets)}"))
    vgg, photo = state["vgg_scope"], state["photo"]
    steps = 4 if state["quick"] else 16
    vgg_runs: list[tuple[str, dict[str, Any]]] = [
        ("gradcam", {"layer": "block5_conv3"}),
        ("integrated_gradients", {"steps": steps}),
    ]
    for method, vgg_options in vgg_runs:
        with warnings.catch_warnings(record=True) as caught:  # random weights: dead maps are expected
            warnings.simplefilter("always")
            att = vgg.attribute(photo, method=method, **vgg_options)
        note = "".join(f" — note: {w.message}" for w in caught[:1])
        file = _save(att.overlay(alpha=0.5), out / f"attr_vgg16_{method}.png")
        figures.append(Figure(file, f"VGG16 (random init) · {method} for class {int(att.targets[0])}{note}"))
    return Section(
        "Attribution",
        "Which pixels drive the decision: Grad-CAM on the last conv layer and Integrated Gradients, "
        "overlaid on the inputs (scope.attribute).",
        figures=figures,
    )


def _maximisation(out: Path, state: dict[str, Any]) -> Section:
    from convscope.optim import objectives

    steps = 32 if state["quick"] else 128
    figures = []
    for fw in ("keras", "torch"):
        scope = state[f"scope_{fw}"]
        classes = scope.maximize(objectives.logit(range(10)), steps=steps, seed=0)
        file = classes.save(out / f"maximize_{fw}_classes.png")
        figures.append(Figure(file, f"{fw} · logit(k): the input each class 0–9 responds to most (default recipe)"))
        # The centre neuron of each filter shows its 5x5 receptive-field pattern; a whole-channel
        # objective on this shallow net converges to near-uniform images (the map's mean is linear-ish).
        filters = scope.maximize([objectives.neuron("conv_1", c) for c in range(16)], steps=steps, seed=0, recipe="plain")
        file = filters.save(out / f"maximize_{fw}_conv_1.png")
        figures.append(Figure(file, f"{fw} · conv_1 filters 0–15: input that most excites each filter's centre unit"))
    return Section(
        "Activation maximisation",
        "Inputs synthesised to excite a class logit or one channel (scope.maximize, scope.maximize_layer).",
        figures=figures,
    )


def _upscale(img: Any, factor: int) -> Any:
    from PIL import Image

    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def _photo(arr: Any) -> Any:
    from PIL import Image

    return Image.fromarray(arr)


STEPS: list[tuple[str, Step]] = [
    ("train twins", _twins),
    ("summaries", _summaries),
    ("feature maps", _feature_maps),
    ("filters", _filters),
    ("RGB example", _rgb_example),
    ("activation maximisation", _maximisation),
    ("attribution", _attributions),
]


def run_demo(
    out: Path = Path("demo-output"),
    *,
    quick: bool = False,
    cache_dir: Path | None = None,
    steps: list[tuple[str, Step]] | None = None,
) -> Path:
    """Run every demo step, writing PNGs, summaries and ``index.html`` into ``out``; returns the page.

    ``quick=True`` uses a smaller RGB example and fewer optimisation steps; ``cache_dir`` reuses
    trained twin weights found there (default ``None``: train).
    """
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"quick": quick, "cache_dir": cache_dir}
    sections = []
    todo = steps if steps is not None else STEPS
    for _, step in tqdm(todo, desc="convscope demo", unit="step"):
        sections.append(step(out, state))
    intro = "What the digit ConvNet twins (Keras 3 and PyTorch) see, made with convscope."
    return write_page(out / "index.html", "convscope demo", intro, sections)
