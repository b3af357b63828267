"""Numbers that say how far to trust an attribution map.

* Faithfulness: :func:`deletion_auc` and :func:`insertion_auc` (Petsiuk et al. 2018, RISE) remove or
  add pixels in the map's order and follow the model's probability for the target class.
* Sanity: :func:`randomization_test` (Adebayo et al. 2018) re-initialises the model layer by layer,
  on a private copy, and measures how much the map changes (:func:`spearman`).
* Localisation against a ground-truth mask: :func:`pointing_game` and :func:`mass_inside`.

Every forward pass on the user's model runs inside :func:`cnn_widgets.capture.model_session` in eval
mode; the randomisation test only ever runs a deep copy.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import outputs
from ._checks import call_forward, check_layer_names, check_model, is_script, model_input
from .attribution import Attribution, attribute, check_method
from .attribution.engine import check_target_range, class_index
from .capture import model_session
from .images import Image, Stats, to_batch
from .layers import probe
from .outputs import Output

BASELINES: tuple[str, ...] = ("blur", "black", "mean", "road")
"""What replaces a removed pixel (and what inserted pixels start from); see :func:`deletion_auc`."""

ROAD_NOISE = 0.01
"""Standard deviation of the noise ROAD adds to each imputed pixel, in 0‥1 pixel units (Rong et al.'s
value)."""

# ROAD's neighbour weights: 1/6 for the four direct neighbours, 1/12 for the four diagonal ones
_ROAD_KERNEL = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
_ROAD_TOL = 1e-6  # CG stops when a system's RMS residual (pixel units) is below this
_BLUR_SIGMA = 1 / 16  # Gaussian sigma as a fraction of the image's shorter side

Map = Union[torch.Tensor, np.ndarray, Attribution]
Method = Union[str, Callable[[nn.Module, Any], Any]]


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve.

    ``fractions``: the fraction of pixels removed (deletion) or inserted (insertion) at each step,
    0‥1 ascending. ``probabilities``: the model's probability of ``target`` on each perturbed image.
    ``scores``: those probabilities divided by the probability on the intact image and clipped to 0‥1
    (a perturbation that makes the model surer than on the intact image counts as 1). ``auc``: the
    area under ``scores`` over ``fractions`` by the trapezoid rule, in 0‥1."""

    kind: str
    fractions: torch.Tensor
    scores: torch.Tensor
    probabilities: torch.Tensor
    auc: float
    target: int
    baseline: str


# --- deletion / insertion -------------------------------------------------------------------------


def deletion_auc(
    model: nn.Module,
    image: Image,
    attribution_map: Map,
    target: int | None = None,
    *,
    baseline: str | Image = "blur",
    steps: int = 32,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    batch_size: int = 16,
    seed: int = 0,
) -> Curve:
    """The deletion curve of ``attribution_map`` for ``model`` on ``image``: pixels are removed in the
    map's order, most relevant (highest value) first, ``steps`` equal steps from none to all, and the
    model's probability of ``target`` is recorded after each. A faithful map makes it fall fast, so
    *lower* AUC is better.

    ``image``: one image in any form :mod:`cnn_widgets.images` accepts (unnormalised pixels; ``mean``/
    ``std`` in 0‥1 units are applied for the model). ``attribution_map``: an H×W tensor or array the
    size of the image, or an :class:`~cnn_widgets.Attribution` (its ``.map``, and its ``.target`` when
    ``target`` is ``None``); ties keep pixel order (row by row). ``target``: a class index, default the
    top prediction on the intact image. The probability is the softmax of the selected scores
    (``output=`` as in :func:`cnn_widgets.attribute`); rows that already are probabilities (a softmax
    head) are taken as they are.

    ``baseline``, what a removed pixel becomes (all its channels at once):

    * ``"blur"`` (default): the pixel of a Gaussian blur of the image (sigma = 1/16 of the shorter
      side, replicated edges). Removing scattered pixels to a constant colour puts high-frequency
      speckle into the image that destroys almost any prediction whatever the order; blurring removes
      the detail without adding such evidence (Petsiuk et al. 2018 use blur for insertion).
    * ``"black"``: pixel value 0. ``"mean"``: the image's mean colour.
    * ``"road"``: noisy linear imputation (ROAD, Rong et al. 2022): each removed pixel becomes the
      weighted mean of its eight neighbours (1/6 direct, 1/12 diagonal; neighbours outside the image
      dropped), solved jointly for all removed pixels — the paper's sparse linear system, solved
      iteratively (see :func:`road_impute`) — plus Gaussian noise of standard deviation
      :data:`ROAD_NOISE` drawn from ``seed``. The paper's point: the filled-in region carries no
      outline of what was removed, which a constant or blurred fill can leak to the model. It costs
      one linear solve per step: about 1–2 s for 33 steps at 64×64, a minute or more at 224×224 on
      a busy 2-core machine.
    * an image of the same size (any accepted form, unnormalised pixels): its pixels.

    Images without ``mean``/``std`` are perturbed in the units given (0 is "black" there). All
    ``steps + 1`` images are evaluated in forward passes of ``batch_size`` images in eval mode, in
    one model session; the model is left untouched.
    """
    return _curve("deletion", model, image, attribution_map, target, baseline, steps, mean, std, output,
                  batch_size, seed)


