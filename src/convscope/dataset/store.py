"""The scan store: a directory a scan writes as it goes, resumes from, and reopens without the model.

Layout of ``store="scan/"``::

    scan/manifest.json          identity (model fingerprint, preprocessing, data fingerprint, layers, k,
                                statistics, shard size, convscope version), receptive fields, skipped images
    scan/parts/shard-00000.parquet   one per finished shard: that shard's top-k tables and statistics
    scan/result.parquet         the merged top-k tables and statistics (rows: layer, channel)
    scan/images.parquet         seq, id and label of every scanned image

Every file is written to a temporary name in the same folder and renamed (``os.replace``), so a killed
scan leaves only whole files; running the same scan again skips the shards already in ``parts/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convscope.dataset.errors import StoreMismatchError
from convscope.dataset.shard import By, LayerResult, Partial
from convscope.dataset.stats import ChannelStats
from convscope.dataset.topk import TopK
from convscope.errors import InputError

FORMAT = "convscope-scan/1"
IDENTITY = ("model", "preprocessing", "input", "data", "layers", "k", "shard_size")  # must match to resume
_WHAT = {"model": "model (architecture or weights)", "preprocessing": "preprocessing", "input": "model input",
         "data": "data", "layers": "layer set", "k": "k", "shard_size": "shard size"}  # fmt: skip


def _jsonable(v: Any) -> Any:
    if hasattr(v, "value") and not isinstance(v, (int, float, str)):
        return v.value  # enums
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


# -- fingerprints ------------------------------------------------------------------------------------
def model_fingerprint(scope: Any) -> str:
    """sha256 over every layer's name and type and every parameter and buffer (name order, shape, bytes)."""
    h = hashlib.sha256(scope.adapter.framework.encode())
    for handle in scope.adapter.handles:
        h.update(f"{handle.name}:{handle.type_name};".encode())
    tensors = list(scope.adapter.parameters())
    if isinstance(scope.model, torch.nn.Module):
        tensors += list(scope.model.buffers())
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(f"{tuple(a.shape)}{a.dtype};".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def data_identity(source: Any) -> dict[str, Any]:
    """What the data is, and a fingerprint: paths + sizes + mtimes for files, shape + sha256 for arrays."""
    from convscope.dataset.sources import ArraySource, _PathSource

    h = hashlib.sha256()
    if isinstance(source, _PathSource):
        for ident, path in zip(source.ids, source.paths, strict=True):
            try:
                st = path.stat()
                h.update(f"{ident}|{st.st_size}|{st.st_mtime_ns};".encode())
            except OSError:
                h.update(f"{ident}|missing;".encode())
        kind = "folder" if source.root is not None else "paths"
        root = os.fspath(source.root) if source.root is not None else os.getcwd()
        return {
            "kind": kind,
            "root": os.path.abspath(root),
            "images": len(source),
            "fingerprint": h.hexdigest(),
        }
    if isinstance(source, ArraySource):
        a = (
            source.data.detach().cpu().numpy()
            if isinstance(source.data, torch.Tensor)
            else np.asarray(source.data)
        )
        h.update(f"{a.shape}{a.dtype};".encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
        return {"kind": "array", "images": len(a), "shape": list(a.shape), "fingerprint": h.hexdigest()}
    n = len(source)
    return {"kind": type(source).__name__, "images": n if n >= 0 else None,
            "fingerprint": f"unverified:{type(getattr(source, 'dataset', getattr(source, 'data', None))).__name__}"}  # fmt: skip


def input_identity(scope: Any) -> dict[str, Any]:
    spec = scope.input_spec()
    return _jsonable({"layout": spec.layout, "channels": spec.channels, "size": spec.size, "scale": spec.scale,
                      "mean": spec.mean, "std": spec.std, "bgr": spec.bgr, "preprocess": spec.preprocess,
                      "resize": spec.resize})  # fmt: skip


# -- parquet tables ------------------------------------------------------------------------------------
def _table(layers: dict[str, LayerResult], meta: dict[str, Any]) -> Any:
    import pyarrow as pa

    cols: dict[str, list[Any]] = {"layer": [], "channel": [], "grid_h": [], "grid_w": []}
    for by in By:
        for f in ("value", "seq", "pos"):
            cols[f"{by.value}_{f}"] = []
    for f in ("count", "mean", "m2", "min", "max", "positive", "hist_bin", "hist_count"):
        cols[f] = []
    for name, r in layers.items():
        s = r.stats
        for c in range(s.channels):
            cols["layer"].append(name)
            cols["channel"].append(c)
            cols["grid_h"].append(r.grid[0])
            cols["grid_w"].append(r.grid[1])
            for by in By:
                t = r.top[by]
                cols[f"{by.value}_value"].append(t.values[c].numpy())
                cols[f"{by.value}_seq"].append(t.seqs[c].numpy())
                cols[f"{by.value}_pos"].append(t.positions[c].numpy())
            nz = np.flatnonzero(s.counts[c])
            for f, v in (("count", s.count), ("mean", s.mean[c]), ("m2", s.m2[c]), ("min", s.min[c]),
                         ("max", s.max[c]), ("positive", s.positive[c]), ("hist_bin", nz.astype(np.int32)),
                         ("hist_count", s.counts[c][nz])):  # fmt: skip
                cols[f].append(v)
    types = {"layer": pa.string(), "channel": pa.int32(), "grid_h": pa.int32(), "grid_w": pa.int32(),
             "count": pa.int64(), "mean": pa.float64(), "m2": pa.float64(), "min": pa.float64(),
             "max": pa.float64(), "positive": pa.int64(), "hist_bin": pa.list_(pa.int32()),
             "hist_count": pa.list_(pa.int64())}  # fmt: skip
    for by in By:
        types.update({f"{by.value}_value": pa.list_(pa.float32()), f"{by.value}_seq": pa.list_(pa.int64()),
                      f"{by.value}_pos": pa.list_(pa.int64())})  # fmt: skip
    arrays = [pa.array(cols[n], type=types[n]) for n in cols]
    schema = pa.schema(
        [pa.field(n, types[n]) for n in cols], metadata={"convscope": json.dumps(_jsonable(meta))}
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def _layers(table: Any, k: int) -> dict[str, LayerResult]:
    data = table.to_pydict()
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(data["layer"]):
        rows.setdefault(name, []).append(i)
    out = {}
    for name, idx in rows.items():
        c = len(idx)
        stats = ChannelStats(c)
        stats.count = int(data["count"][idx[0]])
        for f in ("mean", "m2", "min", "max"):
            setattr(stats, f, np.array([data[f][i] for i in idx], dtype=np.float64))
        stats.positive = np.array([data["positive"][i] for i in idx], dtype=np.int64)
        for j, i in enumerate(idx):
            stats.counts[j, np.asarray(data["hist_bin"][i], np.int64)] = data["hist_count"][i]
        top = {}
        for by in By:
            t = TopK(c, k)
            t.values = torch.tensor([data[f"{by.value}_value"][i] for i in idx], dtype=torch.float32).reshape(
                c, -1
            )
            t.seqs = torch.tensor([data[f"{by.value}_seq"][i] for i in idx], dtype=torch.int64).reshape(c, -1)
            t.positions = torch.tensor([data[f"{by.value}_pos"][i] for i in idx], dtype=torch.int64).reshape(
                c, -1
            )
            t._last = int(t.seqs.max()) if t.seqs.numel() else -1
            top[by] = t
        out[name] = LayerResult(name, top, stats, (int(data["grid_h"][idx[0]]), int(data["grid_w"][idx[0]])))
    return out


def _meta(table: Any) -> dict[str, Any]:
    return dict(json.loads(table.schema.metadata[b"convscope"]))


def write_atomic(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename onto ``path``: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(
        path, lambda tmp: tmp.write_text(json.dumps(_jsonable(data), indent=1) + "\n", encoding="utf-8")
    )


@dataclass
class Store:
    """A scan store directory (see the module docstring)."""

    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def part_path(self, shard: int) -> Path:
        return self.root / "parts" / f"shard-{shard:05d}.parquet"

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            raise InputError(f"{os.fspath(self.root)!r} is not a scan store (no manifest.json); write one with "
                             "scope.scan(data, store=...) or `convscope scan MODEL DATA -o DIR`")  # fmt: skip
        return dict(json.loads(self.manifest_path.read_text(encoding="utf-8")))

    def begin(self, identity: dict[str, Any], extra: dict[str, Any], *, overwrite: bool) -> set[int]:
        """Check or write the manifest; returns the shards already done (none when starting fresh)."""
        identity = _jsonable(identity)
        if self.manifest_path.exists() and not overwrite:
            old = self.manifest()
            diff = [f"{_WHAT[key]}: stored {_short(old.get(key))}, now {_short(identity[key])}"
                    for key in IDENTITY if _same(old.get(key)) != _same(identity[key])]  # fmt: skip
            if diff:
                raise StoreMismatchError(
                    f"store {os.fspath(self.root)!r} holds another scan; what differs: "
                    + "; ".join(diff)
                    + ". Pass overwrite=True (CLI: --overwrite) to replace it, or use another folder"
                )
            return self.done()
        if self.root.exists() and not overwrite and any(self.root.iterdir()):
            raise StoreMismatchError(f"store {os.fspath(self.root)!r} is a folder with other files and no "
                                     "manifest.json; pass an empty or new folder, or overwrite=True")  # fmt: skip
        self.clear()
        (self.root / "parts").mkdir(parents=True, exist_ok=True)
        _write_json(self.manifest_path, {"format": FORMAT, **identity, **extra, "complete": False})
        return set()

    def clear(self) -> None:
        """Remove what a scan wrote here (only our files)."""
        shutil.rmtree(self.root / "parts", ignore_errors=True)
        for name in ("manifest.json", "result.parquet", "images.parquet"):
            (self.root / name).unlink(missing_ok=True)

    def done(self) -> set[int]:
        parts = self.root / "parts"
        if not parts.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in parts.glob("shard-*.parquet")}

    def write_part(self, part: Partial) -> None:
        meta = {"shard": part.shard, "ids": part.ids, "seqs": part.seqs, "labels": part.labels,
                "skipped": [list(s) for s in part.skipped]}  # fmt: skip
        _write_parquet(self.part_path(part.shard), _table(part.layers, meta))

    def read_part(self, shard: int, k: int) -> Partial:
        import pyarrow.parquet as pq

        table = pq.read_table(self.part_path(shard))
        m = _meta(table)
        skipped = [(a, b) for a, b in m["skipped"]]
        return Partial(
            shard, _layers(table, k), list(m["ids"]), [int(s) for s in m["seqs"]], m["labels"], skipped
        )

    def finish(self, layers: dict[str, LayerResult], seqs: list[int], ids: list[Any], labels: list[int] | None,
               extra: dict[str, Any]) -> None:  # fmt: skip
        import pyarrow as pa

        _write_parquet(self.root / "result.parquet", _table(layers, {"images": len(seqs)}))
        cols = {"seq": pa.array(seqs, pa.int64()), "id": pa.array([str(i) for i in ids], pa.string()),
                "label": pa.array(labels if labels is not None else [None] * len(seqs), pa.int64())}  # fmt: skip
        _write_parquet(self.root / "images.parquet", pa.table(cols))
        manifest = self.manifest()
        manifest.update(_jsonable(extra), complete=True)
        _write_json(self.manifest_path, manifest)

    def read_result(self) -> tuple[dict[str, Any], dict[str, LayerResult], Any]:
        import pyarrow.parquet as pq

        manifest = self.manifest()
        if not manifest.get("complete"):
            raise InputError(f"the scan in {os.fspath(self.root)!r} did not finish ({len(self.done())} shards "
                             "written); run the same scan again to resume it, then open it")  # fmt: skip
        layers = _layers(pq.read_table(self.root / "result.parquet"), int(manifest["k"]))
        return manifest, layers, pq.read_table(self.root / "images.parquet").to_pydict()


def _same(v: Any) -> Any:
    """What identity compares: a moved data folder (another ``root``) is the same data."""
    return {k: x for k, x in v.items() if k != "root"} if isinstance(v, dict) else v


def _short(v: Any) -> str:
    if isinstance(v, dict) and "fingerprint" in v:
        v = {k: x for k, x in v.items() if k != "root"}
        v["fingerprint"] = str(v["fingerprint"])[:12]
    if isinstance(v, str) and len(v) == 64:
        return v[:12]
    return json.dumps(v)
