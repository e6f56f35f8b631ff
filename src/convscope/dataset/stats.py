"""Per-channel statistics of layer maps, mergeable exactly across batches, shards and workers.

What each number describes:

- ``count``, ``mean``, ``std``, ``min``, ``max``, ``fraction_positive``: **every spatial position of every
  image**. Each map (one image, one channel) is reduced in float32 by torch — its min, max, number of
  positions > 0, sum and sum of squares (redone shifted by the map's first value where the variance is
  tiny next to the mean) — and only those per-map results are converted to float64 and combined with
  Chan et al.'s parallel algorithm. ``mean``/``std`` therefore carry float32 summation error
  (relative ~1e-6); ``min``/``max``/``count``/``fraction_positive`` are exact.
- ``counts`` (the histogram) and :meth:`ChannelStats.quantile`: **a fixed sample of positions** — the
  same ``SAMPLE`` positions (default 64; all of them on small maps) of every map, evenly strided (:func:`sample_step`; they
  depend only on the grid size), so histograms of any batches or workers add up exactly. Quantiles are approximate (shown
  as ``≈``): sample quantiles, interpolated inside a bin, clipped to the exact min/max. Bins follow the
  float32 bit pattern — 16 per octave (``2**(1/16)`` relative width) for ``2**-20 <= |x| < 2**20``, one
  bin ``(-2**-20, 2**-20)`` around zero (exact zeros of ReLUs land there) and one overflow bin per sign; a
  quantile that falls in the zero bin is reported as exactly 0.

Example::

    stats = ChannelStats(channels=64)
    stats.update(maps)            # (N, C, H, W), channels first
    print(stats)                  # a table
    stats.quantile(0.5)           # per-channel medians (≈, from the sampled histogram)
    stats.histogram(3)            # a PIL picture
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from convscope.errors import OptionError

_MANTISSA = 4  # bins per octave: 2**_MANTISSA
_LO, _HI = 127 - 20, 127 + 20  # biased float32 exponents: magnitudes [2**-20, 2**20) get fine bins
_FINE = (_HI - _LO) << _MANTISSA
_MAG = _FINE + 2  # magnitude bins: [0, 2**-20), the fine ones, [2**20, inf)
BINS = 2 * _MAG - 1  # negative magnitudes mirrored, the zero bin shared
ZERO_BIN = _MAG - 1  # (-2**-20, 2**-20)


def bin_index(x: torch.Tensor) -> torch.Tensor:
    """The histogram bin (0 … ``BINS - 1``, ascending in value) of each float32 element."""
    bits = x.to(torch.float32).contiguous().view(torch.int32)
    mag = ((bits & 0x7FFFFFFF) >> (23 - _MANTISSA)).sub_((_LO << _MANTISSA) - 1).clamp_(0, _MAG - 1)
    sign = bits >> 31  # 0, or -1 for negative values: mirror the magnitude bin
    return mag.bitwise_xor_(sign).sub_(sign).add_(_MAG - 1)


def bin_edges() -> np.ndarray:
    """The ``BINS + 1`` bin edges (the outermost are ±inf)."""
    j = np.arange(_FINE + 1)
    fine = np.ldexp(1.0 + (j % (1 << _MANTISSA)) / (1 << _MANTISSA), _LO - 127 + (j >> _MANTISSA))
    upper = np.concatenate([fine, [np.inf]])  # upper edges of magnitude bins 0 … _MAG - 1
    return np.concatenate([-upper[::-1], upper])


SAMPLE = 64  # positions per map that feed the histogram
CHUNK_BYTES = 2 << 20  # maps reduced per chunk: small enough to stay in cache across the reductions


def sample_step(positions: int) -> tuple[int, int]:
    """``(step, count)``: the histogram reads positions ``0, step, 2 * step, …`` (``count`` of them) of
    every flattened map: the largest step up to ``positions / SAMPLE`` that is coprime to ``positions``,
    so the samples visit every column of any grid shape (a strided view: no gather); every position
    when no such step above 1 exists (small maps)."""
    step = positions // SAMPLE
    while step > 1 and math.gcd(step, positions) != 1:
        step -= 1
    return (1, positions) if step <= 1 else (step, SAMPLE)


def sample_positions(positions: int) -> torch.Tensor:
    """The flat positions of a map of ``positions`` values that feed the histogram (see :func:`sample_step`)."""
    step, count = sample_step(positions)
    return torch.arange(count) * step


def flat_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps as an (N, C, H*W) view; a channels-last layout stays channels-last (no copy)."""
    n, c = int(maps.shape[0]), int(maps.shape[1])
    if maps.is_contiguous() or maps.ndim != 4:
        return maps.reshape(n, c, -1)
    return maps.permute(0, 2, 3, 1).reshape(n, -1, c).transpose(1, 2)


@dataclass
class MapSummary:
    """Per-map reductions of a batch ``(N, C, P)``: ``mean``/``m2``/``min``/``max`` (N, C) float64,
    ``positive`` (N, C) int64, ``peak`` and ``average`` (N, C) float32 (the top-k ranking values), and the
    sampled histogram ``counts`` (C, BINS)."""

    positions: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    positive: np.ndarray
    peak: torch.Tensor
    average: torch.Tensor
    counts: np.ndarray


