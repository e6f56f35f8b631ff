"""The bridge's wire format: pickles with out-of-band array buffers over a ``multiprocessing`` Connection.

Arrays travel as raw buffers next to the pickle (no copies inside the pickle stream). On the way
out, torch tensors become numpy arrays and are rebuilt as CPU tensors on arrival; TensorFlow/JAX
arrays become numpy arrays; a ``tf.data.Dataset`` becomes a list of numpy batches; Keras layers become
:class:`LayerRef` (their dotted path), resolved on the other side. Functions and classes defined in a
notebook or script travel by value when ``cloudpickle`` is installed (objectives, callable targets,
custom layers).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

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

    def reducer_override(self, obj: Any) -> Any:
        top = type(obj).__module__.split(".")[0]
        if top == "torch":
            import torch

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


def encode(obj: Any, layer_path: Any = None) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``: the stream and its out-of-band buffers. Raises what pickling raises."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    pickler = _Pickler(stream, protocol=5, buffer_callback=buffers.append)
    pickler.layer_path = layer_path
    pickler.dump(obj)
    return stream.getvalue(), [b.raw() for b in buffers]


def send(conn: Connection, message: tuple[bytes, list[memoryview]]) -> None:
    data, raws = message
    conn.send_bytes(pickle.dumps([len(data), *(r.nbytes for r in raws)]))
    conn.send_bytes(data)
    for raw in raws:
        conn.send_bytes(raw)


def recv(conn: Connection) -> Any:
    """One message; raises ``EOFError`` when the other side is gone."""
    sizes = pickle.loads(conn.recv_bytes())
    data = conn.recv_bytes()
    buffers = []
    for n in sizes[1:]:
        buf = bytearray(n)
        if n:
            conn.recv_bytes_into(buf)
        else:
            conn.recv_bytes()
        buffers.append(buf)
    return pickle.loads(data, buffers=buffers)
