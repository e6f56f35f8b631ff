"""Methods that read scores of modified inputs instead of gradients: Score-CAM and occlusion.

Both run their many forward passes in batches of ``batch_size`` modified copies, without a graph.

**Score-CAM** (Wang et al. 2020): each channel A^k of the layer is upsampled (bilinear) to the input
size and min-max normalised to a mask H^k ∈ [0, 1]; the model scores the masked input X ∘ H^k (in
model-input space). Libraries disagree on how scores become weights; ``weights`` picks:

* ``"softmax"`` (default, the paper's Algorithm 1): logits ``S_k = f_c(X ∘ H^k) − f_c(X_b)``, then a
  softmax over channels k. The baseline term cancels inside that softmax, so no baseline pass is run.
  pytorch-grad-cam does the same.
* ``"probability"``: ``w_k = softmax(f(X ∘ H^k))_c``, the class probability of the masked input —
  the authors' released code (a callable target is used as is).
* ``"increase"``: the raw increase of confidence ``f_c(X ∘ H^k) − f_c(X_b)`` on logits, with
  ``X_b`` the constant input ``baseline`` (default 0).

Channels whose activation is constant carry no spatial information and get weight 0 (excluded from the
softmax). The map is ``ReLU(Σ_k w_k A^k)`` on the layer grid.

**Occlusion** (Zeiler & Fergus 2014): a ``window`` patch slides with ``stride`` (an extra last
position keeps the border covered); each pixel gets the mean score drop ``f_c(x) − f_c(x_occluded)``
over the windows covering it. Patches are filled with ``baseline`` (model-input space).

Example::

    att = scope.attribute(x, method="occlusion", window=8, stride=4)
"""

from __future__ import annotations

from enum import Enum

import torch

from convscope.attribution.base import Grid, Method, Raw
from convscope.attribution.cam import CAM
from convscope.attribution.engine import Job, LayerPass
from convscope.errors import OptionError


class ScoreWeights(str, Enum):
    """How Score-CAM turns masked-input scores into channel weights."""

    SOFTMAX = "softmax"
    PROBABILITY = "probability"
    INCREASE = "increase"


class ScoreCAM(CAM):
    """Score-CAM: channels weighted by the target score of the input masked with them (Wang et al. 2020).

    Options (defaults): ``weights="softmax"`` (see :class:`ScoreWeights`), ``baseline=0.0`` (the
    constant input X_b for ``"increase"``), ``batch_size=8`` masked inputs per pass.
    """

    name = "scorecam"
    uses_grad = False
    score_power = 0  # channel weights are softmax-ed or probabilities by default
    defaults = {"weights": "softmax", "baseline": 0.0, "batch_size": 8}

    def validate(self) -> None:
        self.enum_option("weights", ScoreWeights)
        self.int_option("batch_size")
        self.float_option("baseline", minimum=-float("inf"))

    def weights(self, p: LayerPass, job: Job) -> torch.Tensor:
        mode, size = self.enum_option("weights", ScoreWeights), self.int_option("batch_size")
        act = p.act
        flat = act.flatten(2)
        valid = (flat.amax(dim=2) - flat.amin(dim=2)) > 0  # (N, K)
        scores = torch.zeros(valid.shape, dtype=torch.float64, device=act.device)
        pairs = valid.nonzero()
        x = job.x.detach()
        with job.scorer(probability=mode is ScoreWeights.PROBABILITY) as score:
            for chunk in pairs.split(size):
                n, k = chunk[:, 0], chunk[:, 1]
                masks = job.upsample(act[n, k])
                lo = masks.flatten(1).amin(dim=1).view(-1, 1, 1)
                hi = masks.flatten(1).amax(dim=1).view(-1, 1, 1)
                masks = (masks - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
                scores[n, k] = score(job.pixel_mask(x[n], masks), job.rows[n.cpu()]).double()
            if mode is ScoreWeights.INCREASE:
                baseline = torch.full_like(x, self.float_option("baseline", minimum=-float("inf")))
                scores = scores - score(baseline, job.rows).double()[:, None]
        if mode is ScoreWeights.SOFTMAX:
            scores = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1).nan_to_num(0.0)
        weights = torch.where(valid, scores, torch.zeros_like(scores))
        return weights.to(act.dtype)[:, :, None, None]


def _pair(value: object, option: str, limit: tuple[int, int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else value
    ok = isinstance(pair, tuple | list) and len(pair) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
    )
    if not ok:
        raise OptionError(f"occlusion: {option}={value!r} is not allowed; pass a positive int or (height, width)")
    h, w = int(pair[0]), int(pair[1])  # type: ignore[index]
    if h > limit[0] or w > limit[1]:
        raise OptionError(f"occlusion: {option}={value!r} is larger than the input ({limit[0]}x{limit[1]})")
    return h, w


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of a sliding window; a last window flush with the border is added if needed.

    Example: ``window_starts(10, 4, 4) == [0, 4, 6]``.
    """
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


class Occlusion(Method):
    """Occlusion: mean drop of the target score when a sliding patch hides each pixel (Zeiler & Fergus 2014).

    Options (defaults): ``window=None`` (``max(1, min(H, W) // 8)`` square; an int or ``(h, w)``),
    ``stride=None`` (half the window), ``baseline=0.0`` (patch fill value), ``batch_size=8``,
    ``reduce="positive_sum"`` (maps show score drops; ``"abs_max"`` shows both signs).
    """

    name = "occlusion"
    grid = Grid.PIXEL
    defaults = {"window": None, "stride": None, "baseline": 0.0, "batch_size": 8, "reduce": "positive_sum"}

    def compute(self, job: Job) -> Raw:
        height, width = job.spatial_size()
        window, stride = self.options["window"], self.options["stride"]
        wh, ww = _pair(max(1, min(height, width) // 8) if window is None else window, "window", (height, width))
        default_stride = (max(1, wh // 2), max(1, ww // 2))
        sh, sw = _pair(default_stride if stride is None else stride, "stride", (height, width))
        fill, size = self.float_option("baseline", minimum=-float("inf")), self.int_option("batch_size")
        self.reduce()
        job.ensure_targets()
        corners = torch.tensor([(t, s) for t in window_starts(height, wh, sh) for s in window_starts(width, ww, sw)])
        x = job.x.detach()
        total = torch.zeros((len(x), height, width), dtype=torch.float64, device=x.device)
        count = torch.zeros((height, width), dtype=torch.float64, device=x.device)
        for t, s in corners.tolist():
            count[t : t + wh, s : s + ww] += 1
        pairs = torch.cartesian_prod(torch.arange(len(x)), torch.arange(len(corners))).long().view(-1, 2)
        with job.scorer() as score:
            clean = score(x, job.rows).double()
            for chunk in pairs.split(size):
                n, c = chunk[:, 0], chunk[:, 1]
                masks = torch.zeros((len(chunk), height, width), dtype=x.dtype, device=x.device)
                for i, (t, s) in enumerate(corners[c].tolist()):
                    masks[i, t : t + wh, s : s + ww] = 1
                n_dev = n.to(x.device)
                hidden = job.pixel_mask(x[n_dev], 1 - masks) + fill * job.pixel_mask(torch.ones_like(x[n_dev]), masks)
                drop = clean[n_dev] - score(hidden, job.rows[n]).double()
                total.index_add_(0, n_dev, drop.view(-1, 1, 1) * masks.double())
        return Raw((total / count).to(x.dtype))
