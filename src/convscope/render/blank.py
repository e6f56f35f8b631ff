"""Say out loud when a picture would be blank: all-zero, constant or vanishing (denormal) maps.

Example::

    >>> blank_message("conv_3", np.zeros((64, 7, 7)))
    'conv_3: all 64 channels are zero for this input (a dead layer: ReLUs that never fire, ...'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TINY = float(np.finfo(np.float32).tiny)
"""The smallest normal float32 (1.2e-38): a layer whose largest value is below it has vanished."""


@dataclass(frozen=True)
class Flatness:
    """Per-channel facts about a stack of maps ``(C, ...)``."""

    zero: np.ndarray  # (C,) bool: every value exactly 0
    flat: np.ndarray  # (C,) bool: every value the same (zero channels included)
    low: np.ndarray  # (C,) the minimum of each channel
    peak: float  # max |v| over all channels

    @classmethod
    def of(cls, maps: np.ndarray) -> Flatness:
        flat = np.asarray(maps).reshape(len(maps), -1)
        lo, hi = flat.min(axis=1), flat.max(axis=1)
        peak = float(np.abs(flat).max(initial=0.0)) if flat.size else 0.0
        return cls(zero=(lo == 0) & (hi == 0), flat=lo == hi, low=lo, peak=peak)


def _what(kind: str, count: int) -> str:
    return f"the {kind}" if count == 1 else f"all {count} {kind}s"


def blank_message(
    name: str,
    maps: np.ndarray,
    *,
    kind: str = "channel",
    where: str = "for this input",
    per_channel: bool = False,
) -> str | None:
    """One line when every map of ``maps`` ``(C, ...)`` is zero, constant or vanishing, else None.

    ``kind`` names the items (``"channel"``, ``"unit"``); ``where`` ends the first clause. Items that are
    each constant but differ from one another only blank a picture normalised per channel
    (``per_channel=True``). Maps of one value each (a vector of units) are never constant by themselves.
    """
    f = Flatness.of(maps)
    count, head = len(f.zero), f"{name}: " if name else ""
    values = np.unique(f.low)
    scalars = np.asarray(maps)[0].size == 1
    listed = ", ".join(f"{v:.4g}" for v in values[:3]) + (", …" if len(values) > 3 else "")
    verb = "is" if count == 1 else "are"
    if f.zero.all():
        return (f"{head}{_what(kind, count)} {verb} zero {where} (a dead layer: ReLUs that never fire, zero "
                "weights, or an input the layer ignores); the picture is blank")  # fmt: skip
    if f.flat.all() and len(values) == 1 and count > (1 if scalars else 0):
        return f"{head}{_what(kind, count)} {verb} constant {where} (value {listed}); nothing varies, so the picture is flat"
    if f.flat.all() and per_channel and not scalars:
        return (f"{head}every {kind} is constant {where} (values {listed}), so with normalize='channel' each "
                "tile is one flat colour; use normalize='layer' to compare them")  # fmt: skip
    if f.peak < TINY:
        return (f"{head}the values have vanished {where}: max |v| = {f.peak:.3g}, below float32's normal range "
                "(a dead or collapsed layer, e.g. random initialisation); the picture stretches that noise")  # fmt: skip
    return None


def index_labels(maps: np.ndarray) -> list[str]:
    """Channel numbers as grid labels, the flat channels marked: ``"5=0"`` for an all-zero channel,
    ``"5=0.3"`` for a constant one (the value to 2 digits)."""
    f = Flatness.of(maps)
    return [f"{i}={f.low[i]:.2g}" if f.flat[i] else str(i) for i in range(len(f.flat))]
