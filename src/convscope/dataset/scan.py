"""``Scope.scan``: stream a dataset through the model once and keep, per channel of every requested layer,
the exact top-k images (by spatial max and by spatial mean) and mergeable statistics.

Example::

    scan = scope.scan("photos/", layers="layer4", k=9)
    top = scan.top("layer4", 7)           # TopExamples: ids, values, positions (y, x), labels
    top.grid().save("layer4_7.png")       # the 9 images with captions
    scan.patches("layer4", 7)             # their receptive-field crops at the argmax
    print(scan.stats("layer4"))           # per-channel table
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from PIL import Image

from convscope.adapters.base import Layout
from convscope.capture import Capture, Target
from convscope.dataset.errors import NotAvailableError
from convscope.dataset.sources import Source, as_source
from convscope.dataset.stats import ChannelStats
from convscope.dataset.topk import TopK
from convscope.errors import LayerNotFoundError, OptionError, check_choice, hint


class By(str, Enum):
    """The per-image statistic a channel's top-k ranks by."""

    MAX = "max"  # spatial max (argmax position kept)
    MEAN = "mean"  # spatial mean, what objectives.channel maximises


class Border(str, Enum):
    """How patches of units near the image border are cut."""

    CLIP = "clip"  # cropped to the image: smaller patches at corners
    PAD = "pad"  # the full receptive field, black outside the image


@dataclass
class LayerResult:
    """One layer's tables: ``top[By]`` ((C, k) values, seqs, positions), ``stats`` and the map grid (H, W)."""

    name: str
    top: dict[By, TopK]
    stats: ChannelStats
    grid: tuple[int, int]


