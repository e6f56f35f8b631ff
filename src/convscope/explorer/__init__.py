"""The live local explorer: ``cs.serve(scope)`` / ``convscope serve MODEL`` — every layer, channel, kernel,
feature visualisation, dataset example and attribution map of your own model in one browser page.

It binds 127.0.0.1 and prints one URL carrying a per-launch token; see :mod:`convscope.explorer.security`.

Example::

    import convscope as cs
    cs.serve(cs.Scope(model, input_shape=(3, 224, 224)), images="photos/")
"""

from __future__ import annotations

import ipaddress
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["Server", "make_app", "serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def make_app(scope: Any, *, images: Any = None, scan: Any = None, token: str | None = None,
             labels: Any = None, host: str = "127.0.0.1", steps: int = 128) -> Any:  # fmt: skip
    """The guarded ASGI app for ``scope`` (``.api`` is the FastAPI app, ``.token`` the token) without serving it.

    ``images``: a folder, a list of paths/PIL images, or ``None``; ``scan``: a ``cs.Scan`` or ``None``.
    """
    from convscope.explorer.app import create_app
    from convscope.explorer.security import new_token
    from convscope.explorer.views import Explorer

    explorer = Explorer(scope, scan=scan, labels=labels, steps=steps)
    _add_images(explorer, images)
    token = token or new_token()
    extra = () if host in LOOPBACK else (_host_form(host),)
    app = create_app(explorer, token=token, extra_hosts=extra)
    app.token = token  # type: ignore[attr-defined]
    return app


def _host_form(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host.lower()


def _add_images(explorer: Any, images: Any) -> None:
    if images is None:
        return
    if isinstance(images, str | os.PathLike) and Path(images).is_dir():
        explorer.images.add_folder(images)
        return
    items: Iterable[Any] = images if isinstance(images, list | tuple) else [images]
    for i, item in enumerate(items):
        if isinstance(item, str | os.PathLike):
            explorer.images.add(Path(item).read_bytes(), Path(item).name)
        else:  # a PIL image
            import io

            buf = io.BytesIO()
            item.save(buf, format="PNG")
            explorer.images.add(buf.getvalue(), f"image_{i}.png")


class Server:
    """A uvicorn server for the explorer on a background thread (``start()``, ``url``, ``stop()``)."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app, self.host = app, host
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: Any = None

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{_host_form(self.host) if self.host not in ('localhost',) else self.host}:{self.port}/?token={self.app.token}"

    def start(self) -> Server:
        import threading
        import time

        self._thread = threading.Thread(target=self._server.run, name="convscope-explorer", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the explorer could not listen on {self.host}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def serve(scope: Any, images: Any = None, *, scan: Any = None, port: int = 0, host: str = "127.0.0.1",
          labels: Any = None, block: bool = True) -> Server:  # fmt: skip
    """Serve the explorer for ``scope`` on ``host:port`` (default 127.0.0.1, a free port) and print its URL.

    ``images``: a folder or list of images shown first (more can be dropped into the page); ``scan``: a
    ``cs.Scan`` for dataset examples (default ``None``); ``labels``: class names (list or file). Another
    address than loopback is served only when passed explicitly, with a warning: anyone who can reach it
    and holds the URL's token can run the model. ``block=False`` returns the running :class:`Server`
    (call ``.stop()``); the default blocks until Ctrl-C.

    Example: ``cs.serve(scope, images="photos/")`` prints ``convscope explorer: http://127.0.0.1:PORT/?token=...``
    """
    if host not in LOOPBACK:
        warnings.warn(f"serving the explorer on {host}, not loopback: anyone who can reach this address and has "
                      "the URL can run your model", stacklevel=2)  # fmt: skip
    app = make_app(scope, images=images, scan=scan, labels=labels, host=host)
    server = Server(app, host=host, port=port).start()
    print(f"convscope explorer: {server.url}", file=sys.stderr if not block else sys.stdout, flush=True)
    if not block:
        return server
    try:
        while server._thread.is_alive():
            server._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return server
