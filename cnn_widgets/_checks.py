"""Argument checks shared by every public entry point, so each bad input gets one clear message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import nn


def check_model(model: object) -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``; otherwise raise a ``TypeError`` saying what to pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected a torch.nn.Module as the model, got {type(model).__name__}; "
            "pass the network itself (e.g. `model`, not `model.state_dict()` or a function)"
        )
    return model


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


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