def insertion_auc(
    model: nn.Module,
    image: Image,
    attribution_map: Map,
    target: int | None = None,
    *,
    baseline: str | Image = "blur",
    steps: int = 32,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    batch_size: int = 16,
    seed: int = 0,
) -> Curve:
    """The insertion curve: start from the ``baseline`` image (see :func:`deletion_auc`) and put the
    original pixels back in the map's order, most relevant first; a faithful map makes the probability
    rise fast, so *higher* AUC is better. With ``"road"``, pixels not yet inserted are imputed from the
    inserted ones. Arguments and normalisation as in :func:`deletion_auc`."""
    return _curve("insertion", model, image, attribution_map, target, baseline, steps, mean, std, output,
                  batch_size, seed)


def curves(
    model: nn.Module,
    image: Image,
    maps: Sequence[Map],
    targets: Sequence[int | None] | None = None,
    *,
    baseline: str | Image = "blur",
    steps: int = 32,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> list[tuple[Curve, Curve]]:
    """The (deletion, insertion) curves of many maps on one image, every perturbed image of every
    curve evaluated together in forward passes of ``batch_size`` images: what :func:`deletion_auc`
    and :func:`insertion_auc` give for each map, at a fraction of the calls (the
    :class:`~cnn_widgets.Metrics` table uses it). ``targets``: one per map (``None`` entries: the
    map's own target if it is an ``Attribution``, else the top prediction). ``progress(fraction)`` is
    called after each forward pass and may raise :class:`cnn_widgets.Cancelled`. Other arguments as in
    :func:`deletion_auc`."""
    if isinstance(maps, (torch.Tensor, np.ndarray, Attribution)) or not isinstance(maps, Sequence):
        raise TypeError(f"maps must be a list of maps (tensors, arrays or Attributions), got {type(maps).__name__}")
    if not maps:
        raise ValueError("maps is empty; pass a list of at least one map (tensor, array or Attribution)")
    if targets is not None and (isinstance(targets, str) or not isinstance(targets, Sequence)
                                or len(targets) != len(maps)):
        raise ValueError(f"targets must be a list with one entry (class index or None) per map ({len(maps)})")
    plans = [(kind, m, None if targets is None else targets[i]) for i, m in enumerate(maps)
             for kind in ("deletion", "insertion")]
    found = _curves(plans, model, image, baseline, steps, mean, std, output, batch_size, seed, progress)
    return [(found[2 * i], found[2 * i + 1]) for i in range(len(maps))]


def _curve(
    kind: str, model: nn.Module, image: Image, attribution_map: Map, target: Any, baseline: Any,
    steps: Any, mean: Stats, std: Stats, output: Output, batch_size: Any, seed: Any,
) -> Curve:
    return _curves([(kind, attribution_map, target)], model, image, baseline, steps, mean, std, output,
                   batch_size, seed, None)[0]


def _curves(
    plans: list[tuple[str, Map, Any]], model: nn.Module, image: Image, baseline: Any, steps: Any, mean: Stats,
    std: Stats, output: Output, batch_size: Any, seed: Any, progress: Callable[[float], None] | None,
) -> list[Curve]:
    """One curve per (kind, map, target) plan on one image; all perturbed images in shared batches."""
    check_model(model)
    outputs.check_output(output)
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    seed = _seed(seed)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking the fraction done, got {type(progress).__name__}")
    to_batch(image, mean, std, model=model, single=True)  # every check of image against mean/std
    pixels = to_batch(image, model=model, single=True)
    h, w = pixels.shape[2:]
    checked = []
    for kind, attribution_map, target in plans:
        heat, map_target = _map_of(attribution_map, "attribution_map", pixels.shape[2:])
        checked.append((kind, heat, map_target if target is None else class_index(target)))
    base_name, base = _baseline(baseline, pixels, model)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * (h * w) / steps).long()

    def perturbed(kind: str, heat: torch.Tensor) -> torch.Tensor:
        """The steps + 1 images of one curve."""
        rank = torch.empty(h * w, dtype=torch.long)
        rank[torch.argsort(heat.flatten(), descending=True, stable=True)] = torch.arange(h * w)
        moved = (rank[None, :] < counts[:, None]).reshape(steps + 1, 1, h, w)  # removed / inserted pixels
        missing = moved if kind == "deletion" else ~moved
        if base_name == "road":
            return road_impute(pixels, missing, seed=seed)
        return torch.where(missing, base, pixels)

    images = (perturbed(kind, heat) for kind, heat, _ in checked)
    probs = _probabilities(model, images, len(checked) * (steps + 1), mean, std, output, batch_size, progress)
    fractions = counts.double() / (h * w)
    found = []
    for i, (kind, _, target) in enumerate(checked):
        rows = probs[i * (steps + 1):(i + 1) * (steps + 1)]
        check_target_range([target], rows.shape[1])
        intact = 0 if kind == "deletion" else steps
        if target is None:
            target = int(rows[intact].argmax())
        p = rows[:, target]
        reference = float(p[intact])
        if not reference > 0.0:
            raise ValueError(
                f"the model gives class {target} a probability of {reference:g} on the intact image, so a "
                "curve normalised to it is undefined; pick a target the model considers possible"
            )
        scores = (p / reference).clamp(0.0, 1.0)
        auc = float(torch.trapezoid(scores, fractions))
        found.append(Curve(kind, fractions.float(), scores.float(), p.float(), auc, int(target), base_name))
    return found


