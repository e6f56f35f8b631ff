"""The bridge's wire format: pickles with out-of-band array buffers over a ``multiprocessing`` Connection.

Arrays travel as raw buffers next to the pickle (no copies inside the pickle stream). On the way
out, torch tensors become numpy arrays and are rebuilt as CPU tensors on arrival; TensorFlow/JAX
arrays become numpy arrays; a ``tf.data.Dataset`` becomes a list of numpy batches; Keras layers become
:class:`LayerRef` (their dotted path), resolved on the other side. Functions and classes defined in a
notebook or script travel by value when ``cloudpickle`` is installed (objectives, callable targets,
custom layers).

Raw buffers go straight between the socket and their final memory (``os.readv`` into an uninitialised
array on arrival): a 50 MB ``activations`` result is copied once by the kernel, not three times.
A result holding tensors with an autograd graph (``grad_fn``) is refused with
:class:`GraphCannotCrossError` rather than silently detached.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from convscope.errors import ConvscopeError

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


def send(conn: Connection, message: tuple[bytes, list[memoryview]]) -> None:
    data, raws = message
    conn.send_bytes(pickle.dumps([len(data), *(r.nbytes for r in raws)]))
    conn.send_bytes(data)
    fd = conn.fileno()
    for raw in raws:  # unframed: the receiver knows the sizes
        view = raw.cast("B") if raw.ndim != 1 or raw.format != "B" else raw
        while view.nbytes:
            view = view[os.write(fd, view):]


def _read_into(fd: int, view: memoryview) -> None:
    while view.nbytes:
        n = os.readv(fd, [view])
        if n == 0:
            raise EOFError
        view = view[n:]


def recv(conn: Connection) -> Any:
    """One message; raises ``EOFError`` when the other side is gone."""
    sizes = pickle.loads(conn.recv_bytes())
    data = conn.recv_bytes()
    buffers = []
    for n in sizes[1:]:
        buf = np.empty(n, np.uint8)  # not zero-filled; every byte is read into it
        _read_into(conn.fileno(), buf.data)
        buffers.append(buf)
    return pickle.loads(data, buffers=buffers)
