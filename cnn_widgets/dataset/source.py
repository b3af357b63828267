"""The data a scan reads: any iterable, ``Dataset`` or ``DataLoader`` of images or ``(image, label)``
pairs, turned into model-ready batches of a fixed size.

Accepted ``data``:

* a ``torch.utils.data.DataLoader`` (its batches: a tensor of images, or ``[images, labels, ...]``);
* a map-style ``Dataset`` or a sequence (list, tuple) of items, read by index;
* a 4-D tensor or array of images, or columns ``(images, labels[, ...])`` — a 4-D image tensor/array and
  a 1-D integer tensor/array of the same length (what :func:`cnn_widgets.zoo.shapes_dataset` returns);
* any other iterable (an ``IterableDataset``, a generator) of items.

An item is an image in any form :func:`cnn_widgets.images.to_batch` accepts (a 4-D tensor or array
counts as that many images), a ``(image, label, ...)`` tuple or list, or a dict with an ``image``
(``img``, ``pixel_values``) and optionally a ``label`` (``labels``) entry. Labels are integer class
indices, one per image; ``-1`` marks an unlabelled image (as in STL-10's unlabelled split).

Images are numbered in the order the data yields them; that number is the *dataset index* a scan
reports (a shuffling ``DataLoader`` therefore numbers a different order each epoch: pass
``shuffle=False``). Batches cover images ``[i·B, (i+1)·B)`` counted from where the scan starts,
whatever the item sizes, except that a change of image size ends a batch early; so a scan cut into
shards at multiples of ``B`` runs exactly the same forward passes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

from ..images import Stats, to_batch

_IMAGE_KEYS = ("image", "img", "pixel_values")
_LABEL_KEYS = ("label", "labels")


@dataclass
class Batch:
    """Normalised model input ``x`` (N, C, H, W) on the CPU and one label per image (-1: none)."""

    x: torch.Tensor
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _is_images(value: object) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 4


def _is_label_column(value: object, n: int) -> bool:
    if isinstance(value, torch.Tensor):
        return value.ndim == 1 and len(value) == n and not value.is_floating_point() and value.dtype != torch.bool
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and len(value) == n and value.dtype.kind in "iu"
    return False


def _image_count(image: object) -> int:
    """How many images ``to_batch(image)`` will return, without converting it."""
    return int(image.shape[0]) if _is_images(image) else 1


def split_item(item: object) -> tuple[Any, Any]:
    """``(image, label or None)`` of one item (see the module doc)."""
    if isinstance(item, Mapping):
        image = next((item[k] for k in _IMAGE_KEYS if k in item), None)
        if image is None:
            raise ValueError(
                f"a dict item needs an image under one of the keys {', '.join(map(repr, _IMAGE_KEYS))}; "
                f"this one has {', '.join(map(repr, item))}"
            )
        return image, next((item[k] for k in _LABEL_KEYS if k in item), None)
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("an item of the data is an empty tuple/list; give an image or (image, label)")
        return item[0], item[1] if len(item) > 1 else None
    return item, None


def labels_array(label: object, n: int) -> np.ndarray:
    """One int64 label per image of an item with ``n`` images; -1 for none."""
    if label is None:
        return np.full(n, -1, dtype=np.int64)
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if arr.dtype.kind not in "iu":
        hint = "; one-hot or score rows: pass labels.argmax(1)" if arr.ndim >= 1 and arr.size > n else ""
        raise TypeError(
            f"labels must be integer class indices (one per image, -1 for none), got "
            f"{arr.dtype} {arr.tolist() if arr.size <= 8 else tuple(arr.shape)}{hint}"
        )
    arr = arr.astype(np.int64).reshape(-1) if arr.ndim == 0 else arr.astype(np.int64)
    if arr.shape != (n,):
        raise ValueError(
            f"got labels of shape {tuple(arr.shape)} for {n} image(s); give one class index per image"
        )
    if (arr < -1).any():
        raise ValueError(f"labels must be class indices ≥ 0 (or -1 for an unlabelled image), got {int(arr.min())}")
    return arr


class Source:
    """``data`` classified once: its length when known, its items from any start, and (for data that
    can be indexed) a view of a range of images, as Ray shards need."""

    def __init__(self, data: object) -> None:
        indexable = hasattr(data, "__len__") and hasattr(data, "__getitem__")
        if isinstance(data, (str, bytes, os.PathLike)) or not (indexable or isinstance(data, Iterable)):
            raise TypeError(
                f"data must be a Dataset, DataLoader, a 4-D image tensor/array, (images, labels) or an "
                f"iterable of images or (image, label) pairs, got {type(data).__name__}; a single image "
                "goes in a list: [image]"
            )
        self.data: Any = data
        if isinstance(data, DataLoader):
            self.kind = "loader"
        elif isinstance(data, (torch.Tensor, np.ndarray)):
            if data.ndim != 4:
                raise ValueError(
                    f"a tensor or array given as data must be a batch of images (N, C, H, W) or "
                    f"(N, H, W, C), got shape {tuple(data.shape)}; a single image goes in a list: [image]"
                )
            self.kind = "array"
        elif (
            isinstance(data, (tuple, list)) and len(data) >= 2 and _is_images(data[0])
            and _is_label_column(data[1], len(data[0]))
        ):
            self.kind = "columns"
        elif indexable and not isinstance(data, IterableDataset):
            self.kind = "indexed"
        else:
            self.kind = "iterable"

    @property
    def total(self) -> int | None:
        """How many images the data holds, when it says (for progress); ``None`` otherwise."""
        try:
            if self.kind == "loader":
                return len(self.data.dataset)
            if self.kind == "columns":
                return len(self.data[0])
            return len(self.data)
        except TypeError:
            return None

    def items(self, start: int, chunk: int) -> Iterator[tuple[Any, Any]]:
        """``(image, label)`` items from image ``start`` on; arrays and columns come in slices of
        ``chunk`` images. Data that cannot be indexed is read from the beginning and the first
        ``start`` images are dropped without being converted."""
        if self.kind == "array":
            for i in range(start, len(self.data), chunk):
                yield self.data[i : i + chunk], None
        elif self.kind == "columns":
            images, labels = self.data[0], self.data[1]
            for i in range(start, len(images), chunk):
                yield images[i : i + chunk], labels[i : i + chunk]
        elif self.kind == "indexed":
            for i in range(start, len(self.data)):
                yield split_item(self.data[i])
        else:
            skip = start
            for item in self.data:
                image, label = split_item(item)
                if skip:
                    n = _image_count(image)
                    if n <= skip:
                        skip -= n
                        continue
                    image, label = image[skip:], None if label is None else label[skip:]
                    skip = 0
                yield image, label

    def view(self, start: int, stop: int) -> object:
        """Images ``start``‥``stop-1`` as data a scan accepts (indexable data only)."""
        if self.kind == "array":
            return self.data[start:stop]
        if self.kind == "columns":
            return tuple(column[start:stop] for column in self.data)
        if self.kind == "indexed":
            return _Range(self.data, start, stop)
        loader = self.data
        if isinstance(loader, DataLoader) and isinstance(loader.sampler, SequentialSampler) and hasattr(
            loader.dataset, "__getitem__"
        ):
            return _Range(loader.dataset, start, stop)
        raise TypeError(
            f"backend='ray' cuts the data into shards by index, so it needs data that can be indexed (a "
            f"map-style Dataset, a sequence, a tensor or (images, labels), or a DataLoader with "
            f"shuffle=False over such a dataset); got {type(self.data).__name__}"
        )


class _Range(Sequence):
    """Items ``start``‥``stop-1`` of an indexable dataset, indexed from 0."""

    def __init__(self, data: Any, start: int, stop: int) -> None:
        self.data, self.start, self.stop = data, start, min(stop, len(data))

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.data[self.start + i]


def batches(
    source: Source, *, model: nn.Module, mean: Stats, std: Stats, batch_size: int, start: int = 0
) -> Iterator[Batch]:
    """Model-ready batches of ``batch_size`` images from image ``start`` on (see the module doc)."""
    pending: list[Batch] = []
    count = 0
    for image, label in source.items(start, batch_size):
        x = to_batch(image, mean, std, model=model)
        piece = Batch(x, labels_array(label, len(x)))
        if pending and x.shape[1:] != pending[0].x.shape[1:]:
            yield _join(pending)
            pending, count = [], 0
        pending.append(piece)
        count += len(piece)
        while count >= batch_size:
            whole = _join(pending)
            yield Batch(whole.x[:batch_size], whole.labels[:batch_size])
            rest = Batch(whole.x[batch_size:], whole.labels[batch_size:])
            pending = [rest] if len(rest) else []
            count -= batch_size
    if pending:
        yield _join(pending)


def _join(pieces: list[Batch]) -> Batch:
    if len(pieces) == 1:
        return pieces[0]
    return Batch(torch.cat([p.x for p in pieces]), np.concatenate([p.labels for p in pieces]))


def rereadable(data: Any, view: str, why: str) -> Source:
    """``data`` classified (:class:`Source`) for a dataset view, which reads it more than once (``why``
    says when): a generator or other iterator, empty after one pass, is refused here rather than after
    the first pass, when it would look like data with no images."""
    source = Source(data)
    if isinstance(data, Iterator):
        raise TypeError(f"{view} reads data more than once ({why}); data is a {type(data).__name__}, and a "
                        "generator can be read only once: pass a list, a Dataset or a DataLoader")
    return source
