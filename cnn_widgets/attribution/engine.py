"""The run plumbing every method shares: one model session per call (lock, state snapshot, eval mode),
one probe forward pass that selects the class scores (``output=``), resolves targets, finds the final
softmax for ``logits=True`` and suggests the CAM layer; the model wrapped as Captum sees it; option,
target and layer checks; and :func:`attribute`, the entry point.

Raw torch or Captum errors never reach the user: failures inside a run become a ``ValueError`` naming
the method and the input shape (:func:`cnn_widgets._checks.forward_error`).
"""

from __future__ import annotations

import copy
import math
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import cams, outputs
from .._checks import (
    check_autograd, check_layer_names, check_model, forward_error, is_script, model_input, unknown_name_error,
)
from ..capture import model_session
from ..images import Image, Stats, to_batch
from ..layers import probe
from ..outputs import Output
from .schema import METHODS, Attribution, Cancelled, MethodInfo

_CHUNK_ROWS = 8  # images per forward pass when work is chunked for progress and cancellation

# Captum's notices about what this library already guarantees (hooks removed, inputs given gradients);
# filtered by exact message, once at import, so no thread changes warning filters while others run.
for _message in (
    r"Setting backward hooks on ReLU activations",
    r"Input Tensor \d+ did not already require gradients",
    r"Setting forward, backward hooks and attributes on non-linear",
):
    warnings.filterwarnings("ignore", message=_message, category=UserWarning)


class Run:
    """Everything one method invocation needs: the model, its input on the model's device and dtype,
    resolved targets, the layer, checked options, the output selection, the softmax to bypass
    (``logits=True``) and the progress reporter."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: list[int],
        layer: str | None,
        opts: dict[str, Any],
        progress: cams.Progress,
        chunked: bool,
        output: Output = None,
        bypass: str | None = None,
    ) -> None:
        self.model = model
        self.x = x
        self.n = x.shape[0]
        self.resolved = targets
        self.layer = layer
        self.opts = opts
        self.progress = progress
        self.chunked = chunked
        self.output = output
        self.bypass = bypass
        self.notes: list[str] = []
        self.method = ""

    def captum_target(self) -> int | list[int]:
        """Targets as Captum takes them (an int for one image)."""
        return self.resolved[0] if self.n == 1 else self.resolved

    def grad_input(self) -> torch.Tensor:
        """The input as a leaf requiring grad, as Captum's gradient methods want it."""
        return self.x.detach().requires_grad_(True)

    def forward(
        self, model: nn.Module, once: Mapping[str, nn.Module] | None = None, reuse_error: str = ""
    ) -> Forward:
        """The model wrapped for Captum (see :class:`Forward`); use it as a context manager."""
        return Forward(self, model, dict(once or {}), reuse_error)


