"""The scan engine: one pass over a data set that keeps, per channel of each chosen layer, the top-k images
and running statistics (:class:`~cnn_widgets.dataset.result.ScanResult`), whatever the data set's size.

Per batch, inside one :func:`~cnn_widgets.capture.model_session` for the whole pass (eval mode; the
model's state restored and no hook left on return, error or Ctrl-C), an
:class:`~cnn_widgets.capture.ActivationCapture` records the layers' outputs; with ``by="relevance"``
the gradient of each image's target score with respect to them follows from one backward pass that
stops at the layers. Each (N, C, H, W) or (N, C) output is reduced at once to per-image, per-channel
numbers (float64) and merged into bounded top-k tables; nothing of the activations is kept.
"""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import outputs
from .._checks import call_forward, check_autograd, check_layer_names, check_layers_arg, check_model, model_input
from ..capture import ActivationCapture, model_session
from ..images import Stats
from ..outputs import Output
from .progress import Progress
from .result import BY, LayerTable, ScanResult, Target, add_padded, merge_moments, merge_top
from .source import Batch, Source, batches

BACKENDS: tuple[str, ...] = ("local", "ray")
_CHECKPOINT_SECONDS = 60.0
_CHUNK = 1 << 18  # float64 elements reduced at a time (2 MB: stays in cache)


# ------------------------------------------------------------------------------------- arguments
def positive_int(name: str, value: object) -> int:
    """``value`` as an int ≥ 1, or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    try:
        value = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_scan_layers(model: nn.Module, layers: object) -> tuple[str, ...]:
    """Layer names (one name or several, duplicates dropped) that exist in ``model.named_modules()``."""
    names = check_layers_arg(layers)
    if not names:
        raise ValueError("layers is empty; name at least one layer from model.named_modules(), e.g. 'features.conv4'")
    return tuple(dict.fromkeys(check_layer_names(model, names)))


def check_target(target: object, by: str) -> Target:
    """``None`` (each image's predicted class), a class index, or ``"label"`` (each image's label);
    only ``by="relevance"`` uses a target."""
    if target is None:
        return None
    if by != "relevance":
        raise ValueError(f"target applies to by='relevance' only (the class whose score is explained); by={by!r}")
    if target == "label":
        return "label"
    if isinstance(target, bool) or isinstance(target, str):
        raise TypeError(f"target must be a class index, 'label' or None, got {target!r}")
    try:
        value = operator.index(target)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"target must be a class index, 'label' or None, got {type(target).__name__} {target!r}"
        ) from None
    if value < 0:
        raise ValueError(f"target must be a class index ≥ 0, got {value}")
    return value


# ------------------------------------------------------------------------------------ one batch
def class_scores(model_output: Any, output: Output, required: bool) -> torch.Tensor | None:
    """The (N, classes) scores of a forward pass; ``None`` when none were asked for (``output=None``)
    and the model does not return a 2-D float tensor (a feature extractor), unless ``required``."""
    if output is None and not required and not (
        isinstance(model_output, torch.Tensor) and model_output.ndim == 2 and model_output.is_floating_point()
    ):
        return None
    return outputs.select(model_output, output)


def layer_output(name: str, cap: ActivationCapture) -> torch.Tensor:
    """The recorded output of ``name``, checked to be (N, C, H, W) or (N, C) and from one call."""
    if f"{name}#1" in cap.activations:
        raise ValueError(
            f"layer {name!r} runs more than once per forward pass (a shared module), so its output is "
            "ambiguous; pick the block that contains it, or another module"
        )
    value = cap.activations[name]
    if value.ndim not in (2, 4):
        raise ValueError(
            f"layer {name!r} outputs shape {tuple(value.shape)}; a scan needs (N, C, H, W) or (N, C) "
            "outputs: pick a convolution, block or linear layer"
        )
    return value


def _targets(scores: torch.Tensor, target: Target, labels: np.ndarray) -> torch.Tensor:
    """The class whose score each image's relevance explains (see :func:`check_target`)."""
    classes = scores.shape[1]
    if target is None:
        return scores.detach().argmax(dim=1)
    if target == "label":
        if (labels < 0).any():
            raise ValueError("target='label' needs a label for every image, but some images have none")
        chosen = torch.from_numpy(labels)
    else:
        chosen = torch.full((scores.shape[0],), int(target), dtype=torch.int64)  # type: ignore[arg-type]
    if int(chosen.max()) >= classes:
        raise ValueError(
            f"target class {int(chosen.max())} is out of range: the model has {classes} classes (0‥{classes - 1})"
        )
    return chosen.to(scores.device)