def _probabilities(
    model: nn.Module, pixels: Iterable[torch.Tensor], total: int, mean: Stats, std: Stats, output: Output,
    batch_size: int, progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Probabilities (N, classes), float64 on the CPU, of the rows of the (n, C, H, W) unnormalised
    tensors ``pixels`` yields (``total`` rows in all), regrouped into forward passes of ``batch_size``
    channels-last images."""
    rows = []
    pending: list[torch.Tensor] = []
    waiting = done = 0
    channels_last = [True]

    def forward(x: torch.Tensor) -> Any:
        # channels-last images make CPU convolutions about twice as fast; a model that needs contiguous
        # input (a view() of it) fails on them, and then gets contiguous batches from then on
        if channels_last[0]:
            try:
                return call_forward(model, x.contiguous(memory_format=torch.channels_last))
            except Exception:
                channels_last[0] = False
        return call_forward(model, x)

    first: list[torch.Tensor] = []  # one model input, to ask whether a one-column output is a sigmoid's

    def run(batch: torch.Tensor) -> None:
        nonlocal done
        x = model_input(model, to_batch(batch, mean, std))
        first[:] = first or [x[:1]]
        rows.append(outputs.select(forward(x), output).detach().double().cpu())
        done += batch.shape[0]
        if progress is not None:
            progress(done / max(total, 1))

    with model_session(model, eval_mode=True), torch.no_grad():
        for part in pixels:
            pending.append(part)
            waiting += part.shape[0]
            while waiting >= batch_size:
                joined = torch.cat(pending)
                run(joined[:batch_size])
                pending, waiting = [joined[batch_size:]], waiting - batch_size
        if waiting:
            run(torch.cat(pending))
    scores = torch.cat(rows)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(
            "the model's class scores are not finite (NaN or inf) on some perturbed images; check the "
            "image, mean/std and the model's weights"
        )
    squashed = None  # a one-column score: a sigmoid head's probability, or a logit?
    if scores.shape[1] == 1 and first and not is_script(model):
        squashed = probe(model, first[0], output).sigmoid_scores(model)
    return outputs.as_probabilities(scores, squashed=squashed)


def _baseline(baseline: Any, pixels: torch.Tensor, model: nn.Module) -> tuple[str, torch.Tensor | None]:
    """(name, (1, C, H, W) baseline pixels) for a baseline name or image; ``None`` pixels for ROAD."""
    if isinstance(baseline, str):
        if baseline == "blur":
            return baseline, gaussian_blur(pixels, _BLUR_SIGMA * min(pixels.shape[2:]))
        if baseline == "black":
            return baseline, torch.zeros_like(pixels)
        if baseline == "mean":
            return baseline, pixels.mean(dim=(2, 3), keepdim=True).expand_as(pixels)
        if baseline == "road":
            return baseline, None
        if baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {', '.join(map(repr, BASELINES))} or an image, got {baseline!r}"
            )
    try:
        base = to_batch(baseline, model=model, single=True)
    except (TypeError, ValueError) as err:
        raise type(err)(f"baseline: {err}") from err
    if base.shape != pixels.shape:
        raise ValueError(
            f"the baseline image has shape {tuple(base.shape[1:])} but the image has {tuple(pixels.shape[1:])}; "
            "give a baseline of the same size and channel count"
        )
    return "image", base


def gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """``pixels`` (N, C, H, W) blurred by a separable Gaussian of ``sigma`` pixels (kernel radius
    3·sigma, edges replicated)."""
    if not (isinstance(pixels, torch.Tensor) and pixels.ndim == 4 and pixels.is_floating_point()):
        raise TypeError("pixels must be a floating-point (N, C, H, W) tensor")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}")
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(pixels.dtype)
    c = pixels.shape[1]
    out = F.pad(pixels, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def road_impute(
    pixels: torch.Tensor, missing: torch.Tensor, *, noise: float = ROAD_NOISE, seed: int = 0
) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022) of one image for many masks.

    ``pixels`` (1, C, H, W); ``missing`` (S, 1, H, W) bool, True where a pixel is removed. Returns
    (S, C, H, W): known pixels as they are; the missing pixels, per channel, the solution of the
    paper's sparse linear system — each missing pixel equals the weighted mean of its in-image
    neighbours (1/6 direct, 1/12 diagonal), known neighbours fixed — plus Gaussian noise of standard
    deviation ``noise`` drawn from ``seed``. The system is symmetric positive definite and is solved by
    Jacobi-preconditioned conjugate gradients (float32; float64 for a double image) from the image's
    mean colour, until the root-mean-square residual is below 1e-6 pixel units (within 1e-3 of the
    exact solution, below the noise; see the tests). With every pixel missing, the mean colour is the answer."""
    if not (isinstance(pixels, torch.Tensor) and pixels.ndim == 4 and pixels.shape[0] == 1
            and pixels.is_floating_point()):
        raise TypeError("pixels must be one floating-point image as a (1, C, H, W) tensor")
    if not (isinstance(missing, torch.Tensor) and missing.dtype == torch.bool and missing.ndim == 4
            and missing.shape[1] == 1 and missing.shape[2:] == pixels.shape[2:]):
        raise ValueError(f"missing must be a bool (S, 1, H, W) tensor with H, W = {tuple(pixels.shape[2:])}")
    s, c = missing.shape[0], pixels.shape[1]
    h, w = pixels.shape[2:]
    dtype = torch.promote_types(pixels.dtype, torch.float32)
    image = pixels.to(dtype).expand(s, -1, -1, -1).reshape(s * c, 1, h, w)
    unknown = missing.to(image.dtype).repeat_interleave(c, dim=0)  # (S·C, 1, H, W): one system per row
    mean = image[:c].mean(dim=(2, 3)).reshape(1, c, 1, 1).expand(s, -1, -1, -1).reshape(s * c, 1, 1, 1)
    fill = unknown * mean
    count = unknown.flatten(1).sum(1)
    solvable = ((count > 0) & (count < h * w)).nonzero().flatten()
    if solvable.numel():
        fill[solvable] = _harmonic_fill(image[solvable], unknown[solvable], fill[solvable])
    generator = torch.Generator().manual_seed(seed)
    fill = fill + unknown * noise * torch.randn(fill.shape, generator=generator, dtype=fill.dtype)
    filled = image * (1 - unknown) + fill
    return filled.reshape(s, c, h, w).to(pixels.dtype)


def _harmonic_fill(image: torch.Tensor, unknown: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Solve ROAD's system for every row of ``image``/``unknown`` (B, 1, H, W) from the start ``u``
    (zero at known pixels) by preconditioned conjugate gradients; rows that have converged are
    dropped from the batch every few iterations."""
    kernel = _ROAD_KERNEL.to(image.dtype).view(1, 1, 3, 3)

    def neighbours(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=1)  # zero padding: neighbours outside the image weigh 0

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).flatten(1).sum(1).view(-1, 1, 1, 1)

    degree = neighbours(torch.ones_like(image[:1]))  # sum of in-image neighbour weights
    r = unknown * (neighbours(image * (1 - unknown) + u) - degree * u)  # b - A·u
    z = r / degree
    p = z
    rz = dot(r, z)
    limit = _ROAD_TOL**2 * unknown.flatten(1).sum(1).view(-1, 1, 1, 1)
    out = u.clone()
    index = torch.arange(u.shape[0])
    for step in range(10 * (image.shape[2] + image.shape[3]) + 100):
        if step % 8 == 0:
            done = (dot(r, r) <= limit).flatten()
            if bool(done.any()):
                out[index[done]] = u[done]
                keep = ~done
                index, u, r, p, rz, unknown, limit = (t[keep] for t in (index, u, r, p, rz, unknown, limit))
                if not index.numel():
                    return out
        ap = unknown * (degree * p - neighbours(p))
        alpha = rz / dot(p, ap).clamp_min(1e-30)
        u = u + alpha * p
        r = r - alpha * ap
        z = r / degree
        rz_next = dot(r, z)
        p = z + rz_next / rz.clamp_min(1e-30) * p
        rz = rz_next
    out[index] = u
    return out


# --- randomisation test ---------------------------------------------------------------------------


def randomization_test(
    model: nn.Module,
    image: Image,
    method: Method,
    target: int | None = None,
    *,
    layers: Sequence[str] | None = None,
    layer: str | None = None,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[tuple[str, float]]:
    """The cascading model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for
    saliency maps"): on a deep copy of ``model``, re-initialise parameterised layers from the output
    side down, cumulatively, and after each step compute the map again and its :func:`spearman` rank
    correlation with the map of the intact copy. Returns ``[(layer name, correlation), …]`` in the
    order randomised. A map that explains the model should change (correlation falls towards 0) as
    the weights it depends on are destroyed; one that stays high shows the input, not the model.

    ``method``: a name from :data:`cnn_widgets.METHODS`, run by :func:`cnn_widgets.attribute` with
    ``target`` (default: the top prediction of the intact model, kept fixed through the cascade),
    ``layer`` (for methods that need one; default the layer it chose on the intact copy),
    ``mean``/``std``, ``output`` and ``options``; or a callable
    ``method(model, image) -> map`` (an H×W tensor or array, or an ``Attribution``) given the copy and
    ``image`` as passed here, which picks its own target and options (``target`` must then be
    ``None``).

    ``layers``: the steps, in order — module names; a container (``"features.conv4"``, a block) is
    re-initialised as a whole in one step. Default: every module with parameters of its own, in
    reverse order of first execution (one forward pass of the copy). Re-initialisation calls each
    module's own ``reset_parameters()`` (PyTorch's default initialisation; BatchNorm also resets its
    running statistics), as Quantus does, with the global RNG seeded from ``seed`` inside
    ``torch.random.fork_rng`` so the caller's RNG state is unchanged; a module without
    ``reset_parameters`` has each of its parameters randomly permuted instead. ``progress(fraction)``
    is called as the work proceeds (also inside each attribution) and may raise :class:`cnn_widgets.Cancelled`. The user's model is only
    copied (under its lock), never run or changed.
    """
    return [(name, rho) for name, rho, _ in randomization_maps(
        model, image, method, target, layers=layers, layer=layer, mean=mean, std=std, output=output,
        seed=seed, options=options, progress=progress)[1]]


def randomization_maps(
    model: nn.Module,
    image: Image,
    method: Method,
    target: int | None = None,
    *,
    layers: Sequence[str] | None = None,
    layer: str | None = None,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[torch.Tensor, list[tuple[str, float, torch.Tensor]]]:
    """:func:`randomization_test` with the maps: ``(original map, [(layer, spearman, map after that
    step), …])``, maps H×W float64 on the CPU — what the :class:`~cnn_widgets.Metrics` slider shows.
    Arguments as in :func:`randomization_test`."""
    check_model(model)
    if is_script(model):
        raise TypeError(
            "randomization_test re-initialises layers of a copy of the model, which needs the eager "
            "nn.Module; pass the module the TorchScript model was made from"
        )
    outputs.check_output(output)
    seed = _seed(seed)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking the fraction done, got {type(progress).__name__}")
    if isinstance(method, str):
        check_method(method)
    elif not callable(method):
        raise TypeError(
            f"method must be a name from cnn_widgets.METHODS or a callable (model, image) -> map, got "
            f"{type(method).__name__}"
        )
    elif target is not None or layer is not None:
        raise ValueError("target and layer are for METHODS names; a callable method chooses its own target and layer, so pass None")
    if options is not None and (not isinstance(options, Mapping) or not isinstance(method, str)):
        raise TypeError("options must be a dict of the method's options, and only goes with a METHODS name")
    if target is not None:
        target = class_index(target)
    if layer is not None:
        check_layer_names(model, [layer])
    to_batch(image, mean, std, model=model)  # bad images fail before the copy is made
    with model_session(model):  # under the lock, so no widget's hooks are copied along
        try:
            twin = copy.deepcopy(model)
        except Exception as err:
            raise TypeError(
                f"randomization_test works on a copy of the model, but this {type(model).__name__} cannot be "
                f"deep-copied ({type(err).__name__}: {err}); remove the attribute that cannot be copied"
            ) from err
    steps = _cascade(twin, image, mean, std) if layers is None else _named_steps(twin, layers)
    if not steps:
        raise ValueError("the model has no parameterised layers that run, so there is nothing to randomise")

    chosen: dict[str, Any] = {"target": target, "layer": layer}

    def compute(step: int) -> torch.Tensor:
        if callable(method):
            found = method(twin, image)
        else:
            info = check_method(method)
            within = None if progress is None else (lambda f: progress((step + f) / (len(steps) + 1)))
            found = attribute(
                twin, image, method, chosen["target"], chosen["layer"] if info.needs_layer else None,
                mean, std, output=output, options=options, progress=within,
            )
            chosen["target"], chosen["layer"] = found.target, found.layer
        return _map_of(found, "the method's map", None)[0]

    original = compute(0)
    generator = torch.Generator().manual_seed(seed)
    results: list[tuple[str, float, torch.Tensor]] = []
    for i, (name, modules) in enumerate(steps):
        step_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        for module in modules:
            _reinitialise(module, step_seed)
        current = compute(i + 1)
        if current.shape != original.shape:
            raise ValueError(f"the method returned a {tuple(current.shape)} map after randomising {name!r}, "
                             f"but {tuple(original.shape)} before")
        results.append((name, spearman(original, current), current))
        if progress is not None:
            progress((i + 2) / (len(steps) + 1))
    return original, results


def _own_params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _cascade(twin: nn.Module, image: Image, mean: Stats, std: Stats) -> list[tuple[str, list[nn.Module]]]:
    """Modules of ``twin`` with parameters of their own, output side first (reverse order of first
    call in one eval-mode forward pass)."""
    order: list[str] = []
    handles = []
    with model_session(twin, eval_mode=True, hooks=True), torch.no_grad():
        try:
            for name, module in twin.named_modules():
                if _own_params(module):
                    handles.append(module.register_forward_hook(
                        lambda m, a, o, name=name: None if name in order else order.append(name)))
            call_forward(twin, model_input(twin, to_batch(image, mean, std, model=twin)))
        finally:
            for h in handles:
                h.remove()
    modules = dict(twin.named_modules())
    return [(name or "<model>", [modules[name]]) for name in reversed(order)]


def _named_steps(twin: nn.Module, layers: Any) -> list[tuple[str, list[nn.Module]]]:
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a list of module names, got {type(layers).__name__} {layers!r}")
    if not layers:
        raise ValueError("layers is empty: name the layers to randomise, or pass layers=None for the whole cascade")
    names = check_layer_names(twin, layers)
    modules = dict(twin.named_modules())
    steps = []
    for name in names:
        inside = [m for m in modules[name].modules() if _own_params(m)]
        if not inside:
            raise ValueError(f"layer {name!r} has no parameters, so randomising it changes nothing; drop it")
        steps.append((name, inside))
    return steps


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Re-draw ``module``'s own parameters: its ``reset_parameters()`` under a seeded, forked global
    RNG; or, without one, a random permutation of each parameter's values."""
    params = _own_params(module)
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        cuda = sorted({p.device.index or 0 for p in params if p.is_cuda})
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed)
            reset()
        return
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            order = torch.randperm(p.numel(), generator=generator).to(p.device)
            p.copy_(p.flatten()[order].view_as(p))


