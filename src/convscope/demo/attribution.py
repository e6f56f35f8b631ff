"""The demo's attribution panels: one labelled picture per input, and a note on every empty map.

Each panel says which class it explains and how probable the model finds that class; a map that is
empty (all zero) or near-empty (almost no pixel above a fifth of its peak, or a peak far below the
others' in its row) says so and why, instead
of showing a blank square without comment. The Grad-CAM layer is passed explicitly
(:data:`CAM_LAYERS`), and :func:`cam_layer_table` shows how often each candidate layer gives such maps.

Example::

    panels = attribution_panels(scope, x, method="gradcam", layer="relu_1", out=out, stem="attr_torch_gradcam")
    [p.caption for p in panels][:1]   # ['label 7 · target 7 · p = 99.0%']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convscope.demo.page import picture, upscale_image
from convscope.reporting.model import PictureRef

#: The Grad-CAM layer of each digit model: the last conv layer's output after its ReLU, the 24×24 maps
#: the max-pooling layer reads. PyTorch's ``conv_1`` is the Conv2d *before* its separate ReLU module
#: (``relu_1``); Keras fuses the ReLU into ``conv_1``. On the 360 test digits (empty / near-empty maps,
#: see :func:`emptiness`), with both models initialised alike (Glorot-uniform, zero biases): PyTorch
#: ``conv_1`` 64 / 111, ``relu_1`` 2 / 13, ``pool`` (12×12) 13 / 13; Keras ``conv_1:pre`` 101 / 65,
#: ``conv_1`` 0 / 0, ``pool`` 0 / 0. (With PyTorch's default init, Kaiming-uniform and random biases,
#: ``relu_1`` gave 40 / 17.) Counts move by a few between trainings on different thread counts; the page
#: prints this run's.
CAM_LAYERS = {"keras": "conv_1", "torch": "relu_1"}

#: Layers compared in the page's table, per framework (name, what it is).
CAM_CANDIDATES: dict[str, tuple[tuple[str, str], ...]] = {
    "keras": (
        ("conv_1:pre", "second conv, before its ReLU (24×24)"),
        ("conv_1", "second conv, after its ReLU (24×24)"),
        ("pool", "max pooling (12×12)"),
    ),
    "torch": (
        ("conv_1", "second conv, before its ReLU (24×24)"),
        ("relu_1", "second conv, after its ReLU (24×24)"),
        ("pool", "max pooling (12×12)"),
    ),
}

#: A map is near-empty when fewer than this share of its pixels reach :data:`LEVEL` of its peak, or
#: when its peak is below :data:`WEAK` times the median peak of its batch (each panel is scaled to its
#: own peak, so a map a thousand times weaker than its neighbours would otherwise look as strong).
NEAR_EMPTY_SHARE = 0.03
LEVEL = 0.2
WEAK = 0.05

_CAM_METHODS = frozenset({"gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam"})
_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated Gradients"}


def method_name(method: str) -> str:
    """The method's name as papers write it (``"gradcam"`` → ``"Grad-CAM"``)."""
    return _NAMES.get(method, method)


def coverage(maps: np.ndarray) -> np.ndarray:
    """``(N,)`` share of each map's pixels at or above :data:`LEVEL` of its peak (0 for an all-zero map)."""
    m = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    peak = m.max(axis=1, keepdims=True)
    return np.where(peak[:, 0] > 0, (m >= LEVEL * np.where(peak > 0, peak, 1.0)).mean(axis=1), 0.0)


def relative_peaks(raw: np.ndarray) -> np.ndarray:
    """``(N,)`` each sample's peak ``|raw|`` divided by the batch's median peak (1 where that median is 0)."""
    peaks = np.abs(np.asarray(raw, dtype=np.float64)).reshape(len(raw), -1).max(axis=1)
    median = float(np.median(peaks))
    return peaks / median if median > 0 else np.ones_like(peaks)


def emptiness(maps: np.ndarray, raw: np.ndarray | None = None) -> list[str]:
    """Per map: ``"empty"`` (no positive value), ``"near-empty"`` (coverage below
    :data:`NEAR_EMPTY_SHARE`), ``"weak"`` (peak below :data:`WEAK` of the batch median of ``raw``;
    default ``None``: not checked) or ``""``."""
    peaks = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1).max(axis=1)
    weak = relative_peaks(raw) < WEAK if raw is not None else np.zeros(len(peaks), dtype=bool)
    return ["empty" if p <= 0 else "near-empty" if c < NEAR_EMPTY_SHARE else "weak" if w else ""
            for p, c, w in zip(peaks, coverage(maps), weak, strict=True)]  # fmt: skip


