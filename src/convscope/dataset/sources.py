"""Data sources for :meth:`Scope.scan`: folders, path lists, arrays, torch datasets, batch iterables.

Each source yields :class:`Batch` es of model input prepared by the scope's own ``scope.prepare`` (the same
code as ``activations``), with a stable id and a sequence number per image (data order; ties in top-k
tables go to the lower sequence number), and labels when the data has them.

==================  ===========================================  ==================  =========
data                id                                            labels              load back
==================  ===========================================  ==================  =========
folder (str/Path)   relative POSIX path; files sorted by it       class sub-folder    yes
list of paths       the path as given; list order                 none                yes
numpy array/tensor  index                                         none                yes
torch Dataset       index                                         ``y`` of ``(x, y)`` yes
DataLoader          running index (sequential sampler: index)     ``y`` of batches    if sequential
iterable of batches running index                                 ``y`` of batches    no
==================  ===========================================  ==================  =========

In a folder whose images sit in sub-folders, the top-level sub-folder is the class (``classes`` sorted,
label = index, like Keras ``image_dataset_from_directory`` and torchvision ``ImageFolder``); images at the
top level then get label -1. A flat folder has no labels. Unreadable images are skipped and listed in
``source.skipped`` as ``(id, reason)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convscope.dataset.errors import EmptyDatasetError
from convscope.errors import InputError, OptionError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Batch:
    """Model input ``x`` for images ``ids`` (sequence numbers ``seqs``), with ``labels`` or ``None``."""

    ids: list[Any]
    seqs: np.ndarray
    x: torch.Tensor
    labels: np.ndarray | None = None


class Source:
    """Base class: ``batches(scope, batch_size)``; ``load(ids)`` returns items ``scope.prepare`` takes."""

    classes: list[str] | None = None
    loadable = True
    indexable = True  # batches(start=, stop=) reads only that range

    def __init__(self) -> None:
        self.skipped: list[tuple[Any, str]] = []

    def __len__(self) -> int:  # -1: unknown
        return -1

    def batches(
        self, scope: Any, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Batch]:
        """Batches of the images with sequence numbers in ``[start, stop)`` (indexable sources; a stream
        reads everything and ignores both)."""
        raise NotImplementedError

    def load(self, ids: Sequence[Any]) -> list[Any]:
        raise OptionError(
            f"this {type(self).__name__} cannot load images back by id (a one-pass iterable); scan a folder, "
            "a list of paths, an array or a map-style torch Dataset to see the images"
        )


def _labels(y: Any) -> np.ndarray:
    """Integer class labels from ints, arrays or tensors; one-hot rows become their argmax."""
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.ndim == 2:
        a = a.argmax(axis=1)
    return a.reshape(-1).astype(np.int64)


class _PathSource(Source):
    """Images read from files, prepared per batch; an unreadable file is skipped, not fatal."""

    def __init__(self, paths: list[Path], ids: list[Any], labels: np.ndarray | None) -> None:
        super().__init__()
        self.paths, self.ids, self.label_of = paths, ids, labels
        self.root: Path | None = None  # the folder, for a folder source

    def __len__(self) -> int:
        return len(self.paths)

    def batches(
        self, scope: Any, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Batch]:
        from convscope.inputs import load_image

        end = len(self.paths) if stop is None else min(stop, len(self.paths))
        for first in range(start, end, batch_size):
            images, seqs = [], []
            for seq in range(first, min(first + batch_size, end)):
                try:
                    images.append(load_image(self.paths[seq]))
                    seqs.append(seq)
                except InputError as exc:
                    self.skipped.append((self.ids[seq], str(exc)))
            if not images:
                continue
            x, seqs = self._prepare(scope, images, seqs)
            if seqs:
                labels = None if self.label_of is None else self.label_of[seqs]
                yield Batch([self.ids[s] for s in seqs], np.asarray(seqs, np.int64), x, labels)

    def _prepare(self, scope: Any, images: list[Any], seqs: list[int]) -> tuple[torch.Tensor, list[int]]:
        try:
            return scope.prepare(images), seqs
        except InputError:  # find the images prepare rejects (16-bit modes, odd channels), keep the rest
            good, parts = [], []
            for img, seq in zip(images, seqs, strict=True):
                try:
                    parts.append(scope.prepare(img))
                    good.append(seq)
                except InputError as exc:
                    self.skipped.append((self.ids[seq], str(exc)))
            return (torch.cat(parts) if parts else torch.empty(0)), good

    def load(self, ids: Sequence[Any]) -> list[Any]:
        where = {i: p for i, p in zip(self.ids, self.paths, strict=True)}
        return [os.fspath(where[i]) for i in ids]


def folder_source(root: str | os.PathLike[str]) -> _PathSource:
    """All images under ``root`` (recursive), sorted by relative POSIX path, labelled by class folder."""
    base = Path(root)
    files = sorted(
        (p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.relative_to(base).as_posix(),
    )
    if not files:
        raise EmptyDatasetError(
            f"folder {os.fspath(root)!r} holds no images (looked recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)}); pass a folder of images, a list of paths or an array"
        )
    rel = [p.relative_to(base).as_posix() for p in files]
    top = [r.split("/", 1)[0] if "/" in r else None for r in rel]
    classes = sorted({t for t in top if t is not None})
    labels = None
    if classes:
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[t] if t is not None else -1 for t in top], dtype=np.int64)
    source = _PathSource(files, list(rel), labels)
    source.classes = classes or None
    source.root = base
    return source


class ArraySource(Source):
    """A numpy array or tensor of images (uint8 pictures or float model input), id = index."""

    def __init__(self, data: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        if data.ndim < 3 or len(data) == 0:
            raise EmptyDatasetError(
                f"an array of images needs a leading image axis and at least one image; received shape "
                f"{tuple(data.shape)}"
            )
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def batches(
        self, scope: Any, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Batch]:
        end = len(self.data) if stop is None else min(stop, len(self.data))
        for first in range(start, end, batch_size):
            part = self.data[first : min(first + batch_size, end)]
            seqs = np.arange(first, first + len(part), dtype=np.int64)
            yield Batch(seqs.tolist(), seqs, scope.prepare(part))

    def load(self, ids: Sequence[Any]) -> list[Any]:
        return [self.data[int(i) : int(i) + 1] for i in ids]


class DatasetSource(Source):
    """A map-style ``torch.utils.data.Dataset``: items ``x`` or ``(x, y)``, id = index."""

    def __init__(self, dataset: Any) -> None:
        super().__init__()
        self.dataset = dataset
        if len(dataset) == 0:
            raise EmptyDatasetError("the dataset is empty (len 0); pass a dataset with at least one item")

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, i: int) -> tuple[Any, Any]:
        item = self.dataset[i]
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            return item[0], item[1]
        return item, None

    def batches(
        self, scope: Any, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Batch]:
        n = len(self.dataset) if stop is None else min(stop, len(self.dataset))
        for first in range(start, n, batch_size):
            items = [self._item(i) for i in range(first, min(first + batch_size, n))]
            seqs = np.arange(first, first + len(items), dtype=np.int64)
            ys = [y for _, y in items]
            labels = None if any(y is None for y in ys) else np.concatenate([_labels(y) for y in ys])
            yield Batch(seqs.tolist(), seqs, scope.prepare([x for x, _ in items]), labels)

    def load(self, ids: Sequence[Any]) -> list[Any]:
        return [self._item(int(i))[0] for i in ids]


class IterableSource(Source):
    """Any iterable of batches, each ``x`` or ``(x, y)`` (DataLoaders included), id = running index."""

    def __init__(self, data: Iterable[Any]) -> None:
        super().__init__()
        self.data = data
        self.loadable = _sequential_dataset(data) is not None
        self.indexable = False

    def __len__(self) -> int:
        dataset = _sequential_dataset(self.data)
        return len(dataset) if dataset is not None else -1

    def batches(
        self, scope: Any, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Batch]:
        seq = 0
        for item in self.data:
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) == 2 else (item, None)
            prepared = scope.prepare(x)
            seqs = np.arange(seq, seq + len(prepared), dtype=np.int64)
            seq += len(prepared)
            yield Batch(seqs.tolist(), seqs, prepared, None if y is None else _labels(y))
        if seq == 0:
            raise EmptyDatasetError("the iterable gave no batches; pass data with at least one image")

    def load(self, ids: Sequence[Any]) -> list[Any]:
        dataset = _sequential_dataset(self.data)
        if dataset is None:
            return super().load(ids)
        return DatasetSource(dataset).load(ids)


def _sequential_dataset(data: Any) -> Any:
    """The map-style dataset behind a DataLoader that reads it in order, else ``None``."""
    from torch.utils.data import DataLoader, SequentialSampler

    if isinstance(data, DataLoader) and isinstance(data.sampler, SequentialSampler):
        return data.dataset
    return None


def as_source(data: Any) -> Source:
    """Pick the source for ``data`` (see the module table); a ``Source`` is returned as is."""
    from torch.utils.data import Dataset, IterableDataset

    if isinstance(data, Source):
        return data
    if isinstance(data, (str, os.PathLike)):
        if not Path(data).is_dir():
            raise InputError(
                f"data={os.fspath(data)!r} is not a folder; pass a folder of images, a list of paths, an "
                "array of images, a torch Dataset/DataLoader or an iterable of batches"
            )
        return folder_source(data)
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        return _PathSource([Path(p) for p in data], [os.fspath(p) for p in data], None)
    if isinstance(data, (list, tuple)) and not data:
        raise EmptyDatasetError("data is an empty list; pass at least one image")
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return ArraySource(data)
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
        return DatasetSource(data)
    if isinstance(data, Iterable):
        return IterableSource(data)
    raise InputError(
        f"data has type {type(data).__name__}, which scan cannot read; pass a folder, a list of paths, a "
        "numpy array of images, a torch Dataset/DataLoader or an iterable of batches (x or (x, y))"
    )
