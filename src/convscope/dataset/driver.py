"""The scan driver: plan shards, skip those a store already holds, scan the rest with one
:class:`~convscope.dataset.shard.ShardScanner`, merge every partial in shard order, write the result.

Example::

    scan = scope.scan("photos/", layers="layer4", k=9, store="scan/")   # again: resumes
    scan = cs.Scan.open("scan/")                                        # later, without the model
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from convscope._progress import bar_redraws
from convscope.dataset.errors import EmptyDatasetError
from convscope.dataset.ray_backend import check_ray_source
from convscope.dataset.scan import Scan
from convscope.dataset.shard import By, Partial, ShardScanner, merge_partials, split_into_shards
from convscope.dataset.sources import Source, as_source, folder_source
from convscope.dataset.store import Store, data_identity, input_identity, model_fingerprint
from convscope.errors import ConvscopeError, InputError, OptionError, check_choice


class Backend(str, Enum):
    """Where shards are scanned."""

    LOCAL = "local"  # this process, shard after shard
    RAY = "ray"  # a Ray Data actor pool (see convscope.dataset.ray_backend)


def _check_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionError(f"{option}={value!r} is not allowed; pass a positive int")
    return int(value)


def run_scan(scope: Any, data: Any, *, layers: Any = None, k: int = 16, store: Any = None, batch_size: int = 64,
             shard_size: int | None = None, backend: str = "local", overwrite: bool = False,
             progress: bool = True, ray_address: str | None = None) -> Scan:  # fmt: skip
    """Implementation of :meth:`Scope.scan`."""
    k, batch_size = _check_int("k", k), _check_int("batch_size", batch_size)
    shard_size = shard_plan(batch_size, shard_size)
    batch_size = min(batch_size, shard_size)
    on_ray = Backend(check_choice("backend", backend, [b.value for b in Backend])) is Backend.RAY
    scanner = ShardScanner(scope, layers, k)
    source = as_source(data)
    if on_ray:
        check_ray_source(source)
    total = len(source)
    n_shards = math.ceil(total / shard_size) if total >= 0 else None
    box = Store(Path(store)) if store is not None else None
    done: set[int] = set()
    if box is not None:
        identity = {"model": model_fingerprint(scope), "preprocessing": scope.preprocessing(),
                    "input": input_identity(scope), "data": data_identity(source), "layers": list(scanner.names.values()),
                    "k": k, "shard_size": shard_size}  # fmt: skip
        from convscope import __version__

        extra = {"statistic": [b.value for b in By], "convscope_version": __version__, "shards": n_shards,
                 "framework": scope.adapter.framework, "classes": source.classes}  # fmt: skip
        done = box.begin(identity, extra, overwrite=overwrite)
    report = _Report(progress, total, n_shards)
    if done:
        report.say(
            f"resuming: {len(done)} of {n_shards if n_shards is not None else '?'} shards already done"
        )
    parts: dict[int, Partial] = {}
    try:
        for part in _scanned(scanner, source, scope, layers, (k, batch_size, shard_size), done, report, on_ray,
                             ray_address):  # fmt: skip
            if box is not None:
                box.write_part(part)
            parts[part.shard] = part
            report.shard_done(part.shard, part.count)
    finally:
        report.close()
    if box is not None:
        for shard in done:
            parts[shard] = box.read_part(shard, k)
    ordered = [parts[s] for s in sorted(parts)]
    return _finish(scope, source, scanner, ordered, k, box, len(done))


DEFAULT_SHARD = 1024


def shard_plan(batch_size: int, shard_size: int | None) -> int:
    """The shard size to use. Every shard is read in whole batches aligned to its start (shard ``i``'s
    batches start at ``i * shard_size + j * batch_size``), so the forward batches — and so every result,
    bit for bit — do not depend on the shard size. That needs ``shard_size`` to be a multiple of
    ``batch_size`` (a ``batch_size`` above ``shard_size`` is cut to it): the default (``None`` or 1024)
    becomes the largest multiple of ``batch_size`` up to 1024; any other size must be one."""
    if shard_size is None or shard_size == DEFAULT_SHARD:
        return max(batch_size, DEFAULT_SHARD // batch_size * batch_size)
    shard_size = _check_int("shard_size", shard_size)
    if shard_size > batch_size and shard_size % batch_size:
        lo = shard_size // batch_size * batch_size
        raise OptionError(
            f"shard_size={shard_size} is not a multiple of batch_size={batch_size}; shards are read in whole "
            f"batches aligned to their start (so results do not depend on the shard size): pass "
            f"shard_size={lo} or {lo + batch_size}, or another batch_size"
        )
    return shard_size


def _scanned(scanner: ShardScanner, source: Source, scope: Any, layers: Any, sizes: tuple[int, int, int],
             done: set[int], report: _Report, on_ray: bool, ray_address: str | None) -> Iterator[Partial]:  # fmt: skip
    """The partial of every shard not ``done``: scanned here in shard order, or on Ray in any order."""
    k, batch_size, shard_size = sizes
    if on_ray:
        from convscope.dataset.ray_backend import ray_scan

        todo = [s for s in range(math.ceil(len(source) / shard_size)) if s not in done]
        yield from ray_scan(scope, source, layers, k, batch_size, shard_size, todo, ray_address)
        return
    for shard, batches in _shards(source, scope, batch_size, shard_size, done):
        if shard in done:
            for _ in batches:  # a stream: read past a finished shard without scanning it
                pass
            continue
        before = len(source.skipped)
        part = scanner.scan(shard, report.counted(batches))
        part.skipped = list(source.skipped[before:])
        yield part


def _shards(source: Source, scope: Any, batch_size: int, shard_size: int, done: set[int]) -> Any:
    """``(shard, batches)`` in shard order; an indexable source reads only the shards not ``done``."""
    if not source.indexable:
        yield from split_into_shards(source.batches(scope, batch_size), shard_size)
        return
    for shard in range(math.ceil(len(source) / shard_size)):
        if shard in done:
            continue
        yield shard, source.batches(scope, batch_size, shard * shard_size, (shard + 1) * shard_size)


def _finish(scope: Any, source: Source, scanner: ShardScanner, parts: list[Partial], k: int, box: Store | None,
            resumed: int) -> Scan:  # fmt: skip
    layers = merge_partials(parts)
    seqs = [s for p in parts for s in p.seqs]
    ids = [i for p in parts for i in p.ids]
    skipped = [s for p in parts for s in p.skipped]
    if not seqs:
        raise EmptyDatasetError("no image of the data could be read; "
                                + "; ".join(f"{i}: {why}" for i, why in skipped[:3]))  # fmt: skip
    labelled = all(p.labels is not None for p in parts if p.count)
    label_list = [v for p in parts for v in (p.labels or [])] if labelled else None
    by_seq = dict(zip(seqs, ids, strict=True))
    labels = _label_array(seqs, label_list)
    receptive: dict[str, Any] = {}
    if box is not None:
        for name in layers:
            try:
                receptive[name] = scope.receptive_field(name)
            except ConvscopeError:  # a layer whose field cannot be measured: stored as unknown
                continue
        box.finish(layers, seqs, ids, label_list, {"images": len(seqs), "skipped": [list(s) for s in skipped],
                   "receptive_fields": {n: _rf_dict(r) for n, r in receptive.items()}})  # fmt: skip
    return Scan(layers, k, source=source, ids=by_seq, labels=labels, count=len(seqs), scope=scope,
                skipped=skipped, receptive=receptive, store=box.root if box else None, resumed=resumed)  # fmt: skip


def _label_array(seqs: list[int], labels: list[int] | None) -> np.ndarray | None:
    if labels is None:
        return None
    out = np.full(max(seqs) + 1, -1, dtype=np.int64)
    out[np.asarray(seqs)] = labels
    return out


def _rf_dict(rf: Any) -> dict[str, Any]:
    return {"size": list(rf.size), "stride": list(rf.stride), "offset": list(rf.offset),
            "input_size": None if rf.input_size is None else list(rf.input_size)}  # fmt: skip


def open_scan(store: Any, *, data: Any = None, root: Any = None) -> Scan:
    """Implementation of :meth:`Scan.open`."""
    from convscope.dataset.receptive import ReceptiveField
    from convscope.inputs import InputSpec

    box = Store(Path(store))
    manifest, layers, images = box.read_result()
    info = manifest["data"]
    ids: list[Any] = images["id"] if info["kind"] in ("folder", "paths") else [int(i) for i in images["id"]]
    by_seq = dict(zip(images["seq"], ids, strict=True))
    labels = None if any(v is None for v in images["label"]) else _label_array(images["seq"], images["label"])
    source = as_source(data) if data is not None else _stored_source(info, root, manifest)
    spec_args = dict(manifest["input"])
    if spec_args.get("preprocess") is not None:
        for key in ("scale", "mean", "std", "bgr"):
            spec_args.pop(key)
    spec_args["size"] = tuple(spec_args["size"]) if spec_args.get("size") else None
    receptive = {n: ReceptiveField(n, tuple(r["size"]), tuple(r["stride"]), tuple(r["offset"]),
                                   tuple(r["input_size"]) if r["input_size"] else None)
                 for n, r in manifest.get("receptive_fields", {}).items()}  # fmt: skip
    skipped = [(a, b) for a, b in manifest.get("skipped", [])]
    return Scan(layers, int(manifest["k"]), source=source, ids=by_seq, labels=labels, count=int(manifest["images"]),
                spec=InputSpec(**spec_args), skipped=skipped, receptive=receptive, store=box.root)  # fmt: skip


class _Unreachable(Source):
    """The images of a stored scan that cannot be read back; says why and what to do."""

    def __init__(self, why: str, classes: list[str] | None) -> None:
        super().__init__()
        self.why, self.classes = why, classes

    def load(self, ids: Any) -> list[Any]:
        raise InputError(self.why)


def _stored_source(info: dict[str, Any], root: Any, manifest: dict[str, Any]) -> Source:
    classes = manifest.get("classes")
    if info["kind"] == "folder":
        where = Path(root) if root is not None else Path(info["root"])
        if not where.is_dir():
            return _Unreachable(f"the images of this scan are not reachable: folder {os.fspath(where)!r} does not "
                                "exist (the store keeps ids, top-k and statistics, not pixels); pass "
                                "Scan.open(store, root=...) where the folder is now", classes)  # fmt: skip
        return folder_source(where)
    if info["kind"] == "paths":
        base = Path(root) if root is not None else Path(info["root"])
        if not base.is_dir():
            return _Unreachable(f"the images of this scan are not reachable: {os.fspath(base)!r} (the folder "
                                "its relative paths start from) does not exist; pass Scan.open(store, root=...)",
                                classes)  # fmt: skip
        return _LazyPaths(base)
    return _Unreachable(f"this scan read a {info['kind']}, whose pixels are not in the store; pass the same "
                        "data again: Scan.open(store, data=...)", classes)  # fmt: skip


class _LazyPaths(Source):
    """Paths relative to ``base`` (absolute ones as they are), read on demand."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def load(self, ids: Any) -> list[Any]:
        paths = [self.base / str(i) for i in ids]
        missing = [os.fspath(p) for p in paths if not p.is_file()]
        if missing:
            raise InputError(f"the images of this scan are not reachable: {missing[0]!r} does not exist"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))  # fmt: skip
        return [os.fspath(p) for p in paths]


