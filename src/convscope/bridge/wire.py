"""The bridge's wire format: pickles with out-of-band array buffers over a ``multiprocessing`` Connection.

Arrays travel as raw buffers next to the pickle (no copies inside the pickle stream). On the way
out, torch tensors become numpy arrays and are rebuilt as CPU tensors on arrival; TensorFlow/JAX
arrays become numpy arrays; a ``tf.data.Dataset`` becomes a list of numpy batches; Keras layers become
:class:`LayerRef` (their dotted path), resolved on the other side. Functions and classes defined in a
notebook or script travel by value when ``cloudpickle`` is installed (objectives, callable targets,
custom layers).

Raw buffers of a request go straight between the socket and their final memory (``os.readv`` into an
uninitialised array on arrival). Large replies (arrays of :data:`SHARED_MIN` bytes or more, e.g. a
50 MB ``activations`` result) travel through memory shared by both processes instead: anonymous
``memfd`` regions, each mapped once in the worker and once in the parent (its file descriptor passed over
the socket), so a reply is one ``memcpy`` in the worker and no copy at all in the parent, whose arrays
are views of the region. A region is written again only after every array of the reply that used it is
gone (:class:`Regions` offers the free ones with each request, :class:`Arena` picks one), and pages once
touched stay mapped, so a repeated call takes no page faults. Without ``memfd`` (not Linux) every
reply uses the socket.
A result holding tensors with an autograd graph (``grad_fn``) is refused with
:class:`GraphCannotCrossError` rather than silently detached.
"""

from __future__ import annotations

import io
import itertools
import mmap
import os
import pickle
import socket
import threading
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from convscope.errors import ConvscopeError

SHARED = hasattr(os, "memfd_create") and hasattr(socket, "send_fds")  # shared-memory replies work here
SHARED_MIN = 1 << 20  # replies whose arrays total this many bytes or more travel through shared memory
KEEP_FREE = 4  # released regions the parent keeps mapped for reuse (older ones are unmapped on both sides)
_ALIGN = 64  # byte alignment of each array in a region
_CHUNK = 2 << 20  # region sizes are multiples of this

try:  # by-value pickling of lambdas and notebook-defined classes
    import cloudpickle

    _Base: Any = cloudpickle.CloudPickler
except ImportError:  # pragma: no cover - cloudpickle comes with ray/the dev set-up
    cloudpickle = None
    _Base = pickle.Pickler


@dataclass(frozen=True)
class LayerRef:
    """A Keras layer named by its path in the model, standing in for the layer object on the wire."""

    path: str


class GraphCannotCrossError(ConvscopeError):
    """Tensors asked for with their autograd graph, which cannot leave convscope's worker process."""


def graph_error(what: str) -> GraphCannotCrossError:
    """The error for ``what`` (e.g. ``"scope.activations(..., grad=True)"``): what, why, what instead."""
    return GraphCannotCrossError(
        f"{what} asks for torch tensors that keep their autograd graph, but this Keras model runs on "
        "another backend than torch, so convscope runs it in a torch-backend worker process, and an autograd "
        "graph cannot cross a process boundary (only plain values can). Instead: compute the gradients "
        "in the worker with scope.attribute(x, method='saliency'|'gradcam'|'integrated_gradients'|...) "
        "or scope.maximize(...); ask for plain values with grad=False; or, to differentiate through the "
        "recorded tensors yourself, run with KERAS_BACKEND=torch (the same model loads in-process there, "
        "e.g. from model.save('model.keras'))"
    )


def _tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(array)


def _foreign_array(obj: Any) -> np.ndarray | None:
    """A TensorFlow tensor or JAX array as numpy, else ``None`` (never imports either library)."""
    top = type(obj).__module__.split(".")[0]
    if top in ("tensorflow", "jax", "jaxlib") and hasattr(obj, "shape") and hasattr(obj, "dtype"):
        try:
            return np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj)
        except (TypeError, ValueError):
            return None
    return None


class _Pickler(_Base):  # type: ignore[misc]
    layer_path: Any = None  # layer -> dotted path; set per side
    refuse_graphs = False  # the worker's replies: a tensor with an autograd graph is an error

    def reducer_override(self, obj: Any) -> Any:
        top = type(obj).__module__.split(".")[0]
        if top == "torch":
            import torch

            if isinstance(obj, torch.Tensor) and self.refuse_graphs and obj.grad_fn is not None:
                raise graph_error("the call")
            if isinstance(obj, torch.Tensor) and not obj.is_sparse and obj.dtype not in (torch.bfloat16,):
                return _tensor, (obj.detach().cpu().numpy(),)
        if self.layer_path is not None and top == "keras" and hasattr(obj, "get_config"):
            path = self.layer_path(obj)
            if path is not None:
                return LayerRef, (path,)
        if top == "tensorflow" and hasattr(obj, "as_numpy_iterator"):  # tf.data.Dataset
            return list, (list(obj.as_numpy_iterator()),)
        array = _foreign_array(obj)
        if array is not None:
            return np.asarray, (np.ascontiguousarray(array),)
        parent = getattr(super(), "reducer_override", None)
        return parent(obj) if parent is not None else NotImplemented


def encode(obj: Any, layer_path: Any = None, *, refuse_graphs: bool = False) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``: the stream and its out-of-band buffers. Raises what pickling raises."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    pickler = _Pickler(stream, protocol=5, buffer_callback=buffers.append)
    pickler.layer_path = layer_path
    pickler.refuse_graphs = refuse_graphs
    pickler.dump(obj)
    return stream.getvalue(), [b.raw() for b in buffers]


