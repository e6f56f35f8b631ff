"""The explorer's front door: one ASGI middleware that checks every request before the app sees it.

In order: the ``Host`` header must name a loopback address (or the address given with ``--host``) —
DNS rebinding gets 400; a body larger than the cap is refused with 413 from ``Content-Length`` or, when
it streams, after at most ``cap`` bytes (the app only ever sees bodies that fit); every ``/api`` and schema
request needs the per-launch token (header ``X-Convscope-Token`` or ``?token=`` for ``<img>``) — missing 401,
wrong 403; a state-changing request with a foreign ``Origin`` (or ``Sec-Fetch-Site: cross-site``) gets 403.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

Scope_ = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope_, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
TOKEN_HEADER = "x-convscope-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = ("/", "/index.html", "/favicon.ico")


@dataclass(frozen=True)
class Policy:
    """What the middleware allows: the token, extra host names (from ``--host``), the body cap in bytes."""

    token: str
    max_body: int = 32 * 1024 * 1024
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)

    def host_allowed(self, host: str) -> bool:
        return host_name(host) in (*LOOPBACK_HOSTS, *self.extra_hosts)

    def needs_token(self, path: str) -> bool:
        return not (path in PUBLIC_PATHS or path.startswith("/static/"))


def host_name(header: str) -> str:
    """``'127.0.0.1:8000'`` → ``'127.0.0.1'``; ``'[::1]:80'`` → ``'[::1]'``; lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[: end + 1] if end > 0 else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def new_token() -> str:
    """A fresh per-launch token (``secrets.token_urlsafe``, 32 bytes)."""
    return secrets.token_urlsafe(32)


class Guard:
    """ASGI middleware applying a :class:`Policy` to every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.check(scope, headers)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        body = await _read_capped(receive, self.policy.max_body)
        if body is None:
            await _refuse(send, 413, f"request body over {self.policy.max_body} bytes")
            return
        await self.app(scope, _replay(body, receive), send)

    def check(self, scope: Scope_, headers: dict[str, str]) -> tuple[int, str] | None:
        """``(status, reason)`` when the request is refused before reading its body, else ``None``."""
        if not self.policy.host_allowed(headers.get("host", "")):
            return 400, "Host header must be localhost, 127.0.0.1 or [::1] (DNS rebinding guard)"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.policy.max_body):
            return 413, f"request body over {self.policy.max_body} bytes"
        path = scope.get("path", "/")
        if self.policy.needs_token(path):
            given = headers.get(TOKEN_HEADER)
            if given is None:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                given = (query.get("token") or [None])[0]
            if not given:
                return 401, "missing token: send the X-Convscope-Token header or ?token= from the printed URL"
            if not secrets.compare_digest(given.encode(), self.policy.token.encode()):
                return 403, "wrong token"
        if scope["method"] not in SAFE_METHODS and not self.same_origin(headers):
            return 403, "cross-origin request refused"
        return None

    def same_origin(self, headers: dict[str, str]) -> bool:
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = headers.get("origin")
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and self.policy.host_allowed(parts.netloc)


async def _read_capped(receive: Receive, cap: int) -> bytes | None:
    """The whole body, or ``None`` as soon as more than ``cap`` bytes arrived (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, reason: str) -> None:
    payload = json.dumps({"detail": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