class Forward(nn.Module):
    """The model as Captum sees it: the selected (N, classes) scores of ``model`` (the softmax named by
    ``run.bypass`` passed through for ``logits=True``). On the first call it checks the targets are in
    range; after each call it reports the rows evaluated (the progress callback may raise
    :class:`Cancelled`). Modules in ``once`` must run at most once per forward pass; if one is the
    run's layer, its output must be (N, C, H, W). Hooks are registered on entering the context and
    removed on leaving it."""

    def __init__(self, run: Run, model: nn.Module, once: dict[str, nn.Module], reuse_error: str) -> None:
        super().__init__()
        self.inner = model
        self._run = run
        self._once = once
        self._reuse_error = reuse_error
        self._calls: dict[str, int] = {}
        self._checked = False
        self._handles: list[Any] = []
        floating = (t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
        self._dtype = next(floating, None)

    def __enter__(self) -> Forward:
        try:
            if self._run.bypass is not None:
                module = dict(self.inner.named_modules())[self._run.bypass]
                self._handles.append(module.register_forward_hook(_pass_input))
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

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The selected scores of ``x`` without progress reporting (for a method's own first pass)."""
        self._calls.clear()
        if self._dtype is not None and x.is_floating_point() and x.dtype != self._dtype:
            x = x.to(self._dtype)  # Captum's noise and path points come in float32: cast for a half/double model
        out = outputs.select(self.inner(x), self._run.output)
        layer = self._run.layer
        if layer in self._once and not self._calls.get(layer):
            raise ValueError(_NOT_RUN.format(name=layer))
        check_finite_scores(out, x)  # before Captum fits a surrogate or a CAM decomposes them
        if not self._checked:
            cams.check_targets(out, self._run.resolved)
            self._checked = True
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.score(x)
        self._run.progress.advance(x.shape[0])
        return out


def _pass_input(module: nn.Module, args: Any, output: Any) -> Any:
    """A forward hook that makes a module return its input (the logits a softmax would squash)."""
    return args[0]


def check_finite_scores(scores: torch.Tensor, x: torch.Tensor) -> None:
    """A ``ValueError`` unless every class score the model gave for ``x`` is finite."""
    if not bool(torch.isfinite(scores.detach()).all()):
        raise ValueError(
            f"the model's class scores are not finite (NaN or inf) for an input of shape {tuple(x.shape)}; "
            "check the image, mean/std and the model's weights"
        )


_NOT_RUN = (
    "layer {name!r} did not run during the forward pass (it is registered but the model's forward never "
    "calls it); pick a layer the model uses"
)
LAYER_REUSE = (
    "layer {name!r} ({type}) runs more than once per forward pass (a shared module), so its output is "
    "ambiguous; pick the block that contains it, or another module"
)


def relu_safe_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every ``inplace`` flag off, for methods that hook nonlinearities;
    the user's model is never touched. A model that cannot be deep-copied (it holds a lock, a file, a
    generator) is a clear ``TypeError``."""
    try:
        clone = copy.deepcopy(model)
    except Exception as err:
        raise TypeError(
            f"this method works on a private copy of the model, but this {type(model).__name__} cannot be "
            f"deep-copied ({type(err).__name__}: {err}); remove the attribute that cannot be copied (a lock, "
            "an open file) from the module, or use a method that needs no copy (saliency, "
            "integrated_gradients, grad_cam, …)"
        ) from err
    for m in clone.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return clone.eval()


def layer_module(model: nn.Module, layer: str) -> dict[str, nn.Module]:
    """``{layer: module}`` for the run's layer in ``model`` (the user's model or a copy of it)."""
    return {layer: dict(model.named_modules())[layer]}


def patch_mask(height: int, width: int, patch: int) -> torch.Tensor:
    """A Captum ``feature_mask`` (1, 1, H, W) of square ``patch``-pixel patches numbered row by row
    (edge patches are cut short)."""
    ys = torch.arange(height)[:, None] // patch
    xs = torch.arange(width)[None, :] // patch
    return (ys * math.ceil(width / patch) + xs)[None, None]


def auto_side(x: torch.Tensor) -> int:
    """Default patch / window side: an eighth of the shorter image side, rounded up."""
    return max(1, math.ceil(min(x.shape[2], x.shape[3]) / 8))


def _broadcasts(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target``."""
    if len(shape) > len(target):
        return False
    try:
        return tuple(torch.broadcast_shapes(tuple(shape), tuple(target))) == tuple(target)
    except RuntimeError:
        return False


def float_baseline(run: Run, samples: bool = False) -> Any:
    """The ``baselines`` option: a float as Captum takes it, or a tensor in the input's device and dtype,
    expanded to the input's shape (``samples``: to (B, C, H, W), a 4-D tensor being B baseline samples,
    as GradientShap takes them). A tensor that does not broadcast so is a ``ValueError``."""
    b = run.opts["baselines"]
    if not isinstance(b, torch.Tensor):
        return b
    x = run.x
    target = (b.shape[0] if b.ndim == 4 else 1, *x.shape[1:]) if samples else tuple(x.shape)
    if not _broadcasts(b.shape, target):
        raise ValueError(
            f"option baselines of shape {tuple(b.shape)} does not fit the image batch, which reaches the model "
            f"as (N, C, H, W) = {tuple(x.shape)}: give a number, or a tensor broadcastable to it such as "
            "(C, 1, 1) (one value per channel) or (C, H, W) (one reference image)"
        )
    return b.to(device=x.device, dtype=x.dtype).expand(target).contiguous()


def feature_mask(run: Run) -> tuple[torch.Tensor, int]:
    """The ``feature_mask`` option as a (1, ·, H, W) long tensor on the input's device with ids
    renumbered 0‥K-1 in their order (the grouping is what counts), or patches of ``patch_size``; and
    the number of features K. A mask that does not broadcast to one image is a ``ValueError``."""
    mask = run.opts.get("feature_mask")
    if mask is None:
        side = run.opts["patch_size"] or auto_side(run.x)
        run.opts["patch_size"] = side
        mask = patch_mask(run.x.shape[2], run.x.shape[3], side)
    else:
        image = (1, *run.x.shape[1:])
        if not _broadcasts(mask.shape, image):
            raise ValueError(
                f"option feature_mask of shape {tuple(mask.shape)} does not fit the image, which reaches the "
                f"model as (N, C, H, W) = {tuple(run.x.shape)}: give one feature id per pixel, shaped (H, W), "
                "(1, 1, H, W) or (1, C, H, W)"
            )
        mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
        mask = torch.unique(mask, return_inverse=True)[1]
    mask = mask.to(device=run.x.device, dtype=torch.long)
    return mask, int(mask.max()) + 1


# --- checks shared by attribute() and the views -----------------------------------------------------


