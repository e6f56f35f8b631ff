"""``BridgedScope``: the ``Scope`` of a Keras model on the TensorFlow or JAX backend.

``cs.Scope(model)`` returns one when Keras runs on another backend than torch. The model is moved to
one convscope worker process on the torch backend (its config and weights; your model object is never
modified) and every public ``Scope`` method and property is forwarded there by name, with the same
signature and the same result objects. Before each call the current weights are fingerprinted and the
changed ones re-sent, so training in between is reflected. Tensors with an autograd graph cannot
come back (``scope.activations(x, grad=True)`` raises :class:`~convscope.bridge.GraphCannotCrossError`);
gradient-based results (``scope.attribute``, ``scope.maximize``) are computed in the worker. Close the worker with ``scope.close()`` or
``with cs.Scope(model) as scope:``; it is closed at interpreter exit too.

Example::

    with cs.Scope(tf_model) as scope:           # Keras on TensorFlow
        print(scope.summary())
        scope.attribute(x, method="gradcam").overlay().save("cam.png")
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Sequence
from typing import Any

from convscope.adapters.base import LayerHandle
from convscope.bridge import transfer, wire
from convscope.bridge.client import Client, WorkerDied
from convscope.bridge.worker import Method, RemoteRef
from convscope.errors import ConvscopeError

_DATA_ATTRIBUTES = ("preprocess", "resize", "scale", "mean", "std", "bgr")  # set by Scope.__init__
_GRAPH_CALLS = ("activations", "record")  # methods whose grad=True asks for tensors with an autograd graph


class BridgedScope:
    """A :class:`convscope.Scope` whose engine runs in a torch-backend worker process.

    Args:
        model: a Keras 3 model on the TensorFlow or JAX backend.
        input_shape, preprocess, resize, scale, mean, std: as for :class:`convscope.Scope`.
        custom_objects: custom layer classes (or functions) the model needs, by name, as for
            ``keras.saving.load_model``; registered classes are found without it.
        worker_imports: modules the worker imports before rebuilding the model (where your
            custom layers are defined and registered), default none.
        safe_mode: Keras safe mode when rebuilding (default ``True``: a ``Lambda`` layer is refused).

    Extra methods: :meth:`close`, :meth:`sync` (re-send all weights now) and ``with`` support.
    """

    bridged = True

    def __init__(
        self,
        model: Any,
        *,
        input_shape: Sequence[int] | None = None,
        preprocess: str | None = None,
        resize: str = "squash",
        scale: float | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        custom_objects: dict[str, Any] | None = None,
        worker_imports: Sequence[str] = (),
        safe_mode: bool = True,
    ) -> None:
        import keras

        self.model = model
        self.backend = keras.backend.backend()
        self._options: dict[str, Any] = {"input_shape": input_shape, "preprocess": preprocess, "resize": resize,
                                         "scale": scale, "mean": mean, "std": std}  # fmt: skip
        self._client: Client | None = None
        transfer.check_movable(model, safe_mode=safe_mode, custom_objects=dict(custom_objects or {}))
        client = Client()  # the worker imports torch and Keras while the model is packed here
        try:
            self._package = transfer.package(model, safe_mode=safe_mode, custom_objects=custom_objects)
            self._imports = list(worker_imports)
            self._fingerprint = transfer.Fingerprint(model)
            self._paths = {id(layer): p for p, layer in transfer.walk_layers(model)}
            self._aliases: list[tuple[Any, str]] = []
            self._sent: list[Any] | None = None
        except BaseException:
            client.close()
            raise
        self._start(client)

    # -- worker lifetime -------------------------------------------------------------------------
    def _start(self, client: Client | None = None) -> None:
        client = client or Client()
        self._client = client
        current = self._fingerprint()
        variables = self._fingerprint.variables
        payload = {"package": self._package, "options": self._options, "imports": self._imports,
                   "path": list(sys.path), "weights": transfer.write_weights(variables, range(len(variables)))}  # fmt: skip
        try:
            client.request("load", payload, what="Scope(model)")
            for old, new in self._aliases:
                client.request("call", ("rename", (old, new), {}), what="scope.rename")
        except BaseException:
            client.close()
            self._client = None
            raise
        self._sent = current

    def _ready(self, what: str) -> Client:
        client = self._client
        if client is not None and not client.alive():
            self._client = None
            client._mark_dead()
            raise WorkerDied(f"{what}: convscope's worker process (pid {client.pid}) ended since the last call "
                             f"({client.dead}); the model is moved "
                             "to a new worker at the next call")  # fmt: skip
        if client is None:
            self._start()
            assert self._client is not None
            return self._client
        self._push_weights(client, what)
        return client

    def _push_weights(self, client: Client, what: str, force: bool = False) -> None:
        current = self._fingerprint()
        changed = list(range(len(current))) if force else transfer.Fingerprint.changed(self._sent, current)
        if changed:
            files = transfer.write_weights(self._fingerprint.variables, changed)
            client.request("weights", files, what=what)
        self._sent = current

    def sync(self) -> BridgedScope:
        """Send every weight to the worker now (changes are otherwise found by fingerprint). Returns ``self``."""
        self._push_weights(self._ready("scope.sync()"), "scope.sync()", force=True)
        return self

    def close(self) -> None:
        """Stop the worker process (safe to call twice; a later call starts a new one)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> BridgedScope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id (``None`` while none runs)."""
        return self._client.pid if self._client is not None and self._client.alive() else None

    # -- forwarding ------------------------------------------------------------------------------
    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``Scope.<name>(*args, **kwargs)`` in the worker, or ``module:function(scope, ...)``."""
        what = f"scope.{name}(...)" if ":" not in name else name.replace(":", ".") + "(...)"
        if name in _GRAPH_CALLS and kwargs.get("grad"):  # refused before any work; see wire.graph_error
            raise wire.graph_error(f"scope.{name}(..., grad=True)")
        client = self._ready(what)
        value = client.request("call", (name, args, kwargs), what=what, layer_path=self._paths.get)
        if name == "rename":
            self._aliases.append((args[0] if args else kwargs.get("old"), args[1] if len(args) > 1 else kwargs["new"]))
        return self if value is None and name == "rename" else self._local(value)

    def _get(self, name: str) -> Any:
        client = self._ready(f"scope.{name}")
        return self._local(client.request("call", (name, None, None), what=f"scope.{name}"))

    def _local(self, value: Any) -> Any:
        if isinstance(value, RemoteRef):
            return RemoteObject(self, value)
        if isinstance(value, LayerHandle) and isinstance(value.module, wire.LayerRef):
            value.module = self._layer(value.module.path)
        if isinstance(value, list):
            return [self._local(v) for v in value]
        return value

    def _layer(self, path: str) -> Any:
        return next((layer for p, layer in transfer.walk_layers(self.model) if p == path), None)

    def __getattr__(self, name: str) -> Any:
        from convscope.scope import Scope

        if name.startswith("_") or name in ("model", "backend"):
            raise AttributeError(name)
        if name in _DATA_ATTRIBUTES:
            return self._get(name)
        try:
            attr = inspect.getattr_static(Scope, name)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}"
                + ("; it lives in convscope's worker process (Keras on TensorFlow/JAX)" if name in ("adapter", "index") else "")
            ) from None
        if isinstance(attr, property):
            return self._get(name)
        method = functools.partial(self._call, name)
        functools.update_wrapper(method, attr)
        return method

    def __dir__(self) -> list[str]:
        from convscope.scope import Scope

        return sorted(set(super().__dir__()) | {n for n in dir(Scope) if not n.startswith("_")})

    def __repr__(self) -> str:
        pid = self.worker_pid
        return (f"BridgedScope({type(self.model).__name__}, backend={self.backend}, "
                f"worker={'pid ' + str(pid) if pid else 'stopped'})")  # fmt: skip


class RemoteObject:
    """A result that stays in the worker (e.g. a ``Scan``, which holds the scope): attributes and
    method calls are forwarded; data comes back as plain objects."""

    def __init__(self, scope: BridgedScope, ref: RemoteRef) -> None:
        self._scope, self._ref = scope, ref

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = self._request(name, None, None)
        if isinstance(value, Method):
            return lambda *args, **kwargs: self._request(name, args, kwargs)
        return value

    def _request(self, name: str, args: Any, kwargs: Any) -> Any:
        client = self._scope._client
        if client is None or not client.alive():
            raise ConvscopeError(f"this {self._ref.type_name} lived in a convscope worker that has stopped; "
                                 "compute it again")  # fmt: skip
        value = client.request("object", (self._ref.oid, name, args, kwargs), what=f"{self._ref.type_name}.{name}")
        return self._scope._local(value)

    def _repr_png_(self) -> Any:
        return self._request("_repr_png_", (), {})

    def __repr__(self) -> str:
        return self._ref.text
