"""The convscope worker: one process on Keras' torch backend holding the moved model and a real ``Scope``.

Started by :mod:`convscope.bridge.client` as ``python -c "...import main; main()" FD`` (so that the classes
here pickle by reference, not as ``__main__``'s) with
``KERAS_BACKEND=torch``; it serves requests on the socket ``FD`` until told to close or the parent goes
away (end of file). Requests are ``(id, op, payload, offer)`` (``offer``: the parent's free and dropped
shared-memory regions, see :class:`convscope.bridge.wire.Regions`); every reply is ``(id, ok, value, warnings)``.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from convscope.bridge import wire

BY_REFERENCE = ("convscope.dataset.scan",)  # results that hold the scope stay here; the parent gets a handle


@dataclass(frozen=True)
class RemoteRef:
    """A result kept in the worker (it holds the scope): its id, type name and repr."""

    oid: int
    type_name: str
    text: str


class Method:
    """Marker reply: the attribute asked for is a method (the parent calls it through its proxy)."""


@dataclass(frozen=True)
class Failure:
    """An exception raised in the worker: the exception itself when it pickles, else its text."""

    exc: BaseException | None
    type_name: str
    message: str
    trace: str


class Worker:
    def __init__(self) -> None:
        self.scope: Any = None
        self.model: Any = None
        self.objects: dict[int, Any] = {}
        self.paths: dict[int, str] = {}
        self.last_s = 0.0  # seconds the last request spent in its handler (bench/bench_bridge.py reads it)

    # -- requests ------------------------------------------------------------------------------
    def handle(self, op: str, payload: Any) -> Any:
        if op == "load":
            return self.load(**payload)
        if op == "weights":
            return self.set_weights(**payload)
        if op == "call":
            name, args, kwargs = payload
            return self.call(name, args, kwargs)
        if op == "object":
            oid, name, args, kwargs = payload
            attr = getattr(self.objects[oid], name)
            if args is None:
                return Method() if callable(attr) else attr
            return attr(*self.resolve(args), **self.resolve(kwargs))
        if op == "pid":
            return os.getpid()
        if op == "last_s":
            return self.last_s
        if op == "threads":  # torch's intra-op thread count here; set it first when given
            import torch

            if payload:
                torch.set_num_threads(int(payload))
            return torch.get_num_threads()
        raise ValueError(f"unknown bridge request {op!r}")

    def load(self, *, package: dict[str, Any], weights: dict[str, Any], options: dict[str, Any],
             imports: list[str], path: list[str]) -> int:  # fmt: skip
        for entry in reversed(path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        for module in imports:
            importlib.import_module(module)
        import keras

        from convscope.scope import Scope

        self.model = keras.saving.deserialize_keras_object(
            package["config"], custom_objects=package["custom_objects"], safe_mode=package["safe_mode"]
        )
        self.set_weights(**weights)
        from convscope.bridge.transfer import walk_layers

        self.paths = {id(layer): p for p, layer in walk_layers(self.model)}
        self.scope = Scope(self.model, **options)
        return len(self.model.weights)

    def set_weights(self, *, path: str, meta: list[tuple[int, tuple[int, ...], str, int]]) -> None:
        import numpy as np

        variables = self.model.weights
        try:
            raw = np.memmap(path, mode="r") if meta else None
            for i, shape, dtype, offset in meta:
                v = variables[i]
                if tuple(v.shape) != shape:
                    raise ValueError(f"weight {v.path!r} has shape {tuple(v.shape)} here but {shape} in the parent")
                n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                v.assign(np.frombuffer(raw, dtype=dtype, count=n // np.dtype(dtype).itemsize,  # type: ignore[arg-type]
                                       offset=offset).reshape(shape))  # fmt: skip
        finally:
            os.unlink(path)

    def call(self, name: str, args: tuple[Any, ...] | None, kwargs: dict[str, Any] | None) -> Any:
        if ":" in name:  # a library function taking the scope first, e.g. metrics.deletion
            module, fn = name.split(":")
            return getattr(importlib.import_module(module), fn)(self.scope, *self.resolve(args or ()),
                                                                 **self.resolve(kwargs or {}))  # fmt: skip
        attr = getattr(self.scope, name)
        if args is None:  # a property or plain attribute
            return attr
        result = attr(*self.resolve(args), **self.resolve(kwargs))
        return None if result is self.scope else result

    def resolve(self, value: Any) -> Any:
        """Layer references back to this model's layers (top level, lists, tuples and dict values)."""
        if isinstance(value, wire.LayerRef):
            return self.scope.layer(value.path).module
        if isinstance(value, list | tuple):
            return type(value)(self.resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    # -- replies -------------------------------------------------------------------------------
    def export(self, value: Any) -> Any:
        if type(value).__module__ in BY_REFERENCE:
            oid = len(self.objects) + 1
            self.objects[oid] = value
            return RemoteRef(oid, type(value).__name__, repr(value))
        return value

    def reply(self, rid: int, ok: bool, value: Any, caught: list[Any], what: str = "this call") -> tuple[bytes, list[memoryview]]:
        try:
            return wire.encode((rid, ok, self.export(value) if ok else value, caught), self.paths.get,
                               refuse_graphs=True)  # fmt: skip
        except wire.GraphCannotCrossError:
            return wire.encode((rid, False, failure(wire.graph_error(what)), []))
        except Exception as exc:  # noqa: BLE001 - a result that cannot travel is the caller's error
            return wire.encode((rid, False, failure(exc, f"the result ({type(value).__name__}) cannot be "
                                                          "sent back from the worker: "), []))  # fmt: skip


def failure(exc: BaseException, prefix: str = "") -> Failure:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    message = prefix + str(exc)
    try:
        wire.encode(exc)
        kept: BaseException | None = exc
    except Exception:  # noqa: BLE001
        kept = None
    return Failure(kept, type(exc).__name__, message, trace)


def serve(conn: Connection) -> None:
    worker = Worker()
    arena = wire.Arena(conn) if wire.SHARED else None
    while True:
        try:
            rid, op, payload, offer = wire.recv(conn)
        except (EOFError, OSError):
            return  # the parent is gone
        free = None
        if offer is not None and arena is not None:
            free, dropped = offer
            arena.forget(dropped)
        if op == "close":
            wire.send(conn, wire.encode((rid, True, None, [])))
            return
        with warnings.catch_warnings(record=True) as caught:  # shown again in the parent, at the user's line
            warnings.simplefilter("always")
            start = time.perf_counter()
            try:
                value, ok = worker.handle(op, payload), True
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
                value, ok = failure(exc), False
            if op != "last_s":
                worker.last_s = time.perf_counter() - start
        what = f"scope.{payload[0]}(...)" if op == "call" else "this call"
        message = worker.reply(rid, ok, value, [(w.category, str(w.message)) for w in caught], what)
        try:
            wire.send(conn, message, arena, free)
        except (BrokenPipeError, OSError):
            return
        del value, message  # freed now, not held through the next call (its memory is reused there)


def main() -> None:
    os.environ["KERAS_BACKEND"] = "torch"
    serve(Connection(int(sys.argv[1])))