def forward(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], output: Output, relevance: bool,
    target: Target, labels: np.ndarray,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
    """One forward pass recording ``layers``: their outputs, their gradients of the summed target
    scores (``relevance`` only; the backward pass stops at the layers) and the class scores."""
    if not relevance:
        with ActivationCapture(model, layers) as cap, torch.no_grad():
            out = call_forward(model, x)
        scores = class_scores(out, output, required=False)
        return {n: layer_output(n, cap) for n in layers}, {}, scores
    x = x.detach().requires_grad_(True) + 0  # not a leaf: a forward writing into its input still runs
    with ActivationCapture(model, layers, gradients=True) as cap, torch.enable_grad():
        out = call_forward(model, x)
        scores = class_scores(out, output, required=True)
        acts = {n: layer_output(n, cap) for n in layers}
        chosen = _targets(scores, target, labels)
        score = scores.gather(1, chosen[:, None]).sum()
        edges = [cap.grad_edges.get(n) for n in layers]
        grads = torch.autograd.grad(score, [e for e in edges if e is not None], allow_unused=True)
        # drop the capture's hold on this batch's autograd graph now: a reference cycle through the
        # gradient hooks would otherwise keep one graph per batch alive until the garbage collector runs
        cap.outputs.clear()
        cap.grad_edges.clear()
        cap.gradients.clear()
    found = iter(grads)
    result = {}
    for name, edge in zip(layers, edges):
        grad = next(found) if edge is not None else None
        if grad is None:
            raise ValueError(
                f"the class scores do not depend on layer {name!r} (no gradient reaches it), so its "
                "relevance is undefined; pick a layer on the path to the scores, or by='max'"
            )
        result[name] = grad.detach().to(acts[name].device, torch.float32)
    return acts, result, scores.detach()


