"""Attribution: one registry (:data:`METHODS`) of every method the widgets offer, and one entry point
(:func:`attribute`) that runs any of them on any image form :mod:`cnn_widgets.images` accepts.

Captum-backed methods pass their options to Captum under Captum's own argument names; the CAM family
runs on the capture engine (:mod:`cnn_widgets.cams`). Every call leaves the model as it found it: no
hooks, parameters and buffers bit-identical, ``training``/``requires_grad``/``.grad`` restored, also when
it fails or is cancelled. Methods that need ReLUs without ``inplace=True`` (guided backprop,
deconvolution, DeepLift, guided Grad-CAM) run on a private copy of the model with ``inplace`` off.

Slow methods report progress and can be cancelled: ``attribute(..., progress=callback)`` calls
``callback(fraction)`` after every forward pass (and 0.0 first, 1.0 last); raising :class:`Cancelled`
from it stops the work at that point. With a callback, integrated gradients and SmoothGrad evaluate in
chunks of about eight images (unless ``internal_batch_size`` / ``nt_samples_batch_size`` is given), so a
cancel lands within one chunk; results then differ from an unchunked run only in float rounding.
"""

from __future__ import annotations

import copy
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from captum._utils.models.linear_model import LinearModel
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
from torch import nn
from torch.utils.data import DataLoader

from . import cams
from ._checks import check_layer_names, check_model, model_device, unknown_name_error
from .capture import ModelState, model_lock
from .images import Image, Stats, to_batch
from .layers import spatial_probe

__all__ = ["METHODS", "Attribution", "Cancelled", "MethodInfo", "Option", "attribute"]

_CHUNK_ROWS = 8  # images per forward pass when work is chunked for progress and cancellation


class Cancelled(Exception):
    """Raise from a ``progress`` callback to stop :func:`attribute`; it propagates to the caller after
    the model has been restored."""


