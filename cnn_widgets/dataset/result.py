"""What one pass over a data set keeps (:class:`ScanResult`): per channel of each scanned layer the top-k
images and the moments of its activations, plus the model's predictions. Memory is bounded by k ×
channels per layer (and 16 bytes per image for predictions and labels), never by image content.

Results merge associatively: ``a.merge(b)`` treats b's images as coming after a's. Top-k tables merge
exactly (a lexicographic sort on (value descending, dataset index ascending)); moments merge with Chan's
parallel formulas in float64, exact up to float64 rounding. ``==`` is defined accordingly (see
:meth:`ScanResult.__eq__`). Files are ``.npz`` archives of plain arrays plus a JSON header, read with
``np.load(allow_pickle=False)``: loading a result never runs code.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

BY: tuple[str, ...] = ("max", "mean", "relevance")
STAT_RTOL = 1e-9
"""Relative tolerance of ``==`` for the float64 statistics (channel mean/std, class means)."""

_FORMAT = "cnn_widgets.ScanResult"
_VERSION = 1

Target = int | str | None


@dataclass(eq=False)
class LayerTable:
    """One layer's share of a scan. ``values``/``indices``: (C, m) with m = min(k, images), each row
    sorted by value descending, ties by dataset index ascending; ``positions``: (C, m, 2) arg-max (y, x);
    ``n``: activation values seen per channel; ``mean``/``m2``: (C,) mean and sum of squared deviations
    of those values; ``class_sum``: (classes, C) per class the sum of per-image channel means."""

    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    n: int
    mean: np.ndarray
    m2: np.ndarray
    class_sum: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])


def merge_top(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best of two (values, indices, positions) tables per channel row: value descending, ties
    to the lower dataset index; NaN values rank last."""
    values = np.concatenate([a[0], b[0]], axis=1)
    indices = np.concatenate([a[1], b[1]], axis=1)
    positions = np.concatenate([a[2], b[2]], axis=1)
    order = np.lexsort((indices, -values), axis=-1)[:, :k]
    return (
        np.take_along_axis(values, order, axis=1),
        np.take_along_axis(indices, order, axis=1),
        np.take_along_axis(positions, order[:, :, None], axis=1),
    )


def merge_moments(
    a: tuple[int, np.ndarray, np.ndarray], b: tuple[int, np.ndarray, np.ndarray]
) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.'s parallel combination of (count, mean, M2) in float64."""
    na, mean_a, m2_a = a
    nb, mean_b, m2_b = b
    if na == 0:
        return nb, mean_b.copy(), m2_b.copy()
    if nb == 0:
        return na, mean_a.copy(), m2_a.copy()
    n = na + nb
    delta = mean_b - mean_a
    return n, mean_a + delta * (nb / n), m2_a + m2_b + delta * delta * (na * nb / n)


