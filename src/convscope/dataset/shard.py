"""The per-shard scanner: one forward pass per batch, exact top-k tables and statistics per layer.

A scan cuts the data, in its stable order, into shards of ``shard_size`` images: shard ``i`` holds the
images with sequence numbers ``[i * shard_size, (i + 1) * shard_size)``. :class:`ShardScanner` scans one
shard into a :class:`Partial`; the driver folds partials **in shard order** with :func:`merge_partials`
(``TopK.merge``, ``ChannelStats.merge``), so results do not depend on which worker scanned what, nor
when. The same class runs locally and, constructed once per actor, in a Ray Data actor pool.

Example::

    scanner = ShardScanner(scope, layers=["conv_1"], k=9)
    part = scanner.scan(0, source.batches(scope, 64, 0, 1024))
    part.layers["conv_1"].top[By.MAX].values   # (C, 9)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from itertools import groupby
from typing import Any

import numpy as np
import torch

from convscope.adapters.base import Layout
from convscope.capture import Capture, Target, _select
from convscope.dataset.sources import Batch
from convscope.dataset.stats import ChannelStats, flat_maps, summarise
from convscope.dataset.topk import TopK
from convscope.errors import LayerNotFoundError, OptionError


class By(str, Enum):
    """The per-image statistic a channel's top-k ranks by."""

    MAX = "max"  # spatial max (argmax position kept)
    MEAN = "mean"  # spatial mean, what objectives.channel maximises


@dataclass
class LayerResult:
    """One layer's tables: ``top[By]`` ((C, k) values, seqs, positions), ``stats`` and the map grid (H, W)."""

    name: str
    top: dict[By, TopK]
    stats: ChannelStats
    grid: tuple[int, int]


@dataclass
class Partial:
    """What one shard gives: per-layer tables, and the ids, sequence numbers and labels of its images."""

    shard: int
    layers: dict[str, LayerResult] = field(default_factory=dict)
    ids: list[Any] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    labels: list[int] | None = None
    skipped: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.seqs)


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


def target_name(scope: Any, t: Target) -> str:
    return (
        scope.index.display_name(t.handle)
        + ("" if t.item is None else f"[{t.item}]")
        + (":pre" if t.pre else "")
    )


class ShardScanner:
    """Scans shards of one model: ``scan(shard, batches)`` → :class:`Partial` (one pass per batch).

    ``layers``: queries (default ``None``: every conv layer); ``k``: images kept per channel.
    """

    def __init__(self, scope: Any, layers: Any = None, k: int = 16) -> None:
        self.scope, self.k = scope, k
        self.targets = default_layers(scope) if layers is None else scope.targets(layers)
        self.names = {t.key: target_name(scope, t) for t in self.targets}

    def scan(self, shard: int, batches: Iterable[Batch]) -> Partial:
        part = Partial(shard)
        labels: list[int] = []
        labelled = True
        for batch in batches:
            if len(batch.ids) == 0:
                continue
            seqs = torch.from_numpy(np.asarray(batch.seqs, np.int64))

            def reduce(key: str, output: torch.Tensor, seqs: torch.Tensor = seqs) -> None:
                name = self.names[key]
                x = _channels_first(self.scope, key, output)
                if name not in part.layers:
                    part.layers[name] = new_result(name, x, self.k)
                update(part.layers[name], x, seqs)

            with _Reducing(self.scope.adapter, self.targets, reduce) as cap:
                cap.run(batch.x)
            self.scope._last_shape = tuple(batch.x.shape[1:])
            part.ids.extend(batch.ids)
            part.seqs.extend(int(s) for s in batch.seqs)
            if batch.labels is None:
                labelled = False
            else:
                labels.extend(int(v) for v in batch.labels)
        part.labels = labels if labelled and part.seqs else None
        return part


