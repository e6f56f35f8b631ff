"""Fill the page model (:mod:`convscope.reporting.model`) from the library's result objects, part by part."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from convscope.errors import ConvscopeError, LayerNotFoundError, OptionError
from convscope.reporting.model import (
    TOP,
    AttributionView,
    ChannelStat,
    DatasetExamples,
    ImageView,
    LayerInfo,
    LayerSection,
    LayerView,
    PictureRef,
    Prediction,
    TileRef,
)

CMAP = "viridis"
TILE_PX = 112
"""Top-channel tiles larger than this are shown at an integer fraction of their size."""
MOSAIC_PIXELS = 160_000
"""An all-channel mosaic with more pixels than this is shown at an integer fraction of its size."""
DATASET_CHANNELS = 4
"""Top channels (per image) whose dataset examples are shown when a scan is given."""
DATASET_K = 9


def fmt(v: float) -> str:
    return f"{v:.3g}"


def anchor(name: str) -> str:
    return "layer-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def shrink(img: Image.Image, factor: int) -> Image.Image:
    """``img`` at 1/``factor`` of its size, nearest neighbour (keeps palette images and hard tile edges)."""
    if factor <= 1:
        return img
    return img.resize((max(1, img.width // factor), max(1, img.height // factor)), Image.Resampling.NEAREST)


def _divisor(side: int, want: int) -> int:
    """The smallest factor >= ``want`` dividing ``side`` (tile edges stay aligned), else ``want``."""
    for f in range(want, min(side, 4 * want) + 1):
        if side % f == 0:
            return f
    return want


def quiet(fn: Callable[[], Image.Image]) -> Callable[[], Image.Image]:
    """``fn`` with warnings silenced (the page states blank layers itself, once, in :attr:`LayerView.notice`)."""

    def run() -> Image.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return run


# -- header -------------------------------------------------------------------------------------------------
def image_views(scope: Any, items: list[Any], names: list[str], labels: Any) -> list[ImageView]:
    x = scope.prepare(items)
    shown = scope.input_spec().to_display(x)  # (N, H, W, 3) uint8, preprocessing undone
    try:
        preds = scope.predict(items, k=5, labels=labels)
    except OptionError as exc:
        if labels is not None or not str(exc).startswith("predictions need"):
            raise
        preds = None
    out = []
    for i, name in enumerate(names):
        rows = []
        if preds is not None:
            for r, (c, p) in enumerate(zip(preds.indices[i], preds.probabilities[i], strict=True)):
                rows.append(Prediction(r + 1, int(c), preds.names[i][r] if preds.names else None, float(p)))
        h, w = shown.shape[1:3]
        pic = PictureRef(f"image/{i}", f"{name} as the model sees it: {w}×{h} px after resizing, "
                         "preprocessing undone (RGB, 0–255, no normalisation)",
                         f"input image {i}: {name}, {w}×{h}", _const(Image.fromarray(shown[i])))  # fmt: skip
        out.append(ImageView(i, name, pic, rows))
    return out


def _const(img: Image.Image) -> Callable[[], Image.Image]:
    return lambda: img


# -- layers -------------------------------------------------------------------------------------------------
def default_layers(scope: Any) -> list[str]:
    """Every leaf conv or dense layer (a 4-D or 2-D kernel), each module once, in model order."""
    seen: set[int] = set()
    out = []
    for h in scope.adapter.handles:
        shape = scope.adapter.kernel_shape(h) if h.is_leaf else None
        if shape is not None and len(shape) in (2, 4) and id(h.module) not in seen:
            seen.add(id(h.module))
            out.append(scope.index.display_name(h))
    if not out:
        raise LayerNotFoundError("this model has no conv or dense layers; name the layers to show with layers=...")
    return out


def shape_text(shape: Any) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return "[" + ", ".join(shape_text(s) for s in shape) + "]"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def layer_sections(scope: Any, items: list[Any], summary: Any, *, layers: Any, maximize: bool, scan: Any,
                   maximize_steps: int, steps: Any) -> list[LayerSection]:  # fmt: skip
    """One section per layer from ONE forward pass; with ``maximize``, each layer's feature visualisations
    are a job of ``steps`` (a :class:`~convscope.reporting.progress.Steps`), run when its picture is drawn."""
    query = default_layers(scope) if layers is None else layers
    acts = scope.activations(items, layers=query)  # ONE forward pass for every image and layer
    rows = {r.name: r for r in summary.rows}
    sections = []
    for name, fm in acts.items():
        row = rows.get(name.split("@")[0].removesuffix(":pre"))
        kind = "vector" if fm.is_vector else "spatial" if fm.spatial else "other"
        info = LayerInfo(name, row.type if row else "?", shape_text(row.output_shape) if row else shape_text(fm.shape),
                         row.params if row else 0, fm.num_channels, kind, anchor(name))  # fmt: skip
        views = [layer_view(fm, i, scan) for i in range(len(items))]
        features = _features(scope, name, views[0], maximize_steps, steps) if maximize and kind == "spatial" else None
        sections.append(LayerSection(info, _kernels(scope, name), features, views))
    return sections


def ranking(maps: np.ndarray) -> list[ChannelStat]:
    """Every channel of ``maps`` (C, H, W) by descending mean activation (stable: ties keep index order)."""
    flat = maps.reshape(len(maps), -1)
    mean, low, high = flat.mean(axis=1), flat.min(axis=1), flat.max(axis=1)
    order = np.argsort(-mean, kind="stable")
    return [ChannelStat(int(c), r + 1, float(mean[c]), float(low[c]), float(high[c])) for r, c in enumerate(order)]


def layer_view(fm: Any, i: int, scan: Any) -> LayerView:
    """Layer ``fm`` (a :class:`FeatureMaps`) for image ``i``: ranking, top tiles, one mosaic (or a strip)."""
    from convscope.render.blank import blank_message

    maps = fm.channels_first()[i]
    stats = ranking(maps)
    count, name, key = len(stats), fm.name, f"layer/{fm.name}/image/{i}"
    lo, hi = float(maps.min()), float(maps.max())
    notice = blank_message(name, maps, kind="unit" if fm.is_vector else "channel", where=f"for image {i}",
                           per_channel=not fm.is_vector)  # fmt: skip
    if fm.is_vector:
        top = stats[:TOP]
        strip = PictureRef(f"{key}/strip", f"{name}: {count} units for image {i}, one cell per unit, colour min–max "
                           f"normalised over the layer ({CMAP}); values in [{fmt(lo)}, {fmt(hi)}]",
                           f"{name} units for image {i}: {count} units, top unit {top[0].channel} "
                           f"value {fmt(top[0].mean)}", quiet(lambda: fm.grid(i)))  # fmt: skip
        return LayerView(name, i, stats, [], None, strip, notice)
    h, w = maps.shape[1:]
    tf = _divisor(h, -(-max(h, w) // TILE_PX)) if max(h, w) > TILE_PX else 1
    tiles = []
    for s in stats[:TOP]:
        alt = f"{name} channel {s.channel}, rank {s.rank} of {count}, mean {fmt(s.mean)}"
        cap = f"channel {s.channel} · mean {fmt(s.mean)} · [{fmt(s.low)}, {fmt(s.high)}]"
        render = quiet(partial(_tile, fm, i, s.channel, tf))
        tiles.append(TileRef(s, PictureRef(f"{key}/channel/{s.channel}", cap, alt, render)))
    mf = 1
    while count * (h // mf) * (w // mf) > MOSAIC_PIXELS and mf < min(h, w):
        mf += 1
    mf = _divisor(h, mf) if mf > 1 else 1
    size = f"; shown at 1/{mf} size" if mf > 1 else ""
    mosaic = PictureRef(f"{key}/mosaic",
                        f"all {count} channels of {name} for image {i} in index order, {h}×{w} each{size}; each tile "
                        f"min–max normalised over its own channel ({CMAP}: dark = channel min, yellow = channel max); "
                        f"values in [{fmt(lo)}, {fmt(hi)}]",
                        f"{name}: all {count} channels for image {i}, values {fmt(lo)} to {fmt(hi)}",
                        quiet(lambda: shrink(fm.grid(i, cmap=CMAP, scale=1, padding=mf), mf)))  # fmt: skip
    view = LayerView(name, i, stats, tiles, mosaic, None, notice)
    view.top_caption = top_caption(view)
    if scan is not None:
        view.dataset = _dataset(scan, name, stats[:DATASET_CHANNELS])
    return view


def _tile(fm: Any, i: int, channel: int, factor: int) -> Image.Image:
    return shrink(fm.grid(i, channels=[channel], cmap=CMAP, scale=1, padding=0), factor)


def _examples(top: Any, n: int, patches: bool) -> Image.Image:
    from convscope.render.overlay import tile

    pics = top.patches()[:n] if patches else top.images()[:n]
    return tile(pics, cols=min(n, 9))


def top_caption(view: LayerView, normalize: str = "each tile min–max normalised over its own channel") -> str:
    """The caption of a view's top tiles: how many of how many, the ordering, normalisation and range."""
    shown = view.top
    lo = min(t.stat.low for t in shown)
    hi = max(t.stat.high for t in shown)
    tf = f" ({CMAP}: dark = channel min, yellow = channel max)"
    return (f"top {len(shown)} of {len(view.ranking)} channels of {view.layer} for image {view.image_index} by mean "
            f"activation; {normalize}{tf}; values in [{fmt(lo)}, {fmt(hi)}]")  # fmt: skip