def add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` for (classes, C) arrays, the shorter padded with zero rows."""
    rows = max(a.shape[0], b.shape[0])
    out = np.zeros((rows, a.shape[1]), dtype=np.float64)
    out[: a.shape[0]] += a
    out[: b.shape[0]] += b
    return out


class ScanResult:
    """The outcome of :func:`cnn_widgets.scan` (see the module doc).

    Per layer name: ``top_indices[layer]`` (C × k int64 dataset indices), ``top_values[layer]``
    (C × k float64, descending; ties to the lower index), ``top_positions[layer]`` (C × k × 2 int64 (y, x)
    of the channel's strongest unit in that image — of activation × gradient for ``by="relevance"`` —
    (0, 0) for (N, C) layers), ``channel_mean[layer]`` / ``channel_std[layer]`` (C, over every image and
    position, population std), ``class_mean[layer]`` (classes × C, the mean over each class's images of
    the per-image channel mean; NaN for a class without images; only when labels were given). Also
    ``predictions`` (arg-max class per image, -1 when the model gives no class scores), ``labels``
    (-1 for unlabelled), ``accuracy`` (over labelled images, ``None`` without) and ``count``.
    With fewer than k images, tables have as many columns as images.
    """

    def __init__(
        self,
        *,
        layers: tuple[str, ...],
        k: int,
        by: str,
        target: Target,
        count: int,
        classes: int,
        predictions: np.ndarray,
        labels: np.ndarray,
        tables: dict[str, LayerTable],
    ) -> None:
        self.layers = tuple(layers)
        self.k = int(k)
        self.by = by
        self.target = target
        self.count = int(count)
        self.classes = int(classes)
        self.predictions = predictions
        self.labels = labels
        self.tables = tables

    # ------------------------------------------------------------------------------------ views
    @property
    def top_indices(self) -> dict[str, np.ndarray]:
        return {name: t.indices for name, t in self.tables.items()}

    @property
    def top_values(self) -> dict[str, np.ndarray]:
        return {name: t.values for name, t in self.tables.items()}

    @property
    def top_positions(self) -> dict[str, np.ndarray]:
        return {name: t.positions for name, t in self.tables.items()}

    @property
    def channel_mean(self) -> dict[str, np.ndarray]:
        return {name: t.mean for name, t in self.tables.items()}

    @property
    def channel_std(self) -> dict[str, np.ndarray]:
        return {name: np.sqrt(np.maximum(t.m2, 0.0) / max(t.n, 1)) for name, t in self.tables.items()}

    @property
    def class_counts(self) -> np.ndarray:
        """Images per class (``classes`` entries)."""
        labelled = self.labels[self.labels >= 0]
        return np.bincount(labelled, minlength=self.classes).astype(np.int64)

    @property
    def class_mean(self) -> dict[str, np.ndarray]:
        if not (self.labels >= 0).any():
            return {}
        counts = self.class_counts.astype(np.float64)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return {name: np.where(counts > 0, t.class_sum / counts, np.nan) for name, t in self.tables.items()}

    @property
    def accuracy(self) -> float | None:
        known = (self.labels >= 0) & (self.predictions >= 0)
        if not known.any():
            return None
        return float((self.predictions[known] == self.labels[known]).mean())

    def __repr__(self) -> str:
        acc = "" if self.accuracy is None else f", accuracy={self.accuracy:.4f}"
        return (
            f"ScanResult({self.count} images, layers={list(self.layers)}, k={self.k}, by={self.by!r}"
            f"{'' if self.target is None else f', target={self.target!r}'}{acc})"
        )

    # ------------------------------------------------------------------------------------ merge
    def _check_compatible(self, other: "ScanResult") -> None:
        mine = (self.layers, self.k, self.by, self.target)
        theirs = (other.layers, other.k, other.by, other.target)
        if mine != theirs:
            raise ValueError(
                f"cannot merge scans with different settings: (layers, k, by, target) = {mine} vs {theirs}"
            )
        for name in self.layers:
            if self.tables[name].channels != other.tables[name].channels:
                raise ValueError(
                    f"cannot merge scans of different models: layer {name!r} has "
                    f"{self.tables[name].channels} vs {other.tables[name].channels} channels"
                )

    def merge(self, other: "ScanResult") -> "ScanResult":
        """This result followed by ``other`` (its dataset indices offset by ``self.count``), as one scan
        of both data sets would give (up to float64 rounding of the moments, see :meth:`__eq__`)."""
        if not isinstance(other, ScanResult):
            raise TypeError(f"can only merge another ScanResult, got {type(other).__name__}")
        self._check_compatible(other)
        tables = {}
        for name in self.layers:
            a, b = self.tables[name], other.tables[name]
            top = merge_top((a.values, a.indices, a.positions), (b.values, b.indices + self.count, b.positions), self.k)
            n, mean, m2 = merge_moments((a.n, a.mean, a.m2), (b.n, b.mean, b.m2))
            tables[name] = LayerTable(*top, n, mean, m2, add_padded(a.class_sum, b.class_sum))
        return ScanResult(
            layers=self.layers, k=self.k, by=self.by, target=self.target, count=self.count + other.count,
            classes=max(self.classes, other.classes),
            predictions=np.concatenate([self.predictions, other.predictions]),
            labels=np.concatenate([self.labels, other.labels]), tables=tables,
        )

    # --------------------------------------------------------------------------------- equality
    def __eq__(self, other: object) -> bool:
        """Equal settings, image count, class count, predictions and labels, and per layer identical
        top-k tables (values, indices, positions) and value counts; channel mean, channel std and class
        means agree within :data:`STAT_RTOL` of the layer's scale (the largest |mean| + std over its
        channels), which is what float64 rounding leaves after merging in another grouping."""
        if not isinstance(other, ScanResult):
            return NotImplemented
        if (self.layers, self.k, self.by, self.target, self.count, self.classes) != (
            other.layers, other.k, other.by, other.target, other.count, other.classes
        ):
            return False
        if not (np.array_equal(self.predictions, other.predictions) and np.array_equal(self.labels, other.labels)):
            return False
        mine_std, theirs_std = self.channel_std, other.channel_std
        mine_cls, theirs_cls = self.class_mean, other.class_mean
        for name in self.layers:
            a, b = self.tables[name], other.tables[name]
            exact = ((a.values, b.values), (a.indices, b.indices), (a.positions, b.positions))
            if a.n != b.n or a.channels != b.channels or not all(np.array_equal(x, y) for x, y in exact):
                return False
            scale = float(np.max(np.abs(a.mean) + mine_std[name], initial=0.0))
            tol = STAT_RTOL * max(scale, np.finfo(np.float64).tiny)
            pairs = [(a.mean, b.mean), (mine_std[name], theirs_std[name])]
            if name in mine_cls:
                pairs.append((mine_cls[name], theirs_cls[name]))
            if not all(np.allclose(x, y, rtol=0.0, atol=tol, equal_nan=True) for x, y in pairs):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    # ----------------------------------------------------------------------------- save / load
    def _arrays(self) -> dict[str, np.ndarray]:
        meta = {
            "format": _FORMAT, "version": _VERSION, "layers": list(self.layers), "k": self.k, "by": self.by,
            "target": self.target, "count": self.count, "classes": self.classes,
            "n": [self.tables[name].n for name in self.layers],
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(meta)), "predictions": self.predictions, "labels": self.labels,
        }
        for i, name in enumerate(self.layers):
            t = self.tables[name]
            for field in ("values", "indices", "positions", "mean", "m2", "class_sum"):
                arrays[f"layer{i}.{field}"] = getattr(t, field)
        return arrays

    def save(self, path: str | os.PathLike | IO[bytes]) -> None:
        """Write the result to ``path`` (exactly that name; ``.npz`` recommended) or a binary file object.
        A path is written through a temporary file and renamed, so a crash never leaves half a file."""
        if not isinstance(path, (str, os.PathLike)):
            np.savez(path, **self._arrays())
            return
        name = os.fspath(path)
        tmp = f"{name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **self._arrays())
        os.replace(tmp, name)

    def to_bytes(self) -> bytes:
        """The result as the bytes :meth:`save` writes."""
        buf = io.BytesIO()
        self.save(buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ScanResult":
        """A result from :meth:`to_bytes` output."""
        return cls.load(io.BytesIO(data))

    @classmethod
    def load(cls, path: str | os.PathLike | IO[bytes]) -> "ScanResult":
        """Read a result written by :meth:`save` (``np.load(allow_pickle=False)``: no code runs)."""
        where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "the file"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {key: z[key] for key in z.files}
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{where!r} is not a saved ScanResult (.npz of plain arrays): {err}") from err
        try:
            meta = json.loads(str(arrays["meta"]))
            if meta.get("format") != _FORMAT:
                raise ValueError("no ScanResult header")
            if meta["version"] != _VERSION:
                raise ValueError(f"format version {meta['version']}, this cnn_widgets reads version {_VERSION}")
            tables = {
                name: LayerTable(
                    *(arrays[f"layer{i}.{f}"] for f in ("values", "indices", "positions")), int(meta["n"][i]),
                    *(arrays[f"layer{i}.{f}"] for f in ("mean", "m2", "class_sum")),
                )
                for i, name in enumerate(meta["layers"])
            }
            result = cls(
                layers=tuple(meta["layers"]), k=meta["k"], by=meta["by"], target=meta["target"],
                count=meta["count"], classes=meta["classes"], predictions=arrays["predictions"],
                labels=arrays["labels"], tables=tables,
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ValueError(f"{where!r} is not a readable ScanResult: {err}") from err
        _validate(result, where)
        return result


def _validate(r: ScanResult, where: str) -> None:
    """Shapes and dtypes a loaded result must have, so a damaged file fails here and not later."""
    problems = []
    if r.by not in BY:
        problems.append(f"by={r.by!r}")
    for field in ("predictions", "labels"):
        value = getattr(r, field)
        if value.shape != (r.count,) or value.dtype != np.int64:
            problems.append(f"{field} is {value.dtype}{value.shape}, expected int64({r.count},)")
    for name, t in r.tables.items():
        c = t.mean.shape[0] if t.mean.ndim == 1 else -1
        m = min(r.k, r.count)
        expected: dict[str, tuple[tuple[int, ...], Any]] = {
            "values": ((c, m), np.float64), "indices": ((c, m), np.int64), "positions": ((c, m, 2), np.int64),
            "mean": ((c,), np.float64), "m2": ((c,), np.float64), "class_sum": ((r.classes, c), np.float64),
        }
        for field, (shape, dtype) in expected.items():
            value = getattr(t, field)
            if value.shape != shape or value.dtype != dtype:
                problems.append(
                    f"layer {name!r} {field} is {value.dtype}{value.shape}, expected {np.dtype(dtype)}{shape}"
                )
    if problems:
        raise ValueError(f"{where!r} is not a consistent ScanResult: " + "; ".join(problems))
