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

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from convscope.errors import OptionError

Positions = torch.Tensor | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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

    def update(self, values: torch.Tensor, seqs: torch.Tensor, positions: Positions) -> None:
        """Merge one batch: ``values`` (B, C), ``seqs`` (B,) strictly ascending, and ``positions`` either
        (B, C) or a function ``(images, channels) -> positions`` (1-D index tensors; called only for the
        entries that enter the table, so a caller can find argmax positions lazily).

        No Python loop over images or channels: one ``torch.topk`` over a (rows, width + candidates) key
        that encodes (value descending, column ascending) in one int64, so ties go to table entries, then
        to earlier images. A full table first drops every batch value not strictly above its channel's
        k-th (a tie loses on seq), so once the table has settled only a few candidates are ranked."""
        if values.shape[0] == 0:
            return
        seqs = seqs.to(torch.int64).cpu()
        if int(seqs[0]) <= self._last or (len(seqs) > 1 and bool((seqs[1:] <= seqs[:-1]).any())):
            raise OptionError("TopK.update needs ascending sequence numbers above those seen; use merge()")
        self._last = int(seqs[-1])
        v = values.detach().to("cpu", torch.float32)
        fetch = positions if callable(positions) else _from_table(positions)
        w, n = self.width, int(v.shape[0])
        if w < self.k:  # filling up: rank every batch value
            rows = torch.arange(self.channels)
            extra, source = _clean(v.T), torch.arange(n).expand(self.channels, n)
        else:  # NaN (ranked as -inf) and values tied with the k-th never enter a full table
            # numpy: compare + flatnonzero over (B, C) cost a fraction of torch's here
            hit = np.flatnonzero(v.numpy() > self.values[:, -1].numpy())
            if hit.size == 0:
                return
            b_np, r_np = np.divmod(hit, self.channels)  # by image, then channel
            order = np.argsort(r_np * n + b_np)  # by channel, then image ascending
            rows, extra, source = _candidates(v.numpy(), r_np[order], b_np[order])
        both = torch.cat([self.values[rows], extra], 1)
        cols = _top_columns(both, self.k)
        batch = source.gather(1, (cols - w).clamp_(min=0))  # image index of batch columns
        new = cols >= w
        vals = both.gather(1, cols)
        seq = seqs[batch]
        pos = torch.zeros_like(cols)
        if w:
            old = cols.clamp(max=w - 1)
            seq = torch.where(new, seq, self.seqs[rows].gather(1, old))
            pos = torch.where(new, pos, self.positions[rows].gather(1, old))
        r, j = new.nonzero(as_tuple=True)
        if r.numel():
            pos[r, j] = fetch(batch[r, j], rows[r]).to(torch.int64).cpu()
        if vals.shape[1] != w:  # the table grew: every row was ranked
            self.values, self.seqs, self.positions = vals, seq, pos
            return
        self.values[rows], self.seqs[rows], self.positions[rows] = vals, seq, pos

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


def _from_table(table: torch.Tensor) -> Any:
    t = table.detach()
    return lambda images, channels: t[images.to(t.device), channels.to(t.device)]


def _clean(v: torch.Tensor) -> torch.Tensor:
    """NaN ranks as -inf; -0.0 becomes 0.0 (one order for equal values)."""
    return torch.nan_to_num(v, nan=float("-inf")) + 0.0


def _candidates(v: np.ndarray, r: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Channels with candidates, and their candidates ``(channel r, image b)`` (sorted by r, then b) as
    padded ``(R, m)`` values (-inf padding) and image indices. In numpy: a handful of small arrays."""
    rows, start, counts = np.unique(r, return_index=True, return_counts=True)
    which = np.repeat(np.arange(len(rows)), counts)
    slot = np.arange(len(r)) - start[which]
    extra = np.full((len(rows), int(counts.max())), -np.inf, dtype=np.float32)
    source = np.zeros(extra.shape, dtype=np.int64)
    extra[which, slot] = np.nan_to_num(v[b, r], nan=-np.inf) + np.float32(0.0)
    source[which, slot] = b
    return torch.from_numpy(rows), torch.from_numpy(extra), torch.from_numpy(source)


def _top_columns(v: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the columns of the top ``min(k, width)`` values by (value desc, column asc), best first:
    one ``torch.topk`` on an int64 key = (order-preserving int of the float32 bits) << 32 | ~column."""
    bits = v.contiguous().view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # int32 order == float order (no -0.0: callers add 0.0)
    key = (ordered.to(torch.int64) << 32) + ((1 << 32) - 1 - torch.arange(v.shape[1], dtype=torch.int64))
    return torch.topk(key, min(k, int(v.shape[1])), dim=1, sorted=True).indices