def _kernels(scope: Any, name: str) -> PictureRef | None:
    try:
        filters = scope.filters(name.split("@")[0].removesuffix(":pre"))
    except (OptionError, LayerNotFoundError):
        return None
    w = filters.weights
    out, cin, kh, kw = w.shape
    mode = "each filter as an RGB patch" if cin == 3 else "the mean over input channels" if cin > 8 else "one tile per input channel"
    return PictureRef(f"layer/{name}/kernels",
                      f"kernels of {name}: {out} filters of {cin}×{kh}×{kw}, {mode}; each filter min–max "
                      f"normalised over its own weights (gray); weights in [{fmt(float(w.min()))}, {fmt(float(w.max()))}]",
                      f"{name} kernels: {out} filters, {cin} inputs, {kh}×{kw}", filters.grid)  # fmt: skip


def _features(scope: Any, name: str, view: LayerView, steps: int, progress: Any) -> PictureRef | None:
    """The feature visualisations of ``name``'s top channels: a picture drawn (optimised) with the others,
    announced as one job of ``progress`` now and timed as that job when it is drawn."""
    channels = [t.stat.channel for t in view.top]
    if not channels:
        return None
    progress.add(1)

    def render() -> Image.Image:
        with progress.job(f"feature visualisations of {name}"):
            return quiet(lambda: scope.maximize_layer(name, channels=channels, steps=steps, progress=False).grid())()

    return PictureRef(f"layer/{name}/features",
                      f"feature visualisations of {name}: one synthesised image per channel {channels} (the top channels "
                      f"of image 0), {steps} steps of the default recipe; pixels in [0, 1] shown as 0–255, no normalisation",
                      f"{name} feature visualisations of channels {', '.join(map(str, channels))}", render)  # fmt: skip


