"""``backend="ray"``: the same :class:`~convscope.dataset.shard.ShardScanner` as a Ray Data actor pool.

The driver turns the shards still to do into a dataset of shard numbers
(``ray.data.from_items``), and ``map_batches(ShardScannerActor, compute=ActorPoolStrategy(size=n),
batch_size=1)`` scans them: each actor rebuilds the scope once (a torch model travels pickled, a Keras
model as its ``.keras`` bytes, loaded with ``KERAS_BACKEND=torch``), reads its shards from the source
itself (paths, an array or a map-style dataset, shipped once through the object store) and returns each
shard's :class:`~convscope.dataset.shard.Partial`, pickled. The driver writes the parts to the store and
merges them in shard order, exactly as the local backend does — so local and Ray results are identical,
tie order included (given the same hardware and torch thread count: conv kernels are picked by both).

Cluster: an already initialised Ray is used as is; else ``ray_address`` (CLI ``--ray-address``) or
``RAY_ADDRESS`` joins a running cluster; else a local one starts with ``max(1, cpu_count - 1)`` CPUs (an
actor pool on every CPU leaves Ray Data nothing to schedule with, and hangs). Only a Ray this module
started or connected is shut down again. Models with custom classes need them importable on the workers
(e.g. ``ray.init(runtime_env={"py_modules": [...]})``).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from convscope.dataset.shard import Partial, ShardScanner
from convscope.errors import OptionError


def model_payload(scope: Any) -> dict[str, Any]:
    """What a worker needs to rebuild ``scope``: the model (pickled torch module or ``.keras`` bytes),
    its input shape and its preprocessing options."""
    options = {"input_shape": scope.adapter.input_shape, **scope.preprocessing()}
    if scope.adapter.framework == "keras":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            scope.model.save(path)
            return {"framework": "keras", "model": path.read_bytes(), "options": options}
    return {"framework": "torch", "model": pickle.dumps(scope.model), "options": options}


def rebuild_scope(payload: dict[str, Any]) -> Any:
    """The scope of :func:`model_payload`, on a worker."""
    import convscope as cs

    if payload["framework"] == "keras":
        import keras

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(payload["model"])
            model = keras.saving.load_model(path)
    else:
        model = pickle.loads(payload["model"])
    options = dict(payload["options"])
    shape = options.pop("input_shape")
    return cs.Scope(model, input_shape=tuple(shape) if shape is not None else None, **options)


class ShardScannerActor:
    """A Ray Data actor: rebuilds the scope once, then scans the shards it is given (``batch["shard"]``)."""

    def __init__(self, payload: Any, source: Any, layers: Any, k: int, batch_size: int, shard_size: int,
                 threads: int) -> None:  # fmt: skip
        import ray
        import torch

        torch.set_num_threads(threads)
        self.payload = ray.get(payload) if isinstance(payload, ray.ObjectRef) else payload
        self.source = ray.get(source) if isinstance(source, ray.ObjectRef) else source
        self.scanner = ShardScanner(rebuild_scope(self.payload), layers, k)
        self.batch_size, self.shard_size = batch_size, shard_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for shard in batch["shard"].tolist():
            start = int(shard) * self.shard_size
            before = len(self.source.skipped)
            part = self.scanner.scan(int(shard), self.source.batches(self.scanner.scope, self.batch_size,
                                                                     start, start + self.shard_size))  # fmt: skip
            part.skipped = list(self.source.skipped[before:])
            parts.append(pickle.dumps(part))
        return {"shard": batch["shard"], "part": np.array(parts, dtype=object)}


class RayCluster:
    """Context manager: a Ray to scan on (see the module docstring); ``cpus`` it offers."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.owned = False

    def __enter__(self) -> RayCluster:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency
            raise OptionError("backend='ray' needs Ray: pip install 'ray[data]'") from exc
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, (os.cpu_count() or 2) - 1), include_dashboard=False,
                         log_to_driver=False)  # fmt: skip
            self.owned = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            import ray

            ray.shutdown()

    @property
    def cpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("CPU", 1.0))


def check_ray_source(source: Any) -> None:
    if not source.indexable:
        raise OptionError(
            f"backend='ray' reads shards on the workers, which needs data it can index (a folder, a list of "
            f"paths, an array or a map-style torch Dataset); this {type(source).__name__} is a one-pass "
            "stream: use backend='local'"
        )


def ray_scan(scope: Any, source: Any, layers: Any, k: int, batch_size: int, shard_size: int, todo: list[int],
             address: str | None = None) -> Iterator[Partial]:  # fmt: skip
    """Scan shards ``todo`` on Ray; yields each shard's partial as it finishes (any order)."""
    check_ray_source(source)
    if not todo:
        return
    with RayCluster(address) as cluster:
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        cpus = cluster.cpus
        size = max(1, min(len(todo), int(cpus) - 1))  # leave a CPU for Ray Data itself
        per_actor = 1.0 if cpus >= size + 1 else cpus / (size + 1)
        env = {"env_vars": {"KERAS_BACKEND": "torch"}} if scope.adapter.framework == "keras" else None
        items = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
        ds = items.map_batches(
            ShardScannerActor,
            fn_constructor_args=(
                ray.put(model_payload(scope)),
                ray.put(source),
                layers,
                k,
                batch_size,
                shard_size,
                max(1, int(per_actor)),
            ),  # fmt: skip
            compute=ray.data.ActorPoolStrategy(size=size),
            batch_size=1,
            batch_format="numpy",
            num_cpus=per_actor,
            runtime_env=env,
        )
        quiet = logging.getLogger("ray.data")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # Ray Data's own progress and timing lines: the report says it
        try:
            for row in ds.iter_rows():
                yield pickle.loads(row["part"])
        finally:
            quiet.setLevel(level)