@dataclass
class TopExamples:
    """The top images of one channel, best first: ``ids``, ``values``, ``positions`` ((y, x) on the
    layer grid, the argmax of each image's map), ``labels``/``classes`` when the data has them."""

    layer: str
    channel: int
    by: str
    ids: list[Any]
    values: np.ndarray
    positions: list[tuple[int, int]]
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    _scan: Any = field(default=None, repr=False)
    _cache: list[Image.Image] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def images(self) -> list[Image.Image]:
        """The images as the model saw them (after resizing), read back from the source once."""
        if self._cache is None:
            self._cache = self._scan._pictures(self.ids) if self.ids else []
        return list(self._cache)

    def patches(self, *, border: str | Border = "clip") -> list[Image.Image]:
        """Each image cropped at the receptive field of its argmax unit; ``border="clip"`` (default) or
        ``"pad"`` (every patch the full field size, black beyond the image)."""
        mode = Border(check_choice("border", border.value if isinstance(border, Border) else border,
                                   [b.value for b in Border]))  # fmt: skip
        rf = self._scan.receptive_field(self.layer)
        out = []
        for img, (y, x) in zip(self.images(), self.positions, strict=True):
            box = rf.box(y, x)
            if mode is Border.CLIP:
                box = (max(box[0], 0), max(box[1], 0), min(box[2], img.width), min(box[3], img.height))
            out.append(img.crop(box))
        return out

    def captions(self) -> list[str]:
        names = self.classes
        out = []
        for i, (ident, v) in enumerate(zip(self.ids, self.values, strict=True)):
            text = f"{ident} {v:.3g}"
            if self.labels is not None:
                lab = int(self.labels[i])
                text += f" {names[lab] if names and 0 <= lab < len(names) else lab}"
            out.append(text)
        return out

    def grid(self, *, cols: int | None = None, patches: bool = False, border: str = "pad") -> Image.Image:
        """One picture of the images (or their ``patches``) with id/value/class captions."""
        from PIL import ImageDraw

        from convscope.render.overlay import tile

        pics = self.patches(border=border) if patches else self.images()
        if not pics:
            raise OptionError(f"channel {self.channel} of {self.layer!r} has no examples to draw")
        w, h = max(p.width for p in pics), max(p.height for p in pics)
        scale = max(1, 64 // max(h, 1))
        tiles = []
        for pic, text in zip(pics, self.captions(), strict=True):
            canvas = Image.new("RGB", (w * scale, h * scale + 12), "white")
            canvas.paste(pic.convert("RGB").resize((pic.width * scale, pic.height * scale), Image.Resampling.NEAREST))
            ImageDraw.Draw(canvas).text((1, h * scale), text[: max(4, w * scale // 6)], fill="black")
            tiles.append(canvas)
        return tile(tiles, cols=cols)


class Scan:
    """The result of :meth:`Scope.scan`: top-k tables and statistics per layer (see the module docstring)."""

    def __init__(self, scope: Any, source: Source, layers: dict[str, LayerResult], k: int,
                 labels: np.ndarray | None, ids: list[Any], count: int) -> None:  # fmt: skip
        self.scope, self.source, self.layers, self.k = scope, source, layers, k
        self._labels, self._ids, self.count = labels, ids, count
        self._rf: dict[str, Any] = {}

    @property
    def skipped(self) -> list[tuple[Any, str]]:
        """Images that could not be read, as ``(id, reason)``."""
        return list(self.source.skipped)

    @property
    def classes(self) -> list[str] | None:
        return self.source.classes

    def __repr__(self) -> str:
        return f"Scan(images={self.count}, layers={list(self.layers)}, k={self.k}, skipped={len(self.skipped)})"

    def _layer(self, layer: str) -> LayerResult:
        if layer in self.layers:
            return self.layers[layer]
        try:
            name = self.scope.index.display_name(self.scope.layer(layer))
        except LayerNotFoundError:
            name = None
        if name in self.layers:
            return self.layers[name]
        near = hint(str(layer), list(self.layers))
        raise LayerNotFoundError(
            f"layer {layer!r} was not scanned; scanned layers: {', '.join(map(repr, list(self.layers)[:12]))}"
            + (f" ({near})" if near else "")
        )

    def top(self, layer: str, channel: int, *, by: str = "max") -> TopExamples:
        """The top-k images of ``channel`` ranked by ``by`` (``"max"``, default, or ``"mean"``)."""
        result = self._layer(layer)
        result.stats._check_channel(channel)
        table = result.top[By(check_choice("by", by, [b.value for b in By]))]
        seqs = table.seqs[channel].numpy()
        flat = table.positions[channel].numpy()
        width = result.grid[1]
        labels = None if self._labels is None else self._labels[seqs]
        return TopExamples(
            result.name, int(channel), by, [self._ids[s] for s in seqs], table.values[channel].numpy().copy(),
            [(int(p) // width, int(p) % width) for p in flat], labels, self.classes, self,
        )  # fmt: skip

    def stats(self, layer: str) -> ChannelStats:
        """Per-channel statistics of ``layer`` over every position of every image."""
        return self._layer(layer).stats

    def patches(self, layer: str, channel: int, *, by: str = "max", border: str = "clip") -> list[Image.Image]:
        """The receptive-field crops of ``channel``'s top images (see :meth:`TopExamples.patches`)."""
        return self.top(layer, channel, by=by).patches(border=border)

    def class_counts(self, layer: str, channel: int, *, by: str = "max") -> dict[str, int]:
        """Which classes fill ``channel``'s top-k (labelled data), most frequent first."""
        top = self.top(layer, channel, by=by)
        if top.labels is None:
            raise OptionError("this data has no labels; class counts need a class folder or (x, y) batches")
        names = self.classes
        keys = [names[i] if names and 0 <= i < len(names) else str(i) for i in top.labels.tolist()]
        return dict(Counter(keys).most_common())

    def receptive_field(self, layer: str) -> Any:
        name = self._layer(layer).name
        if name not in self._rf:
            self._rf[name] = self.scope.receptive_field(name)
        return self._rf[name]

    def _pictures(self, ids: list[Any]) -> list[Image.Image]:
        x = self.scope.prepare(self.source.load(ids))
        return [Image.fromarray(a) for a in self.scope.input_spec().to_display(x)]


def default_layers(scope: Any) -> list[Target]:
    """Every leaf conv layer (a 4-D kernel), each module once."""
    seen: set[int] = set()
    out = []
    for h in scope.adapter.handles:
        if h.is_leaf and id(h.module) not in seen and scope._has_conv_kernel(h):
            seen.add(id(h.module))
            out.append(Target(h))
    if not out:
        raise LayerNotFoundError("this model has no conv layers; name the layers to scan with layers=...")
    return out


def _check_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionError(f"{option}={value!r} is not allowed; pass a positive int")
    return int(value)


def scan(scope: Any, data: Any, *, layers: Any = None, k: int = 16, store: Any = None,
         batch_size: int = 64, progress: bool = True) -> Scan:  # fmt: skip
    """Implementation of :meth:`Scope.scan`."""
    if store is not None:
        raise NotAvailableError(f"store={store!r}: store= lands in a later release; pass store=None")
    k, batch_size = _check_int("k", k), _check_int("batch_size", batch_size)
    targets = default_layers(scope) if layers is None else scope.targets(layers)
    source = as_source(data)
    names = {t.key: scope.index.display_name(t.handle) + ("" if t.item is None else f"[{t.item}]")
             + (":pre" if t.pre else "") for t in targets}  # fmt: skip
    results: dict[str, LayerResult] = {}
    labels: list[np.ndarray] = []
    ids: list[Any] = []
    count = 0
    bar = _progress(progress, len(source))
    try:
        for batch in source.batches(scope, batch_size):
            maps = _record(scope, targets, batch.x)
            seqs = torch.from_numpy(batch.seqs)
            for key, m in maps.items():
                name = names[key]
                if name not in results:
                    results[name] = _new_result(name, m, k)
                _update(results[name], m, seqs)
            if batch.labels is not None:
                labels.append(batch.labels)
            ids.extend(batch.ids)
            count += len(batch.ids)
            if bar is not None:
                bar.update(len(batch.ids))
    finally:
        if bar is not None:
            bar.close()
    # seq -> id and label: a path source's full lists (skipped files leave gaps), else the order of arrival
    ids_by_seq = getattr(source, "ids", None) or ids
    label_of = getattr(source, "label_of", None)
    if label_of is None and labels and sum(len(a) for a in labels) == count:
        label_of = np.concatenate(labels)
    return Scan(scope, source, results, k, label_of, ids_by_seq, count)


def _progress(progress: bool, total: int) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total if total >= 0 else None, unit="img", desc="scan")


def _record(scope: Any, targets: list[Target], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward pass recording every target; maps returned channels first (N, C, H, W)."""
    with Capture(scope.adapter, targets, stop=True) as cap:
        cap.run(x)
    scope._last_shape = tuple(x.shape[1:])
    out = {}
    for t in targets:
        m = cap.recording.get(t.key)
        if m.ndim != 4:
            raise OptionError(
                f"layer {t.key!r} has output shape {tuple(m.shape)}; scan needs spatial (4-D) layer outputs"
            )
        out[t.key] = m if scope.layout is Layout.NCHW else m.permute(0, 3, 1, 2)
    return out


def _new_result(name: str, maps: torch.Tensor, k: int) -> LayerResult:
    c = int(maps.shape[1])
    return LayerResult(name, {By.MAX: TopK(c, k), By.MEAN: TopK(c, k)}, ChannelStats(c),
                       (int(maps.shape[2]), int(maps.shape[3])))  # fmt: skip


def _update(result: LayerResult, maps: torch.Tensor, seqs: torch.Tensor) -> None:
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    peak, where = flat.max(dim=2)  # first maximum on ties
    result.top[By.MAX].update(peak, seqs, where)
    result.top[By.MEAN].update(flat.mean(dim=2), seqs, where)
    result.stats.update(maps)
