"""Where a progress bar can be drawn: one rule for every long job (scans, maximisation, reports).

A tqdm bar redraws itself with carriage returns, which only reads as a bar where a person watches a terminal
or a notebook; in logs, pipes and CI (``convscope scan ... | tail``, ``2> log``) the callers print one line
per finished job instead.
"""

from __future__ import annotations

import sys


def bar_redraws() -> bool:
    """True in Jupyter, or when stderr and stdout are both terminals."""
    if "ipykernel" in sys.modules:
        return True
    return all(getattr(f, "isatty", lambda: False)() for f in (sys.stderr, sys.stdout))
