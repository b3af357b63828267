"""Channel importance: how much the model's accuracy drops (or its cross-entropy rises) when one channel
of a layer is permuted across the batch (permutation feature importance, as Captum's
``FeaturePermutation`` does for input features) or set to zero.

Everything runs in one pass over the data, inside one :func:`~cnn_widgets.capture.model_session`
(eval mode, state restored, no hook left). Per batch a forward hook on the layer first records its
output and the unperturbed scores; then it *replaces* the output by perturbed copies. When the part of
the model after the layer depends on nothing but the layer's output, image by image, many perturbed
copies go through one forward pass, stacked along the batch dimension, while the layers before the
layer run on a single image (their output is replaced anyway) — for a late layer this costs a few
percent of one full pass per perturbation. Whether that holds is checked on every batch: the stack
starts with an unperturbed copy, which must reproduce the unperturbed scores of every image (a skip
connection around the layer, a batch-size check or batch statistics make it differ or fail); if it
does not, every perturbation gets its own full forward pass.

Random draws, for reproducibility: one ``torch.Generator`` seeded with ``seed``; for each batch (of
``batch_size`` images, as in :func:`cnn_widgets.scan`), for each repeat, for each channel,
``torch.randperm(batch, generator=g)``, drawn again while it is the identity (batches of two or more).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import outputs
from .._checks import call_forward, check_layer_names, check_model, model_input
from ..capture import model_session
from ..images import Stats
from ..outputs import Output
from .progress import Progress
from .scan import positive_int
from .source import Source, batches

METRICS: tuple[str, ...] = ("accuracy", "loss")
_GROUP_ELEMENTS = 1 << 22  # layer-output elements per stacked forward pass (16 MB of float32)


@dataclass(frozen=True)
class Importance:
    """Per channel of ``layer`` (C values each): ``permutation`` — the mean over ``repeats`` of the drop
    in accuracy (``metric="accuracy"``) or rise in mean cross-entropy (``"loss"``) when the channel is
    permuted across each batch; ``std`` — the standard deviation of that drop over the repeats
    (population, ddof 0); ``zeroing`` — the drop or rise when the channel is set to 0. ``baseline``: the
    unperturbed accuracy or loss over ``count`` images. The reference class of an image is its label, or
    the model's unperturbed prediction when it has none (so without labels accuracy means agreement
    with the model)."""

    layer: str
    metric: str
    baseline: float
    permutation: np.ndarray
    zeroing: np.ndarray
    std: np.ndarray
    repeats: int
    seed: int
    count: int


class _Swap:
    """A forward hook on the layer: records its output (``replace is None``) or returns
    ``replace(output)`` instead of it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.output: torch.Tensor | None = None
        self.replace: Any = None

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        self.calls += 1
        if not isinstance(output, torch.Tensor) or output.ndim < 2:
            got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"layer {self.name!r} returned {got}; channel importance needs an (N, C, ...) tensor output"
            )
        if self.replace is None:
            self.output = output.detach()
            return None
        return self.replace(output.detach())


def _scores(model: nn.Module, x: torch.Tensor, swap: _Swap, output: Output) -> torch.Tensor:
    swap.calls = 0
    scores = outputs.select(call_forward(model, x), output).detach().float()
    if swap.calls != 1:
        problem = "did not run during the forward pass" if swap.calls == 0 else (
            "runs more than once per forward pass (a shared module), so its output is ambiguous")
        raise ValueError(f"layer {swap.name!r} {problem}; pick another layer")
    return scores


def _perturbed(a: torch.Tensor, plan: list[tuple[int, torch.Tensor | None]]) -> torch.Tensor:
    """Copies of ``a`` stacked along the batch, copy i with channel ``plan[i][0]`` permuted by
    ``plan[i][1]`` (zeroed for ``None``); channel -1 leaves a copy unperturbed."""
    n = a.shape[0]
    out = a.repeat(len(plan), *([1] * (a.ndim - 1)))
    for i, (channel, perm) in enumerate(plan):
        if channel < 0:
            continue
        block = out[i * n : (i + 1) * n, channel]
        if perm is None:
            block.zero_()
        else:
            block.copy_(a[perm, channel])
    return out


def _metric(scores: torch.Tensor, reference: np.ndarray, metric: str, probabilities: bool) -> float:
    """Number of correct predictions, or the summed cross-entropy (in float64), over the rows of
    ``scores``. numpy, not torch: these small reductions would wait on torch's thread pool."""
    s = scores.cpu().numpy().astype(np.float64)
    rows = np.arange(len(s))
    if metric == "accuracy":
        return float((s.argmax(axis=1) == reference).sum())
    if probabilities:
        return float(-np.log(np.maximum(s[rows, reference], 1e-300)).sum())
    top = s.max(axis=1)
    log_total = top + np.log(np.exp(s - top[:, None]).sum(axis=1))
    return float((log_total - s[rows, reference]).sum())


def _reference(labels: np.ndarray, scores: torch.Tensor) -> np.ndarray:
    """Each image's reference class: its label, or the model's prediction for an image without one (-1).
    A label the scores have no column for is an error: accuracy against it would silently be 0 and its
    cross-entropy does not exist."""
    classes = scores.shape[1]
    if labels.size and int(labels.max()) >= classes:
        raise ValueError(
            f"label {int(labels.max())} is not a class of this model (it has {classes} outputs, classes "
            f"0‥{classes - 1}): the labels must index the model's class scores; pass output= if another "
            "output of the model holds them, or data labelled for this model"
        )
    return np.where(labels >= 0, labels, scores.argmax(dim=1).cpu().numpy())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1e-12)))


