"""Exact streaming per-channel top-k: a (C, k) table of values, sequence numbers and positions.

Every image gets an integer *sequence number* (``seq``) in data order — a folder's sorted relative paths,
an array's or dataset's index — so ordering by ``seq`` is ordering by id. The table is kept sorted by
(value descending, seq ascending): ties (dead, all-zero channels) always resolve to the earliest images,
so every run gives the same answer. NaN values rank as ``-inf``.

Example::

    table = TopK(channels=512, k=16)
    table.update(values, seqs, positions)  # values (B, C), seqs (B,) ascending, positions (B, C)
    table.values[c], table.seqs[c]        # channel c, best first
"""

from __future__ import annotations

import numpy as np
import torch

from convscope.errors import OptionError


class TopK:
    """Running top-``k`` per channel, exact.

    ``update`` is the streaming fast path: it needs each batch's ``seqs`` ascending and larger than
    every ``seq`` seen before (true when data is read in order). ``merge`` combines two tables with any
    sequence numbers (shards scanned by different workers) exactly, by a full lexicographic sort.
    """

    def __init__(self, channels: int, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OptionError(f"k={k!r} is not allowed; pass a positive int (default 16)")
        self.channels, self.k = int(channels), k
        self.values = torch.empty((self.channels, 0), dtype=torch.float32)
        self.seqs = torch.empty((self.channels, 0), dtype=torch.int64)
        self.positions = torch.empty((self.channels, 0), dtype=torch.int64)
        self._last = -1  # largest seq seen by update

    @property
    def width(self) -> int:
        """Entries per channel so far: ``min(k, images seen)``."""
        return int(self.values.shape[1])

    def update(self, values: torch.Tensor, seqs: torch.Tensor, positions: torch.Tensor) -> None:
        """Merge one batch: ``values`` and ``positions`` (B, C), ``seqs`` (B,) strictly ascending."""
        if values.shape[0] == 0:
            return
        seqs = seqs.to(torch.int64).cpu()
        if int(seqs[0]) <= self._last or (len(seqs) > 1 and bool((seqs[1:] <= seqs[:-1]).any())):
            raise OptionError("TopK.update needs ascending sequence numbers above those seen; use merge()")
        self._last = int(seqs[-1])
        v = torch.nan_to_num(values.detach().to("cpu", torch.float32).T, nan=float("-inf"))
        s = seqs.expand(self.channels, -1)
        p = positions.detach().to("cpu", torch.int64).T
        if self.width < self.k:
            self.values, self.seqs, self.positions = _best(
                torch.cat([self.values, v], 1),
                torch.cat([self.seqs, s], 1),
                torch.cat([self.positions, p], 1),
                self.k,
            )
            return
        # Full table: only values strictly above a channel's k-th can enter (a tie loses on seq).
        rows = (v > self.values[:, -1:]).any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        best = _best(
            torch.cat([self.values[rows], v[rows]], 1),
            torch.cat([self.seqs[rows], s[rows]], 1),
            torch.cat([self.positions[rows], p[rows]], 1),
            self.k,
        )
        for table, part in zip((self.values, self.seqs, self.positions), best, strict=True):
            table[rows] = part

    def merge(self, other: TopK) -> TopK:
        """A new table holding the exact top-k of both (any sequence numbers, e.g. from two workers)."""
        if (other.channels, other.k) != (self.channels, self.k):
            raise OptionError(
                f"cannot merge a (C={other.channels}, k={other.k}) table into (C={self.channels}, k={self.k})"
            )
        v = torch.cat([self.values, other.values], dim=1).numpy()
        s = torch.cat([self.seqs, other.seqs], dim=1).numpy()
        p = torch.cat([self.positions, other.positions], dim=1).numpy()
        order = np.lexsort((s, -v.astype(np.float64)), axis=1)[:, : self.k]
        out = TopK(self.channels, self.k)
        out.values = torch.from_numpy(np.take_along_axis(v, order, 1).copy())
        out.seqs = torch.from_numpy(np.take_along_axis(s, order, 1).copy())
        out.positions = torch.from_numpy(np.take_along_axis(p, order, 1).copy())
        out._last = max(self._last, other._last)
        return out


def _best(
    v: torch.Tensor, s: torch.Tensor, p: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-``k`` columns of each row by (value desc, seq asc), sorted; columns must be seq-ascending
    among equal values (table entries first, then the batch in seq order)."""
    rows, m = v.shape
    if m > k:
        threshold = torch.topk(v, k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
        above = v > threshold
        tied = v == threshold
        need = k - above.sum(dim=1, keepdim=True)
        keep = above | (tied & (tied.cumsum(dim=1) <= need))  # the first ties have the lowest seq
        cols = keep.nonzero()[:, 1].view(rows, k)
        v, s, p = v.gather(1, cols), s.gather(1, cols), p.gather(1, cols)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices
    return v.gather(1, order), s.gather(1, order), p.gather(1, order)
