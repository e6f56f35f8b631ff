"""How a report says what it is doing: the jobs of building a page (the forward pass, each layer's feature
visualisations, each attribution method with its deletion/insertion curves, drawing the pictures), on stderr.

A tqdm bar where a bar redraws (stderr on a terminal, or Jupyter); elsewhere (logs, pipes, CI) one line per
finished job with its time, never bar frames (``progress=True`` or ``None``); nothing with ``progress=False``.

Example::

    steps = Steps(True, "report")
    with steps.job("forward pass"):
        ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from convscope._progress import bar_redraws
from convscope.errors import OptionError


class Steps:
    """Counts a report's jobs; ``add(n)`` announces ``n`` more, ``job(what)`` runs one (a context)."""

    def __init__(self, progress: object, desc: str = "report") -> None:
        if progress is None:  # the default, as for maximize(progress=None)
            progress = True
        if not isinstance(progress, bool):
            raise OptionError(f"progress={progress!r} is not allowed; pass True or None (default: a bar on a "
                              "terminal, else a line per job on stderr) or False (silent)")  # fmt: skip
        self.enabled, self.desc = progress, desc
        self.total = self.done = 0
        self._live = progress and bar_redraws()
        self._bar = None

    def add(self, n: int) -> None:
        self.total += n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    @contextmanager
    def job(self, what: str) -> Iterator[None]:
        if self._live and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit="job", leave=False, file=sys.stderr)
        if self._bar is not None:
            self._bar.set_postfix_str(what[:40], refresh=True)
        start = time.perf_counter()
        yield
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self.enabled:
            print(f"{self.desc}: {what} ({self.done}/{max(self.total, self.done)}) "
                  f"{time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
