"""The Captum-backed methods, each runner registered beside its metadata with :func:`method`.

Each runner takes the :class:`~cnn_widgets.attribution.engine.Run` and returns ``(raw, per-channel map
at input resolution)``. Options use Captum's own argument names and are passed through.
"""

from __future__ import annotations

from collections.abc import Callable

import math

import torch
from torch import nn
from captum.attr import (
    Deconvolution,
    DeepLift,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerAttribution,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

from ..unshare import UnshareError, unshared_copy
from .engine import (
    _CHUNK_ROWS, LAYER_REUSE, Run, auto_side, feature_mask, float_baseline, layer_module, relu_safe_copy,
)
from .schema import Option, method
from .surrogate import linear_surrogate

_DEEPLIFT_REUSE = (
    "deeplift needs every nonlinearity module to run once per forward pass, but {name!r} ({type}) runs "
    "more than once (one module reused in forward, as in torchvision's ResNet blocks), which Captum's "
    "DeepLift cannot attribute through. Give each use its own module, or use integrated_gradients or "
    "gradient_shap"
)

_BASELINES = Option(
    "baselines",
    "float",
    0.0,
    "constant reference value in model-input space (after mean/std, so 0 is the mean colour of "
    "normalised inputs); a tensor broadcastable to the input is passed to Captum as it is",
    also=("tensor",),
    label="baseline value",
)
_PPE = Option(
    "perturbations_per_eval",
    "int",
    8,
    "perturbed inputs per forward pass: faster when larger, but more memory and a slower cancel",
    min=1,
    max=256,
    label="inputs per pass",
)
_PATCH = Option(
    "patch_size",
    "int",
    None,
    "side in pixels of the square patches that form the feature_mask; None: an eighth of the shorter "
    "image side, rounded up (8×8 patches)",
    min=1,
    max=4096,
    label="patch size",
)
_MASK = Option(
    "feature_mask",
    "tensor",
    None,
    "Captum's feature_mask: an integer tensor of feature ids, one per pixel, shaped (H, W), (1, 1, H, W) or "
    "(1, C, H, W); overrides patch_size",
    tensor_dtype="integer",
    label="feature mask",
)
_ABS = Option(
    "abs", "bool", True, "take the absolute value of the gradient (Captum's Saliency default)", label="absolute value"
)


def _interp(default: str) -> Option:
    return Option(
        "interpolate_mode",
        "choice",
        default,
        "how the layer-resolution Grad-CAM is upsampled to the input (Captum's LayerAttribution.interpolate)",
        choices=("bilinear", "nearest", "bicubic", "area"),
        label="upsampling",
    )


@method(
    "saliency",
    "Gradient of the target score with respect to each input pixel (Simonyan et al. 2014).",
    "max_abs",
    (_ABS,),
)
def _saliency(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    t = run.captum_target()
    run.progress.expect(run.n)
    with run.forward(run.model) as f:
        raw = Saliency(f).attribute(run.grad_input(), target=t, abs=run.opts["abs"])
    return raw, raw


@method(
    "integrated_gradients",
    "Gradients averaged along the straight path from a baseline to the input, times "
    "(input − baseline) (Sundararajan et al. 2017); sums to the score difference.",
    "sum",
    (
        Option("n_steps", "int", 50, "points on the integration path", min=2, max=2000, label="steps"),
        Option(
            "method",
            "choice",
            "gausslegendre",
            "integration rule",
            choices=("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid"),
            label="integration rule",
        ),
        _BASELINES,
        Option(
            "internal_batch_size",
            "int",
            None,
            "path points × images per forward pass; None: all at once (about eight per pass when "
            "a progress callback is given)",
            min=1,
            max=100000,
            label="inputs per pass",
        ),
    ),
    slow=True,
)
def _integrated_gradients(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    o = run.opts
    if o["internal_batch_size"] is None and run.chunked:
        o["internal_batch_size"] = run.n * max(1, _CHUNK_ROWS // run.n)
    t = run.captum_target()
    run.progress.expect(run.n * o["n_steps"])
    with run.forward(run.model) as f:
        raw = IntegratedGradients(f).attribute(
            run.x,
            baselines=float_baseline(run),
            target=t,
            n_steps=o["n_steps"],
            method=o["method"],
            internal_batch_size=o["internal_batch_size"],
        )
    return raw, raw


@method(
    "smoothgrad",
    "Saliency averaged over noisy copies of the input (Smilkov et al. 2017; Captum NoiseTunnel "
    "over Saliency).",
    "max_abs",
    (
        Option("nt_samples", "int", 20, "noisy samples per image", min=1, max=1000, label="samples"),
        Option(
            "stdevs",
            "float",
            None,
            "standard deviation of the Gaussian noise in model-input units; None: 15% of the "
            "input's value range, as the paper suggests",
            min=0.0,
            label="noise level",
        ),
        Option(
            "nt_samples_batch_size",
            "int",
            None,
            "noisy samples per forward pass; None: all at once (about eight images per pass "
            "when a progress callback is given)",
            min=1,
            max=1000,
            label="samples per pass",
        ),
        _ABS,
    ),
    slow=True,
)
def _smoothgrad(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    o = run.opts
    if o["stdevs"] is None:
        o["stdevs"] = 0.15 * float(run.x.max() - run.x.min())
    if o["nt_samples_batch_size"] is None and run.chunked:
        o["nt_samples_batch_size"] = max(1, _CHUNK_ROWS // run.n)
    t = run.captum_target()
    run.progress.expect(run.n * o["nt_samples"])
    with run.forward(run.model) as f:
        raw = NoiseTunnel(Saliency(f)).attribute(
            run.x,
            nt_type="smoothgrad",
            nt_samples=o["nt_samples"],
            nt_samples_batch_size=o["nt_samples_batch_size"],
            stdevs=o["stdevs"],
            target=t,
            abs=o["abs"],
        )
    return raw, raw


@method(
    "gradient_shap",
    "Expected gradients × (input − baseline) at random points between baselines and noisy inputs "
    "(Lundberg & Lee 2017, Captum GradientShap).",
    "sum",
    (
        Option("n_samples", "int", 20, "random samples per image", min=1, max=200, label="samples"),
        Option("stdevs", "float", 0.0, "standard deviation of noise added to the input", min=0.0, label="noise level"),
        _BASELINES,
    ),
)
def _gradient_shap(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    o = run.opts
    baselines = float_baseline(run, samples=True)
    if not isinstance(baselines, torch.Tensor):
        baselines = torch.full((1, *run.x.shape[1:]), float(baselines), dtype=run.x.dtype, device=run.x.device)
    t = run.captum_target()
    run.progress.expect(run.n * o["n_samples"])
    with run.forward(run.model) as f:
        raw = GradientShap(f).attribute(
            run.x, baselines=baselines, n_samples=o["n_samples"], stdevs=o["stdevs"], target=t
        )
    return raw, raw


def _hookable_copy(run: Run) -> nn.Module:
    """A private copy in which every nonlinearity call site is its own module (a shared ``ReLU`` per
    ResNet block, ``F.relu`` calls), so Captum's module hooks see each use; when fx cannot trace the
    model, the plain copy (a reused module then gets the clear reuse error)."""
    try:
        return unshared_copy(run.model, example=run.x[:1])
    except UnshareError:
        return relu_safe_copy(run.model)


def _no_relu_note(run: Run, model: nn.Module, name: str) -> None:
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        run.notes.append(
            f"{name} modifies the backward pass at ReLUs, and this model has none (PReLU, LeakyReLU, SiLU, "
            "GELU…): the map equals the plain gradient"
        )


@method(
    "deeplift",
    "DeepLIFT Rescale rule: contributions relative to a baseline (Shrikumar et al. 2017). Needs "
    "each nonlinearity module to run once per forward pass.",
    "sum",
    (_BASELINES,),
    hooks=True,
)
def _deeplift(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    model = _hookable_copy(run)
    x, baselines = run.grad_input(), float_baseline(run)
    if x.dtype in (torch.float16, torch.bfloat16):
        # the rescale rule divides output differences by input differences, which overflow in half precision
        model, x = model.float(), x.detach().float().requires_grad_(True)
        baselines = baselines.float() if isinstance(baselines, torch.Tensor) else baselines
        run.notes.append(f"deeplift ran on a float32 copy of this {str(run.x.dtype).replace('torch.', '')} model")
    nonlinear = {n: m for n, m in model.named_modules() if type(m) in SUPPORTED_NON_LINEAR}
    t = run.captum_target()
    run.progress.expect(2 * run.n)
    with run.forward(model, nonlinear, _DEEPLIFT_REUSE) as f:
        raw = DeepLift(f).attribute(x, baselines=baselines, target=t)
    return raw, raw


@method(
    "input_x_gradient",
    "Input times the gradient of the target score (Shrikumar et al. 2016).",
    "sum",
)
def _input_x_gradient(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    t = run.captum_target()
    run.progress.expect(run.n)
    with run.forward(run.model) as f:
        raw = InputXGradient(f).attribute(run.grad_input(), target=t)
    return raw, raw


def _modified_relu(cls: type) -> Callable[[Run], tuple[torch.Tensor, torch.Tensor]]:
    def run_method(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
        model = _hookable_copy(run)
        _no_relu_note(run, model, run.method)
        t = run.captum_target()
        run.progress.expect(run.n)
        with run.forward(model) as f:
            raw = cls(f).attribute(run.grad_input(), target=t)
        return raw, raw

    return run_method


method(
    "guided_backprop",
    "Gradient with negative gradients stopped at every ReLU (Springenberg et al. 2015).",
    "max_abs",
    hooks=True,
)(_modified_relu(GuidedBackprop))
method(
    "deconvolution",
    "Deconvnet: ReLUs applied to the backward signal instead (Zeiler & Fergus 2014).",
    "max_abs",
    hooks=True,
)(_modified_relu(Deconvolution))


@method(
    "guided_grad_cam",
    "Guided backprop times the upsampled Grad-CAM of the layer (Selvaraju et al. 2017).",
    "max_abs",
    (_interp("bilinear"),),
    needs_layer=True,
)
def _guided_grad_cam(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    model = relu_safe_copy(run.model)
    _no_relu_note(run, model, "guided_grad_cam")
    layer = layer_module(model, run.layer)
    t = run.captum_target()
    run.progress.expect(2 * run.n)
    with run.forward(model, layer, LAYER_REUSE) as f:
        raw = GuidedGradCam(f, layer[run.layer]).attribute(
            run.grad_input(), target=t, interpolate_mode=run.opts["interpolate_mode"]
        )
    return raw, raw


@method(
    "occlusion",
    "Score drop when a sliding window is replaced by the baseline (Zeiler & Fergus 2014).",
    "mean",
    (
        Option(
            "sliding_window_shapes",
            "int",
            None,
            "side of the square window, spanning all channels (a (C, h, w) tuple is passed as "
            "it is); None: an eighth of the shorter image side, rounded up",
            min=1,
            max=4096,
            also=("tuple",),
            label="window size",
        ),
        Option(
            "strides",
            "int",
            None,
            "window step (an int or a (C, h, w) tuple, as Captum takes it); None: half the window",
            min=1,
            max=4096,
            also=("tuple",),
            label="window step",
        ),
        _BASELINES,
        _PPE,
    ),
    slow=True,
)
def _occlusion(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    o = run.opts
    dims = tuple(run.x.shape[1:])
    window = o["sliding_window_shapes"]
    if window is None:
        window = auto_side(run.x)
    if isinstance(window, int):
        window = (dims[0], window, window)
    if len(window) != len(dims) or any(w > d for w, d in zip(window, dims)):
        raise ValueError(
            f"sliding_window_shapes={window} does not fit the image, which reaches the model as (C, H, W) = "
            f"{dims}; give an int side or a (C, h, w) tuple no larger than the image, or use a larger image"
        )
    o["sliding_window_shapes"] = window
    strides = o["strides"]
    if strides is None:
        strides = tuple(max(1, w // 2) for w in window)
        o["strides"] = strides
    steps = strides if isinstance(strides, tuple) else (strides,) * len(dims)
    if len(steps) != len(dims):
        raise ValueError(f"strides={strides} needs one value per input dimension (C, H, W) = {dims}, or one int")
    # a step longer than the window would skip pixels (Captum refuses it): step by the window instead
    clamped = tuple(min(s, w) for s, w in zip(steps, window))
    if clamped[1:] != steps[1:]:
        run.notes.append(
            f"strides={strides} is longer than the {window[1]}×{window[2]} window, which would leave pixels "
            f"never occluded; used strides={clamped}"
        )
    strides = o["strides"] = clamped
    positions = math.prod((d - w) // s + 1 for d, w, s in zip(dims, window, clamped))
    t = run.captum_target()
    run.progress.expect(run.n * (1 + positions))
    with run.forward(run.model) as f:
        raw = Occlusion(f).attribute(
            run.x,
            sliding_window_shapes=window,
            strides=strides,
            baselines=float_baseline(run),
            target=t,
            perturbations_per_eval=o["perturbations_per_eval"],
        )
    return raw, raw


@method(
    "feature_ablation",
    "Score drop when each feature (by default a square patch) is replaced by the baseline.",
    "mean",
    (_PATCH, _MASK, _BASELINES, _PPE),
    slow=True,
)
def _feature_ablation(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    mask, features = feature_mask(run)
    t = run.captum_target()
    run.progress.expect(run.n * (1 + features))
    with run.forward(run.model) as f:
        raw = FeatureAblation(f).attribute(
            run.x,
            baselines=float_baseline(run),
            target=t,
            feature_mask=mask,
            perturbations_per_eval=run.opts["perturbations_per_eval"],
        )
    return raw, raw


def _surrogate_method(kernel_shap: bool) -> Callable[[Run], tuple[torch.Tensor, torch.Tensor]]:
    def run_method(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
        o = run.opts
        mask, features = feature_mask(run)
        t = run.captum_target()
        if kernel_shap and features == 1:
            # Captum's sampler draws coalition sizes 1‥M-1, none for one feature; its Shapley value is exact:
            # the score drop when it is removed
            run.notes.append("one feature (the whole image): its Shapley value is the score drop when it is removed")
            run.progress.expect(2 * run.n)
            with run.forward(run.model) as f:
                raw = FeatureAblation(f).attribute(run.x, baselines=float_baseline(run), target=t, feature_mask=mask)
            return raw, raw
        run.progress.expect(run.n * o["n_samples"])
        with run.forward(run.model) as f:
            if kernel_shap:
                explainer = KernelShap(f)
                explainer.interpretable_model = linear_surrogate(0.0)
            else:
                explainer = Lime(f, interpretable_model=linear_surrogate(o["alpha"]))
            raw = explainer.attribute(
                run.x,
                baselines=float_baseline(run),
                target=t,
                feature_mask=mask,
                n_samples=o["n_samples"],
                perturbations_per_eval=o["perturbations_per_eval"],
            )
        return raw, raw

    return run_method


method(
    "lime",
    "Weighted linear surrogate fitted to the scores of random patch subsets (Ribeiro et al. "
    "2016); the surrogate is a closed-form ridge regression, the lime package's default.",
    "mean",
    (
        Option("n_samples", "int", 200, "random patch subsets evaluated per image", min=1, max=20000, label="samples"),
        Option("alpha", "float", 1.0, "ridge penalty of the linear surrogate", min=0.0, label="ridge penalty"),
        _PATCH,
        _MASK,
        _BASELINES,
        _PPE,
    ),
    slow=True,
)(_surrogate_method(kernel_shap=False))
method(
    "kernel_shap",
    "Shapley values of the patches estimated by LIME with the Shapley kernel (Lundberg & Lee "
    "2017); weighted least squares in closed form.",
    "mean",
    (
        Option("n_samples", "int", 200, "random patch subsets evaluated per image", min=1, max=20000, label="samples"),
        _PATCH,
        _MASK,
        _BASELINES,
        _PPE,
    ),
    slow=True,
)(_surrogate_method(kernel_shap=True))


@method(
    "grad_cam",
    "Layer activations weighted by their spatially averaged gradients (Selvaraju et al. 2017; "
    "Captum LayerGradCam), upsampled to the input.",
    "none",
    (
        Option(
            "relu_attributions",
            "bool",
            True,
            "apply a ReLU to the map, as the paper does (Captum's default is False)",
            label="positive part only",
        ),
        _interp("bilinear"),
    ),
    needs_layer=True,
)
def _grad_cam(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    layer = layer_module(run.model, run.layer)
    t = run.captum_target()
    run.progress.expect(run.n)
    with run.forward(run.model, layer, LAYER_REUSE) as f:
        raw = LayerGradCam(f, layer[run.layer]).attribute(
            run.x, target=t, relu_attributions=run.opts["relu_attributions"]
        )
    full = LayerAttribution.interpolate(raw, tuple(run.x.shape[2:]), interpolate_mode=run.opts["interpolate_mode"])
    return raw, full
