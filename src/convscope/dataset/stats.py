"""Per-channel statistics over every spatial position of every image, mergeable exactly.

``count``/``min``/``max``/``positive`` add up; ``mean`` and ``std`` merge with Chan et al.'s parallel
algorithm (float64). The histogram uses one fixed, data-independent scheme, so histograms of any batches
or workers add up exactly: bins follow the float32 bit pattern — 16 bins per octave (``2**(1/16)``
relative width) for ``1e-6 <~ |x| < 2**20``, one bin ``(-2**-20, 2**-20)`` around zero (exact zeros of
ReLUs land there) and one overflow bin per sign. Quantiles interpolate inside bins (relative error
below 1/16 of the value) and are clipped to the exact min/max.

Example::

    stats = ChannelStats(channels=64)
    stats.update(maps)            # (N, C, H, W), channels first
    print(stats)                  # a table
    stats.quantile(0.5)           # per-channel medians
    stats.histogram(3)            # a PIL picture
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from convscope.errors import OptionError

_MANTISSA = 4  # bins per octave: 2**_MANTISSA
_LO, _HI = 127 - 20, 127 + 20  # biased float32 exponents: magnitudes [2**-20, 2**20) get fine bins
_FINE = (_HI - _LO) << _MANTISSA
_MAG = _FINE + 2  # magnitude bins: [0, 2**-20), the fine ones, [2**20, inf)
BINS = 2 * _MAG - 1  # negative magnitudes mirrored, the zero bin shared


def bin_index(x: torch.Tensor) -> torch.Tensor:
    """The histogram bin (0 … ``BINS - 1``, ascending in value) of each float32 element."""
    x = x.to(torch.float32)
    key = (x.abs().view(torch.int32) >> (23 - _MANTISSA)).sub_((_LO << _MANTISSA) - 1)
    mag = key.clamp_(0, _MAG - 1)
    return torch.where(x < 0, (_MAG - 1) - mag, mag.add_(_MAG - 1))


def bin_edges() -> np.ndarray:
    """The ``BINS + 1`` bin edges (the outermost are ±inf)."""
    j = np.arange(_FINE + 1)
    fine = np.ldexp(1.0 + (j % (1 << _MANTISSA)) / (1 << _MANTISSA), _LO - 127 + (j >> _MANTISSA))
    upper = np.concatenate([fine, [np.inf]])  # upper edges of magnitude bins 0 … _MAG - 1
    return np.concatenate([-upper[::-1], upper])


class ChannelStats:
    """Running statistics of ``channels`` channels; ``update`` with maps, ``merge`` with another."""

    def __init__(self, channels: int) -> None:
        self.channels = int(channels)
        self.count = 0  # positions per channel (images × H × W)
        self.mean = np.zeros(self.channels)
        self.m2 = np.zeros(self.channels)  # sum of squared deviations from the mean
        self.min = np.full(self.channels, np.inf)
        self.max = np.full(self.channels, -np.inf)
        self.positive = np.zeros(self.channels, dtype=np.int64)  # positions > 0
        self.counts = np.zeros((self.channels, BINS), dtype=np.int64)

    def update(self, maps: torch.Tensor) -> None:
        """Add a batch of channels-first maps ``(N, C, ...)``."""
        if maps.shape[1] != self.channels:
            raise OptionError(f"maps have {maps.shape[1]} channels; these statistics hold {self.channels}")
        x = maps.detach().reshape(maps.shape[0], self.channels, -1)  # a view: no transposed copy
        count = int(x.shape[0] * x.shape[2])
        if count == 0:
            return
        dims = (0, 2)
        other = ChannelStats(self.channels)
        mean = x.sum(dim=dims, dtype=torch.float64) / count
        other.count = count
        other.mean = mean.cpu().numpy()
        other.m2 = ((x.to(torch.float64) - mean[None, :, None]) ** 2).sum(dim=dims).cpu().numpy()
        other.min = x.amin(dim=dims).to(torch.float64).cpu().numpy()
        other.max = x.amax(dim=dims).to(torch.float64).cpu().numpy()
        other.positive = (x > 0).sum(dim=dims).cpu().numpy().astype(np.int64)
        flat = (
            bin_index(x)
            + (torch.arange(self.channels, device=x.device, dtype=torch.int32) * BINS)[None, :, None]
        )
        other.counts = (
            torch.bincount(flat.reshape(-1), minlength=self.channels * BINS)
            .view(self.channels, BINS)
            .cpu()
            .numpy()
        )
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
        """Per-channel ``q``-quantile (0 ≤ q ≤ 1) from the histogram, clipped to the exact min/max."""
        if not isinstance(q, (int, float)) or not 0 <= q <= 1:
            raise OptionError(f"q={q!r} is not allowed; pass a number in [0, 1]")
        if not self.count:
            return np.full(self.channels, np.nan)
        edges = bin_edges()
        cum = np.cumsum(self.counts, axis=1)
        rank = q * (self.count - 1) + 1  # 1-based rank of the wanted element
        out = np.empty(self.channels)
        for c in range(self.channels):
            b = int(np.searchsorted(cum[c], rank, side="left"))
            lo = max(edges[b], self.min[c])
            hi = min(edges[b + 1], self.max[c])
            before = cum[c, b - 1] if b else 0
            frac = (rank - before) / self.counts[c, b]
            out[c] = lo + (hi - lo) * min(max(frac, 0.0), 1.0)
        return np.clip(out, self.min, self.max)

    def __str__(self) -> str:
        q50 = self.quantile(0.5)
        head = f"{'channel':>7} {'mean':>10} {'std':>10} {'min':>10} {'median':>10} {'max':>10} {'>0':>6}"
        lines = [head, "-" * len(head)]
        for c in range(self.channels):
            lines.append(
                f"{c:>7} {self.mean[c]:>10.4g} {self.std[c]:>10.4g} {self.min[c]:>10.4g} {q50[c]:>10.4g} "
                f"{self.max[c]:>10.4g} {self.fraction_positive[c]:>6.1%}"
            )
        lines.append(f"{self.channels} channels, {self.count:,} positions each")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ChannelStats(channels={self.channels}, count={self.count})"

    def histogram(self, channel: int, *, bins: int = 48, size: tuple[int, int] = (320, 160)) -> Image.Image:
        """A bar chart of ``channel``'s values: ``bins`` equal-width bars from min to max (default 48),
        re-binned from the fixed histogram; ``size`` (width, height) in pixels."""
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