@dataclass(frozen=True)
class Option:
    """One tunable argument of a method: what the UI needs to build a control and what is accepted.

    ``type`` is ``"int"``, ``"float"``, ``"bool"``, ``"choice"`` or ``"tensor"`` (Python only, no
    control). ``default=None`` means "chosen from the input" as ``doc`` says. ``also`` lists further
    Python values passed through unchanged: ``"tensor"`` (e.g. a baseline image) or ``"tuple"`` (e.g. a
    Captum window shape)."""

    name: str
    type: str
    default: Any
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    also: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The schema entry as plain JSON values (the UI's view of this option)."""
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "min": self.min,
            "max": self.max,
            "choices": list(self.choices) if self.choices else None,
            "also": list(self.also),
            "doc": self.doc,
        }

    def check(self, method: str, value: Any) -> Any:
        """``value`` converted to the option's type, or a ``ValueError`` saying what is expected."""
        if value is None and self.default is None:
            return None
        if "tensor" in self.also and isinstance(value, torch.Tensor):
            return value
        if "tuple" in self.also and isinstance(value, (tuple, list)):
            if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value):
                return tuple(int(v) for v in value)
            raise self._error(method, value, "a tuple of positive ints")
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            raise self._error(method, value, "True or False")
        if self.type == "choice":
            if value in self.choices:
                return value
            raise self._error(method, value, "one of " + ", ".join(repr(c) for c in self.choices))
        if self.type == "tensor":
            if isinstance(value, torch.Tensor):
                return value
            raise self._error(method, value, "a torch.Tensor")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self._error(method, value, f"{'an int' if self.type == 'int' else 'a number'}{self._range()}")
        if self.type == "int":
            if not isinstance(value, numbers.Integral):
                raise self._error(method, value, f"an int{self._range()}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise self._error(method, value, f"a finite number{self._range()}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self._error(method, value, f"a value{self._range()}")
        return value

    def _range(self) -> str:
        if self.min is not None and self.max is not None:
            return f" between {self.min:g} and {self.max:g}"
        if self.min is not None:
            return f" >= {self.min:g}"
        return ""

    def _error(self, method: str, value: Any, expected: str) -> ValueError:
        extra = " (or " + ", ".join(self.also) + ")" if self.also else ""
        none = ", or None for the automatic choice" if self.default is None else ""
        return ValueError(
            f"option {self.name}={value!r} is not valid for {method!r}: expected {expected}{extra}{none}. "
            f"{self.name}: {self.doc}"
        )


REDUCTIONS: Mapping[str, str] = MappingProxyType(
    {
        "sum": "sum over channels (per-channel contributions add up, as for gradient × input)",
        "max_abs": "per pixel, the channel value of largest magnitude, sign kept (Simonyan et al.'s "
        "max over channels of |gradient| when the gradient is absolute)",
        "mean": "mean over channels (a patch or window spanning all channels gives each the same value)",
        "none": "none: a single-channel map at layer resolution, upsampled bilinearly to the input",
    }
)


@dataclass(frozen=True)
class MethodInfo:
    """A registry entry: what the method does, whether it needs a ``layer``, how channels reduce to
    ``.map`` (a key of :data:`REDUCTIONS`), whether it is slow (the UI shows progress and cancel), and
    its options."""

    name: str
    description: str
    needs_layer: bool
    reduction: str
    slow: bool
    options: tuple[Option, ...]
    backend: str
    run: Callable[[_Run], tuple[torch.Tensor, torch.Tensor]] = field(repr=False, compare=False)

    @property
    def reduction_rule(self) -> str:
        """The reduction in words."""
        return REDUCTIONS[self.reduction]

    def defaults(self) -> dict[str, Any]:
        """Option name → default value."""
        return {o.name: o.default for o in self.options}

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON values, for the UI."""
        return {
            "name": self.name,
            "description": self.description,
            "needs_layer": self.needs_layer,
            "reduction": self.reduction,
            "reduction_rule": self.reduction_rule,
            "slow": self.slow,
            "backend": self.backend,
            "options": [o.to_json() for o in self.options],
        }


@dataclass
class Attribution:
    """One attribution result.

    ``map``: float32 CPU tensor H×W (N×H×W for a batch) at input resolution, signed, in the method's
    own units, channels reduced by the method's rule. ``raw``: what the algorithm returned, unreduced,
    batch dimension kept (per-pixel methods: N×C×H×W; CAM methods: N×1×h×w at layer resolution).
    ``target``: the class index used (a list for a batch); ``top_prediction`` says it was the model's top
    prediction because ``target=None`` was passed. ``options``: the option values actually used, automatic
    choices filled in."""

    map: torch.Tensor
    raw: torch.Tensor
    method: str
    target: int | list[int]
    layer: str | None
    top_prediction: bool
    options: dict[str, Any]


class _Run:
    """Everything one method invocation needs: the model, its input on the model's device, targets,
    layer, checked options and the progress reporter."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: list[int] | None,
        layer: str | None,
        opts: dict[str, Any],
        progress: cams.Progress,
        chunked: bool,
    ) -> None:
        self.model = model
        self.x = x
        self.n = x.shape[0]
        self.targets = targets
        self.layer = layer
        self.opts = opts
        self.progress = progress
        self.chunked = chunked
        self.resolved: list[int] | None = None

    def captum_target(self) -> int | list[int]:
        """Targets as Captum takes them (an int for one image), resolving ``None`` to the top
        prediction with one forward pass."""
        if self.resolved is None:
            if self.targets is None:
                with torch.no_grad():
                    self.resolved = cams.resolve_targets(self.model(self.x), None)
            else:
                self.resolved = list(self.targets)
        return self.resolved[0] if self.n == 1 else self.resolved

    def grad_input(self) -> torch.Tensor:
        """The input as a leaf requiring grad, as Captum's gradient methods want it."""
        return self.x.detach().requires_grad_(True)

    def forward(
        self, model: nn.Module, once: Mapping[str, nn.Module] | None = None, reuse_error: str = ""
    ) -> _Forward:
        """The model wrapped for Captum (see :class:`_Forward`); use it as a context manager."""
        return _Forward(self, model, dict(once or {}), reuse_error)


