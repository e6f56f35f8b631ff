"""How a maximisation reports its steps: a tqdm bar, one line on stderr, a caller's ``(step, total)``
callback, or nothing — chosen by ``maximize(..., progress=...)``.

Example::

    vis = scope.maximize(cs.objectives.channel("conv_1", 0), progress=lambda step, total: print(step, total))
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from convscope._progress import bar_redraws
from convscope.errors import OptionError

ProgressCallback = Callable[[int, int], object]
Progress = bool | ProgressCallback | None
MIN_STEPS = 100  # progress=None draws a bar from this many steps on


def check_progress(progress: object) -> Progress:
    """``progress`` itself if it is ``None``, a bool or a callable; else an :class:`OptionError`."""
    if progress is None or isinstance(progress, bool):
        return progress
    if callable(progress):
        try:
            inspect.signature(progress).bind(1, 1)
        except TypeError:
            raise OptionError(f"progress={progress!r} cannot be called as progress(step, total); pass a callable "
                              "of two arguments, e.g. lambda step, total: print(step, total)") from None  # fmt: skip
        except ValueError:  # no signature to read (some builtins): trust it
            pass
        return progress  # type: ignore[return-value]
    raise OptionError(f"progress={progress!r} is not allowed; pass True (a bar), False (silent), None (a bar "
                      "for runs of 100 steps or more) or a callable f(step, total)")  # fmt: skip


class Steps:
    """Counts the optimiser steps of one run, ``total`` in all, and reports them as ``progress`` asks:
    ``None`` a bar for runs of :data:`MIN_STEPS` or more, ``True`` always, ``False`` never; a callable is
    called as ``progress(step, total)`` after every step (``step`` runs 1..``total``) and replaces the bar.
    Where a bar cannot redraw (logs, pipes: :func:`convscope._progress.bar_redraws`) a shown bar becomes one
    line once the run has finished."""

    def __init__(self, progress: Progress, total: int, desc: str) -> None:
        progress = check_progress(progress)
        self.total, self.done, self.desc = total, 0, desc
        self._callback = None if progress is None or isinstance(progress, bool) else progress
        self._show = self._callback is None and (total >= MIN_STEPS if progress is None else bool(progress))
        self._live = self._show and bar_redraws()
        self._bar: tqdm | None = None
        self._start = 0.0

    def __enter__(self) -> Steps:
        self._start = time.perf_counter()
        self._bar = tqdm(
            total=self.total, desc=self.desc[:48], unit="step", disable=not self._live, leave=False
        )
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._show and not self._live and exc_type is None:
            print(
                f"{self.desc}: {self.total} steps in {time.perf_counter() - self._start:.1f}s",
                file=sys.stderr,
            )

    def step(self, values: torch.Tensor) -> None:
        """One optimiser step done; ``values`` (the objective's, per image) feed the bar's postfix."""
        self.done += 1
        if self._callback is not None:
            self._callback(self.done, self.total)
        if self._live and self._bar is not None:
            self._bar.update(1)
            if self.done % 16 == 0 or self.done == self.total:
                self._bar.set_postfix(value=f"{values.detach().mean().item():.4g}", refresh=False)
