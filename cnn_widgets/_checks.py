"""Argument checks shared by every public entry point, so each bad input gets one clear message."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def is_script(model: nn.Module) -> bool:
    """Whether ``model`` is a TorchScript module (``torch.jit.script`` or ``torch.jit.trace``)."""
    return isinstance(model, torch.jit.ScriptModule)


def check_model(model: object, *, hooks: bool = False) -> nn.Module:
    """Return ``model`` if it is an ``nn.Module`` that can be run here; otherwise raise a ``TypeError``
    saying what to pass. ``hooks=True``: the caller needs module hooks, which TorchScript modules
    ignore, so they are refused up front."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected a torch.nn.Module as the model, got {type(model).__name__}; "
            "pass the network itself (e.g. `model`, not `model.state_dict()` or a function)"
        )
    if hooks and is_script(model):
        raise TypeError(
            f"this model is a TorchScript module ({type(model).__name__}); capturing activations and "
            "layer-based methods (CAMs, DeepLift, guided backprop) need module hooks, which TorchScript "
            "ignores. Pass the eager nn.Module it was scripted or traced from (gradient and perturbation "
            "methods such as saliency, integrated_gradients and occlusion work on TorchScript)"
        )
    if type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        raise TypeError(
            "this model was compiled with torch.compile; its graph ignores the hooks and the autograd "
            "re-runs the views need. Pass `model._orig_mod`, the module it was compiled from (it shares "
            "the compiled model's weights, so it explains the same network)"
        )
    lazy = [repr(n) if n else "the model" for n, m in model.named_modules()
            if any(nn.parameter.is_lazy(t) for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))]
    if lazy:
        raise TypeError(
            f"the model has lazy modules that have not run yet ({', '.join(lazy[:5])}"
            f"{', …' if len(lazy) > 5 else ''}): their weights have no shape or values. Run one forward pass "
            "on an example first (`model(example)`), then pass the model"
        )
    if any(t.is_meta for t in _tensors(model)):
        raise TypeError(
            "the model's parameters or buffers are on the meta device (no values), so it cannot run; load "
            "its weights first (e.g. model.to_empty(device='cpu') then load_state_dict(...))"
        )
    return model


def check_autograd(what: str) -> None:
    """Raise a ``ValueError`` when ``what`` (which needs gradients) is called inside
    ``torch.inference_mode()``, which turns autograd off for this thread beyond what ``enable_grad``
    can restore."""
    if torch.is_inference_mode_enabled():
        raise ValueError(
            f"{what} needs autograd, which torch.inference_mode() turns off; call it outside the "
            "`with torch.inference_mode():` block (the widgets compute in their own thread and are not affected)"
        )


