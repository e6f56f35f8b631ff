"""Long jobs (feature visualisation, attribution): run one at a time on a worker thread, report progress,
cache their pictures. They run on a deep copy of the scope when one can be made (PyTorch models), so browsing
layers (which uses the original under its own lock) stays responsive while a job runs."""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

MAX_PENDING = 8


class Busy(RuntimeError):
    """Too many jobs waiting; the API answers 429."""


@dataclass
class Job:
    id: str
    kind: str
    key: tuple[Any, ...]
    state: str = "queued"  # queued | running | done | error
    progress: float = 0.0
    message: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    result: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {"id": self.id, "kind": self.kind, "state": self.state, "progress": round(self.progress, 4),
                "message": self.message, "elapsed_s": round(end - self.started, 3),
                "result": f"/api/jobs/{self.id}/result.png" if self.state == "done" else None,
                "meta": self.meta}  # fmt: skip


Work = Callable[[Any, Callable[[float], None]], tuple[bytes, dict[str, Any]]]
# held around a job on the shared model, e.g. ``Explorer.model_lock``
Hold = Callable[[], AbstractContextManager[Any]]


class JobRunner:
    """One worker thread; ``submit(kind, key, work)`` returns the job already done for ``key`` if any.
    ``hold()`` is entered around a job that runs on the shared ``scope`` (when no copy can be made)."""

    def __init__(self, scope: Any, hold: Hold) -> None:
        self._scope, self._hold = scope, hold
        self._copy: Any = None
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[tuple[Any, ...], Job] = {}
        self._queue: queue.Queue[tuple[Job, Work]] = queue.Queue()
        self._guard = threading.Lock()
        self.lock = threading.Lock()  # held while a job runs: one at a time
        self._worker = threading.Thread(target=self._loop, name="convscope-explorer-jobs", daemon=True)
        self._worker.start()

    def submit(self, kind: str, key: tuple[Any, ...], work: Work) -> Job:
        with self._guard:
            known = self._by_key.get(key)
            if known is not None and known.state != "error":
                return known
            if self._queue.qsize() >= MAX_PENDING:
                raise Busy(f"{MAX_PENDING} jobs are already waiting; poll them first")
            job = Job(uuid.uuid4().hex[:16], kind, key)
            self._jobs[job.id] = job
            self._by_key[key] = job
        self._queue.put((job, work))
        return job

    def get(self, ident: str) -> Job | None:
        with self._guard:
            return self._jobs.get(ident)

    def _scope_for_jobs(self) -> tuple[Any, Hold]:
        """(scope, hold): a private deep copy held by nothing, else the shared scope under the model lock.

        Only PyTorch models are copied: a deep-copied Keras model still runs its original layers (its call
        graph is not remapped), so hooks on the copy's layers would never fire; a bridged model lives in a
        worker process."""
        if self._copy is None:
            self._copy = False
            if getattr(getattr(self._scope, "adapter", None), "framework", None) == "torch":
                try:
                    self._copy = copy.deepcopy(self._scope)
                except Exception:  # noqa: BLE001 - some models cannot be copied; share the original then
                    self._copy = False
        if self._copy is False:
            return self._scope, self._hold
        return self._copy, contextlib.nullcontext

    def _loop(self) -> None:
        while True:
            job, work = self._queue.get()
            with self.lock:
                self._run(job, work)

    def _run(self, job: Job, work: Work) -> None:
        job.state, job.started = "running", time.monotonic()

        def report(fraction: float) -> None:
            job.progress = min(max(fraction, 0.0), 1.0)

        try:
            scope, hold = self._scope_for_jobs()
            with hold():
                job.result, meta = work(scope, report)
            job.meta.update(meta)
            job.progress, job.state = 1.0, "done"
        except Exception as exc:  # noqa: BLE001 - a failed job reports its error, the worker lives on
            job.state, job.message = "error", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.monotonic()
