"""Up-front checks of ``cs.report`` / ``build_page`` arguments: every one runs before any model work, so a
wrong option fails at once with an :class:`~convscope.errors.OptionError` saying what was received, what is
allowed and what to pass.

Example::

    check_out("figures/")   # OptionError: out='figures/' is a directory; pass a file such as 'figures/report.html'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convscope.errors import OptionError
from convscope.reporting.model import shown

SUFFIXES = (".html", ".htm")
"""The file names a report may be written to."""
SCOPE_API = ("summary", "activations", "attribute", "input_spec", "preprocessing")
"""What ``cs.report`` calls on its scope (a :class:`convscope.Scope` or a bridged one)."""


def check_scope(scope: Any) -> None:
    """Refuse anything without the Scope API (a bare model, a path) with a hint to wrap it."""
    missing = [name for name in SCOPE_API if not hasattr(scope, name)]
    if missing:
        raise OptionError(f"scope={shown(scope)} is not a convscope Scope (it has no {', '.join(missing)}); pass "
                          "cs.Scope(model) (with input_shape=... if the model does not declare one), e.g. "
                          "cs.report(cs.Scope(model), images, out='report.html')")  # fmt: skip


def check_out(out: Any, flag: str = "out=") -> Path:
    """``out`` as a path to an ``.html``/``.htm`` file that is not a directory; ``flag`` names the option in
    messages (``"-o "`` for the CLI)."""
    if not isinstance(out, str | Path) or not str(out):
        raise OptionError(f"{flag}{shown(out)} is not allowed; pass the path of an .html file, e.g. 'report.html'")
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", "\\")):
        raise OptionError(f"{flag}{str(out)!r} is a directory; pass the path of an .html file, e.g. "
                          f"{str(path / 'report.html')!r}")  # fmt: skip
    if path.suffix.lower() not in SUFFIXES:
        raise OptionError(f"{flag}{str(out)!r} is not allowed: a report is one HTML page, so the file name must end "
                          f"in .html or .htm, e.g. {str(path.with_suffix('.html'))!r}")  # fmt: skip
    return path


def check_count(name: str, value: Any, minimum: int = 1, example: int = 128) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name}={value!r} is not allowed; pass an int >= {minimum}, e.g. {name}={example}")
    return value


def check_targets(targets: Any) -> list[int] | None:
    """``None`` (each image's top-1 class), one class index or a list of them."""
    if targets is None:
        return None
    items = [targets] if isinstance(targets, int) and not isinstance(targets, bool) else targets
    if isinstance(items, str) or not isinstance(items, Sequence) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in items
    ):
        raise OptionError(f"targets={shown(targets)} is not allowed; pass None (each image's top-1 class) or a list "
                          "of class indices >= 0, e.g. targets=[3, 5]")  # fmt: skip
    return [int(t) for t in items] or None


def check_text(name: str, value: Any, *, none: bool = False) -> None:
    if (value is None and none) or isinstance(value, str):
        return
    raise OptionError(f"{name}={shown(value)} is not allowed; pass a str" + (" or None (the default)" if none else ""))
