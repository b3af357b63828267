"""The CAM family on the capture engine: CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM and
Eigen-CAM, each as a short formula over one layer's activations ``A`` (N, C, h, w) and, where needed, the
gradient ``G`` of the target score with respect to them.

Conventions follow pytorch-grad-cam 1.5 (the reference users compare with), except where noted:

- the map is ``relu(Σ_c w_c · A_c)`` (or the variant's element-wise form) at layer resolution, with the
  ReLU applied as pytorch-grad-cam's ``BaseCAM`` does; ``cam`` (Zhou et al. 2016) keeps its sign, as in
  the paper (pytorch-grad-cam has no plain CAM);
- the score is the raw logit of the target class (pytorch-grad-cam's ``ClassifierOutputTarget``), and a
  batch is handled by back-propagating the sum of each image's target logit (images are independent in
  eval mode);
- **deviation:** maps are *not* min-max normalised per image. pytorch-grad-cam rescales each map to
  0‥1 before resizing; that rescaling is affine, so it loses nothing to skip it, and keeping the scale
  lets a grid of maps share one colour scale. The display normalises anyway;
- the formulas run in float64 (then back to the activations' dtype): Grad-CAM++ and XGrad-CAM divide by
  sums of activations that can be near zero for layers before a ReLU;
- upsampling is bilinear with ``align_corners=False`` (what ``cv2.resize`` does when enlarging), done by
  :func:`upsample` after the fact, so each function here returns the layer-resolution map;
- **deviation (Eigen-CAM):** the sign of the first principal component is arbitrary in an SVD and
  pytorch-grad-cam leaves it so (its map can come out inverted); we fix it so that the component's
  channel loadings sum to ≥ 0, i.e. the map correlates positively with the layer's total activation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .capture import ActivationCapture

# Constants as pytorch-grad-cam 1.5 uses them (grad_cam_plusplus.py, xgrad_cam.py, score_cam.py).
_EPS_PP = 1e-6
_EPS_XGRAD = 1e-7
_EPS_SCORE = 1e-8


class Progress:
    """Counts rows (images) pushed through the model and reports the fraction done to ``callback``,
    which may raise to cancel the work in progress."""

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self.callback = callback
        self.total = 1
        self.done = 0

    def expect(self, rows: int) -> None:
        """Set how many rows the whole computation will evaluate."""
        self.total = max(int(rows), 1)

    def advance(self, rows: int) -> None:
        """Record ``rows`` more evaluated rows and report (the callback may raise to stop)."""
        self.done += int(rows)
        self.report(min(self.done / self.total, 1.0))

    def report(self, fraction: float) -> None:
        """Pass ``fraction`` to the callback, if there is one."""
        if self.callback is not None:
            self.callback(float(fraction))


@dataclass(frozen=True)
class CamResult:
    """A CAM at layer resolution (N, 1, h, w), the class index used per image and the model output."""

    raw: torch.Tensor
    targets: list[int]
    logits: torch.Tensor


def check_targets(logits: object, targets: Sequence[int] | None) -> None:
    """Raise a ``ValueError`` unless ``logits`` is (rows, classes) and every target is a class index."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"attribution needs a classifier whose forward returns (N, classes) scores; this model returned "
            f"{got}. Wrap it so that it returns one row of class scores per image"
        )
    classes = logits.shape[1]
    for t in targets or ():
        if not 0 <= t < classes:
            raise ValueError(
                f"target {t} is out of range: the model has {classes} classes (0‥{classes - 1}); "
                "pass a valid class index, or target=None for the top prediction"
            )


def resolve_targets(logits: object, targets: Sequence[int] | None) -> list[int]:
    """Check ``targets`` against the model output (N, classes) and return one class index per image;
    ``None`` means each image's top prediction."""
    check_targets(logits, targets)
    n = logits.shape[0]
    if targets is None:
        return [int(i) for i in logits.detach().argmax(dim=1).tolist()]
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} images; pass one per image, one int, or None")
    return list(targets)


