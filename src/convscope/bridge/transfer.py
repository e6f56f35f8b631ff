"""Parent side of the move: the model's config, custom classes and weights, and a cheap weight fingerprint.

The architecture travels as Keras' own backend-independent config (``serialize_keras_object``, the
``.keras`` format's ``config.json``); weights travel as raw arrays in one temporary file (in
``/dev/shm`` where it exists), in ``model.weights`` order. Nothing here modifies the model.
"""

from __future__ import annotations

import os
import tempfile
import weakref
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from convscope.errors import ConvscopeError

EXACT_LIMIT = 4_000_000  # models up to this many weights get an exact checksum per call
SAMPLES = 4096  # elements read per variable by the sampled checksum of larger models

_HOW_TO_REGISTER = (
    "decorate the class with @keras.saving.register_keras_serializable() and give it a get_config(), "
    "then pass Scope(model, custom_objects={{'{name}': {name}}}) or the module that defines it, "
    "Scope(model, worker_imports=['{module}'])"
)


def walk_layers(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, layer) for every layer, nested models included (paths as the Keras adapter's)."""
    out: list[tuple[str, Any]] = []
    for layer in getattr(model, "layers", []):
        path = f"{prefix}{layer.name}"
        out.append((path, layer))
        if getattr(layer, "layers", None):
            out.extend(walk_layers(layer, path + "."))
    return out


def _is_keras_class(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("keras", "builtins")


def _custom_classes(model: Any) -> list[tuple[str, type]]:
    """(layer path, class) of the model and layers whose class does not come with Keras."""
    items = [("<model>", type(model))] + [(p, type(layer)) for p, layer in walk_layers(model)]
    return [(p, cls) for p, cls in items if not _is_keras_class(cls)]


def check_movable(model: Any, *, safe_mode: bool, custom_objects: dict[str, Any]) -> None:
    """Refuse what cannot be rebuilt in the worker, naming the layer and the fix."""
    for path, layer in walk_layers(model):
        if type(layer).__name__ == "Lambda" and _is_keras_class(type(layer)) and safe_mode:
            raise ConvscopeError(
                f"layer {path!r} is a Lambda layer: its Python function cannot be rebuilt in convscope's "
                "torch-backend worker under Keras safe mode. Replace it with a small custom layer "
                "(@keras.saving.register_keras_serializable() class with call() in keras.ops), or pass "
                "Scope(model, safe_mode=False) if you trust the code"
            )
    import keras

    for path, cls in _custom_classes(model):
        registered = keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is cls
        if not registered and cls.__name__ not in custom_objects and cls not in custom_objects.values():
            what = "the model class" if path == "<model>" else f"layer {path!r}"
            raise ConvscopeError(
                f"{what} is a custom class {cls.__module__}.{cls.__qualname__} that Keras does not know, "
                "so convscope's torch-backend worker cannot rebuild it: "
                + _HOW_TO_REGISTER.format(name=cls.__name__, module=cls.__module__)
            )


def package(model: Any, *, safe_mode: bool, custom_objects: dict[str, Any] | None) -> dict[str, Any]:
    """The model's config and the custom classes the worker needs to rebuild it (after :func:`check_movable`)."""
    import keras

    objects = dict(custom_objects or {})
    for _, cls in _custom_classes(model):
        objects.setdefault(keras.saving.get_registered_name(cls), cls)
        objects.setdefault(cls.__name__, cls)
    try:
        config = keras.saving.serialize_keras_object(model)
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise ConvscopeError(
            f"Keras cannot serialise this {type(model).__name__} ({exc}); convscope moves the model to its "
            "torch-backend worker through Keras' own config: give custom layers and models a get_config()"
        ) from exc
    config.pop("compile_config", None)  # losses/metrics are not needed to look inside
    return {"config": config, "custom_objects": objects, "safe_mode": safe_mode}


def write_weights(variables: Sequence[Any], indices: Sequence[int]) -> dict[str, Any]:
    """Write the chosen variables into one temporary file; returns what the worker needs to read it."""
    import keras

    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="convscope-weights-", dir=folder)
    meta: list[tuple[int, tuple[int, ...], str, int]] = []
    offset = 0
    with os.fdopen(fd, "wb") as f:
        for i in indices:
            a = np.ascontiguousarray(keras.ops.convert_to_numpy(variables[i].value))
            f.write(a.data.cast("B"))
            meta.append((i, tuple(a.shape), a.dtype.str, offset))
            offset += a.nbytes
    return {"path": path, "meta": meta}


class Fingerprint:
    """Per-variable fingerprints of a model's current weights, cheap enough to take at every call.

    JAX arrays are immutable, so a variable changed exactly when its array object did (weak
    references, nothing kept alive). Elsewhere (TensorFlow): the optimizer's step counter, and per
    variable a CRC of all values (models up to :data:`EXACT_LIMIT` weights) or of
    :data:`SAMPLES` values spread over it (larger ones). A training step changes the counter;
    ``set_weights``/``load_weights``/``assign`` change the sampled values; anything subtler is
    sent with ``scope.sync()``.
    """

    def __init__(self, model: Any) -> None:
        import keras

        self.model = model
        self.variables = list(model.weights)
        self.backend = keras.backend.backend()
        self.exact = sum(int(np.prod(v.shape)) for v in self.variables) <= EXACT_LIMIT
        self._index: dict[int, Any] = {}

    def __call__(self) -> list[Any]:
        if self.backend == "jax":
            return [weakref.ref(v.value) for v in self.variables]
        step = self._step()
        return [(step, self._crc(i, v)) for i, v in enumerate(self.variables)]

    @staticmethod
    def changed(old: list[Any] | None, new: list[Any]) -> list[int]:
        """Indices of the variables whose fingerprint differs (all of them without an old one)."""
        if old is None or len(old) != len(new):
            return list(range(len(new)))
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            same = a() is b() is not None if isinstance(a, weakref.ref) else a == b
            if not same:
                out.append(i)
        return out

    def _step(self) -> int | None:
        opt = getattr(self.model, "optimizer", None)
        it = getattr(opt, "iterations", None)
        if it is None:
            return None
        import keras

        return int(keras.ops.convert_to_numpy(it.value if hasattr(it, "value") else it))

    def _crc(self, i: int, v: Any) -> int:
        import keras

        size = int(np.prod(v.shape))
        if self.exact or size <= SAMPLES or self.backend != "tensorflow":
            return zlib.crc32(np.ascontiguousarray(keras.ops.convert_to_numpy(v.value)).data)
        import tensorflow as tf

        if i not in self._index:
            flat = np.linspace(0, size - 1, SAMPLES).astype(np.int64)
            self._index[i] = tf.constant(np.stack(np.unravel_index(flat, tuple(v.shape)), axis=1))
        return zlib.crc32(np.ascontiguousarray(tf.gather_nd(v.value, self._index[i]).numpy()).data)