def probabilities(scope: Any, x: Any) -> np.ndarray:
    """``(N, classes)`` class probabilities of ``x``: the model's output when it is already a softmax
    (non-negative rows summing to 1), else the softmax of it."""
    inputs = scope.prepare(x)
    with torch.no_grad():
        out = scope.model(inputs, training=False) if scope.framework == "keras" else scope.model(inputs)
    p = torch.as_tensor(out).detach().float().cpu()
    if p.min() < 0 or not torch.allclose(p.sum(dim=1), torch.ones(len(p)), atol=1e-3):
        p = torch.softmax(p, dim=1)
    return p.numpy()


def explain_empty(kind: str, *, method: str, target: int, layer: str | None, share: float, peak: float) -> str:
    """One sentence on why a map is empty, near-empty or weak (``""`` when ``kind`` is ``""``)."""
    name, cam = method_name(method), method in _CAM_METHODS
    evidence = f"class {target} at {layer}" if cam else f"class {target}"
    clip = f"{name} keeps only positive weighted activations" if cam else f"{name} found almost no gradient"
    if kind == "empty":
        return f"empty: no positive evidence for {evidence} — {clip}"
    if kind == "near-empty":
        return f"near-empty: only {share:.0%} of the map reaches a fifth of its peak — {clip}"
    if kind == "weak":
        return (f"near-empty: its peak is {peak:.1%} of the row's median — barely any positive evidence "
                f"for {evidence}; scaled to that tiny peak, the colours are noise")  # fmt: skip
    return ""


def panel_label(target: int, p: float, label: int | None = None) -> str:
    """``"label 7 · target 7 · p = 98.7%"`` (``p > 99.9%`` above that; without ``label`` when unknown).

    Spaces inside each part are non-breaking, so a narrow caption wraps only at the dots."""
    shown = "> 99.9%" if p > 0.999 else f"= {p:.1%}" if p >= 0.001 else f"= {p:.2g}"
    parts = ([] if label is None else [f"label {label}"]) + [f"target {target}", f"p {shown}"]
    return " · ".join(part.replace(" ", "\N{NO-BREAK SPACE}") for part in parts)


def attribution_panels(
    scope: Any,
    x: Any,
    *,
    method: str,
    out: Path,
    stem: str,
    labels: Sequence[int] | None = None,
    upscale: int = 1,
    prefix: str = "",
    **options: Any,
) -> list[PictureRef]:
    """One labelled page picture per input: its overlay saved as ``out/{stem}_{i}.png``.

    The target is the predicted class (``scope.attribute``'s default); ``labels`` are the true classes
    shown next to it (default ``None``: not shown); ``upscale`` enlarges small overlays (default 1);
    ``prefix`` starts each caption (default none).
    """
    att = scope.attribute(x, method=method, **options)
    assert att.targets is not None
    probs = probabilities(scope, x)
    kinds, shares, peaks = emptiness(att.maps, att.raw), coverage(att.maps), relative_peaks(att.raw)
    figures = []
    for i, target in enumerate(att.targets):
        p = float(probs[i, target])
        overlay = upscale_image(att.overlay(i, alpha=0.5), upscale)
        note = explain_empty(kinds[i], method=method, target=target, layer=att.layer, share=float(shares[i]),
                             peak=float(peaks[i]))  # fmt: skip
        caption = prefix + panel_label(target, p, None if labels is None else int(labels[i]))
        data = {"method": method, "target": str(target), "probability": f"{p:.6f}",
                "coverage": f"{shares[i]:.4f}", "peak": f"{peaks[i]:.4f}", "empty": kinds[i]}  # fmt: skip
        figures.append(picture(overlay, out, f"{stem}_{i}.png", caption, note=note, kind="attribution", data=data))
    return figures


def cam_layer_table(scopes: dict[str, Any], inputs: dict[str, Any]) -> list[list[str]]:
    """Rows ``[model, layer, what it is, empty, near-empty]``: Grad-CAM of ``inputs[fw]`` (target =
    predicted class) at every layer of :data:`CAM_CANDIDATES`; the chosen layer is marked."""
    import warnings

    rows = []
    for fw, scope in scopes.items():
        for layer, what in CAM_CANDIDATES[fw]:
            with warnings.catch_warnings():  # empty maps are what this table counts
                warnings.simplefilter("ignore")
                att = scope.attribute(inputs[fw], method="gradcam", layer=layer)
            kinds = emptiness(att.maps, att.raw)
            chosen = " (shown below)" if layer == CAM_LAYERS[fw] else ""
            near = kinds.count("near-empty") + kinds.count("weak")
            rows.append([FRAMEWORKS[fw], layer + chosen, what, str(kinds.count("empty")), str(near)])
    return rows


#: How the page names each framework's model.
FRAMEWORKS = {"keras": "Keras", "torch": "PyTorch"}