def summarise(x: torch.Tensor) -> MapSummary:
    """Reduce maps ``x`` (N, C, P) — any strides, e.g. a channels-last view — over positions.

    Works chunk by chunk (``CHUNK_BYTES`` of maps) so the float32 reductions read each chunk from cache;
    nothing of size N x C x P is allocated. The variance comes from the sum and sum of squares; a map
    whose variance is tiny next to its mean (where float32 sums would cancel) is redone shifted by its
    first value, so ``std`` keeps ~6 significant digits there too."""
    n, c, p = (int(d) for d in x.shape)
    step = max(1, CHUNK_BYTES // max(1, c * p * 4))
    buf = torch.empty_like(x[:step])
    acc = torch.float32 if p < 1 << 24 else torch.float64  # counts of 0/1 stay exact in float32 below 2**24
    every, count = sample_step(p)
    out: dict[str, list[torch.Tensor]] = {f: [] for f in ("lo", "hi", "pos", "s", "sq", "sample")}
    for i in range(0, n, step):
        chunk, tmp = x[i : i + step], buf[: min(step, n - i)]
        out["lo"].append(chunk.amin(2))
        out["hi"].append(chunk.amax(2))
        out["s"].append(chunk.sum(2))
        out["sq"].append(torch.linalg.vector_norm(chunk, dim=2))
        out["sample"].append(chunk[:, :, : every * count : every])
        torch.gt(chunk, 0, out=tmp)
        out["pos"].append(tmp.sum(2, dtype=acc))
    r = {f: torch.cat(v).to(torch.float64).cpu().numpy() for f, v in out.items() if f != "sample"}
    mean = r["s"] / p
    sq = r["sq"] ** 2
    m2 = np.maximum(sq - r["s"] * mean, 0.0)
    redo = np.argwhere(m2 < 1e-3 * sq)  # cancellation ate >3 of float32's ~7 digits: shift and redo
    if len(redo):
        ii, cc = (torch.from_numpy(a).to(x.device) for a in redo.T)
        maps = x[ii, cc]  # (M, P)
        d = maps - maps[:, :1]
        ds = d.sum(1).to(torch.float64).cpu().numpy()
        dq = torch.linalg.vector_norm(d, dim=1).to(torch.float64).cpu().numpy() ** 2
        first = maps[:, 0].to(torch.float64).cpu().numpy()
        mean[redo[:, 0], redo[:, 1]] = first + ds / p
        m2[redo[:, 0], redo[:, 1]] = np.maximum(dq - ds * ds / p, 0.0)
    hi = torch.cat(out["hi"]).cpu()
    flat = (
        bin_index(torch.cat(out["sample"]))
        + (torch.arange(c, device=x.device, dtype=torch.int32) * BINS)[None, :, None]
    )
    counts = torch.bincount(flat.reshape(-1), minlength=c * BINS).view(c, BINS).cpu().numpy()
    return MapSummary(p, mean, m2, r["lo"], r["hi"], r["pos"].astype(np.int64), hi,
                      torch.from_numpy(mean.astype(np.float32)), counts)  # fmt: skip


class ChannelStats:
    """Running statistics of ``channels`` channels; ``update`` with maps (or ``add`` a
    :class:`MapSummary`), ``merge`` with another. See the module docstring for what each number covers."""

    def __init__(self, channels: int) -> None:
        self.channels = int(channels)
        self.count = 0  # positions per channel (images × H × W)
        self.mean = np.zeros(self.channels)
        self.m2 = np.zeros(self.channels)  # sum of squared deviations from the mean
        self.min = np.full(self.channels, np.inf)
        self.max = np.full(self.channels, -np.inf)
        self.positive = np.zeros(self.channels, dtype=np.int64)  # positions > 0
        self.counts = np.zeros((self.channels, BINS), dtype=np.int64)  # the sampled positions' histogram

    def update(self, maps: torch.Tensor) -> None:
        """Add a batch of channels-first maps ``(N, C, ...)``."""
        if maps.shape[1] != self.channels:
            raise OptionError(f"maps have {maps.shape[1]} channels; these statistics hold {self.channels}")
        x = flat_maps(maps.detach())
        if x.shape[0] and x.shape[2]:
            self.add(summarise(x))

    def add(self, s: MapSummary) -> None:
        """Fold in one batch's per-map reductions (Chan's combination over its equal-sized maps)."""
        if s.mean.shape[1] != self.channels:
            raise OptionError(f"maps have {s.mean.shape[1]} channels; these statistics hold {self.channels}")
        n = s.mean.shape[0]
        other = ChannelStats(self.channels)
        other.count = n * s.positions
        other.mean = s.mean.mean(axis=0)
        other.m2 = s.m2.sum(axis=0) + s.positions * ((s.mean - other.mean) ** 2).sum(axis=0)
        other.min, other.max = s.min.min(axis=0), s.max.max(axis=0)
        other.positive = s.positive.sum(axis=0)
        other.counts = s.counts
        self.merge(other)

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Fold ``other`` into these statistics (Chan's update for mean and M2); returns ``self``."""
        if other.channels != self.channels:
            raise OptionError(f"cannot merge statistics of {other.channels} channels into {self.channels}")
        na, nb = self.count, other.count
        if nb == 0:
            return self
        n = na + nb
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + other.m2 + delta**2 * (na * nb / n)
        self.count = n
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.positive = self.positive + other.positive
        self.counts = self.counts + other.counts
        return self

    # -- derived ------------------------------------------------------------------------------------
    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per channel (``ddof=0``, as ``numpy.std``)."""
        return np.sqrt(self.m2 / self.count) if self.count else np.full(self.channels, np.nan)

    @property
    def fraction_positive(self) -> np.ndarray:
        """Fraction of positions with a value > 0, per channel."""
        return self.positive / self.count if self.count else np.full(self.channels, np.nan)

    def quantile(self, q: float) -> np.ndarray:
        """Approximate per-channel ``q``-quantile (0 ≤ q ≤ 1) of the sampled positions (see the module
        docstring): interpolated inside its histogram bin, clipped to the exact min/max; exactly 0 when it
        falls in the zero bin ``(-2**-20, 2**-20)``."""
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
            raise OptionError(f"q={q!r} is not allowed; pass a number in [0, 1]")
        if not self.count:
            return np.full(self.channels, np.nan)
        edges = bin_edges()
        cum = np.cumsum(self.counts, axis=1)
        out = np.full(self.channels, np.nan)
        for c in range(self.channels):
            total = int(cum[c, -1])
            if not total:
                continue
            rank = q * (total - 1) + 1  # 1-based rank of the wanted sample
            b = int(np.searchsorted(cum[c], rank, side="left"))
            if b == ZERO_BIN:
                out[c] = 0.0
                continue
            lo = max(edges[b], self.min[c])
            hi = min(edges[b + 1], self.max[c])
            before = cum[c, b - 1] if b else 0
            frac = (rank - before) / self.counts[c, b]
            out[c] = lo + (hi - lo) * min(max(frac, 0.0), 1.0)
        return np.clip(out, self.min, self.max)

    @property
    def sampled(self) -> int:
        """Positions per channel in the histogram (the sample; ``count`` is every position)."""
        return int(self.counts[0].sum()) if self.channels else 0

    def __str__(self) -> str:
        q50 = self.quantile(0.5)
        head = f"{'channel':>7} {'mean':>10} {'std':>10} {'min':>10} {'≈median':>10} {'max':>10} {'>0':>6}"
        lines = [head, "-" * len(head)]
        for c in range(self.channels):
            lines.append(
                f"{c:>7} {self.mean[c]:>10.4g} {self.std[c]:>10.4g} {self.min[c]:>10.4g} {q50[c]:>10.4g} "
                f"{self.max[c]:>10.4g} {self.fraction_positive[c]:>6.1%}"
            )
        lines.append(f"{self.channels} channels, {self.count:,} positions each; ≈median from a histogram of "
                     f"{self.sampled:,} sampled positions (up to {SAMPLE} per map), the rest over every position")  # fmt: skip
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ChannelStats(channels={self.channels}, count={self.count})"

    def histogram(self, channel: int, *, bins: int = 48, size: tuple[int, int] = (320, 160)) -> Image.Image:
        """A bar chart of ``channel``'s sampled values (see the module docstring): ``bins`` equal-width bars
        from min to max (default 48), re-binned from the fixed histogram; ``size`` (width, height) in pixels."""
        self._check_channel(channel)
        lo, hi = float(self.min[channel]), float(self.max[channel])
        width, height = size
        img = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(img)
        if self.count and math.isfinite(lo) and math.isfinite(hi):
            edges = bin_edges()
            centres = np.clip((np.clip(edges[:-1], lo, hi) + np.clip(edges[1:], lo, hi)) / 2, lo, hi)
            span = hi - lo or 1.0
            which = np.minimum(((centres - lo) / span * bins).astype(int), bins - 1)
            bars = np.bincount(which, weights=self.counts[channel], minlength=bins)
            top, plot = bars.max() or 1.0, height - 14
            bar_w = width / bins
            for i, n in enumerate(bars):
                h = int(round(n / top * (plot - 2)))
                if h:
                    draw.rectangle([i * bar_w, plot - h, (i + 1) * bar_w - 1, plot - 1], fill=(70, 110, 180))
            draw.text((2, plot + 1), f"{lo:.3g}", fill="black")
            draw.text((width - 40, plot + 1), f"{hi:.3g}", fill="black")
        draw.text((2, 1), f"channel {channel}", fill="black")
        return img

    def _check_channel(self, channel: int) -> None:
        if (
            isinstance(channel, bool)
            or not isinstance(channel, (int, np.integer))
            or not 0 <= channel < self.channels
        ):
            raise OptionError(
                f"channel={channel!r} is out of range; this layer has channels 0 … {self.channels - 1}"
            )
