"""JSON views and pictures of the explorer, built only from the library's result objects: the layer list from
``Scope.summary()``, one whole-layer mosaic from ``FeatureMaps.grid()`` per (model, image, layer, normalisation,
order, contrast) — pages and single-channel maps are crops of it, so every channel of a layer shares one colour
scale — kernels from ``Scope.filters()``, predictions from ``Scope.predict()``.

The report helper's shared page model (``convscope.reporting.model``) did not exist when this was written; these
views read the public result objects directly.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from PIL import Image

from convscope.explorer.state import LRU, ImageStore, StoredImage, fingerprint

PAGE = 64  # tiles per mosaic page; 8 columns x 8 rows
COLS = 8


class Norm(str, Enum):
    CHANNEL = "channel"
    LAYER = "layer"
    SYMMETRIC = "symmetric"


class Order(str, Enum):
    MEAN = "mean"
    MAX = "max"
    INDEX = "index"


@dataclass(frozen=True)
class LayerEntry:
    """One row of the layer list: ``id`` is unique (a module called twice gives ``name`` and ``name@1``)."""

    id: str
    type: str
    output_shape: list[Any] | None
    params: int
    channels: int | None
    spatial: bool

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "output_shape": self.output_shape, "params": self.params,
                "channels": self.channels, "spatial": self.spatial, "viewable": self.channels is not None,
                "group": self.id.split(".")[:-1]}  # fmt: skip


def catalogue(scope: Any, summary: Any) -> list[LayerEntry]:
    """The layer list from :meth:`Scope.summary` (``summary``), in call order."""
    seen: dict[str, int] = {}
    out = []
    channel_last = scope.layout.value == "NHWC"
    for row in summary.rows:
        calls = seen.get(row.name, 0)
        seen[row.name] = calls + 1
        shape = list(row.output_shape) if isinstance(row.output_shape, tuple) else None
        channels = None
        if shape is not None and len(shape) in (2, 4) and all(isinstance(d, int) for d in shape[1:]):
            channels = int(shape[-1] if channel_last or len(shape) == 2 else shape[1])
        spatial = channels is not None and len(shape or []) == 4
        out.append(LayerEntry(row.name if calls == 0 else f"{row.name}@{calls}", row.type, shape, int(row.params),
                              channels, spatial))  # fmt: skip
    return out


@dataclass
class LayerPicture:
    """A whole layer drawn once: the mosaic, the channel order it shows and per-channel means/maxima."""

    image: Image.Image
    order: np.ndarray
    means: np.ndarray
    maxes: np.ndarray
    mins: np.ndarray
    tile: tuple[int, int]  # (w, h) in pixels
    map_shape: tuple[int, int]
    vector: bool
    warnings: list[str] = field(default_factory=list)

    def box(self, position: int) -> tuple[int, int, int, int]:
        r, c = divmod(position, COLS)
        w, h = self.tile
        return c * (w + 1), r * (h + 1), w, h

    @property
    def pages(self) -> int:
        return max(1, math.ceil(len(self.order) / PAGE))


class Explorer:
    """Everything one launch holds; every model call goes through :meth:`model_lock`."""

    def __init__(self, scope: Any, *, scan: Any = None, labels: Any = None, steps: int = 128,
                 max_steps: int = 512) -> None:  # fmt: skip
        self.scope, self.scan, self.labels = scope, scan, labels
        self.steps, self.max_steps = steps, max_steps
        self.fingerprint = fingerprint(scope)
        self.summary = scope.summary()
        self.layers = {e.id: e for e in catalogue(scope, self.summary)}
        self.images = ImageStore()
        self.acts = LRU(entries=256, max_bytes=512 * 1024 * 1024)
        self.pictures = LRU(entries=256, max_bytes=512 * 1024 * 1024)
        self.pngs = LRU(entries=2048, max_bytes=256 * 1024 * 1024)
        self._lock = threading.RLock()

    @contextmanager
    def model_lock(self) -> Iterator[list[str]]:
        """Hold the model (one pass at a time: hooks are per model); yields the warnings raised inside."""
        with self._lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            messages: list[str] = []
            yield messages
            messages.extend(str(w.message) for w in caught)

    # -- activations and layer pictures -------------------------------------------------------------
    def feature_maps(self, image: StoredImage, layer: str) -> Any:
        """The layer's :class:`FeatureMaps` for ``image``. A miss runs ONE pass that records every spatial
        layer at once (when they fit in :attr:`ONE_PASS_BYTES`), so browsing the other layers is a cache hit."""
        key = (self.fingerprint, image.sha256, layer)
        found = self.acts.get(key)
        if found is not None:
            return found
        with self.model_lock():
            found = self.acts.get(key)  # another request may have run the pass while this one waited
            if found is not None:
                return found
            base = layer.split("@")[0]
            entry = self.layers[layer]
            if entry.spatial and self._spatial_bytes <= self.ONE_PASS_BYTES:
                acts = self.scope.activations(image.picture)
                if layer not in acts:
                    acts = self.scope.activations(image.picture, layers=[base])
            else:
                acts = self.scope.activations(image.picture, layers=[base])
        for name, fm in acts.items():  # keep every recorded call of every layer
            self.acts.put((self.fingerprint, image.sha256, name), fm, fm.tensor.numel() * 4)
        return acts[layer]

    ONE_PASS_BYTES = 256 * 1024 * 1024

    @property
    def _spatial_bytes(self) -> int:
        return sum(4 * math.prod(e.output_shape[1:]) for e in self.layers.values() if e.spatial and e.output_shape)

    def layer_picture(self, image: StoredImage, layer: str, norm: Norm, order: Order, contrast: int) -> LayerPicture:
        key = (self.fingerprint, image.sha256, layer, norm.value, order.value, contrast)
        return self.pictures.get_or_make(key, lambda: self._draw(image, layer, norm, order, contrast),
                                         lambda p: p.image.width * p.image.height * 3)  # fmt: skip

    def _draw(self, image: StoredImage, layer: str, norm: Norm, order: Order, contrast: int) -> LayerPicture:
        fm = self.feature_maps(image, layer)
        maps = fm.channels_first()[0]  # (C, H, W)
        flat = maps.reshape(len(maps), -1)
        means, maxes, mins = flat.mean(axis=1), flat.max(axis=1), flat.min(axis=1)
        index = np.arange(len(maps)) if order is Order.INDEX else np.argsort(
            -(means if order is Order.MEAN else maxes), kind="stable")  # fmt: skip
        clip = (float(contrast), 100.0 - contrast) if contrast > 0 else None
        cmap = "coolwarm" if norm is Norm.SYMMETRIC else "viridis"
        cols = min(COLS, len(maps))
        # drawn outside the model lock (numpy and PIL only), so requests for other layers draw in parallel;
        # the blank-layer notice is computed, not caught as a warning (catching warnings is process-wide)
        from convscope.render import grid_image

        said: list[str] = []
        if fm.is_vector:  # one cell per unit; per-channel scaling of one value is meaningless
            mode = "symmetric" if norm is Norm.SYMMETRIC else "layer"
            img = grid_image(maps[index], cols=cols, normalize=mode, clip=clip, cmap=cmap, scale=24)
        else:
            notice = fm.blank_notice(0, norm.value)
            said = [notice] if notice else []
            img = grid_image(maps, channels=index.tolist(), cols=cols, normalize=norm.value, clip=clip, cmap=cmap)
        rows = math.ceil(len(maps) / cols)
        tile = ((img.width - (cols - 1)) // cols, (img.height - (rows - 1)) // rows)
        shape = (int(maps.shape[1]), int(maps.shape[2]))
        return LayerPicture(img, index, means, maxes, mins, tile, shape, bool(fm.is_vector), said)

    def page(self, image: StoredImage, layer: str, norm: Norm, order: Order, contrast: int,
             page: int) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
        """PNG bytes of one page (64 tiles) and its JSON tile boxes, cached."""
        key = ("page", self.fingerprint, image.sha256, layer, norm.value, order.value, contrast, page)
        return self.pngs.get_or_make(key, lambda: self._page(image, layer, norm, order, contrast, page),
                                     lambda v: len(v[0]))  # fmt: skip

    def _page(self, image: StoredImage, layer: str, norm: Norm, order: Order, contrast: int,
              page: int) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
        pic = self.layer_picture(image, layer, norm, order, contrast)
        shown = pic.order[page * PAGE : (page + 1) * PAGE]
        first = page * PAGE
        x0, y0, _, _ = pic.box(first)
        last = pic.box(first + len(shown) - 1)
        width = pic.image.width if len(pic.order) >= COLS else last[0] + last[2]
        crop = pic.image.crop((0, y0, width, last[1] + last[3]))
        tiles = []
        for i, channel in enumerate(shown.tolist()):
            x, y, w, h = pic.box(first + i)
            tiles.append({"channel": channel, "rank": first + i, "x": x, "y": y - y0, "w": w, "h": h,
                          "mean": _num(pic.means[channel]), "max": _num(pic.maxes[channel])})  # fmt: skip
        meta = {"layer": layer, "image": image.id, "channels": len(pic.order), "page": page, "pages": pic.pages,
                "page_size": PAGE, "normalize": norm.value, "sort": order.value, "contrast": contrast,
                "width": crop.width, "height": crop.height, "vector": pic.vector, "map_shape": list(pic.map_shape),
                "tiles": tiles, "warnings": pic.warnings}  # fmt: skip
        return png(crop), meta

    def channel_map(self, image: StoredImage, layer: str, channel: int, norm: Norm, contrast: int) -> bytes:
        key = ("map", self.fingerprint, image.sha256, layer, norm.value, contrast, channel)

        def make() -> bytes:
            pic = self.layer_picture(image, layer, norm, Order.INDEX, contrast)
            x, y, w, h = pic.box(channel)
            return png(pic.image.crop((x, y, x + w, y + h)))

        return self.pngs.get_or_make(key, make, len)

    def channel_info(self, image: StoredImage, layer: str, channel: int, norm: Norm) -> dict[str, Any]:
        pic = self.layer_picture(image, layer, norm, Order.MEAN, 0)
        rank = int(np.flatnonzero(pic.order == channel)[0])
        return {"layer": layer, "channel": channel, "channels": len(pic.order), "image": image.id,
                "mean": _num(pic.means[channel]), "max": _num(pic.maxes[channel]), "min": _num(pic.mins[channel]),
                "rank_by_mean": rank, "map_shape": list(pic.map_shape), "vector": pic.vector,
                "has_kernel": self.has_kernel(layer), "scanned": self.scanned(layer)}  # fmt: skip

    # -- other pictures -----------------------------------------------------------------------------
    def input_picture(self, image: StoredImage) -> bytes:
        def make() -> bytes:
            with self.model_lock():
                x = self.scope.prepare(image.picture)
                pixels = self.scope.input_spec().to_display(x)[0]
            return png(Image.fromarray(pixels))

        return self.pngs.get_or_make(("input", self.fingerprint, image.sha256), make, len)

    def thumbnail(self, image: StoredImage) -> bytes:
        def make() -> bytes:
            pic = image.picture.copy()
            pic.thumbnail((96, 96))
            return png(pic)

        return self.pngs.get_or_make(("thumb", image.sha256), make, len)

    def filters(self, layer: str) -> Any:
        base = layer.split("@")[0]

        def make() -> Any:
            from convscope.errors import ConvscopeError

            try:
                with self.model_lock():
                    return self.scope.filters(base)
            except ConvscopeError:
                return False

        return self.pictures.get_or_make(("filters", self.fingerprint, base), make)

    def has_kernel(self, layer: str) -> bool:
        return self.filters(layer) is not False

    def kernel(self, layer: str, channel: int) -> bytes | None:
        from convscope.featuremaps import Filters

        found = self.filters(layer)
        if found is False or not 0 <= channel < len(found.weights):
            return None
        one = Filters(found.name, found.weights[channel : channel + 1])
        return self.pngs.get_or_make(("kernel", self.fingerprint, layer, channel),
                                     lambda: png(_enlarge(one.grid(), 96)), len)  # fmt: skip

    def predictions(self, image: StoredImage, k: int) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            with self.model_lock():
                preds = self.scope.predict(image.picture, k=k, labels=self.labels)
            names = preds.names[0] if preds.names is not None else [None] * len(preds.indices[0])
            rows = [{"rank": r + 1, "index": int(i), "prob": _num(p), "name": n}
                    for r, (i, p, n) in enumerate(zip(preds.indices[0], preds.probabilities[0], names, strict=True))]  # fmt: skip
            return {"image": image.id, "k": len(rows), "rows": rows}

        return self.pngs.get_or_make(("pred", self.fingerprint, image.sha256, k), make)

    def scanned(self, layer: str) -> bool:
        return self.scan is not None and layer in self.scan.layers


STORED_PIXELS = 1 << 20
"""Pictures past this many pixels are PNG-encoded without compression (zlib "stored" blocks): on loopback the
bytes are free and encoding a 64-tile page of 224² maps at level 1 costs more than the forward pass's share
of a cold request (measured: 8 clients opening 13 VGG16 layers of a new image, p95 816 → 517 ms)."""


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0 if img.width * img.height > STORED_PIXELS else 1)
    return buf.getvalue()


def _enlarge(img: Image.Image, side: int) -> Image.Image:
    factor = max(1, side // max(img.width, img.height))
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST) if factor > 1 else img


def _num(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