class _Forward(nn.Module):
    """The model as Captum sees it. On the first call it checks the output is (N, classes) and the
    targets are in range; after each call it reports the rows evaluated (the progress callback may
    raise :class:`Cancelled`). Modules in ``once`` must run at most once per forward pass; if one is
    the run's layer, its output must be (N, C, H, W). The checks are forward hooks, registered on entering
    the context and removed on leaving it."""

    def __init__(self, run: _Run, model: nn.Module, once: dict[str, nn.Module], reuse_error: str) -> None:
        super().__init__()
        self.inner = model
        self._run = run
        self._once = once
        self._reuse_error = reuse_error
        self._calls: dict[str, int] = {}
        self._checked = False
        self._handles: list[Any] = []

    def __enter__(self) -> _Forward:
        try:
            for name, module in self._once.items():
                self._handles.append(module.register_forward_hook(self._hook_for(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook_for(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._calls[name] = self._calls.get(name, 0) + 1
            if self._calls[name] > 1:
                raise ValueError(self._reuse_error.format(name=name, type=type(module).__name__))
            if name == self._run.layer:
                if not isinstance(output, torch.Tensor):
                    raise ValueError(
                        f"layer {name!r} returns a {type(output).__name__}, not a tensor; pick one of its "
                        "submodules"
                    )
                cams.check_spatial(name, output)

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._calls.clear()
        out = self.inner(x)
        if not self._checked:
            cams.check_targets(out, self._run.resolved or self._run.targets)
            self._checked = True
        self._run.progress.advance(x.shape[0])
        return out


_LAYER_REUSE = (
    "layer {name!r} ({type}) runs more than once per forward pass (a shared module), so its output is "
    "ambiguous; pick the block that contains it, or another module"
)
_DEEPLIFT_REUSE = (
    "deeplift needs every nonlinearity module to run once per forward pass, but {name!r} ({type}) runs "
    "more than once (one module reused in forward, as in torchvision's ResNet blocks), which Captum's "
    "DeepLift cannot attribute through. Give each use its own module, or use integrated_gradients or "
    "gradient_shap"
)


def _relu_safe_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every ``inplace`` flag off, for methods that hook nonlinearities;
    the user's model is never touched."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return clone.eval()


def _layer_module(model: nn.Module, layer: str) -> dict[str, nn.Module]:
    return {layer: dict(model.named_modules())[layer]}


def _fit_linear_surrogate(
    model: LinearModel, dataloader: DataLoader, construct_kwargs: dict[str, Any], **_: Any
) -> dict[str, float]:
    """Captum ``LinearModel`` training function: closed-form weighted least squares with intercept and
    an optional ridge penalty ``alpha`` on the coefficients (minimises
    ``Σ wᵢ (yᵢ − b − xᵢ·β)² + α‖β‖²``). With ``alpha=0`` this is what Captum's default
    ``SkLearnLinearRegression`` fits for KernelSHAP; with ``alpha=1`` it is the ``lime`` package's
    default ``Ridge`` surrogate. Exact, deterministic, and needs no scikit-learn."""
    xs, ys, ws = [], [], []
    for x, y, w in dataloader:
        xs.append(x)
        ys.append(y)
        ws.append(w)
    x = torch.cat(xs).double()
    y = torch.cat(ys).double().reshape(-1)
    w = torch.cat(ws).double().reshape(-1)
    alpha = float(construct_kwargs.get("alpha", 0.0))
    wn = w / w.sum()
    x_mean = wn @ x
    y_mean = wn @ y
    sw = w.sqrt()
    a = sw[:, None] * (x - x_mean)
    b = sw * (y - y_mean)
    if alpha > 0:
        a = torch.cat([a, math.sqrt(alpha) * torch.eye(x.shape[1], dtype=a.dtype)])
        b = torch.cat([b, torch.zeros(x.shape[1], dtype=b.dtype)])
    coef = torch.linalg.lstsq(a, b[:, None], driver="gelsd").solution[:, 0]
    intercept = y_mean - x_mean @ coef
    model._construct_model_params(
        norm_type=None, weight_values=coef.float().view(1, -1), bias_value=intercept.float().view(1)
    )
    return {}


def linear_surrogate(alpha: float) -> LinearModel:
    """The interpretable model for ``lime`` (``alpha`` > 0, ridge) and ``kernel_shap`` (``alpha=0``)."""
    return LinearModel(train_fn=_fit_linear_surrogate, alpha=alpha)


def patch_mask(height: int, width: int, patch: int) -> torch.Tensor:
    """A Captum ``feature_mask`` (1, 1, H, W) of square ``patch``-pixel patches numbered row by row
    (edge patches are cut short)."""
    ys = torch.arange(height)[:, None] // patch
    xs = torch.arange(width)[None, :] // patch
    return (ys * math.ceil(width / patch) + xs)[None, None]


def _auto_side(x: torch.Tensor) -> int:
    """Default patch / window side: an eighth of the shorter image side, rounded up."""
    return max(1, math.ceil(min(x.shape[2], x.shape[3]) / 8))


def _float_baseline(run: _Run) -> Any:
    """The ``baselines`` option: a float as Captum takes it, or a tensor moved to the input's device."""
    b = run.opts["baselines"]
    return b.to(run.x) if isinstance(b, torch.Tensor) else b


def _feature_mask(run: _Run) -> tuple[torch.Tensor, int]:
    """The ``feature_mask`` option on the input's device, or patches of ``patch_size``; and the number
    of features."""
    mask = run.opts.get("feature_mask")
    if mask is None:
        side = run.opts["patch_size"] or _auto_side(run.x)
        run.opts["patch_size"] = side
        mask = patch_mask(run.x.shape[2], run.x.shape[3], side)
    mask = mask.to(device=run.x.device, dtype=torch.long)
    return mask, int(torch.unique(mask).numel())


# --- Captum-backed runners: each returns (raw, per-channel map at input resolution) ---------------


def _saliency(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    t = run.captum_target()
    run.progress.expect(run.n)
    with run.forward(run.model) as f:
        raw = Saliency(f).attribute(run.grad_input(), target=t, abs=run.opts["abs"])
    return raw, raw


def _integrated_gradients(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    o = run.opts
    if o["internal_batch_size"] is None and run.chunked:
        o["internal_batch_size"] = run.n * max(1, _CHUNK_ROWS // run.n)
    t = run.captum_target()
    run.progress.expect(run.n * o["n_steps"])
    with run.forward(run.model) as f:
        raw = IntegratedGradients(f).attribute(
            run.x,
            baselines=_float_baseline(run),
            target=t,
            n_steps=o["n_steps"],
            method=o["method"],
            internal_batch_size=o["internal_batch_size"],
        )
    return raw, raw


def _smoothgrad(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
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


def _gradient_shap(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    o = run.opts
    baselines = _float_baseline(run)
    if not isinstance(baselines, torch.Tensor):
        baselines = torch.full((1, *run.x.shape[1:]), float(baselines), dtype=run.x.dtype, device=run.x.device)
    t = run.captum_target()
    run.progress.expect(run.n * o["n_samples"])
    with run.forward(run.model) as f:
        raw = GradientShap(f).attribute(
            run.x, baselines=baselines, n_samples=o["n_samples"], stdevs=o["stdevs"], target=t
        )
    return raw, raw


def _deeplift(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    model = _relu_safe_copy(run.model)
    nonlinear = {n: m for n, m in model.named_modules() if type(m) in SUPPORTED_NON_LINEAR}
    t = run.captum_target()
    run.progress.expect(2 * run.n)
    with run.forward(model, nonlinear, _DEEPLIFT_REUSE) as f:
        raw = DeepLift(f).attribute(run.grad_input(), baselines=_float_baseline(run), target=t)
    return raw, raw


def _input_x_gradient(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    t = run.captum_target()
    run.progress.expect(run.n)
    with run.forward(run.model) as f:
        raw = InputXGradient(f).attribute(run.grad_input(), target=t)
    return raw, raw


def _modified_relu(cls: type) -> Callable[[_Run], tuple[torch.Tensor, torch.Tensor]]:
    def run_method(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
        model = _relu_safe_copy(run.model)
        t = run.captum_target()
        run.progress.expect(run.n)
        with run.forward(model) as f:
            raw = cls(f).attribute(run.grad_input(), target=t)
        return raw, raw

    return run_method


def _guided_grad_cam(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    model = _relu_safe_copy(run.model)
    layer = _layer_module(model, run.layer)
    t = run.captum_target()
    run.progress.expect(2 * run.n)
    with run.forward(model, layer, _LAYER_REUSE) as f:
        raw = GuidedGradCam(f, layer[run.layer]).attribute(
            run.grad_input(), target=t, interpolate_mode=run.opts["interpolate_mode"]
        )
    return raw, raw


def _grad_cam(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    layer = _layer_module(run.model, run.layer)
    t = run.captum_target()
    run.progress.expect(run.n)
    with run.forward(run.model, layer, _LAYER_REUSE) as f:
        raw = LayerGradCam(f, layer[run.layer]).attribute(
            run.x, target=t, relu_attributions=run.opts["relu_attributions"]
        )
    full = LayerAttribution.interpolate(raw, tuple(run.x.shape[2:]), interpolate_mode=run.opts["interpolate_mode"])
    return raw, full


def _occlusion(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    o = run.opts
    dims = tuple(run.x.shape[1:])
    window = o["sliding_window_shapes"]
    if window is None:
        window = _auto_side(run.x)
    if isinstance(window, int):
        window = (dims[0], window, window)
    if len(window) != len(dims) or any(w > d for w, d in zip(window, dims)):
        raise ValueError(
            f"sliding_window_shapes={window} does not fit the input (C, H, W) = {dims}; give an int side or a "
            "(C, h, w) tuple no larger than the input"
        )
    o["sliding_window_shapes"] = window
    strides = o["strides"]
    if strides is None:
        strides = tuple(max(1, w // 2) for w in window)
        o["strides"] = strides
    steps = strides if isinstance(strides, tuple) else (strides,) * len(dims)
    if len(steps) != len(dims):
        raise ValueError(f"strides={strides} needs one value per input dimension (C, H, W) = {dims}, or one int")
    positions = math.prod((d - w) // s + 1 for d, w, s in zip(dims, window, steps))
    t = run.captum_target()
    run.progress.expect(run.n * (1 + positions))
    with run.forward(run.model) as f:
        raw = Occlusion(f).attribute(
            run.x,
            sliding_window_shapes=window,
            strides=strides,
            baselines=_float_baseline(run),
            target=t,
            perturbations_per_eval=o["perturbations_per_eval"],
        )
    return raw, raw


def _feature_ablation(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    mask, features = _feature_mask(run)
    t = run.captum_target()
    run.progress.expect(run.n * (1 + features))
    with run.forward(run.model) as f:
        raw = FeatureAblation(f).attribute(
            run.x,
            baselines=_float_baseline(run),
            target=t,
            feature_mask=mask,
            perturbations_per_eval=run.opts["perturbations_per_eval"],
        )
    return raw, raw


def _surrogate_method(kernel_shap: bool) -> Callable[[_Run], tuple[torch.Tensor, torch.Tensor]]:
    def run_method(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
        o = run.opts
        mask, _ = _feature_mask(run)
        t = run.captum_target()
        run.progress.expect(run.n * o["n_samples"])
        with run.forward(run.model) as f:
            if kernel_shap:
                explainer = KernelShap(f)
                explainer.interpretable_model = linear_surrogate(0.0)
            else:
                explainer = Lime(f, interpretable_model=linear_surrogate(o["alpha"]))
            raw = explainer.attribute(
                run.x,
                baselines=_float_baseline(run),
                target=t,
                feature_mask=mask,
                n_samples=o["n_samples"],
                perturbations_per_eval=o["perturbations_per_eval"],
            )
        return raw, raw

    return run_method


# --- CAM-family runners (cams.py) -------------------------------------------------------------------


def _cam_method(name: str) -> Callable[[_Run], tuple[torch.Tensor, torch.Tensor]]:
    def run_method(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
        targets = run.resolved if run.resolved is not None else run.targets
        run.progress.expect(run.n)
        if name == "score_cam":
            with run.forward(run.model) as f:
                result = cams.score_cam(
                    run.model, run.x, run.layer, targets, f, run.progress, run.opts["batch_size"]
                )
        else:
            if name == "cam":
                result = cams.cam(run.model, run.x, run.layer, targets)
            elif name == "eigen_cam":
                result = cams.eigen_cam(run.model, run.x, run.layer, targets)
            else:
                result = cams.gradient_cam(name, run.model, run.x, run.layer, targets)
            run.progress.advance(run.n)
        run.resolved = result.targets
        return result.raw, cams.upsample(result.raw, run.x.shape[2:])

    return run_method


# --- the registry ---------------------------------------------------------------------------------

_BASELINES = Option(
    "baselines",
    "float",
    0.0,
    "constant reference value in model-input space (after mean/std, so 0 is the mean colour of "
    "normalised inputs); a tensor broadcastable to the input is passed to Captum as it is",
    also=("tensor",),
)
_PPE = Option(
    "perturbations_per_eval",
    "int",
    8,
    "perturbed inputs per forward pass: faster when larger, but more memory and a slower cancel",
    min=1,
    max=256,
)
_PATCH = Option(
    "patch_size",
    "int",
    None,
    "side in pixels of the square patches that form the feature_mask; None: an eighth of the shorter "
    "image side, rounded up (8×8 patches)",
    min=1,
    max=4096,
)
_MASK = Option(
    "feature_mask",
    "tensor",
    None,
    "Captum's feature_mask: an integer tensor broadcastable to the input, one id per feature; overrides "
    "patch_size",
)
_ABS = Option("abs", "bool", True, "take the absolute value of the gradient (Captum's Saliency default)")


def _interp(default: str) -> Option:
    return Option(
        "interpolate_mode",
        "choice",
        default,
        "how the layer-resolution Grad-CAM is upsampled to the input (Captum's LayerAttribution.interpolate)",
        choices=("bilinear", "nearest", "bicubic", "area"),
    )


def _registry() -> dict[str, MethodInfo]:
    def info(
        name: str,
        description: str,
        run: Callable[[_Run], tuple[torch.Tensor, torch.Tensor]],
        reduction: str,
        options: tuple[Option, ...] = (),
        needs_layer: bool = False,
        slow: bool = False,
        backend: str = "captum",
    ) -> MethodInfo:
        return MethodInfo(name, description, needs_layer, reduction, slow, options, backend, run)

    cam_note = "(pytorch-grad-cam 1.5 conventions; not min-max normalised)"
    entries = [
        info(
            "saliency",
            "Gradient of the target score with respect to each input pixel (Simonyan et al. 2014).",
            _saliency,
            "max_abs",
            (_ABS,),
        ),
        info(
            "integrated_gradients",
            "Gradients averaged along the straight path from a baseline to the input, times "
            "(input − baseline) (Sundararajan et al. 2017); sums to the score difference.",
            _integrated_gradients,
            "sum",
            (
                Option("n_steps", "int", 50, "points on the integration path", min=1, max=2000),
                Option(
                    "method",
                    "choice",
                    "gausslegendre",
                    "integration rule",
                    choices=("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid"),
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
                ),
            ),
            slow=True,
        ),
        info(
            "smoothgrad",
            "Saliency averaged over noisy copies of the input (Smilkov et al. 2017; Captum NoiseTunnel "
            "over Saliency).",
            _smoothgrad,
            "max_abs",
            (
                Option("nt_samples", "int", 20, "noisy samples per image", min=1, max=1000),
                Option(
                    "stdevs",
                    "float",
                    None,
                    "standard deviation of the Gaussian noise in model-input units; None: 15% of the "
                    "input's value range, as the paper suggests",
                    min=0.0,
                ),
                Option(
                    "nt_samples_batch_size",
                    "int",
                    None,
                    "noisy samples per forward pass; None: all at once (about eight images per pass "
                    "when a progress callback is given)",
                    min=1,
                    max=1000,
                ),
                _ABS,
            ),
            slow=True,
        ),
        info(
            "gradient_shap",
            "Expected gradients × (input − baseline) at random points between baselines and noisy inputs "
            "(Lundberg & Lee 2017, Captum GradientShap).",
            _gradient_shap,
            "sum",
            (
                Option("n_samples", "int", 20, "random samples per image", min=1, max=200),
                Option("stdevs", "float", 0.0, "standard deviation of noise added to the input", min=0.0),
                _BASELINES,
            ),
        ),
        info(
            "deeplift",
            "DeepLIFT Rescale rule: contributions relative to a baseline (Shrikumar et al. 2017). Needs "
            "each nonlinearity module to run once per forward pass.",
            _deeplift,
            "sum",
            (_BASELINES,),
        ),
        info(
            "input_x_gradient",
            "Input times the gradient of the target score (Shrikumar et al. 2016).",
            _input_x_gradient,
            "sum",
        ),
        info(
            "guided_backprop",
            "Gradient with negative gradients stopped at every ReLU (Springenberg et al. 2015).",
            _modified_relu(GuidedBackprop),
            "max_abs",
        ),
        info(
            "deconvolution",
            "Deconvnet: ReLUs applied to the backward signal instead (Zeiler & Fergus 2014).",
            _modified_relu(Deconvolution),
            "max_abs",
        ),
        info(
            "guided_grad_cam",
            "Guided backprop times the upsampled Grad-CAM of the layer (Selvaraju et al. 2017).",
            _guided_grad_cam,
            "max_abs",
            (_interp("bilinear"),),
            needs_layer=True,
        ),
        info(
            "occlusion",
            "Score drop when a sliding window is replaced by the baseline (Zeiler & Fergus 2014).",
            _occlusion,
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
                ),
                Option(
                    "strides",
                    "int",
                    None,
                    "window step (an int or a (C, h, w) tuple, as Captum takes it); None: half the window",
                    min=1,
                    max=4096,
                    also=("tuple",),
                ),
                _BASELINES,
                _PPE,
            ),
            slow=True,
        ),
        info(
            "feature_ablation",
            "Score drop when each feature (by default a square patch) is replaced by the baseline.",
            _feature_ablation,
            "mean",
            (_PATCH, _MASK, _BASELINES, _PPE),
            slow=True,
        ),
        info(
            "lime",
            "Weighted linear surrogate fitted to the scores of random patch subsets (Ribeiro et al. "
            "2016); the surrogate is a closed-form ridge regression, the lime package's default.",
            _surrogate_method(kernel_shap=False),
            "mean",
            (
                Option("n_samples", "int", 200, "random patch subsets evaluated per image", min=1, max=20000),
                Option("alpha", "float", 1.0, "ridge penalty of the linear surrogate", min=0.0),
                _PATCH,
                _MASK,
                _BASELINES,
                _PPE,
            ),
            slow=True,
        ),
        info(
            "kernel_shap",
            "Shapley values of the patches estimated by LIME with the Shapley kernel (Lundberg & Lee "
            "2017); weighted least squares in closed form.",
            _surrogate_method(kernel_shap=True),
            "mean",
            (
                Option("n_samples", "int", 200, "random patch subsets evaluated per image", min=1, max=20000),
                _PATCH,
                _MASK,
                _BASELINES,
                _PPE,
            ),
            slow=True,
        ),
        info(
            "grad_cam",
            "Layer activations weighted by their spatially averaged gradients (Selvaraju et al. 2017; "
            "Captum LayerGradCam), upsampled to the input.",
            _grad_cam,
            "none",
            (
                Option(
                    "relu_attributions",
                    "bool",
                    True,
                    "apply a ReLU to the map, as the paper does (Captum's default is False)",
                ),
                _interp("bilinear"),
            ),
            needs_layer=True,
        ),
        info(
            "cam",
            "Class activation map (Zhou et al. 2016): the linear head's class weights applied to the "
            "layer before global average pooling. Signed; needs a GAP + linear head.",
            _cam_method("cam"),
            "none",
            needs_layer=True,
            backend="cams",
        ),
        info(
            "grad_cam_pp",
            f"Grad-CAM++ (Chattopadhyay et al. 2018): weights from positive gradients with per-pixel "
            f"coefficients {cam_note}.",
            _cam_method("grad_cam_pp"),
            "none",
            needs_layer=True,
            backend="cams",
        ),
        info(
            "xgrad_cam",
            f"XGrad-CAM (Fu et al. 2020): gradients weighted by normalised activations {cam_note}.",
            _cam_method("xgrad_cam"),
            "none",
            needs_layer=True,
            backend="cams",
        ),
        info(
            "hires_cam",
            f"HiResCAM (Draelos & Carin 2020): gradient × activation element-wise, summed over channels "
            f"{cam_note}.",
            _cam_method("hires_cam"),
            "none",
            needs_layer=True,
            backend="cams",
        ),
        info(
            "layer_cam",
            f"LayerCAM (Jiang et al. 2021): positive gradients × activations, summed over channels "
            f"{cam_note}.",
            _cam_method("layer_cam"),
            "none",
            needs_layer=True,
            backend="cams",
        ),
        info(
            "score_cam",
            f"Score-CAM (Wang et al. 2020): channels weighted by the softmaxed target scores of the input "
            f"masked by each channel {cam_note}. One forward pass per channel.",
            _cam_method("score_cam"),
            "none",
            (Option("batch_size", "int", 16, "masked inputs per forward pass", min=1, max=1024),),
            needs_layer=True,
            slow=True,
            backend="cams",
        ),
        info(
            "eigen_cam",
            f"Eigen-CAM (Muhammad & Yeasin 2020): first principal component of the layer's activations; "
            f"class-agnostic, the target is ignored {cam_note}.",
            _cam_method("eigen_cam"),
            "none",
            needs_layer=True,
            backend="cams",
        ),
    ]
    return {e.name: e for e in entries}


METHODS: Mapping[str, MethodInfo] = MappingProxyType(_registry())
"""The registry: method name → :class:`MethodInfo`. Read-only."""


def _method_info(method: object) -> MethodInfo:
    if not isinstance(method, str):
        raise TypeError(f"method must be a name (str) from cnn_widgets.METHODS, got {type(method).__name__}")
    if method not in METHODS:
        err = unknown_name_error("method", method, METHODS)
        raise ValueError(f"{err}; available methods: {', '.join(METHODS)}")
    return METHODS[method]


def _check_options(info: MethodInfo, options: dict[str, Any]) -> dict[str, Any]:
    known = {o.name: o for o in info.options}
    for name in options:
        if name not in known:
            valid = ", ".join(known) if known else "none"
            err = unknown_name_error(f"option for {info.name!r}", name, known)
            raise ValueError(f"{err}; valid options of {info.name!r}: {valid}")
    resolved = info.defaults()
    for name, value in options.items():
        resolved[name] = known[name].check(info.name, value)
    return resolved


def _normalize_target(target: object, n: int) -> list[int] | None:
    """``None``, one class index for every image, or one per image → ``None`` or a list of ints."""
    if target is None:
        return None
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise ValueError(f"got {len(target)} targets for {n} images; pass one per image, one int, or None")
        return [_class_index(t) for t in target]
    return [_class_index(target)] * n


def _class_index(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"target must be a class index (int), got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"target must be a class index (int), a list of them (one per image) or None, got "
            f"{type(value).__name__} {value!r}"
        ) from None


def _reduce(full: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "sum":
        return full.sum(dim=1)
    if rule == "mean":
        return full.mean(dim=1)
    if rule == "max_abs":
        index = full.abs().argmax(dim=1, keepdim=True)
        return full.gather(1, index).squeeze(1)
    return full[:, 0]


def _is_batch(image: object) -> bool:
    return isinstance(image, (torch.Tensor, np.ndarray)) and image.ndim == 4


def _run_method(
    model: nn.Module,
    batch: torch.Tensor,
    info: MethodInfo,
    targets: list[int] | None,
    layer: str | None,
    opts: dict[str, Any],
    reporter: cams.Progress,
    chunked: bool,
) -> tuple[torch.Tensor, torch.Tensor, _Run]:
    """Run ``info``'s method in eval mode on the model's device; the model's state is restored after."""
    state = ModelState(model)
    try:
        if any(m.training for m in model.modules()):
            model.eval()
        x = batch.to(model_device(model))
        run = _Run(model, x, targets, None, opts, reporter, chunked=chunked)
        if info.needs_layer:
            if layer is None:
                run.layer, logits = spatial_probe(model, x)
                if run.layer is None:
                    raise ValueError(
                        f"{info.name} needs a layer with spatial (N, C, H, W) output, and no module of this "
                        f"{type(model).__name__} has one with more than one position for an input of shape "
                        f"{tuple(x.shape)}; pass layer=... or use a larger image"
                    )
                run.resolved = cams.resolve_targets(logits, targets)
            else:
                run.layer = check_layer_names(model, [layer])[0]
        raw, full = info.run(run)
    finally:
        state.restore()
    return raw, full, run


def attribute(
    model: nn.Module,
    image: Image,
    method: str,
    target: int | Sequence[int] | None = None,
    layer: str | None = None,
    mean: Stats = None,
    std: Stats = None,
    *,
    progress: Callable[[float], None] | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Attribution:
    """Attribute the ``target`` class score of ``model`` on ``image`` with ``method`` (a key of
    :data:`METHODS`).

    ``image``: any form :mod:`cnn_widgets.images` accepts (unnormalised pixels; ``mean``/``std`` are
    applied for the model); a 4-D tensor or array is a batch and gives an N×H×W ``.map``. ``target``:
    a class index, one per image, or ``None`` for each image's top prediction. ``layer``: a module name
    for methods with ``needs_layer`` (default :func:`cnn_widgets.suggest_target_layer`), ignored by the
    others. ``options``: the method's options by Captum's argument names (see ``METHODS[method].options``).
    ``progress(fraction)`` is called as work proceeds and may raise :class:`Cancelled`.

    The model runs in eval mode and is restored afterwards; the run holds
    :func:`cnn_widgets.capture.model_lock`, so it never overlaps a capture of the same model in another
    thread.

    Options come as keywords (``n_steps=32``) or as a mapping, ``options={...}``; the mapping is how to
    pass an option whose name is taken by an argument here — integrated gradients' rule, which Captum
    calls ``method``: ``options={"method": "riemann_trapezoid"}``.
    """
    check_model(model)
    info = _method_info(method)
    batch = to_batch(image, mean, std, model=model)
    targets = _normalize_target(target, batch.shape[0])
    both = set(options or ()) & set(kwargs)
    if both:
        raise ValueError(f"option(s) {sorted(both)} given both as keywords and in options=; pass each once")
    opts = _check_options(info, {**dict(options or {}), **kwargs})
    reporter = cams.Progress(progress)
    reporter.report(0.0)
    with model_lock(model):
        raw, full, run = _run_method(model, batch, info, targets, layer, opts, reporter, progress is not None)
    raw = raw.detach().cpu()
    result_map = _reduce(full.detach(), info.reduction).float().cpu().contiguous()
    if not bool(torch.isfinite(result_map).all()):
        bad = int((~torch.isfinite(result_map)).sum())
        raise ValueError(
            f"{method} produced {bad} NaN or infinite values (out of {result_map.numel()}); the model's "
            "output or gradients are not finite for this input. Check the image and the model, or try "
            "another method"
        )
    assert run.resolved is not None
    single = not _is_batch(image)
    reporter.report(1.0)
    return Attribution(
        map=result_map[0] if single else result_map,
        raw=raw,
        method=method,
        target=run.resolved[0] if single else list(run.resolved),
        layer=run.layer,
        top_prediction=target is None,
        options=opts,
    )