def _dataset(scan: Any, name: str, stats: Sequence[ChannelStat]) -> list[DatasetExamples]:
    try:
        scan.stats(name)
    except LayerNotFoundError:
        return []
    out = []
    for s in stats:
        top = scan.top(name, s.channel)
        n = min(DATASET_K, len(top))
        if n == 0:
            continue
        vals = top.values[:n]
        base = f"dataset top-{n} of {scan.count} images for {name} channel {s.channel} by spatial max (values " \
               f"[{fmt(float(vals.min()))}, {fmt(float(vals.max()))}])"
        out.append(DatasetExamples(
            s.channel,
            PictureRef(f"layer/{name}/scan/{s.channel}/images", base + "; images as the model saw them, 0–255, no normalisation",
                       f"{name} channel {s.channel}: dataset top {n}, best value {fmt(float(vals[0]))}",
                       partial(_examples, top, n, False)),
            PictureRef(f"layer/{name}/scan/{s.channel}/patches", base + "; receptive-field patches at each argmax, 0–255, no normalisation",
                       f"{name} channel {s.channel}: receptive-field patches of the dataset top {n}",
                       partial(_examples, top, n, True)),
        ))  # fmt: skip
    return out


# -- attribution ------------------------------------------------------------------------------------------
def attribution_views(scope: Any, items: list[Any], images: list[ImageView], *, methods: Sequence[str],
                      targets: Sequence[int] | None, sanity: bool, steps: int,
                      progress: Any = None) -> list[AttributionView]:  # fmt: skip
    """Each method × target on every image, with deletion/insertion AUC (``steps`` steps) and, with
    ``sanity``, the sanity-check verdict; each is a job of ``progress`` (a ``Steps``, default none)."""
    from contextlib import nullcontext

    from convscope.attribution import metrics

    out = []
    for method in methods:
        for target in (targets if targets else [None]):
            what = f"{method}" + ("" if target is None else f" for class {target}") + " with deletion/insertion"
            with nullcontext() if progress is None else progress.job(what):
                att = scope.attribute(items, method=method, target=target)
                dele = metrics.deletion(scope, att, steps=steps).auc
                ins = metrics.insertion(scope, att, steps=steps).auc
            verdicts: list[str | None] = [None] * len(items)
            if sanity:
                try:
                    rep = scope.sanity_check(items, method=method, target=target)
                    last = np.abs(rep.correlations[-1])
                    verdicts = [f"{rep.verdict.value} (|ρ| after randomising every layer: {float(last[i]):.3f} for "
                                f"this image, mean {float(np.nanmean(last)):.3f}, threshold {rep.threshold})"
                                for i in range(len(items))]  # fmt: skip
                except ConvscopeError as exc:
                    verdicts = [f"not run: {exc}"] * len(items)
            for i, view in enumerate(images):
                out.append(_attribution_view(att, i, view, float(dele[i]), float(ins[i]), verdicts[i]))
    return out


