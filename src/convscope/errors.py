"""Exceptions raised by convscope: every user-facing failure is a ``ConvscopeError``.

Messages follow one template: what was received, what is allowed, and a hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class ConvscopeError(Exception):
    """Base class of every error convscope raises on purpose."""


class LayerNotFoundError(ConvscopeError, LookupError):
    """A layer query (name, path, index, glob or type) matched nothing."""

    def __str__(self) -> str:  # LookupError/KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendError(ConvscopeError):
    """A Keras model runs on a backend other than torch."""


class InputError(ConvscopeError, ValueError):
    """Inputs that cannot be turned into what the model expects."""


class OptionError(ConvscopeError, ValueError):
    """An option value outside the allowed set."""


class CaptureError(ConvscopeError):
    """A layer output that cannot be recorded as asked (tuple output, repeated call, missing call)."""


class ModelLoadError(ConvscopeError):
    """A model file or factory that cannot be loaded."""


class ModelError(ConvscopeError):
    """The user's model raised while convscope was running it."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The ``n`` candidates most similar to ``name`` (best first)."""
    pool = list(dict.fromkeys(candidates))
    hits = difflib.get_close_matches(name, pool, n=n, cutoff=0.4)
    if not hits:  # fall back to a common-prefix match, then to the first names
        hits = [c for c in pool if c[:2].lower() == name[:2].lower()][:n]
    return hits


def hint(name: str, candidates: Iterable[str]) -> str:
    """``"closest: 'a', 'b'"`` or an empty string."""
    near = closest(name, candidates)
    return "closest: " + ", ".join(repr(c) for c in near) if near else ""


def check_choice(option: str, value: object, allowed: Sequence[str]) -> str:
    """Validate a string option; raises :class:`OptionError` naming the allowed values."""
    if isinstance(value, str) and value in allowed:
        return value
    msg = f"{option}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}"
    near = hint(str(value), allowed)
    raise OptionError(msg + (f" ({near})" if near else ""))