class _Report:
    """Progress on stderr: a tqdm bar (images/s) only where a bar redraws — stderr and stdout both on a
    terminal, or Jupyter — else (pipes, logs, ``| tail``) one line per finished shard, never bar frames."""

    def __init__(self, enabled: bool, total: int, shards: int | None) -> None:
        self.enabled, self.shards, self.start = enabled, shards, time.perf_counter()
        self.bar = None
        self.images = self._moved = 0
        if enabled and bar_redraws():
            if "ipykernel" in sys.modules:
                from tqdm.auto import tqdm
            else:
                from tqdm import tqdm

            self.bar = tqdm(total=total if total >= 0 else None, unit="img", desc="scan", file=sys.stderr)

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def counted(self, batches: Any) -> Any:
        for b in batches:
            yield b
            if self.bar is not None:
                self.bar.update(len(b.ids))
                self._moved += len(b.ids)

    def shard_done(self, shard: int, count: int) -> None:
        self.images += count
        if self.bar is not None:  # a shard scanned elsewhere (Ray) moves the bar when it is done
            self.bar.update(count - self._moved)
            self._moved = 0
        if self.enabled and self.bar is None:
            rate = self.images / max(time.perf_counter() - self.start, 1e-9)
            of = f"/{self.shards}" if self.shards is not None else ""
            print(
                f"scan: shard {shard + 1}{of} done ({count} images, {rate:.0f} img/s)",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