def check_method(method: object) -> MethodInfo:
    """The registry entry of ``method``, or a clear ``TypeError``/``ValueError`` naming the nearest."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a name (str) from cnn_widgets.METHODS, got {type(method).__name__}")
    if method not in METHODS:
        err = unknown_name_error("method", method, METHODS)
        raise ValueError(f"{err}; available methods: {', '.join(METHODS)}")
    return METHODS[method]


def check_options(info: MethodInfo, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``info`` with defaults filled in and given values checked against the schema."""
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of option values, got {type(options).__name__}")
    known = {o.name: o for o in info.options}
    for name in options:
        if not isinstance(name, str):
            raise TypeError(f"option names must be strings, got {name!r}")
        if name not in known:
            valid = ", ".join(known) if known else "none"
            err = unknown_name_error(f"option for {info.name!r}", name, known)
            raise ValueError(f"{err}; valid options of {info.name!r}: {valid}")
    resolved = info.defaults()
    for name, value in options.items():
        resolved[name] = known[name].check(info.name, value)
    return resolved


def normalize_targets(target: object, n: int) -> list[int | None] | None:
    """``None``; one class index for every image; or one per image (a list, tuple, tensor or array,
    ``None`` entries meaning that image's top prediction) → ``None`` or a list of ``n`` entries."""
    if target is None:
        return None
    if isinstance(target, (torch.Tensor, np.ndarray)):
        if target.ndim == 0:
            return [class_index(target.item())] * n
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise ValueError(f"got {len(target)} targets for {n} images; pass one per image, one int, or None")
        return [None if t is None else class_index(t) for t in target]
    return [class_index(target)] * n


def class_index(value: object) -> int:
    """``value`` as a class index (an int, numpy or 0-d tensor integer), or a ``TypeError``."""
    if isinstance(value, bool):
        raise TypeError(f"target must be a class index (int), got {value!r}")
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = value.item()
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"target must be a class index (int), a list of them (one per image) or None, got "
            f"{type(value).__name__} {value!r}"
        ) from None


def check_target_range(targets: Sequence[int | None] | None, classes: int) -> None:
    """A ``ValueError`` unless every given target is in ``0‥classes-1``."""
    for t in targets or ():
        if t is not None and not 0 <= t < classes:
            raise ValueError(
                f"target {t} is out of range: the model has {classes} classes (0‥{classes - 1}); "
                "pass a valid class index, or target=None for the top prediction"
            )


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


def _general_notes(info: MethodInfo, raw: torch.Tensor, layer: str | None) -> list[str]:
    """Caveats that follow from the result's resolution (runners add their own to ``run.notes``)."""
    notes = []
    if info.reduction == "none" and raw.ndim == 4 and raw.shape[-2] * raw.shape[-1] <= 4:
        h, w = raw.shape[-2:]
        notes.append(
            f"layer {layer!r} is only {h}×{w}: upsampled to the image the map is nearly constant; pick an "
            "earlier layer for detail"
        )
    return notes