class _Reducing(Capture):
    """A :class:`Capture` that hands each target's output to ``reduce(key, tensor)`` inside the hook and
    keeps nothing: no clone (the reduction runs before any in-place op downstream can change the
    tensor), no N x C x H x W copy per layer. The first call of a module counts (``'name@k'``: call k),
    as ``recording.get`` reads it; the pass stops once every target is reduced."""

    def __init__(self, adapter: Any, targets: list[Target], reduce: Any) -> None:
        super().__init__(adapter, targets, stop=True)
        self._reduce = reduce
        self._calls: dict[str, int] = {}

    def _record(self, target: Target, output: Any) -> None:
        key = target.key
        call = self._calls.get(key, 0)
        self._calls[key] = call + 1
        if call != (target.call or 0):
            return
        tensor = _select(output, target.item, key)
        if tensor is None:
            return
        self._reduce(key, tensor.detach())
        self._pending.discard(key)


def _channels_first(scope: Any, key: str, m: torch.Tensor) -> torch.Tensor:
    """A layer output as an (N, C, H, W) view (channels-last outputs are permuted, not copied)."""
    if m.ndim != 4:
        raise OptionError(
            f"layer {key!r} has output shape {tuple(m.shape)}; scan needs spatial (4-D) layer outputs"
        )
    return m if scope.layout is Layout.NCHW else m.permute(0, 3, 1, 2)


def record(scope: Any, targets: list[Target], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward pass recording every target (cloned); maps returned channels first (N, C, H, W)."""
    with Capture(scope.adapter, targets, stop=True) as cap:
        cap.run(x)
    scope._last_shape = tuple(x.shape[1:])
    return {t.key: _channels_first(scope, t.key, cap.recording.get(t.key)) for t in targets}


def new_result(name: str, maps: torch.Tensor, k: int) -> LayerResult:
    c = int(maps.shape[1])
    return LayerResult(name, {By.MAX: TopK(c, k), By.MEAN: TopK(c, k)}, ChannelStats(c),
                       (int(maps.shape[2]), int(maps.shape[3])))  # fmt: skip


def update(result: LayerResult, maps: torch.Tensor, seqs: torch.Tensor) -> None:
    """Fold one batch of (N, C, H, W) maps (any strides) into a layer's tables and statistics: per-map
    reductions once (:func:`~convscope.dataset.stats.summarise`), argmax positions only for the images
    that enter a table (the first maximum on ties)."""
    flat = flat_maps(maps)
    summary = summarise(flat)
    found = torch.full(summary.peak.shape, -1, dtype=torch.int64)  # argmax positions fetched so far

    def where(images: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """Argmax positions of maps (images[i], channels[i]); a map both tables take is read once."""
        missing = (found[images, channels] < 0).nonzero(as_tuple=True)[0]
        if missing.numel():
            i, c = images[missing], channels[missing]
            found[i, c] = flat[i.to(flat.device), c.to(flat.device)].argmax(dim=1).cpu()
        return found[images, channels]

    result.top[By.MAX].update(summary.peak, seqs, where)
    result.top[By.MEAN].update(summary.average, seqs, where)
    result.stats.add(summary)


def merge_partials(parts: Iterable[Partial]) -> dict[str, LayerResult]:
    """Fold partials (give them in shard order: statistics merge in float64, order fixes the last bit)."""
    out: dict[str, LayerResult] = {}
    for part in parts:
        for name, r in part.layers.items():
            if name not in out:
                out[name] = LayerResult(name, dict(r.top), copy.deepcopy(r.stats), r.grid)
                continue
            acc = out[name]
            acc.top = {by: acc.top[by].merge(r.top[by]) for by in By}
            acc.stats.merge(r.stats)
    return out


def split_into_shards(batches: Iterable[Batch], shard_size: int) -> Iterator[tuple[int, Iterator[Batch]]]:
    """Cut a stream of batches at shard boundaries (by sequence number): ``(shard, its batches)``; each
    group must be consumed (or dropped) before the next is taken, as with ``itertools.groupby``."""

    def pieces() -> Iterator[Batch]:
        for b in batches:
            seqs = np.asarray(b.seqs, np.int64)
            shard = seqs // shard_size
            cuts = np.flatnonzero(np.diff(shard)) + 1
            for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(seqs)], strict=True):
                if lo == 0 and hi == len(seqs):
                    yield b
                    continue
                yield Batch(
                    b.ids[lo:hi], seqs[lo:hi], b.x[lo:hi], None if b.labels is None else b.labels[lo:hi]
                )

    return ((int(key), group) for key, group in groupby(pieces(), key=lambda b: int(b.seqs[0]) // shard_size))