@dataclass
class Reduced:
    """One batch of one layer, reduced: per image and channel the ranking ``value`` and the channel mean
    ``image_mean`` ((N, C) float64); the batch's per-channel moments ``(count, mean, M2)``; and
    ``ranked`` (N, C, positions), the map whose arg-max is a top image's position (read only for the
    few images that enter the top-k: a full arg-max costs more than the rest together)."""

    value: np.ndarray
    image_mean: np.ndarray
    moments: tuple[int, np.ndarray, np.ndarray]
    ranked: torch.Tensor
    width: int

    def positions(self, images: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """(y, x) of the largest ``ranked`` entry (the first in row-major order on ties) per pair."""
        arg = self.ranked[torch.from_numpy(images), torch.from_numpy(channels)].argmax(dim=-1).numpy()
        return np.stack([arg // self.width, arg % self.width], axis=-1).astype(np.int64)


def reduce_layer(acts: torch.Tensor, grads: torch.Tensor | None, by: str, work: torch.Tensor) -> Reduced:
    """Reduce a layer's (N, C, H, W) or (N, C) output (see :class:`Reduced`).

    Sums are float64 over float32 values (a square or a product of two float32 numbers is exact in
    float64), so they hardly depend on summation order. They run over a few images at a time in
    ``work``, a float64 buffer of :data:`_CHUNK` elements reused across batches, which stays in cache
    (a full float64 copy of a large layer costs more than the arithmetic). The batch's M2 comes from
    sums of squares around a per-channel shift (the first image's mean), which keeps the subtraction
    well conditioned."""
    n, c = acts.shape[:2]
    flat = acts.reshape(n, c, -1)
    area = flat.shape[2]
    step = max(1, _CHUNK // (c * area))
    sums = torch.empty(n, c, dtype=torch.float64)
    squares = torch.empty(n, c, dtype=torch.float64)
    shift: torch.Tensor | None = None
    for i in range(0, n, step):
        part = flat[i : i + step]
        wide = work[: part.numel()].view(part.shape).copy_(part)
        torch.sum(wide, dim=2, out=sums[i : i + step])
        if shift is None:
            shift = sums[0] / area
        torch.sum(wide.sub_(shift[None, :, None]).square_(), dim=2, out=squares[i : i + step])
    assert shift is not None
    count = n * area
    mean = sums.sum(dim=0) / count
    m2 = (squares.sum(dim=0) - count * (mean - shift).square()).clamp_min(0.0)
    image_mean = sums / area
    ranked = flat
    if by == "relevance":
        assert grads is not None
        ranked = flat.to(torch.float64) * grads.reshape(n, c, -1).to(torch.float64)
        value = ranked.sum(dim=2)
    elif by == "mean":
        value = image_mean
    else:
        value = flat.amax(dim=2).to(torch.float64)
    width = acts.shape[3] if acts.ndim == 4 else 1
    return Reduced(value.numpy(), image_mean.numpy(), (count, mean.numpy(), m2.numpy()), ranked, width)


# ------------------------------------------------------------------------------------ accumulate
class Builder:
    """Accumulates batches into the state of a :class:`ScanResult` (optionally continuing one)."""

    def __init__(self, layers: tuple[str, ...], k: int, by: str, target: Target, resume: ScanResult | None) -> None:
        self.layers, self.k, self.by, self.target = layers, k, by, target
        self.count = 0
        self.classes = 0
        self.tables: dict[str, LayerTable] = {}
        self.predictions: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.work = torch.empty(0, dtype=torch.float64)
        if resume is not None:
            self.count, self.classes = resume.count, resume.classes
            self.tables = dict(resume.tables)
            self.predictions, self.labels = [resume.predictions], [resume.labels]

    def _work(self, size: int) -> torch.Tensor:
        """The float64 scratch buffer of :func:`reduce_layer`, at least ``size`` elements."""
        if self.work.numel() < size:
            self.work = torch.empty(size, dtype=torch.float64)
        return self.work

    def add(self, batch: Batch, acts: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
            scores: torch.Tensor | None) -> None:
        """Merge one batch's layer outputs (and gradients, class scores) into the tables."""
        n = len(batch)
        labelled = batch.labels >= 0
        classes = max(self.classes, 0 if scores is None else int(scores.shape[1]),
                      int(batch.labels.max(initial=-1)) + 1)
        index = np.arange(self.count, self.count + n, dtype=np.int64)
        tables = {}  # assigned at the end, so an error part-way leaves the builder as it was
        for name in self.layers:
            a = acts[name]
            r = reduce_layer(a, grads.get(name), self.by, self._work(min(a.numel(), max(_CHUNK, a[0].numel()))))
            channels = r.value.shape[1]
            old = self.tables.get(name)
            if old is not None and old.channels != channels:
                raise ValueError(f"layer {name!r} gave {channels} channels on this batch but {old.channels} before")
            if old is None:
                old = LayerTable(np.empty((channels, 0)), np.empty((channels, 0), np.int64),
                                 np.empty((channels, 0, 2), np.int64), 0, np.zeros(channels), np.zeros(channels),
                                 np.zeros((0, channels)))
            new = (r.value.T, np.broadcast_to(index, (channels, n)), np.full((channels, n, 2), -1, np.int64))
            values, indices, positions = merge_top((old.values, old.indices, old.positions), new, self.k)
            fresh = np.nonzero(indices >= self.count)
            positions[fresh] = r.positions(indices[fresh] - self.count, fresh[0])
            class_sum = np.zeros((classes, channels), dtype=np.float64)
            np.add.at(class_sum, batch.labels[labelled], r.image_mean[labelled])
            tables[name] = LayerTable(
                values, indices, positions, *merge_moments((old.n, old.mean, old.m2), r.moments),
                add_padded(old.class_sum, class_sum),
            )
        predicted = (
            np.full(n, -1, np.int64) if scores is None else scores.argmax(dim=1).cpu().numpy().astype(np.int64)
        )
        self.tables.update(tables)
        self.classes = classes
        self.predictions.append(predicted)
        self.labels.append(batch.labels)
        self.count += n

    def result(self) -> ScanResult:
        """The result so far (class sums padded to the class count)."""
        tables = {
            name: LayerTable(t.values, t.indices, t.positions, t.n, t.mean, t.m2,
                             add_padded(t.class_sum, np.zeros((self.classes, t.channels))))
            for name, t in self.tables.items()
        }
        return ScanResult(
            layers=self.layers, k=self.k, by=self.by, target=self.target, count=self.count, classes=self.classes,
            predictions=np.concatenate(self.predictions) if self.predictions else np.empty(0, np.int64),
            labels=np.concatenate(self.labels) if self.labels else np.empty(0, np.int64), tables=tables,
        )


def check_resume(resume: object, layers: tuple[str, ...], k: int, by: str, target: Target) -> ScanResult | None:
    """``resume`` if it is a ScanResult made with the same settings."""
    if resume is None:
        return None
    if not isinstance(resume, ScanResult):
        raise TypeError(f"resume must be a ScanResult (e.g. ScanResult.load(path)), got {type(resume).__name__}")
    mine, theirs = (layers, k, by, target), (resume.layers, resume.k, resume.by, resume.target)
    if mine != theirs:
        raise ValueError(
            f"cannot resume a scan made with other settings: (layers, k, by, target) = {theirs} in the saved "
            f"result, {mine} now"
        )
    return resume


# --------------------------------------------------------------------------------------- public
def scan(
    model: nn.Module,
    data: Any,
    layers: str | Iterable[str],
    *,
    k: int = 16,
    by: str = "max",
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    target: Target = None,
    batch_size: int = 64,
    backend: str = "local",
    progress: bool = True,
    resume: ScanResult | None = None,
    checkpoint: str | os.PathLike | None = None,
    shards: int | None = None,
) -> ScanResult:
    """One pass of ``model`` over ``data`` that keeps, per channel of each layer in ``layers``, the k
    images that excite it most, and the statistics listed in :class:`ScanResult`.

    ``data``: a ``Dataset``, ``DataLoader``, 4-D image tensor, ``(images, labels)`` or any iterable of
    images or ``(image, label)`` pairs (see :mod:`cnn_widgets.dataset.source`), unnormalised pixels with
    the model's ``mean``/``std`` in 0‥1 units as everywhere in cnn_widgets. ``by``: ``"max"`` (the
    channel's largest activation in the image), ``"mean"`` (its spatial mean) or ``"relevance"``
    (the sum over positions of activation × gradient of the ``target`` score, zennit-crp's
    relevance-based reference selection; ``target=None`` explains each image's predicted class,
    ``"label"`` its label, an int that class). ``output=`` selects the class scores of a structured
    output (:mod:`cnn_widgets.outputs`); without scores (a feature extractor) predictions are -1.

    Memory is bounded by k × channels per layer and one batch of activations. ``resume=`` continues a
    saved partial result: its first ``resume.count`` images are skipped (indexable data is indexed
    from there; other data is read and dropped without running the model). ``checkpoint=path`` saves
    the result so far at most once a minute and when the scan stops, also on an error or Ctrl-C.
    ``backend="ray"`` runs the same scan as Ray Data tasks over ``shards`` index ranges (default: two
    per CPU of the cluster) and merges them on the driver; the result equals the local one.
    """
    check_model(model, hooks=True)
    names = check_scan_layers(model, layers)
    k = positive_int("k", k)
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(map(repr, BY))}, got {by!r}")
    target = check_target(target, by)
    if by == "relevance":
        check_autograd('scan(by="relevance")')
    output = outputs.check_output(output)
    batch_size = positive_int("batch_size", batch_size)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if shards is not None and backend != "ray":
        raise ValueError("shards applies to backend='ray' only")
    resume = check_resume(resume, names, k, by, target)
    source = Source(data)
    settings = dict(layers=names, k=k, by=by, mean=mean, std=std, output=output, target=target, batch_size=batch_size)
    if backend == "ray":
        from .ray_backend import ray_scan

        return ray_scan(model, source, settings, resume=resume, shards=shards, progress=progress, checkpoint=checkpoint)
    return local_scan(model, source, settings, resume=resume, progress=progress, checkpoint=checkpoint)


def local_scan(
    model: nn.Module, source: Source, settings: dict[str, Any], *, resume: ScanResult | None, progress: bool,
    checkpoint: str | os.PathLike | None,
) -> ScanResult:
    """The scan in this process, with checked ``settings`` (the keyword arguments of :func:`scan`)."""
    layers, by, output, target = settings["layers"], settings["by"], settings["output"], settings["target"]
    builder = Builder(layers, settings["k"], by, target, resume)
    start = builder.count
    bar = Progress(progress, source.total)
    saved = time.monotonic()
    ok = False
    try:
        with model_session(model, eval_mode=True, hooks=True):
            for batch in batches(
                source, model=model, mean=settings["mean"], std=settings["std"],
                batch_size=settings["batch_size"], start=start,
            ):
                x = model_input(model, batch.x)
                acts, grads, scores = forward(model, x, layers, output, by == "relevance", target, batch.labels)
                builder.add(batch, acts, grads, scores)
                bar.update(builder.count)
                if checkpoint is not None and time.monotonic() - saved > _CHECKPOINT_SECONDS:
                    builder.result().save(checkpoint)
                    saved = time.monotonic()
        if builder.count == 0:
            raise ValueError("the data holds no images" + (f" after the {start} already scanned" if start else ""))
        ok = True
    finally:
        bar.close(ok)
        if checkpoint is not None and builder.count > start:
            builder.result().save(checkpoint)
    return builder.result()