def upsample(raw: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of (N, 1, h, w) maps to ``size`` (what ``cv2.resize`` does when enlarging)."""
    return F.interpolate(raw, size=tuple(size), mode="bilinear", align_corners=False)


Scores = Callable[[torch.Tensor], torch.Tensor]


def _layer_pass(
    model: nn.Module,
    batch: torch.Tensor,
    layer: str,
    targets: Sequence[int] | None,
    gradients: bool,
    scores: Scores | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[int], torch.Tensor]:
    """One forward pass recording ``layer``'s output; with ``gradients``, the gradient of the summed
    target logits with respect to it, back-propagated no further than the layer. ``scores(x)`` gives
    the (N, classes) class scores (default: the model's output)."""
    x = batch.detach().requires_grad_(gradients)
    with ActivationCapture(model, [layer], gradients=gradients) as cap, torch.set_grad_enabled(gradients):
        logits = (scores or model)(x)
    if f"{layer}#1" in cap.activations:
        raise ValueError(
            f"layer {layer!r} runs more than once per forward pass (a shared module), so its output is "
            "ambiguous; pick the block that contains it, or another module"
        )
    acts = cap.activations[layer]
    check_spatial(layer, acts)
    resolved = resolve_targets(logits, targets)
    grads = None
    if gradients:
        index = torch.arange(len(resolved), device=logits.device)
        score = logits[index, torch.tensor(resolved, device=logits.device)].sum()
        (grads,) = torch.autograd.grad(score, [cap.grad_edges[layer]])
        grads = grads.detach().to(acts.device)
    return acts, grads, resolved, logits.detach()


def check_spatial(layer: str, output: torch.Tensor) -> None:
    """Raise a ``ValueError`` unless ``output`` is an (N, C, H, W) tensor (a layer a CAM can use)."""
    if output.ndim != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(output.shape)}, which has no spatial dimensions; CAM "
            "methods need a layer with an (N, C, H, W) output such as a convolution block "
            "(cnn_widgets.suggest_target_layer(model, image) proposes one)"
        )


