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

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from PIL import Image

from convscope.dataset.shard import By, LayerResult
from convscope.dataset.stats import ChannelStats
from convscope.errors import LayerNotFoundError, OptionError, check_choice, hint

__all__ = ["Border", "By", "LayerResult", "PatchMode", "Scan", "TopExamples", "scan"]


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


class Border(str, Enum):
    """How patches of units near the image border are cut."""

    CLIP = "clip"  # cropped to the image: smaller patches at corners
    PAD = "pad"  # the full receptive field, black outside the image


class PatchMode(str, Enum):
    """What a patch shows."""

    CROP = "crop"  # the receptive field of the argmax unit
    MASK = "mask"  # the whole image, dimmed where the upsampled map is below the channel's quantile


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

    def patches(self, *, border: str | Border = "clip", mode: str | PatchMode = "crop",
                quantile: float = 0.99) -> list[Image.Image]:  # fmt: skip
        """Each image cropped at the receptive field of its argmax unit (``mode="crop"``, default), with
        ``border="clip"`` (default) or ``"pad"`` (every patch the full field size, black beyond the image);
        or ``mode="mask"``: the whole image, the channel's map upsampled to it and everything below the
        channel's dataset ``quantile`` (default 0.99, from the scan's statistics) dimmed."""
        cut = Border(check_choice("border", _value(border), [b.value for b in Border]))
        how = PatchMode(check_choice("mode", _value(mode), [m.value for m in PatchMode]))
        if how is PatchMode.MASK:
            return self._masked(quantile)
        rf = self._scan.receptive_field(self.layer)
        out = []
        for img, (y, x) in zip(self.images(), self.positions, strict=True):
            box = rf.box(y, x)
            if cut is Border.CLIP:
                box = (max(box[0], 0), max(box[1], 0), min(box[2], img.width), min(box[3], img.height))
            out.append(img.crop(box))
        return out

    def _masked(self, quantile: float) -> list[Image.Image]:
        import torch.nn.functional as F

        threshold = float(self._scan.stats(self.layer).quantile(quantile)[self.channel])
        maps = self._scan._channel_maps(self.layer, self.ids, self.channel)
        out = []
        for img, m in zip(self.images(), maps, strict=True):
            up = F.interpolate(m[None, None].float(), size=(img.height, img.width), mode="bilinear",
                               align_corners=False)[0, 0].numpy()  # fmt: skip
            keep = (up > threshold)[..., None]
            pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
            shown = np.where(keep, pixels, pixels * 0.2 + np.array([0, 0, 40], np.float32))
            out.append(Image.fromarray(shown.clip(0, 255).astype(np.uint8)))
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

    def grid(self, *, cols: int | None = None, patches: bool = False, border: str = "pad",
             mode: str = "crop") -> Image.Image:  # fmt: skip
        """One picture of the images (or their ``patches``, cut by ``border`` and ``mode``) with
        id/value/class captions."""
        from PIL import ImageDraw

        from convscope.render.overlay import tile

        pics = self.patches(border=border, mode=mode) if patches else self.images()
        if not pics:
            raise OptionError(f"channel {self.channel} of {self.layer!r} has no examples to draw")
        w, h = max(p.width for p in pics), max(p.height for p in pics)
        scale = max(1, 64 // max(h, 1))
        tiles = []
        for pic, text in zip(pics, self.captions(), strict=True):
            canvas = Image.new("RGB", (w * scale, h * scale + 12), "white")
            canvas.paste(
                pic.convert("RGB").resize((pic.width * scale, pic.height * scale), Image.Resampling.NEAREST)
            )
            ImageDraw.Draw(canvas).text((1, h * scale), text[: max(4, w * scale // 6)], fill="black")
            tiles.append(canvas)
        return tile(tiles, cols=cols)


class Scan:
    """The result of :meth:`Scope.scan` or :meth:`Scan.open`: top-k tables and statistics per layer.

    ``scope`` is ``None`` for a scan reopened from its store (no model): top-k, statistics, ids, labels
    and receptive-field boxes all work; ``images()``/``patches()`` read the source images again, and
    ``mode="mask"`` patches (which need the activation maps) need the model.
    """

    def __init__(self, layers: dict[str, LayerResult], k: int, *, source: Any, ids: Any, labels: np.ndarray | None,
                 count: int, scope: Any = None, spec: Any = None, skipped: list[tuple[Any, str]] | None = None,
                 receptive: dict[str, Any] | None = None, store: Any = None, resumed: int = 0) -> None:  # fmt: skip
        self.scope, self.source, self.layers, self.k, self.count = scope, source, layers, k, count
        self._ids, self._labels = ids, labels
        self._spec = spec if spec is not None else (scope.input_spec() if scope is not None else None)
        self._skipped = list(skipped or [])
        self._rf: dict[str, Any] = dict(receptive or {})
        self._maps: dict[tuple[str, Any], torch.Tensor] = {}
        self.store, self.resumed = store, resumed

    @classmethod
    def open(cls, store: Any, *, data: Any = None, root: Any = None) -> Scan:
        """Reopen a finished scan from its store folder, without the model. ``data``: the data again (for an
        array or dataset scan, whose pixels are not stored; default ``None``); ``root``: where a folder
        scan's images are now (default: the folder they were scanned from)."""
        from convscope.dataset.driver import open_scan

        return open_scan(store, data=data, root=root)

    @property
    def skipped(self) -> list[tuple[Any, str]]:
        """Images that could not be read, as ``(id, reason)``."""
        return list(self._skipped)

    @property
    def classes(self) -> list[str] | None:
        return getattr(self.source, "classes", None)

    def __repr__(self) -> str:
        return (
            f"Scan(images={self.count}, layers={list(self.layers)}, k={self.k}, skipped={len(self.skipped)})"
        )

    def _layer(self, layer: str) -> LayerResult:
        if layer in self.layers:
            return self.layers[layer]
        name = None
        if self.scope is not None:
            with contextlib.suppress(LayerNotFoundError):
                name = self.scope.index.display_name(self.scope.layer(layer))
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
        table = result.top[By(check_choice("by", _value(by), [b.value for b in By]))]
        seqs = table.seqs[channel].numpy()
        flat = table.positions[channel].numpy()
        width = result.grid[1]
        labels = None if self._labels is None else self._labels[seqs]
        return TopExamples(
            result.name, int(channel), _value(by), [self._ids[s] for s in seqs.tolist()],
            table.values[channel].numpy().copy(), [(int(p) // width, int(p) % width) for p in flat], labels,
            self.classes, self,
        )  # fmt: skip

    def stats(self, layer: str) -> ChannelStats:
        """Per-channel statistics of ``layer`` over every position of every image."""
        return self._layer(layer).stats

    def patches(self, layer: str, channel: int, *, by: str = "max", border: str = "clip",
                mode: str = "crop", quantile: float = 0.99) -> list[Image.Image]:  # fmt: skip
        """The patches of ``channel``'s top images (see :meth:`TopExamples.patches`)."""
        return self.top(layer, channel, by=by).patches(border=border, mode=mode, quantile=quantile)

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
            if self.scope is None:
                raise OptionError(
                    f"the store holds no receptive field for {name!r} (it could not be measured)"
                )
            self._rf[name] = self.scope.receptive_field(name)
        return self._rf[name]

    def _pictures(self, ids: list[Any]) -> list[Image.Image]:
        from convscope.inputs import prepare

        spec: Any = self._spec
        x = prepare(self.source.load(ids), spec)
        return [Image.fromarray(a) for a in spec.to_display(x)]

    def _channel_maps(self, layer: str, ids: list[Any], channel: int) -> list[torch.Tensor]:
        """``channel``'s maps of images ``ids`` at ``layer``; each image is forwarded once for all channels."""
        if self.scope is None:
            raise OptionError("mode='mask' needs the activation maps, so the model: scan again with "
                              "scope.scan(..., store=...) (it resumes at once) instead of Scan.open")  # fmt: skip
        from convscope.dataset.shard import record

        name = self._layer(layer).name
        todo = list(dict.fromkeys(i for i in ids if (name, i) not in self._maps))
        if todo:
            target = self.scope.targets(name)[:1]
            maps = record(self.scope, target, self.scope.prepare(self.source.load(todo)))[target[0].key]
            self._maps.update({(name, i): m.detach().cpu() for i, m in zip(todo, maps, strict=True)})
        return [self._maps[(name, i)][channel] for i in ids]


def scan(scope: Any, data: Any, *, layers: Any = None, k: int = 16, store: Any = None, batch_size: int = 64,
         shard_size: int | None = None, backend: str = "local", overwrite: bool = False, progress: bool = True,
         ray_address: str | None = None) -> Scan:  # fmt: skip
    """Implementation of :meth:`Scope.scan` (see :mod:`convscope.dataset.driver`)."""
    from convscope.dataset.driver import run_scan

    return run_scan(scope, data, layers=layers, k=k, store=store, batch_size=batch_size, shard_size=shard_size,
                    backend=backend, overwrite=overwrite, progress=progress, ray_address=ray_address)  # fmt: skip
