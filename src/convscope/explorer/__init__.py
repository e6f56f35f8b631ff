"""The live local explorer: ``cs.serve(scope)`` / ``convscope serve MODEL`` — every layer, channel, kernel,
feature visualisation, dataset example and attribution map of your own model in one browser page.

It binds 127.0.0.1 and prints one URL carrying a per-launch token; see :mod:`convscope.explorer.security`.

Example::

    import convscope as cs
    cs.serve(cs.Scope(model, input_shape=(3, 224, 224)), images="photos/")
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convscope.errors import ConvscopeError, InputError, OptionError

__all__ = ["ListenError", "Server", "make_app", "serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: How messages name an argument: ``images='x'`` (Python) or ``--images x`` (set by ``convscope serve``).
_CLI_NAMES: contextvars.ContextVar[bool] = contextvars.ContextVar("convscope_explorer_cli", default=False)


class ListenError(ConvscopeError):
    """The explorer could not listen on ``host:port`` (the port is taken, or the address is not this machine's)."""

    def __init__(self, host: str, port: int, reason: str, *, address: bool = False) -> None:
        self.host, self.port, self.reason, self.address = host, port, reason, address
        super().__init__(self._text())

    def _text(self) -> str:
        if self.address:
            return (f"{_named('host', self.host)} cannot be listened on ({self.reason}); pass an address of this "
                    f"machine, e.g. {_named('host', '127.0.0.1')}")  # fmt: skip
        again = "--port" if _CLI_NAMES.get() else "port="
        return (f"could not listen on {_named('port', self.port)} at {self.host} ({self.reason}); pass another "
                f"{again}, or {_named('port', 0)} for a free one")  # fmt: skip


@contextmanager
def cli_names() -> Iterator[None]:
    """Inside: messages name arguments as the command-line flags (``--images x``), not ``images='x'``."""
    token = _CLI_NAMES.set(True)
    try:
        yield
    finally:
        _CLI_NAMES.reset(token)


def _named(option: str, value: Any) -> str:
    shown = os.fspath(value) if isinstance(value, os.PathLike) else value
    return f"--{option} {shown}" if _CLI_NAMES.get() else f"{option}={shown!r}"


def check_port(port: Any) -> int:
    """``port`` as an int in 0-65535 (0: a free one), else :class:`OptionError` naming it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise OptionError(f"{_named('port', port)} is not a port; pass 0-65535 (0: a free one, printed)")
    return port


def make_app(scope: Any, *, images: Any = None, scan: Any = None, token: str | None = None,
             labels: Any = None, host: str = "127.0.0.1", steps: int = 128) -> Any:  # fmt: skip
    """The guarded ASGI app for ``scope`` (``.api`` is the FastAPI app, ``.token`` the token) without serving it.

    ``images``: a folder, an image file, a list of paths/PIL images, or ``None``; ``scan``: a ``cs.Scan``, a
    store folder written by ``scope.scan(..., store=DIR)`` / ``convscope scan``, an image folder (scanned
    now), or ``None``.
    """
    from convscope.explorer.app import create_app
    from convscope.explorer.security import new_token
    from convscope.explorer.views import Explorer

    explorer = Explorer(scope, scan=open_scan(scope, scan), labels=labels, steps=steps)
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
    if isinstance(images, str | os.PathLike):
        _add_path(explorer, Path(images), images)
        return
    items: Iterable[Any] = images if isinstance(images, list | tuple) else [images]
    for i, item in enumerate(items):
        if isinstance(item, str | os.PathLike):
            _add_path(explorer, Path(item), item)
        else:  # a PIL image
            import io

            buf = io.BytesIO()
            item.save(buf, format="PNG")
            explorer.images.add(buf.getvalue(), f"image_{i}.png")


_ALLOWED_IMAGES = "pass a folder of images or an image file (PNG, JPEG, WebP, BMP, GIF or TIFF)"


def _add_path(explorer: Any, path: Path, given: Any) -> None:
    """One image file, or every image of a folder (warning once about the files that are not images)."""
    from convscope.explorer.state import MAX_IMAGES, ImageRefused

    if path.is_dir():
        added, skipped = explorer.images.add_folder_report(path)
        if skipped:
            shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            files = "file that is not an image" if len(skipped) == 1 else "files that are not images"
            warnings.warn(f"{_named('images', given)}: skipped {len(skipped)} {files} Pillow can read: {shown}",
                          stacklevel=4)  # fmt: skip
        if not added:
            warnings.warn(f"{_named('images', given)} holds no images; drop some into the page", stacklevel=4)
        elif len(added) >= MAX_IMAGES:
            warnings.warn(f"{_named('images', given)}: showing the first {MAX_IMAGES} images (the most held at "
                          "once)", stacklevel=4)  # fmt: skip
        return
    if not path.exists():
        raise InputError(f"{_named('images', given)}: no such file or folder; {_ALLOWED_IMAGES}")
    try:
        data = path.read_bytes()
        explorer.images.add(data, path.name)
    except ImageRefused as exc:
        why = "is not an image Pillow can read" if exc.status != 413 else "is too large"
        raise InputError(f"{_named('images', given)} {why}; {_ALLOWED_IMAGES}") from None
    except OSError as exc:
        raise InputError(f"{_named('images', given)} cannot be read ({exc.strerror or exc}); "
                         f"{_ALLOWED_IMAGES}") from None  # fmt: skip


_ALLOWED_SCAN = ("pass a scan store written by `convscope scan MODEL DATA -o DIR` (a folder with manifest.json) "
                 "or a folder of images to scan at start")  # fmt: skip


def open_scan(scope: Any, scan: Any, *, k: int = 9) -> Any:
    """``scan`` as a ``cs.Scan``: one as is; a store folder (``manifest.json``) reopened and checked against
    the model; any other folder scanned now as images (class sub-folders become labels), ``k`` per channel."""
    if scan is None or not isinstance(scan, str | os.PathLike):
        return scan
    from convscope.dataset.errors import EmptyDatasetError

    path = Path(scan)
    if not path.exists():
        raise InputError(f"{_named('scan', scan)}: no such folder; {_ALLOWED_SCAN}")
    if not path.is_dir():
        raise InputError(f"{_named('scan', scan)} is a file, not a folder; {_ALLOWED_SCAN}")
    if (path / "manifest.json").is_file():
        return _open_store(scope, path, scan)
    try:
        return scope.scan(path, k=k, progress=False)
    except EmptyDatasetError:
        raise InputError(f"{_named('scan', scan)} holds neither a manifest.json nor any image; "
                         f"{_ALLOWED_SCAN}") from None  # fmt: skip


def _open_store(scope: Any, path: Path, given: Any) -> Any:
    import json

    from convscope.dataset.errors import StoreMismatchError
    from convscope.dataset.scan import Scan
    from convscope.dataset.store import model_fingerprint

    try:
        stored = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        raise InputError(f"{_named('scan', given)}: its manifest.json cannot be read; {_ALLOWED_SCAN}") from None
    now = model_fingerprint(scope)
    if stored != now:
        raise StoreMismatchError(
            f"{_named('scan', given)} was scanned with another model (architecture or weights: stored "
            f"{str(stored)[:12]}, this model {now[:12]}); scan again with this model: `convscope scan MODEL DATA "
            f"-o {os.fspath(given)} --overwrite`"
        )
    try:
        opened = Scan.open(path)
    except ConvscopeError as exc:
        raise InputError(f"{_named('scan', given)}: {exc}") from None
    opened.scope = scope  # the same model: mask patches and layer queries work as on a fresh scan
    return opened


def _bind(host: str, port: int) -> Any:
    """A socket bound to ``host:port`` (not yet listening), or :class:`ListenError` saying why not."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]  # fmt: skip
    except (OSError, UnicodeError) as exc:
        raise ListenError(host, port, getattr(exc, "strerror", None) or str(exc), address=True) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        taken = exc.errno in (98, 48, 10048)  # EADDRINUSE on Linux, macOS, Windows
        raise ListenError(host, port, "that port is in use" if taken else (exc.strerror or str(exc)),
                          address=not taken and exc.errno in (99, 49, 10049)) from None  # fmt: skip
    sock.set_inheritable(True)
    return sock


class Server:
    """A uvicorn server for the explorer on a background thread (``start()``, ``url``, ``stop()``)."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app, self.host, self._port = app, host, check_port(port)
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
        """Bind ``host:port`` here (a taken port raises :class:`ListenError`), then serve on a thread."""
        import threading
        import time

        sock = _bind(self.host, self._port)
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported by start(), not as a thread traceback
                self._error = exc

        self._thread = threading.Thread(target=run, name="convscope-explorer", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                why = f"{type(self._error).__name__}: {self._error}" if self._error is not None else "timed out"
                raise ListenError(self.host, self._port, why)
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def serve(scope: Any, images: Any = None, *, scan: Any = None, port: int = 0, host: str = "127.0.0.1",
          labels: Any = None, block: bool = True) -> Server:  # fmt: skip
    """Serve the explorer for ``scope`` on ``host:port`` (default 127.0.0.1, a free port) and print its URL.

    ``images``: a folder, an image file or a list of images shown first (more can be dropped into the page);
    ``scan``: dataset examples, a ``cs.Scan``, a scan store folder or an image folder to scan now (default
    ``None``); ``labels``: class names (list or file). Another
    address than loopback is served only when passed explicitly, with a warning: anyone who can reach it
    and holds the URL's token can run the model. ``block=False`` returns the running :class:`Server`
    (call ``.stop()``); the default blocks until Ctrl-C.

    Example: ``cs.serve(scope, images="photos/")`` prints ``convscope explorer: http://127.0.0.1:PORT/?token=...``
    """
    check_port(port)
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