def _tensors(model: nn.Module) -> Iterable[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> ValueError:
    """A ``ValueError`` for an unknown name that lists the nearest known ones."""
    known = list(known)
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    if near:
        hint = "did you mean " + ", ".join(repr(n) for n in near) + "?"
    else:
        shown = ", ".join(repr(n) for n in known[:12]) + (", …" if len(known) > 12 else "")
        hint = f"known {kind} names: {shown}" if known else f"this model has no {kind} names"
    return ValueError(f"unknown {kind} {name!r}; {hint}")


def check_layer_names(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """Validate layer names against ``model.named_modules()``; return them as a list."""
    known = [n for n, _ in model.named_modules() if n]
    known_set = set(known)
    out = []
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings from model.named_modules(), got {name!r}")
        if name not in known_set:
            raise unknown_name_error("layer", name, known)
        out.append(name)
    return out


def check_layers_arg(layers: object, what: str = "layers") -> list[str] | None:
    """``None``, or a list of layer names from a name or an iterable of names; a module, a number or
    bytes is a ``TypeError`` that says what to pass (checked before anything iterates it)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        return [layers]
    hint = "pass layer names from model.named_modules(), e.g. ['conv1', 'layer1.0']"
    if isinstance(layers, nn.Module):
        raise TypeError(f"{what} must be layer names (str), got the module {type(layers).__name__}; {hint}")
    if isinstance(layers, (bytes, bytearray)) or not isinstance(layers, Iterable):
        raise TypeError(f"{what} must be a layer name or a list of names, got {type(layers).__name__}; {hint}")
    names = list(layers)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} must contain layer names (str), got {type(name).__name__} {name!r}; {hint}")
    return names


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in _tensors(model):
        return t.device
    return torch.device("cpu")


_CONV_DIMS: tuple[tuple[int, tuple[type[nn.Module], ...]], ...] = (
    (1, (nn.Conv1d, nn.ConvTranspose1d)),
    (2, (nn.Conv2d, nn.ConvTranspose2d)),
    (3, (nn.Conv3d, nn.ConvTranspose3d)),
)


def _conv_dims(model: nn.Module) -> dict[int, tuple[str, str]]:
    """Spatial dimensionality → (name, type) of the first convolution of that kind, also inside a
    TorchScript module (whose eager type survives as ``original_name``)."""
    found: dict[int, tuple[str, str]] = {}
    for name, m in model.named_modules():
        kind = getattr(m, "original_name", "") if is_script(m) else ""
        for dims, types in _CONV_DIMS:
            if isinstance(m, types) or kind in {t.__name__ for t in types}:
                found.setdefault(dims, (name, kind or type(m).__name__))
    return found


def check_image_model(model: nn.Module) -> None:
    """A ``ValueError`` when every convolution of ``model`` is 1-D or 3-D: images reach the model as
    (N, C, H, W) tensors, which such a model cannot take (or would misread as one unbatched volume)."""
    dims = _conv_dims(model)
    if dims and 2 not in dims:
        d = min(dims)
        name, kind = dims[d]
        shape = "(N, C, L) sequences" if d == 1 else "(N, C, D, H, W) volumes"
        raise ValueError(
            f"the model's convolutions are {d}-D ({kind} {name!r}), which take {shape}; cnn_widgets passes "
            "each image as an (N, C, H, W) tensor, so it explains image models (Conv2d). Wrap the model so "
            "its forward takes (N, C, H, W) images"
        )


def model_input(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``batch`` on the model's device, in the model's floating dtype (a half or double model gets a
    half or double input); a model with only 1-D or 3-D convolutions is refused (see
    :func:`check_image_model`)."""
    check_image_model(model)
    dtype = next((t.dtype for t in _tensors(model) if t.is_floating_point()), batch.dtype)
    return batch.to(device=model_device(model), dtype=dtype)


def raised_here(err: BaseException) -> bool:
    """Whether ``err`` was raised by cnn_widgets' own code (its innermost frame is in this package)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_PACKAGE)


def forward_error(err: BaseException, batch: torch.Tensor | None, what: str = "the model") -> BaseException:
    """The error to raise for a failure inside a forward/backward pass: ``err`` itself when it is one
    of ours (a clear ``ValueError``/``TypeError``) or not an ``Exception``, else a ``ValueError`` naming
    the input shape, so raw torch or Captum errors never reach the user."""
    if not isinstance(err, Exception) or (isinstance(err, (ValueError, TypeError)) and raised_here(err)):
        return err
    shape = f" on an input of shape {tuple(batch.shape)}" if batch is not None else ""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ValueError(
        f"{what} failed{shape}: {type(err).__name__}: {text}. Check the image size and channel count the "
        "model expects, and mean/std"
    )


def call_forward(model: Callable[[torch.Tensor], Any], batch: torch.Tensor) -> Any:
    """``model(batch)`` with raw errors turned into a clear ``ValueError`` (see :func:`forward_error`)."""
    try:
        return model(batch)
    except Exception as err:
        wrapped = forward_error(err, batch)
        if wrapped is err:
            raise
        raise wrapped from err