class Arena:
    """Worker side of the shared memory: the regions this process made, by id, each mapped once."""

    def __init__(self, conn: Connection) -> None:
        self.sock = socket.socket(fileno=os.dup(conn.fileno()))  # for passing new regions' descriptors
        self.maps: dict[int, np.ndarray] = {}
        self._ids = itertools.count(1)

    def forget(self, ids: list[int]) -> None:
        for rid in ids:  # the parent unmapped these; the pages go when this last mapping does
            self.maps.pop(rid, None)

    def place(self, raws: list[memoryview], free: list[int]) -> tuple[int, int, list[int], int | None]:
        """Copy ``raws`` into the smallest free region that holds them, or a new one: id, size, offsets, new fd."""
        offsets, total = [], 0
        for raw in raws:
            offsets.append(total)
            total += -(-raw.nbytes // _ALIGN) * _ALIGN
        fits = [r for r in free if r in self.maps and self.maps[r].nbytes >= total]
        fd = None
        if fits:
            rid = min(fits, key=lambda r: self.maps[r].nbytes)
        else:
            rid, size = next(self._ids), -(-total // _CHUNK) * _CHUNK
            fd = os.memfd_create(f"convscope-reply-{rid}", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
                self.maps[rid] = np.frombuffer(mmap.mmap(fd, size), np.uint8)
            except BaseException:
                os.close(fd)
                raise
        whole = self.maps[rid]
        for raw, offset in zip(raws, offsets, strict=True):
            np.copyto(whole[offset : offset + raw.nbytes], np.frombuffer(raw, np.uint8))
        return rid, whole.nbytes, offsets, fd


class _Lease:
    """The arrays of one reply in one region: they keep this alive, and the region is free when it goes."""

    def __init__(self, whole: np.ndarray) -> None:
        self.whole = whole
        self.__array_interface__ = {"data": (whole.ctypes.data, False), "shape": whole.shape,
                                    "typestr": "|u1", "version": 3}  # fmt: skip


class Regions:
    """Parent side of the shared memory: the worker's regions mapped here, and which ones are free."""

    def __init__(self, conn: Connection) -> None:
        self.sock = socket.socket(fileno=os.dup(conn.fileno()))
        self.maps: dict[int, np.ndarray] = {}
        self.free: list[int] = []  # least recently released first
        self.lock = threading.Lock()  # releases come from the garbage collector, in any thread

    def offer(self) -> tuple[list[int], list[int]]:
        """For the next request: the regions the worker may write, and those it should unmap.

        Called only while no reply is on its way (so a region offered is never one unmapped here
        meanwhile); the oldest free regions past :data:`KEEP_FREE` are unmapped now."""
        with self.lock:
            dropped = []
            while len(self.free) > KEEP_FREE:
                rid = self.free.pop(0)
                del self.maps[rid]
                dropped.append(rid)
            return list(self.free), dropped

    def take(self, rid: int, size: int, offsets: list[int], sizes: list[int], new: bool) -> list[np.ndarray]:
        """The arrays of one reply written into region ``rid`` (received and mapped first when ``new``)."""
        if new:
            _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
            if not fds:
                raise EOFError
            try:
                mapped = np.frombuffer(mmap.mmap(fds[0], size), np.uint8)
            finally:
                os.close(fds[0])
        with self.lock:
            if new:
                self.maps[rid] = mapped
            whole = self.maps[rid]
            if rid in self.free:
                self.free.remove(rid)
        lease = np.asarray(_Lease(whole))
        weakref.finalize(lease, self._release, rid).atexit = False
        return [lease[offset : offset + n] for offset, n in zip(offsets, sizes, strict=True)]

    def _release(self, rid: int) -> None:
        with self.lock:
            self.free.append(rid)

    def close(self) -> None:
        self.sock.close()


def send(conn: Connection, message: tuple[bytes, list[memoryview]], arena: Arena | None = None,
         free: list[int] | None = None) -> None:  # fmt: skip
    """Send one message; with ``arena`` and the parent's ``free`` regions, large arrays go through shared memory."""
    data, raws = message  # PickleBuffer.raw() views: 1-D, bytes, contiguous
    sizes = [r.nbytes for r in raws]
    region, new_fd = None, None
    if arena is not None and free is not None and sum(sizes) >= SHARED_MIN:
        try:
            rid, size, offsets, new_fd = arena.place(raws, free)
            region = (rid, size, offsets, new_fd is not None)
        except OSError:  # no memory for a new region (or no memfd after all): the socket carries it
            pass
    conn.send_bytes(pickle.dumps((sizes, region)))
    if new_fd is not None:
        try:
            socket.send_fds(arena.sock, [b"F"], [new_fd])  # type: ignore[union-attr]
        finally:
            os.close(new_fd)
    conn.send_bytes(data)
    if region is None:
        fd = conn.fileno()
        for view in raws:  # unframed: the receiver knows the sizes
            while view.nbytes:
                view = view[os.write(fd, view):]


def _read_into(fd: int, view: memoryview) -> None:
    while view.nbytes:
        n = os.readv(fd, [view])
        if n == 0:
            raise EOFError
        view = view[n:]


def recv(conn: Connection, regions: Regions | None = None) -> Any:
    """One message; raises ``EOFError`` when the other side is gone."""
    sizes, region = pickle.loads(conn.recv_bytes())
    if region is not None and regions is None:
        raise ValueError("a shared-memory message arrived on a connection without regions")
    buffers = None
    if region is not None:  # the arrays are in shared memory already
        rid, size, offsets, new = region
        buffers = regions.take(rid, size, offsets, sizes, new)  # type: ignore[union-attr]
    data = conn.recv_bytes()
    if buffers is None:  # the arrays follow the pickle on the socket
        buffers = [np.empty(n, np.uint8) for n in sizes]  # not zero-filled; every byte is read into it
        for buf in buffers:
            _read_into(conn.fileno(), buf.data)
    return pickle.loads(data, buffers=buffers)
