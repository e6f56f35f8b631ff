"""``convscope demo``: train the same digit CNN in Keras and in PyTorch and show what it learned.

Writes ``demo-output/`` with both summaries, feature-map grids of both conv layers for a test digit,
the learned filters, an RGB example through ``keras.applications.VGG16(weights=None)``, activation
maximisation galleries, labelled attribution panels, the PyTorch model's report ``report_torch.html``, and
``index.html``: the HTML report (``cs.report``) of the Keras model on four test digits, with every step's
section added to it (images embedded, so the page works on its own).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from convscope._progress import bar_redraws
from convscope.demo.attribution import FRAMEWORKS, attribution_panels, method_name
from convscope.demo.page import picture, upscale_image
from convscope.reporting.model import PictureRef
from convscope.reporting.sections import Group, Section, Table

Step = Callable[[Path, dict[str, Any]], Section | None]
"""One demo step: writes its files into the folder and returns its section of the page (or ``None``)."""


def _train(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.models import trained_twins

    start = time.perf_counter()
    models = trained_twins(state.get("cache_dir"))
    state.update(keras=models.keras_model, torch=models.torch_model, split=models.split)
    acc = models.accuracies
    return Section(
        "Training",
        "The same digit CNN (two 3×3 conv layers, max pooling, two dense layers; 1.2 M parameters, the "
        "classic Keras MNIST ConvNet) built once as a Keras 3 model (torch backend) and once as a PyTorch "
        "module, each trained on scikit-learn's handwritten digits resized to 28×28: hold-out accuracy "
        f"Keras {acc['keras']:.1%}, PyTorch {acc['torch']:.1%}, {time.perf_counter() - start:.0f} s for both.",
    )


def _summaries(out: Path, state: dict[str, Any]) -> Section:
    from convscope.scope import Scope

    texts = []
    for fw in FRAMEWORKS:
        scope = Scope(state[fw], input_shape=(28, 28, 1) if fw == "keras" else (1, 28, 28))
        state[f"scope_{fw}"] = scope
        text = str(scope.summary())
        (out / f"summary_{fw}.txt").write_text(text + "\n", encoding="utf-8")
        texts.append(text)
    return Section("Model summaries", "scope.summary() of the Keras model, then of the PyTorch one.", pre=texts)


def _feature_maps(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.data import as_nchw, as_nhwc

    split = state["split"]
    digit = split.x_test[:1]
    label = int(split.y_test[0])
    figures = [picture(_digit_image(digit[0]), out, "test_digit.png", f"the test digit (label {label})")]
    for fw, x in (("keras", as_nhwc(digit)), ("torch", as_nchw(digit))):
        acts = state[f"scope_{fw}"].activations(x, layers=["conv_0", "conv_1"])  # one forward pass
        for name, cmap in (("conv_0", "gray"), ("conv_1", "viridis")):
            fm = acts[name]
            c, h = fm.num_channels, fm.channels_first().shape[-1]
            figures.append(picture(fm.grid(cmap=cmap), out, f"maps_{fw}_{name}.png",
                                   f"{FRAMEWORKS[fw]} · {name}: {c} maps of {h}×{h} (test digit {label}, {cmap})"))  # fmt: skip
    return Section("Feature maps", "Every channel of both conv layers for one test digit.", pictures=figures)


def _digit_image(img: Any) -> Any:
    import numpy as np
    from PIL import Image

    return upscale_image(Image.fromarray((np.clip(img, 0, 1) * 255).astype("uint8")), 4)


def _filters(out: Path, state: dict[str, Any]) -> Section:
    figures = []
    for fw in FRAMEWORKS:
        scope = state[f"scope_{fw}"]
        for name, mode in (("conv_0", "mean"), ("conv_1", "mean")):
            f = scope.filters(name)
            shape = f.weights.shape
            figures.append(picture(f.grid(mode=mode, normalize="symmetric"), out, f"filters_{fw}_{name}.png",
                                   f"{FRAMEWORKS[fw]} · {name}: {shape[0]} kernels {shape[1:]} ({mode})"))  # fmt: skip
    return Section("Learned filters", "Kernel weights (blue negative, red positive).", pictures=figures)


def _rgb_example(out: Path, state: dict[str, Any]) -> Section:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from PIL import Image

    from convscope.demo.data import sample_photo
    from convscope.scope import Scope

    size = 96 if state["quick"] else 224
    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    scope = Scope(vgg)
    photo = sample_photo("chelsea", size=size)
    acts = scope.activations(photo, layers=["block1_conv1", "block3_conv3", "block5_conv3"])
    figures = [picture(Image.fromarray(photo), out, "photo.png", "scikit-image's chelsea photo")]
    for name in acts:
        fm = acts[name]
        figures.append(picture(fm.grid(cmap="magma", channels=range(min(64, fm.num_channels))), out,
                               f"vgg16_{name}.png", f"VGG16 (random weights) · {name}: first 64 of {fm.num_channels} "
                               "maps"))  # fmt: skip
    state.update(vgg_scope=scope, photo=photo)
    f = scope.filters("block1_conv1")
    figures.append(picture(f.grid(), out, "vgg16_block1_conv1_filters.png", "block1_conv1 kernels as RGB patches"))
    return Section("RGB example", "keras.applications.VGG16(weights=None) on a colour photo.", pictures=figures)


def _attributions(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.attribution import CAM_LAYERS, cam_layer_table
    from convscope.demo.data import as_nchw, as_nhwc

    split = state["split"]
    digits, labels = split.x_test[:8], split.y_test[:8]
    scopes = {fw: state[f"scope_{fw}"] for fw in FRAMEWORKS}
    strips = []
    for fw, x in (("keras", as_nhwc(digits)), ("torch", as_nchw(digits))):
        layer = CAM_LAYERS[fw]
        runs: list[tuple[str, dict[str, Any], str]] = [
            ("gradcam", {"layer": layer}, f"at {layer}, {_CAM_LAYER_WHAT[fw]}"),
            ("integrated_gradients", {}, "from a black image to the digit"),
        ]
        for method, options, where in runs:
            with warnings.catch_warnings():  # each empty map is explained under its panel instead
                warnings.simplefilter("ignore")
                panels = attribution_panels(scopes[fw], x, method=method, out=out, stem=f"attr_{fw}_{method}",
                                            labels=labels, upscale=4, **options)  # fmt: skip
            strips.append(Group(f"{FRAMEWORKS[fw]} · {method_name(method)} {where}", panels))
    strips.extend(_vgg_attributions(out, state))
    n = 64 if state["quick"] else len(split.x_test)
    table = Table(
        ["model", "Grad-CAM layer", "what it is", "empty maps", "near-empty maps"],
        cam_layer_table(scopes, {"keras": as_nhwc(split.x_test[:n]), "torch": as_nchw(split.x_test[:n])}),
        caption=f"Which layer Grad-CAM should read: maps of {n} test digits (target = predicted class)",
    )
    return Section(
        "Attribution panels",
        "Which pixels drive the decision (scope.attribute), overlaid on the inputs. Each panel names the "
        "class it explains (the predicted one) and the model's probability for it. Grad-CAM reads the last "
        "conv layer after its ReLU, the 24×24 maps the pooling layer sees; the table shows how many maps "
        "come out empty (no positive evidence anywhere) or near-empty (under 3% of the pixels reach a fifth "
        "of the peak, or a peak under 5% of the median peak) at each candidate layer. An empty or near-empty "
        "panel says why in red.",
        tables=[table],
        groups=strips,
    )


_CAM_LAYER_WHAT = {
    "keras": "the second conv layer (its ReLU is fused in)",
    "torch": "the ReLU after the second conv layer",
}


def _vgg_attributions(out: Path, state: dict[str, Any]) -> list[Group]:
    vgg, photo = state["vgg_scope"], state["photo"]
    steps = 4 if state["quick"] else 16
    vgg_runs: list[tuple[str, dict[str, Any], str]] = [
        ("gradcam", {"layer": "block5_conv3"}, "Grad-CAM at block5_conv3 · "),
        ("integrated_gradients", {"steps": steps}, f"Integrated Gradients ({steps} steps) · "),
    ]
    panels = []
    for method, options, prefix in vgg_runs:
        with warnings.catch_warnings():  # random weights: empty maps are expected, and explained
            warnings.simplefilter("ignore")
            panels += attribution_panels(vgg, photo, method=method, out=out, stem=f"attr_vgg16_{method}",
                                         prefix=prefix, **options)  # fmt: skip
    text = "Untrained, so the explained class (the predicted one) is arbitrary and its probability near 1/1000."
    return [Group("VGG16 (random weights) · Grad-CAM and Integrated Gradients", panels, text)]


def _maximisation(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.gallery import gallery_figures
    from convscope.optim import objectives

    steps = 32 if state["quick"] else 128
    logits: list[PictureRef] = []
    neurons: list[PictureRef] = []
    strips: list[Group] = []
    for fw in FRAMEWORKS:
        scope, name, layer = state[f"scope_{fw}"], FRAMEWORKS[fw], PRE_RELU[fw]
        vis = scope.maximize(objectives.logit(range(10)), steps=steps, seed=0)
        logits.append(picture(vis.grid(), out, f"maximize_{fw}_classes.png",
                              f"{name} · logit objective: logit of class k, k = 0–9 (default recipe, {steps} steps)"))  # fmt: skip
        vis = scope.maximize(objectives.channel(layer, range(16)), steps=steps, seed=0)
        state[f"vis_{fw}_channel"] = vis
        tiles = gallery_figures(vis, out=out, stem=f"maximize_{fw}_conv_1", model=fw,
                                names=[f"channel {k}" for k in range(16)])  # fmt: skip
        flat = sum(bool(f.note) for f in tiles)
        strips.append(Group(f"{name} · channel objective: mean of channel k of {layer}, k = 0–15 (default recipe, "
                            f"{steps} steps)", tiles, _channel_text(fw, flat)))  # fmt: skip
        vis = scope.maximize(objectives.neuron(layer, range(16)), steps=steps, seed=0, recipe="plain")
        neurons.append(picture(vis.grid(), out, f"maximize_{fw}_conv_1_neuron.png",
                               f"{name} · neuron objective: unit (12, 12) of channel k of {layer}, k = 0–15 "
                              f"(plain recipe, {steps} steps)"))  # fmt: skip
    strips.insert(0, Group("Logit objective: the input each class 0–9 responds to most", logits))
    strips.append(Group("Neuron objective: one unit at the centre of channel k — only its 5×5 receptive field "
                        "matters", neurons))  # fmt: skip
    return Section("Activation maximisation", "Inputs synthesised with scope.maximize.", groups=strips)


def _channel_text(fw: str, flat: int) -> str:
    where = ("the Conv2d output conv_1, before the separate ReLU module" if fw == "torch"
             else "conv_1:pre, the input of the ReLU Keras fuses into the layer")  # fmt: skip
    why = (f" {flat} of the 16 optima are uniform images: those channels respond to overall brightness rather "
           "than to a pattern, and say so under their tile." if flat else "")  # fmt: skip
    return (f"Channel objective: mean of channel k over the whole map — a pattern that fills the image, made with "
            f"the default recipe (what scope.maximize does unless told otherwise). The channel is read at {where}, "
            f"so every channel has a gradient from the first step.{why}")


def _dataset_examples(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.data import as_nchw, as_nhwc

    start = time.perf_counter()
    digits, labels = _all_digits()
    strips = []
    for fw, x in (("keras", as_nhwc(digits)), ("torch", as_nchw(digits))):
        scope = state[f"scope_{fw}"]
        scan = scope.scan(x, layers="conv_1", k=9, batch_size=256, progress=False)
        state[f"scan_{fw}"] = scan
        rf = scan.receptive_field("conv_1")
        vis = state.get(f"vis_{fw}_channel")
        figures = []
        for c in range(16):
            top = scan.top("conv_1", c)
            classes = ", ".join(str(int(labels[i])) for i in top.ids)
            panel = _example_panel(top, scan.stats("conv_1").histogram(c, size=(200, 120)),
                                   None if vis is None else vis.image(c))  # fmt: skip
            figures.append(picture(panel, out, f"examples_{fw}_conv_1_{c}.png", f"{FRAMEWORKS[fw]} · conv_1 channel "
                                   f"{c}: top 9 of {scan.count} digits by spatial max (digits {classes}, max "
                                   f"{top.values[0]:.3g})", kind="examples", data={"channel": str(c), "model": fw}))  # fmt: skip
        strips.append(Group(f"{FRAMEWORKS[fw]} · conv_1: the 9 real digits that excite each channel most", figures,
                            f"Each panel: the 9 digits (best first), their {rf.size[0]}×{rf.size[1]} px "
                            "receptive-field patches at the strongest unit, the channel's value histogram over "
                            "every position of every digit" + (", and its feature visualisation." if vis else ".")))  # fmt: skip
    return Section(
        "Dataset examples",
        f"scope.scan over all {len(digits)} scikit-learn digits (28×28, the training preprocessing), one forward "
        "pass per batch for both models: exact per-channel top-k by spatial max, with mergeable statistics "
        f"({time.perf_counter() - start:.1f} s for both).",
        groups=strips,
    )


def _all_digits() -> tuple[Any, Any]:
    """All 1,797 scikit-learn digits in their own order, resized to 28×28 as training saw them."""
    import numpy as np
    from sklearn.datasets import load_digits

    from convscope.demo.data import DIGITS_SIDE, bilinear_matrix

    raw = load_digits()
    m = bilinear_matrix(DIGITS_SIDE, 8)
    x = np.einsum("ij,njk,lk->nil", m, np.asarray(raw.images, np.float64) / 16.0, m).astype(np.float32)
    return np.clip(x, 0.0, 1.0), np.asarray(raw.target, np.int64)


def _example_panel(top: Any, histogram: Any, vis: Any) -> Any:
    from PIL import Image

    parts = [top.grid(cols=3), top.grid(cols=3, patches=True)]
    parts += [histogram] + ([upscale_image(vis.convert("RGB"), max(1, 120 // vis.height))] if vis is not None else [])
    h = max(p.height for p in parts)
    canvas = Image.new("RGB", (sum(p.width for p in parts) + 8 * (len(parts) - 1), h), "white")
    x = 0
    for p in parts:
        canvas.paste(p.convert("RGB"), (x, (h - p.height) // 2))
        x += p.width + 8
    return canvas


def _torch_report(out: Path, state: dict[str, Any]) -> Section:
    from convscope.demo.reports import REPORT_IMAGES, report_link, write_report

    start = time.perf_counter()
    written = write_report(state["scope_torch"], state["split"].x_test, state.get("scan_torch"),
                           out / "report_torch.html", title=f"convscope report · {FRAMEWORKS['torch']} digit CNN")  # fmt: skip
    state["links"] = [report_link(written, FRAMEWORKS["torch"], seconds=time.perf_counter() - start)]
    return Section("PyTorch report", f"This page is cs.report of the Keras model on {REPORT_IMAGES} test digits "
                   "(its layers and Grad-CAM follow these sections); the same report of the PyTorch model is "
                   "its own page — what `convscope report` writes for any model.", links=state["links"])  # fmt: skip


def _page(out: Path, state: dict[str, Any]) -> None:
    """``index.html``: the report of the Keras model with every earlier step's section added."""
    from convscope.demo.reports import REPORT_IMAGES, write_report

    intro = (f"What the same digit CNN, built in Keras 3 and in PyTorch, sees: made with convscope. This page is "
             f"the HTML report (cs.report) of the Keras model on {REPORT_IMAGES} test digits — their predictions "
             "and the model summary first, every layer under Layers, Grad-CAM under Attribution — with the demo's "
             "own sections in between.")  # fmt: skip
    write_report(state["scope_keras"], state["split"].x_test, state.get("scan_keras"), out / "index.html",
                 title="convscope demo · one digit CNN in Keras 3 and PyTorch", intro=intro,
                 links=state.get("links", []), sections=state["sections"])  # fmt: skip