def _attribution_view(att: Any, i: int, view: ImageView, dele: float, ins: float, verdict: str | None) -> AttributionView:
    from convscope.render import apply_cmap

    target = None if att.targets is None else int(att.targets[i])
    names = {p.index: p.name for p in view.predictions}
    tname = names.get(target) if target is not None else None
    raw = att.raw[i]
    where = f" at {att.layer}" if att.layer else ""
    what = f"{att.method}{where} for class {target}" + (f" ({tname})" if tname else "")
    key = f"attribution/{att.method}/{target}/image/{i}"
    h, w = att.maps.shape[1:]
    pics = [
        PictureRef(f"{key}/input", f"image {i} ({view.name}), {w}×{h} px, preprocessing undone (0–255, no normalisation)",
                   f"input image {i}: {view.name}", _const(Image.fromarray(att.images[i]))),
        PictureRef(f"{key}/map", f"{what}: map normalised by its maximum to [0, 1] (turbo: blue = 0, red = 1); raw values in "
                   f"[{fmt(float(raw.min()))}, {fmt(float(raw.max()))}]",
                   f"{att.method} map for image {i}, class {target}, peak 1", _const(Image.fromarray(apply_cmap(att.maps[i], "turbo")))),
        PictureRef(f"{key}/overlay", f"{what}: the map normalised to [0, 1] over the image at opacity 0.5 (turbo)",
                   f"{att.method} overlay for image {i}, class {target}", lambda: att.overlay(i)),
    ]  # fmt: skip
    return AttributionView(i, att.method, target, tname, att.layer, pics, dele, ins, verdict)