def _weighted(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``Σ_c w_c · A_c`` as (N, 1, h, w)."""
    return (weights[:, :, None, None] * acts).sum(dim=1, keepdim=True)


def _find_linear_head(model: nn.Module, layer: str, acts: torch.Tensor, logits: torch.Tensor) -> nn.Linear:
    """The ``nn.Linear`` that maps the spatial mean of ``acts`` to the model's logits."""
    pooled = acts.mean(dim=(2, 3))
    scale = float(logits.abs().max()) if logits.numel() else 0.0
    squashed = False  # a head that matches once a final softmax/log-softmax/sigmoid is applied
    for name, module in reversed(list(model.named_modules())):
        if not isinstance(module, nn.Linear) or module.in_features != acts.shape[1]:
            continue
        if module.out_features != logits.shape[1]:
            continue
        with torch.no_grad():
            pred = F.linear(pooled.to(module.weight), module.weight, module.bias)
        if torch.allclose(pred, logits.to(pred), rtol=1e-4, atol=1e-4 * scale + 1e-6):
            return module
        squashed = squashed or any(
            torch.allclose(f(pred), logits.to(pred), rtol=1e-4, atol=1e-4 * scale + 1e-6)
            for f in (lambda p: p.softmax(1), lambda p: p.log_softmax(1), torch.sigmoid)
        )
    if squashed:
        raise ValueError(
            f"cam weights the channels of layer {layer!r} by the linear head's weights for the class, but "
            "this model applies a softmax, log-softmax or sigmoid after that head, so its scores are not the "
            "head's logits. Pass logits=True to explain the scores before that final module"
        )
    raise ValueError(
        f"cam needs a model that ends in global average pooling + one linear layer applied to the output "
        f"of layer {layer!r} ({acts.shape[1]} channels), but no nn.Linear maps the spatial mean of that "
        "output to the model's logits. Pick the layer right before the pooling, or use grad_cam, which "
        "needs no such head (and equals CAM up to scale where CAM applies)"
    )


def cam(
    model: nn.Module, batch: torch.Tensor, layer: str, targets: Sequence[int] | None, *, scores: Scores | None = None
) -> CamResult:
    """CAM (Zhou et al. 2016): ``M = Σ_c W[target, c] · A_c`` with ``W`` the weights of the linear head
    after global average pooling. Signed, no ReLU and no bias, as in the paper; the spatial mean of the
    map plus the head's bias is the target logit."""
    acts, _, resolved, logits = _layer_pass(model, batch, layer, targets, gradients=False, scores=scores)
    head = _find_linear_head(model, layer, acts, logits)
    weights = head.weight.detach()[torch.tensor(resolved, device=head.weight.device)].to(acts)
    return CamResult(_weighted(weights, acts), resolved, logits)


def _grad_cam_pp_map(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Chattopadhyay et al. 2018, eq. 19 (exp-score derivation: higher derivatives as powers of G)
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_acts = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_acts * g3 + _EPS_PP)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (grads.clamp(min=0) * alpha).sum(dim=(2, 3))
    return _weighted(weights, acts)


def _xgrad_cam_map(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Fu et al. 2020: w_c = Σ_ij G·A / (Σ_ij A + eps)
    sum_acts = acts.sum(dim=(2, 3), keepdim=True)
    weights = (grads * acts / (sum_acts + _EPS_XGRAD)).sum(dim=(2, 3))
    return _weighted(weights, acts)


def _hires_cam_map(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Draelos & Carin 2020: element-wise G·A summed over channels
    return (grads * acts).sum(dim=1, keepdim=True)


def _layer_cam_map(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Jiang et al. 2021: relu(G)·A summed over channels
    return (grads.clamp(min=0) * acts).sum(dim=1, keepdim=True)


_GRADIENT_MAPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "grad_cam_pp": _grad_cam_pp_map,
    "xgrad_cam": _xgrad_cam_map,
    "hires_cam": _hires_cam_map,
    "layer_cam": _layer_cam_map,
}


def gradient_cam(
    variant: str,
    model: nn.Module,
    batch: torch.Tensor,
    layer: str,
    targets: Sequence[int] | None,
    *,
    scores: Scores | None = None,
) -> CamResult:
    """A gradient-based variant (``grad_cam_pp``, ``xgrad_cam``, ``hires_cam``, ``layer_cam``): one
    forward pass, a backward pass down to ``layer`` only, the variant's formula, then a ReLU."""
    formula = _GRADIENT_MAPS[variant]
    acts, grads, resolved, logits = _layer_pass(model, batch, layer, targets, gradients=True, scores=scores)
    assert grads is not None
    raw = formula(acts.double(), grads.double()).clamp(min=0)
    return CamResult(raw.to(acts.dtype), resolved, logits)


def eigen_cam(
    model: nn.Module, batch: torch.Tensor, layer: str, targets: Sequence[int] | None, *, scores: Scores | None = None
) -> CamResult:
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations (positions × channels, centred per channel)
    projected on their first principal component, then a ReLU. Class-agnostic: ``targets`` are only
    resolved for the record. The component's sign is fixed (see the module notes)."""
    acts, _, resolved, logits = _layer_pass(model, batch, layer, targets, gradients=False, scores=scores)
    if not bool(torch.isfinite(acts).all()):
        raise ValueError(
            f"layer {layer!r} produced NaN or infinite activations for this input, so they have no principal "
            "component; check the image, mean/std and the model's weights, or pick another layer"
        )
    n, c, h, w = acts.shape
    maps = []
    for a in acts.double():  # an SVD in float64: exact enough, and defined for half-precision models too
        m = a.reshape(c, h * w).T
        m = m - m.mean(dim=0)
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        v = vh[0]
        if v.sum() < 0:
            v = -v
        maps.append((m @ v).reshape(1, h, w))
    return CamResult(torch.stack(maps).clamp(min=0).to(acts.dtype), resolved, logits)


def score_cam(
    model: nn.Module,
    batch: torch.Tensor,
    layer: str,
    targets: Sequence[int] | None,
    forward: Callable[[torch.Tensor], torch.Tensor],
    progress: Progress,
    batch_size: int = 16,
    *,
    scores: Scores | None = None,
) -> CamResult:
    """Score-CAM (Wang et al. 2020) as pytorch-grad-cam computes it: each channel, upsampled to the
    input size (bilinear, ``align_corners=True``) and min-max scaled to 0‥1, masks the model input; the
    target logits of the masked inputs, softmaxed over channels, weight the channels; then a ReLU.

    ``forward`` evaluates masked inputs ``batch_size`` at a time (the caller's wrapper reports progress
    and may cancel between chunks); nothing is held beyond one chunk of masked inputs."""
    acts, _, resolved, logits = _layer_pass(model, batch, layer, targets, gradients=False, scores=scores)
    n, c = acts.shape[:2]
    size = batch.shape[2:]
    progress.expect(n * c)
    wide = torch.promote_types(batch.dtype, torch.float32)
    weights = []
    with torch.no_grad():
        for i in range(n):
            scores = []
            for start in range(0, c, batch_size):
                # masks in float32 at least: in half precision the 1e-8 guard is 0 and a flat channel gives NaN
                chunk = acts[i : i + 1, start : start + batch_size].to(batch.device, wide)
                up = F.interpolate(chunk, size=tuple(size), mode="bilinear", align_corners=True)[0]
                flat = up.reshape(up.shape[0], -1)
                lo = flat.min(dim=1).values[:, None, None]
                hi = flat.max(dim=1).values[:, None, None]
                masks = ((up - lo) / (hi - lo + _EPS_SCORE)).to(batch.dtype)
                out = forward(batch[i][None] * masks[:, None])
                scores.append(out[:, resolved[i]].detach().to(acts))
            weights.append(torch.softmax(torch.cat(scores), dim=0))
    return CamResult(_weighted(torch.stack(weights), acts).clamp(min=0), resolved, logits)

