"""``scope.predict``: the model's top-k classes per input — index, softmax probability and name.

Probabilities are the softmax of the pre-softmax logits (a model ending in a softmax layer is read
through :mod:`convscope.softmax`, so they equal the model's own output).

Example::

    preds = scope.predict("cat.jpg", k=5, labels="imagenet_classes.txt")
    print(preds)           # one table per input
    preds.indices[0, 0]    # the top-1 class of the first input
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convscope.errors import InputError, OptionError


@dataclass(frozen=True, eq=False)
class Predictions:
    """Top-k classes for a batch.

    Attributes:
        indices: ``(N, k)`` class indices, most probable first.
        probabilities: ``(N, k)`` softmax probabilities of those classes.
        logits: ``(N, k)`` their pre-softmax scores.
        names: ``(N, k)`` class names from ``labels``, or ``None`` without labels.
        num_classes: the width of the model's output.
    """

    indices: np.ndarray
    probabilities: np.ndarray
    logits: np.ndarray
    names: tuple[tuple[str, ...], ...] | None
    num_classes: int

    def __len__(self) -> int:
        return len(self.indices)

    def table(self, index: int = 0) -> str:
        """Sample ``index``'s rows: rank, class, probability (and name)."""
        lines = []
        for rank, (c, p) in enumerate(zip(self.indices[index], self.probabilities[index], strict=True), 1):
            name = f"  {self.names[index][rank - 1]}" if self.names is not None else ""
            lines.append(f"{rank:>4}  {int(c):>6}  {float(p):>7.2%}{name}")
        return "\n".join(["rank   class     prob" + ("  name" if self.names is not None else ""), *lines])

    def __str__(self) -> str:
        if len(self) == 1:
            return self.table(0)
        return "\n\n".join(f"input {i}:\n{self.table(i)}" for i in range(len(self)))


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file, one per line (trailing blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {os.fspath(path)!r} does not exist or is not a file; pass a text "
                         "file with one class name per line")  # fmt: skip
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"could not read labels file {os.fspath(path)!r}: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def _names(labels: str | os.PathLike[str] | Sequence[str] | None, num_classes: int) -> list[str] | None:
    if labels is None:
        return None
    where = f"labels file {os.fspath(labels)!r}" if isinstance(labels, (str, os.PathLike)) else "labels"
    names = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else [str(n) for n in labels]
    if len(names) != num_classes:
        raise OptionError(f"{where} has {len(names)} names but the model outputs {num_classes} classes; "
                          "give one name per class, in class-index order")  # fmt: skip
    return names


def top_k(
    logits: torch.Tensor, *, k: int = 5, labels: str | os.PathLike[str] | Sequence[str] | None = None
) -> Predictions:
    """Top-``k`` classes of an ``(N, classes)`` logit batch (``k`` is capped at the class count)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise OptionError(f"k={k!r} is not allowed; pass a positive int")
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise OptionError(
            f"predictions need a model whose output is (N, classes) scores; this one gives {shape}"
        )
    scores = logits.detach().float().cpu()
    num_classes = scores.shape[1]
    names = _names(labels, num_classes)
    probs = torch.softmax(scores, dim=1)
    p, idx = probs.topk(min(k, num_classes), dim=1)
    return Predictions(
        indices=idx.numpy(),
        probabilities=p.numpy(),
        logits=scores.gather(1, idx).numpy(),
        names=None if names is None else tuple(tuple(names[int(c)] for c in row) for row in idx),
        num_classes=num_classes,
    )


def predict(scope: Any, inputs: Any, *, k: int = 5, labels: Any = None) -> Predictions:
    """One no-grad forward pass of ``inputs`` through ``scope``'s model, read as logits; see :func:`top_k`."""
    from convscope.capture import Capture

    x = scope.prepare(inputs)
    with torch.no_grad(), Capture(scope.adapter, [], logits=True) as cap:
        output = cap.run(x)
    return top_k(output, k=k, labels=labels)


def predictions_text(scope: Any, images: Sequence[str], *, labels: Any = None, k: int = 5) -> str:
    """The CLI's report: ``top-5 predictions for IMAGE:`` and its table, per image file. Empty when the
    model's output is not ``(N, classes)`` scores and no ``labels`` were asked for (a feature extractor)."""
    try:
        preds = predict(scope, list(images) if len(images) > 1 else images[0], k=k, labels=labels)
    except OptionError as exc:
        if labels is None and str(exc).startswith("predictions need"):
            return ""
        raise
    k = preds.indices.shape[1]
    return "\n".join(f"top-{k} predictions for {image}:\n{preds.table(i)}" for i, image in enumerate(images))
