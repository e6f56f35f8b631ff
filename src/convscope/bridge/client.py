"""Parent side of the worker process: start it, send requests, notice when it dies, close it.

The worker is a plain ``python -c 'from convscope.bridge.worker import main; main()'`` child (``subprocess``, a private socket pair,
``KERAS_BACKEND=torch`` in its environment) rather than a ``multiprocessing`` spawn child: spawn re-runs
the user's ``__main__`` script in the child (its imports, its training, its TensorFlow start-up),
while this starts only convscope. It runs in its own session, so Ctrl-C in a terminal reaches the
parent only (which then stops the worker), and it exits by itself when the parent's end closes.
"""

from __future__ import annotations

import atexit
import itertools
import os
import socket
import subprocess
import sys
import warnings
import weakref
from multiprocessing.connection import Connection
from typing import Any

from convscope._warnings import user_stacklevel
from convscope.bridge import wire
from convscope.bridge.worker import Failure
from convscope.errors import ConvscopeError

# glibc malloc in the worker: arrays up to 32 MiB come from the heap and up to 256 MiB of freed heap is kept,
# so a repeated call reuses memory instead of faulting in fresh pages (VGG16 Grad-CAM at 224²: about
# 20,000 page faults and 5-10 % of the call's time otherwise). Your own MALLOC_* variables win.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
POLL_S = 0.2  # how often a waiting call checks that the worker is alive
CLOSE_S = 10.0  # how long close() waits for a clean exit before killing

_LIVE: weakref.WeakSet[Client] = weakref.WeakSet()
_ids = itertools.count(1)


class WorkerDied(ConvscopeError):
    """The worker process ended while (or before) serving a call."""


def _close_all() -> None:
    for client in list(_LIVE):
        client.close()


atexit.register(_close_all)


class Client:
    """One worker process and its connection."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**MALLOC, **os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from convscope.bridge.worker import main; main()", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, start_new_session=True, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.regions = wire.Regions(self.conn) if wire.SHARED else None  # where large replies arrive
        self.dead: str | None = None
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    def _close_conn(self) -> None:
        if not self.conn.closed:
            self.conn.close()
        if self.regions is not None:
            self.regions.close()  # mapped regions stay valid while results use them

    def request(self, op: str, payload: Any, *, what: str, layer_path: Any = None) -> Any:
        """Send one request and wait for its reply, checking every :data:`POLL_S` that the worker lives."""
        rid = next(_ids)
        try:
            offer = self.regions.offer() if self.regions is not None else None
            message = wire.encode((rid, op, payload, offer), layer_path)
        except Exception as exc:  # noqa: BLE001 - say which argument could not travel
            raise ConvscopeError(f"{what}: an argument cannot be sent to convscope's worker process ({exc}); "
                                 "pass plain data (arrays, paths, PIL images, numbers, module-level functions)") from exc  # fmt: skip
        try:
            wire.send(self.conn, message)
            while True:
                while not self.conn.poll(POLL_S):
                    if self.proc.poll() is not None:
                        raise EOFError
                got, ok, value, caught = wire.recv(self.conn, self.regions)
                if got == rid:
                    break
        except (EOFError, OSError) as exc:
            self._mark_dead()
            raise WorkerDied(
                f"{what}: convscope's worker process (pid {self.pid}) died ({self.dead}); the model and "
                "your aliases are moved to a new worker at the next call"
            ) from exc
        except BaseException:  # KeyboardInterrupt: the worker's answer would come too late; stop it
            self.kill()
            raise
        for category, text in caught:
            warnings.warn(text, category, stacklevel=user_stacklevel())
        if not ok:
            raise _reraise(value, what)
        return value

    def _mark_dead(self) -> None:
        code = self.proc.poll()
        if code is None:
            self.kill()
            code = self.proc.poll()
        self.dead = f"exit code {code}" if code is None or code >= 0 else f"killed by signal {-code}"
        self._close_conn()
        _LIVE.discard(self)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.dead = self.dead or "stopped"
        self._close_conn()
        _LIVE.discard(self)

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not within :data:`CLOSE_S`. Safe to call twice."""
        if self.alive():
            try:
                wire.send(self.conn, wire.encode((0, "close", None, None)))
                self.proc.wait(CLOSE_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self.dead = "closed"


def _reraise(failure: Failure, what: str) -> BaseException:
    exc = failure.exc
    if exc is not None:  # the worker's own exception type (ConvscopeError subclasses, TypeError, ...)
        return exc
    hint = f"\n(in convscope's torch-backend worker)\n{failure.trace}"
    return ConvscopeError(f"{what}: {failure.type_name}: {failure.message}{hint}")
