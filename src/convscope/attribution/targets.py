"""What an attribution explains: one class score per sample, or any scalar a callable reads from the output.

Class scores are the model's pre-softmax logits: every pass runs under ``Capture(logits=True)``, which
removes a final softmax (``nn.Softmax`` module or Keras ``activation="softmax"``).

Example::

    TargetSpec(None, n=2)          # top-1 class of each sample, read from the first pass
    TargetSpec(3, n=2)             # class 3 for both samples
    TargetSpec([3, 7], n=2)        # one class per sample (also a 1-d integer array or tensor)
    TargetSpec(out.argmax(), n=1)  # a 0-d integer tensor or NumPy integer is one class index
    TargetSpec(lambda out: out[:, 3] - out[:, 5], n=2)   # any row-wise scalar
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from convscope.attribution.base import user_stacklevel
from convscope.errors import OptionError

TargetLike: TypeAlias = (
    "None | int | np.integer | Sequence[int] | np.ndarray | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]"
)
"""``None`` (top-1 class), a class index (``int``, NumPy integer, 0-d integer tensor), one index per sample
(sequence, 1-d integer array or tensor), or ``fn(output) -> (batch,) scores``."""


class TargetSpec:
    """A validated target for a batch of ``n`` samples; ``None`` is resolved to top-1 on first use.

    Expanded batches (integration steps, noise samples, masked copies) pass ``rows``: for every row of
    the output, the index of the sample it belongs to. Callables must work row by row.
    """

    def __init__(self, target: TargetLike, n: int) -> None:
        self.n = n
        self.fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.indices: torch.Tensor | None = None
        #: per sample, the largest |logit| any pass saw for it (class targets only): the output's scale
        self.output_scale = torch.zeros(n, dtype=torch.float64)
        self._checked = False
        if target is None:
            return
        if callable(target) and not isinstance(target, torch.Tensor | np.ndarray):
            self.fn = target
            return
        self.indices = _indices(target, n)

    @property
    def resolved(self) -> bool:
        return self.fn is not None or self.indices is not None

    def classes(self) -> tuple[int, ...] | None:
        """The class index used per sample (``None`` for a callable target)."""
        return None if self.indices is None else tuple(int(i) for i in self.indices.tolist())

    def resolve(self, output: Any) -> None:
        """Fix top-1 classes from the output of the un-modified inputs (no-op once resolved)."""
        if self.resolved:
            return
        logits = _logits(output)
        if len(logits) != self.n:
            raise OptionError(f"the model returned {len(logits)} rows for {self.n} inputs; pass target explicitly")
        self.indices = logits.detach().argmax(dim=1).cpu()

    def select(self, output: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(batch,)`` of ``output`` for the targets of ``rows`` (default: row i is sample i)."""
        if self.fn is not None:
            return _call(self.fn, output)
        self.resolve(output)
        logits = _logits(output)
        if not self._checked:
            self._checked = True
            _warn_if_probabilities(logits)
        assert self.indices is not None
        self._note_scale(logits, rows)
        idx = self.indices if rows is None else self.indices[rows.cpu()]
        classes = logits.shape[1]
        if int(idx.max()) >= classes:
            raise OptionError(f"target={int(idx.max())} is out of range: the model outputs {classes} classes "
                              f"(0..{classes - 1})")
        return logits.gather(1, idx.to(logits.device)[:, None])[:, 0]

    def _note_scale(self, logits: torch.Tensor, rows: torch.Tensor | None) -> None:
        if rows is None and len(logits) != self.n:
            return
        peak = logits.detach().abs().amax(dim=1).double().cpu()
        index = torch.arange(len(logits)) if rows is None else rows.cpu().long()
        self.output_scale.scatter_reduce_(0, index, peak, reduce="amax")


def _indices(target: Any, n: int) -> torch.Tensor:
    if isinstance(target, bool | np.bool_):
        raise OptionError(f"target={target!r} is not allowed; pass a class index, a list of them, or a callable")
    try:
        values = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
    except (TypeError, ValueError, RuntimeError):
        values = np.asarray([None])
    if values.ndim == 0 and np.issubdtype(values.dtype, np.integer):  # 3, np.int64(3), torch.tensor(3)
        values = np.full(n, int(values))
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise OptionError(
            f"target={target!r} is not allowed; pass None (top-1 class), a class index (int, NumPy integer "
            "or 0-d integer tensor such as out.argmax()), one index per sample (list, 1-d integer array or "
            "tensor), or a callable mapping the model output (batch, ...) to scores (batch,)"
        )
    if len(values) != n:
        raise OptionError(f"target has {len(values)} entries for {n} inputs; give one class per sample")
    if (values < 0).any():
        raise OptionError(f"target={values.tolist()!r} contains a negative class index")
    return torch.as_tensor(values.astype(np.int64), dtype=torch.long)


def _logits(output: Any) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise OptionError(
            f"class targets need a (batch, classes) model output; this model returns {shape}. Pass "
            "target=callable, e.g. target=lambda out: out[0][:, 3] for a tuple output"
        )
    return output


def _call(fn: Callable[[torch.Tensor], torch.Tensor], output: Any) -> torch.Tensor:
    scores = fn(output)
    rows = len(output) if isinstance(output, torch.Tensor) else None
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or (rows is not None and len(scores) != rows):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise OptionError(f"the target callable returned {got}; it must return one score per row, shape (batch,)")
    return scores


def _warn_if_probabilities(logits: torch.Tensor) -> None:
    """A softmax we could not remove (``F.softmax`` inside ``forward``) leaves probabilities: say so."""
    with torch.no_grad():
        if logits.shape[1] < 2 or (logits < 0).any():
            return
        if torch.allclose(logits.sum(dim=1), torch.ones(len(logits), dtype=logits.dtype, device=logits.device),
                          atol=1e-4):  # fmt: skip
            warnings.warn(
                "the model output looks like probabilities (non-negative rows summing to 1) and convscope "
                "found no softmax layer to remove (a functional F.softmax in forward() cannot be seen); "
                "attributions explain probabilities, not logits. Return logits from the model, or end it "
                "with an nn.Softmax module",
                stacklevel=user_stacklevel(),
            )