#: conv_1 before its ReLU in both models: PyTorch's Conv2d output, Keras' fused activation's input.
PRE_RELU = {"keras": "conv_1:pre", "torch": "conv_1"}


STEPS: list[tuple[str, Step]] = [
    ("train", _train),
    ("summaries", _summaries),
    ("feature maps", _feature_maps),
    ("filters", _filters),
    ("RGB example", _rgb_example),
    ("activation maximisation", _maximisation),
    ("dataset examples", _dataset_examples),
    ("attribution", _attributions),
    ("PyTorch report", _torch_report),
    ("page", _page),
]


def run_demo(
    out: Path = Path("demo-output"),
    *,
    quick: bool = False,
    cache_dir: Path | None = None,
    steps: Sequence[tuple[str, Step]] | None = None,
) -> Path:
    """Run every demo step, writing PNGs, summaries, ``report_torch.html`` and ``index.html`` into ``out``;
    returns the page's path.

    ``quick=True`` uses a smaller RGB example and fewer optimisation steps; ``cache_dir`` reuses
    trained weights found there (default ``None``: train); ``steps`` (default :data:`STEPS`, whose last
    step writes the page) replaces the steps, each collecting its section in ``state["sections"]``.
    """
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"quick": quick, "cache_dir": cache_dir, "sections": []}
    todo = steps if steps is not None else STEPS
    for step in _progress(todo):
        section = step(out, state)
        if section is not None:
            state["sections"].append(section)
    return out / "index.html"


def _progress(todo: Sequence[tuple[str, Step]]) -> Iterator[Step]:
    """The steps, with a redrawn bar on a terminal, else one line per finished step on stderr (a log stays
    readable: ``convscope demo: 3/9 feature maps (2.1 s)``)."""
    if bar_redraws():
        from tqdm.auto import tqdm

        for _, step in tqdm(todo, desc="convscope demo", unit="step"):
            yield step
        return
    for i, (name, step) in enumerate(todo, 1):
        start = time.perf_counter()
        yield step
        print(f"convscope demo: {i}/{len(todo)} {name} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