# --- Captum's infidelity and sensitivity -----------------------------------------------------------

INFIDELITY_NOISE = 0.01
"""Default standard deviation of :func:`infidelity`'s Gaussian perturbations, in 0‥1 pixel units (2.5/255:
small enough that the score responds almost linearly)."""

SENSITIVITY_RADIUS = 0.02
"""Default radius of :func:`sensitivity_max`'s perturbations (L∞ ball, 0‥1 pixel units; Captum's value,
about 5/255)."""


def infidelity(
    model: nn.Module,
    image: Image,
    attribution_map: Map,
    target: int | None = None,
    *,
    noise: float = INFIDELITY_NOISE,
    patch: int | None = None,
    n_perturb_samples: int = 32,
    normalize: bool = True,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """Captum's ``infidelity`` (Yeh et al. 2019) of a map: the expected squared error between the
    change of the target's score when the image is perturbed, f(x) − f(x − I), and what the map
    predicts for it, Iᵀφ. Lower is better (0: the map is an exact linear model of the score nearby).

    Perturbations I: Gaussian noise of standard deviation ``noise`` (pixel units, before ``mean``/
    ``std``), one value per ``patch``×``patch`` square (default 1/8 of the image's shorter side),
    shared by its pixels and channels — the map has one value per pixel (spread evenly over the
    channels for Iᵀφ), and squares probe regions, the scale at which a heatmap is read (with
    ``patch=1``, per-pixel noise, the gradient is the best possible map, Yeh et al.);
    ``n_perturb_samples`` of them drawn from ``seed`` (the global RNG is not used). ``normalize=True`` (default, Captum's option) rescales the map by the
    least-squares factor first, so maps in different units (gradients, CAM activations) compare fairly;
    with ``False`` the value is in the score's units squared. The score is the one
    :func:`cnn_widgets.attribute` explains: the selected class score (``output=``), softmaxed or not as
    the model returns it. ``target``: default the Attribution's target or the top prediction.
    Forward passes of up to ``batch_size`` images run in eval mode in one model session; the model is
    left untouched."""
    from captum.metrics import infidelity as captum_infidelity

    check_model(model)
    outputs.check_output(output)
    noise = _positive_float("noise", noise)
    n = _positive_int("n_perturb_samples", n_perturb_samples)
    batch_size = _positive_int("batch_size", batch_size)
    seed = _seed(seed)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    to_batch(image, mean, std, model=model, single=True)
    pixels = to_batch(image, model=model, single=True)
    patch = max(1, min(pixels.shape[2:]) // 8) if patch is None else _positive_int("patch", patch)
    heat, map_target = _map_of(attribution_map, "attribution_map", pixels.shape[2:])
    target = map_target if target is None else class_index(target)
    c = pixels.shape[1]
    phi = (heat / c).to(pixels.dtype).expand(1, c, -1, -1).contiguous()
    generator = torch.Generator().manual_seed(seed)

    h, w = pixels.shape[2:]
    cells = (math.ceil(h / patch), math.ceil(w / patch))

    def perturb(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse = noise * torch.randn((x.shape[0], 1, *cells), generator=generator, dtype=x.dtype)
        i = coarse.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)[:, :, :h, :w].expand_as(x)
        return i, x - i

    with model_session(model, eval_mode=True), torch.no_grad():
        def forward(x: torch.Tensor) -> torch.Tensor:
            scores = outputs.select(call_forward(model, model_input(model, to_batch(x, mean, std))), output)
            return scores.to(x.dtype).cpu()

        if target is None:
            target = int(forward(pixels).argmax(dim=1)[0])
        check_target_range([target], forward(pixels).shape[1])
        try:
            value = captum_infidelity(
                forward, perturb, pixels, phi, target=target, n_perturb_samples=n,
                max_examples_per_batch=min(batch_size, n), normalize=normalize,
            )
        except AssertionError as err:  # Captum checks shapes with assert
            raise ValueError(f"infidelity: {err}") from err
    return float(value.flatten()[0])


def sensitivity_max(
    model: nn.Module,
    image: Image,
    method: Method,
    target: int | None = None,
    *,
    layer: str | None = None,
    radius: float = SENSITIVITY_RADIUS,
    n_perturb_samples: int = 8,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> float:
    """Captum's ``sensitivity_max`` (Yeh et al. 2019) of a method on an image: the largest relative
    change of its map, ‖φ(x + δ) − φ(x)‖ / ‖φ(x)‖ (Frobenius norms), over ``n_perturb_samples``
    perturbations δ drawn uniformly from the L∞ ball of ``radius`` pixel units (before ``mean``/``std``).
    Lower is better: a map that jumps under invisible noise explains the noise.

    ``method``: a name from :data:`cnn_widgets.METHODS`, run through :func:`cnn_widgets.attribute`
    (with ``target`` — default the top prediction on the intact image, kept for every perturbed copy
    —, ``layer`` — default the one it picks on the intact image —, ``mean``/``std``, ``output`` and
    ``options``) on all perturbed copies in one batch; or a callable ``method(model, image) -> map``
    called per image, inside a model session (eval mode; the model's state restored after). The perturbations, and methods that draw random numbers, use the global RNG
    seeded from ``seed`` inside ``torch.random.fork_rng``: same seed, same number, and the caller's RNG
    state is unchanged. ``progress(fraction)`` may raise :class:`cnn_widgets.Cancelled`. Every
    attribution goes through :func:`cnn_widgets.attribute`'s model session; the model is left
    untouched."""
    from captum.metrics import sensitivity_max as captum_sensitivity

    check_model(model)
    outputs.check_output(output)
    radius = _positive_float("radius", radius)
    n = _positive_int("n_perturb_samples", n_perturb_samples)
    seed = _seed(seed)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking the fraction done, got {type(progress).__name__}")
    if isinstance(method, str):
        check_method(method)
    elif not callable(method):
        raise TypeError(
            f"method must be a name from cnn_widgets.METHODS or a callable (model, image) -> map, got "
            f"{type(method).__name__}"
        )
    elif target is not None or layer is not None or options is not None:
        raise ValueError("target, layer and options are for METHODS names; a callable method chooses its own")
    if target is not None:
        target = class_index(target)
    to_batch(image, mean, std, model=model, single=True)
    pixels = to_batch(image, model=model, single=True)
    chosen: dict[str, Any] = {"target": target, "layer": layer}
    calls = {"done": 0}

    def explain(given: torch.Tensor | tuple[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor]:
        # Captum passes the unperturbed input as a 1-tuple and expects a 1-tuple back (as attribute() does)
        x = given[0] if isinstance(given, tuple) else given
        if callable(method):
            with model_session(model, eval_mode=True):  # whatever the callable does, the model is restored
                maps = [_map_of(method(model, x[i]), "the method's map", x.shape[2:])[0] for i in range(x.shape[0])]
            heat = torch.stack(maps)
        else:
            with torch.enable_grad():  # Captum runs this under no_grad; gradient methods need it
                within = None if progress is None else (lambda f: progress((calls["done"] + f) / 2))
                found = attribute(
                    model, x, method, [chosen["target"]] * x.shape[0] if chosen["target"] is not None else None,
                    chosen["layer"] if check_method(method).needs_layer else None, mean, std, output=output,
                    options=options, progress=within,
                )
            if chosen["target"] is None:
                chosen["target"] = found.target[0]
            if chosen["layer"] is None:
                chosen["layer"] = found.layer
            heat = found.map.double()
        calls["done"] += 1
        if progress is not None:
            progress(calls["done"] / 2)
        heat = heat[:, None].to(x.dtype)
        return (heat,) if isinstance(given, tuple) else heat

    def perturb(x: torch.Tensor, perturb_radius: float) -> torch.Tensor:
        return x + torch.empty_like(x).uniform_(-perturb_radius, perturb_radius)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            value = captum_sensitivity(
                explain, pixels, perturb_func=perturb, perturb_radius=radius, n_perturb_samples=n,
                max_examples_per_batch=n,
            )
        except AssertionError as err:
            raise ValueError(f"sensitivity_max: {err}") from err
    return float(value.flatten()[0])


# --- rank correlation and localisation ------------------------------------------------------------


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of the flattened ``values`` (float64), tied values sharing their average rank."""
    v = values.detach().flatten().double().cpu()
    _, inverse, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based position where each distinct value starts
    return (first + (counts + 1) / 2.0).double()[inverse]


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman's rank correlation of two equally sized maps: the Pearson correlation of their
    :func:`average_ranks`. A constant map has no order, so its correlation with anything is 0.0."""
    ta, tb = _numbers(a, "a"), _numbers(b, "b")
    if ta.numel() != tb.numel() or ta.numel() == 0:
        raise ValueError(f"spearman needs two non-empty maps of equal size, got {ta.numel()} and {tb.numel()} values")
    ra, rb = average_ranks(ta), average_ranks(tb)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float((ra.square().sum() * rb.square().sum()).sqrt())
    if denominator == 0.0:
        return 0.0
    return float((ra * rb).sum()) / denominator


def pointing_game(map: Map, mask: torch.Tensor | np.ndarray, *, tolerance: int = 0) -> bool | torch.Tensor:
    """Whether the map's maximum lies on the object (Zhang et al. 2018): a hit when *every* pixel
    holding the map's largest value is inside ``mask`` grown by ``tolerance`` pixels (square
    neighbourhood; the paper uses 15 at 224²). Requiring all maxima keeps a flat map from scoring.
    ``map`` H×W (or an ``Attribution``) with an H×W ``mask`` gives a bool; N×H×W with N×H×W masks
    gives a bool tensor (N,)."""
    heat, region, single = _map_and_mask(map, mask)
    tolerance = _non_negative_int("tolerance", tolerance)
    if tolerance:
        region = F.max_pool2d(region[:, None].float(), 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0] > 0
    peak = heat == heat.flatten(1).amax(dim=1)[:, None, None]
    hits = ~(peak & ~region).flatten(1).any(dim=1)
    return bool(hits[0]) if single else hits


def mass_inside(map: Map, mask: torch.Tensor | np.ndarray) -> float | torch.Tensor:
    """The share of the map's positive mass that lies inside ``mask`` (the "energy-based pointing
    game" of Wang et al. 2020, Score-CAM): sum of max(map, 0) inside / sum of max(map, 0), in 0‥1;
    negative evidence is left out. NaN when the map has no positive value. Shapes as in
    :func:`pointing_game`."""
    heat, region, single = _map_and_mask(map, mask)
    positive = heat.clamp(min=0).double()
    total = positive.flatten(1).sum(dim=1)
    inside = (positive * region).flatten(1).sum(dim=1)
    share = torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))
    return float(share[0]) if single else share.float()


# --- argument checks ------------------------------------------------------------------------------


def _map_of(value: Any, what: str, size: torch.Size | None) -> tuple[torch.Tensor, int | None]:
    """An H×W float64 CPU map from a tensor, array or ``Attribution`` (leading singleton dimensions
    dropped), checked to be finite and, with ``size``, of that size; and the Attribution's target."""
    target = None
    if isinstance(value, Attribution):
        target = value.target if isinstance(value.target, int) else None
        value = value.map
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iufb":
            raise TypeError(f"{what} must hold numbers, got an array of {value.dtype}")
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be an H×W tensor, array or Attribution, got {type(value).__name__}")
    t = value.detach()
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2 or t.is_complex():
        raise ValueError(f"{what} must be one H×W map, got shape {tuple(value.shape)}")
    t = t.to("cpu", torch.float64)
    if size is not None and tuple(t.shape) != tuple(size):
        raise ValueError(f"{what} is {tuple(t.shape)} but the image is {tuple(size)}; give a map of the image's size")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    return t, target


def _map_and_mask(map: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(N, H, W) map and bool mask and whether one map was given, checked against each other."""
    if isinstance(map, Attribution):
        map = map.map
    heat = torch.as_tensor(map).detach().cpu() if isinstance(map, (torch.Tensor, np.ndarray)) else None
    if heat is None or heat.ndim not in (2, 3) or heat.is_complex() or heat.dtype == torch.bool:
        raise TypeError("map must be an H×W or N×H×W tensor or array of numbers (or an Attribution)")
    region = torch.as_tensor(mask).detach().cpu() if isinstance(mask, (torch.Tensor, np.ndarray)) else None
    if region is None or region.shape != heat.shape:
        got = tuple(region.shape) if region is not None else type(mask).__name__
        raise ValueError(f"mask must be a tensor or array shaped like the map {tuple(heat.shape)}, got {got}")
    if region.dtype != torch.bool:
        if region.is_complex() or not bool(((region == 0) | (region == 1)).all()):
            raise ValueError("mask must be boolean (or 0/1): True on the object")
        region = region != 0
    heat = heat.double()
    if not bool(torch.isfinite(heat).all()):
        raise ValueError("map contains NaN or infinite values")
    single = heat.ndim == 2
    return (heat[None], region[None], True) if single else (heat, region, False)


def _numbers(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{what} must be a tensor or array of numbers, got {type(value).__name__}")
    t = torch.as_tensor(value).detach()
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                                    torch.int64, torch.uint8, torch.bool)):
        raise TypeError(f"{what} must hold real numbers, got {t.dtype}")
    return t


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _seed(value: Any) -> int:
    try:
        seed = operator.index(value)
    except TypeError:
        raise TypeError(f"seed must be an int, got {type(value).__name__} {value!r}") from None
    if isinstance(value, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {value!r}")
    return seed