def channel_importance(
    model: nn.Module,
    data: Any,
    layer: str,
    metric: str = "accuracy",
    repeats: int = 3,
    seed: int = 0,
    *,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Importance:
    """Permutation and zeroing importance of every channel of ``layer`` over ``data`` (see the module doc
    and :class:`Importance`). ``data``, ``mean``, ``std``, ``output`` and ``batch_size`` as in
    :func:`cnn_widgets.scan`. Seeded: the same call gives the same numbers."""
    check_model(model, hooks=True)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one layer name (str) from model.named_modules(), got {type(layer).__name__}")
    (layer,) = check_layer_names(model, [layer])
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(map(repr, METRICS))}, got {metric!r}")
    repeats = positive_int("repeats", repeats)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int ≥ 0, got {seed!r}")
    output = outputs.check_output(output)
    batch_size = positive_int("batch_size", batch_size)
    source = Source(data)

    generator = torch.Generator().manual_seed(int(seed))
    swap = _Swap(layer)
    base_total = 0.0
    perm_total: np.ndarray | None = None
    zero_total: np.ndarray | None = None
    count = 0
    stacked = True  # until a batch shows that the part after the layer mixes images
    bar = Progress(progress, source.total, title="importance")
    ok = False
    try:
        with model_session(model, eval_mode=True, hooks=True), torch.no_grad():
            handle = dict(model.named_modules())[layer].register_forward_hook(swap)
            try:
                for batch in batches(source, model=model, mean=mean, std=std, batch_size=batch_size):
                    x = model_input(model, batch.x)
                    swap.replace = None
                    base = _scores(model, x, swap, output)
                    a = swap.output
                    assert a is not None
                    n, channels = a.shape[0], a.shape[1]
                    if perm_total is None:
                        perm_total, zero_total = np.zeros((repeats, channels)), np.zeros(channels)
                    elif channels != perm_total.shape[1]:
                        raise ValueError(
                            f"layer {layer!r} gave {channels} channels on this batch but {perm_total.shape[1]} before"
                        )
                    reference = _reference(batch.labels, base)
                    probabilities = metric == "loss" and outputs.is_probabilities(base)
                    base_total += _metric(base, reference, metric, probabilities)
                    plan: list[tuple[int, torch.Tensor | None]] = []
                    for _ in range(repeats):
                        for c in range(channels):
                            perm = torch.randperm(n, generator=generator)
                            while n > 1 and bool((perm == torch.arange(n)).all()):
                                perm = torch.randperm(n, generator=generator)
                            plan.append((c, perm.to(a.device)))
                    plan += [(c, None) for c in range(channels)]
                    values = _evaluate(model, x, a, swap, output, plan, stacked, base)
                    if values is None:
                        stacked = False
                        values = _evaluate(model, x, a, swap, output, plan, stacked, base)
                    assert values is not None
                    results = [_metric(s, reference, metric, probabilities) for s in values]
                    perm_total += np.asarray(results[: repeats * channels]).reshape(repeats, channels)
                    zero_total += np.asarray(results[repeats * channels :])
                    count += n
                    bar.update(count)
            finally:
                handle.remove()
        if count == 0 or perm_total is None or zero_total is None:
            raise ValueError("the data holds no images")
        ok = True
    finally:
        bar.close(ok)
    sign = -1.0 if metric == "accuracy" else 1.0  # a drop in accuracy, a rise in loss
    per_repeat = sign * (perm_total - base_total) / count
    return Importance(
        layer=layer, metric=metric, baseline=base_total / count, permutation=per_repeat.mean(axis=0),
        zeroing=sign * (zero_total - base_total) / count, std=per_repeat.std(axis=0), repeats=repeats,
        seed=int(seed), count=count,
    )


def _evaluate(
    model: nn.Module, x: torch.Tensor, a: torch.Tensor, swap: _Swap, output: Output,
    plan: list[tuple[int, torch.Tensor | None]], stacked: bool, base: torch.Tensor,
) -> list[torch.Tensor] | None:
    """The scores under every perturbation of ``plan``; stacked in groups when ``stacked``. ``None`` when
    a stacked pass fails or its unperturbed copy does not reproduce ``base`` (the part of the model
    after the layer does not treat images independently)."""
    n = a.shape[0]
    if not stacked:
        found = []
        for step in plan:
            swap.replace = lambda out, step=step: _perturbed(out, [step])
            found.append(_scores(model, x, swap, output))
        return found
    per_pass = max(1, _GROUP_ELEMENTS // max(a.numel(), 1) - 1)
    found = []
    for start in range(0, len(plan), per_pass):
        group = [(-1, None), *plan[start : start + per_pass]]
        swap.replace = lambda out, group=group: _perturbed(a, group)
        try:  # the layers before the layer run on one image only: their output is replaced anyway
            scores = _scores(model, x[:1], swap, output)
        except Exception:  # the part after the layer cannot take a larger batch: perturb one at a time
            return None
        if scores.shape[0] != n * len(group) or not _same(scores[:n], base):
            return None
        found += [scores[i * n : (i + 1) * n] for i in range(1, len(group))]
    return found