def run_method(
    model: nn.Module,
    batch: torch.Tensor,
    info: MethodInfo,
    targets: list[int | None] | None,
    layer: str | None,
    opts: dict[str, Any],
    reporter: cams.Progress,
    chunked: bool,
    output: Output = None,
    logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Run]:
    """Run ``info``'s method in one model session (lock, snapshot, eval mode) on the model's device and
    dtype; the model's state is restored after, also on error or cancel."""
    with model_session(model, eval_mode=True, hooks=info.hooks):
        x = model_input(model, batch)
        if layer is not None:
            layer = check_layer_names(model, [layer])[0]
        # The probe pass resolves top-prediction targets, suggests the layer and finds the softmax to
        # bypass; with every target and the layer given, the method's own passes check everything.
        needs_probe = (
            targets is None or None in targets or (info.needs_layer and layer is None) or logits
        )
        found = probe(model, x, output, layer=info.needs_layer and layer is None) if needs_probe else None
        if found is not None:
            check_finite_scores(found.scores, x)
            check_target_range(targets, found.scores.shape[1])
            top = [int(i) for i in found.scores.argmax(dim=1).tolist()]
            resolved = [top[i] if t is None else t for i, t in enumerate(targets or [None] * x.shape[0])]
        else:
            resolved = [int(t) for t in targets]  # type: ignore[union-attr, arg-type]
        bypass = None
        if logits:
            if is_script(model):
                raise TypeError("logits=True needs module hooks, which TorchScript ignores; pass the eager module")
            bypass = found.squasher
            if bypass is None:
                raise ValueError(
                    "logits=True: no final nn.Softmax, nn.LogSoftmax or nn.Sigmoid module produces the "
                    "selected scores, so there are no pre-softmax scores to attribute (a functional "
                    "softmax in forward cannot be bypassed: select the logits with output=... instead)"
                )
        if layer is not None and found is not None and found.calls:
            if found.calls.get(layer, 0) == 0:
                raise ValueError(_NOT_RUN.format(name=layer))
            if found.calls[layer] > 1:
                raise ValueError(LAYER_REUSE.format(name=layer, type=type(dict(model.named_modules())[layer]).__name__))
        if info.needs_layer:
            layer = layer if layer is not None else found.layer  # type: ignore[union-attr]
            if layer is None:
                raise ValueError(
                    f"{info.name} needs a layer with spatial (N, C, H, W) output on which the class scores "
                    f"depend, and no module of this {type(model).__name__} has one with more than one "
                    f"position for an input of shape {tuple(x.shape)}; pass layer=... or use a larger image"
                )
        run = Run(model, x, resolved, layer, opts, reporter, chunked, output, bypass)
        run.method = info.name
        try:
            raw, full = info.run(run)
        except Cancelled:
            raise
        except Exception as err:
            wrapped = forward_error(err, x, f"{info.name}")
            if wrapped is err:
                raise
            raise wrapped from err
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
    output: Output = None,
    logits: bool = False,
    progress: Callable[[float], None] | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Attribution:
    """Attribute the ``target`` class score of ``model`` on ``image`` with ``method`` (a key of
    :data:`METHODS`).

    ``image``: any form :mod:`cnn_widgets.images` accepts (unnormalised pixels; ``mean``/``std`` in 0‥1
    units are applied for the model); a 4-D tensor or array is a batch and gives an N×H×W ``.map``.
    ``target``: a class index, one per image, or ``None`` for each image's top prediction. ``layer``:
    a module name for methods with ``needs_layer`` (default :func:`cnn_widgets.suggest_target_layer`);
    giving it to a method that takes none is an error. ``output``: which part of a structured model
    output holds the class scores (an int index, a str key or a callable, see
    :mod:`cnn_widgets.outputs`). ``logits=True`` attributes the scores before a final
    ``nn.Softmax``/``nn.LogSoftmax``/``nn.Sigmoid`` (bypassed for this run only): the gradient of a
    saturated softmax is ~1e-8 and shows nothing. ``options``: the method's options by Captum's
    argument names (see ``METHODS[method].options``). ``progress(fraction)`` is called as work
    proceeds and may raise :class:`Cancelled`.

    The model runs in eval mode inside one session holding :func:`cnn_widgets.model_lock`, and is
    restored afterwards (weights, buffers, mode, ``requires_grad``, ``.grad``), also on error.

    Options come as keywords (``n_steps=32``) or as a mapping, ``options={...}``; the mapping is how to
    pass an option whose name is taken by an argument here — integrated gradients' rule, which Captum
    calls ``method``: ``options={"method": "riemann_trapezoid"}``.
    """
    check_model(model)
    info = check_method(method)
    check_model(model, hooks=info.hooks)
    check_autograd("attribute()")
    outputs.check_output(output)
    if not isinstance(logits, bool):
        raise TypeError(f"logits must be True or False, got {logits!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking the fraction done, got {type(progress).__name__}")
    if layer is not None and not info.needs_layer:
        raise ValueError(
            f"{method} takes no layer (it attributes to input pixels), but layer={layer!r} was given; drop "
            "it, or use a layer method: " + ", ".join(n for n, m in METHODS.items() if m.needs_layer)
        )
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) from model.named_modules(), got {type(layer).__name__}")
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of option values, got {type(options).__name__}")
    batch = to_batch(image, mean, std, model=model)
    targets = normalize_targets(target, batch.shape[0])
    both = set(options or ()) & set(kwargs)
    if both:
        raise ValueError(f"option(s) {sorted(both)} given both as keywords and in options=; pass each once")
    opts = check_options(info, {**dict(options or {}), **kwargs})
    reporter = cams.Progress(progress)
    reporter.report(0.0)
    raw, full, run = run_method(
        model, batch, info, targets, layer, opts, reporter, progress is not None, output, logits
    )
    raw = raw.detach().float().cpu()
    result_map = _reduce(full.detach(), info.reduction).float().cpu().contiguous()
    if not bool(torch.isfinite(result_map).all()):
        bad = int((~torch.isfinite(result_map)).sum())
        raise ValueError(
            f"{method} produced {bad} NaN or infinite values (out of {result_map.numel()}); the model's "
            "output or gradients are not finite for this input. Check the image and the model, or try "
            "another method"
        )
    single = not _is_batch(image)
    reporter.report(1.0)
    notes = _general_notes(info, raw, run.layer) + run.notes
    opts = {k: v for k, v in opts.items() if not k.startswith("_")}
    return Attribution(
        map=result_map[0] if single else result_map,
        raw=raw,
        method=method,
        target=run.resolved[0] if single else list(run.resolved),
        layer=run.layer,
        top_prediction=target is None,
        options=opts,
        notes=notes,
    )
