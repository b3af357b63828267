"""What a model is made of: the summary table, conv discovery and layer choices shared by the widgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._checks import check_model, model_device
from .capture import ModelState, model_lock
from .images import Image, to_batch


@dataclass(frozen=True)
class LayerInfo:
    """One row of a model summary; ``output_shape`` includes the batch dimension."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    trainable: int
    calls: int = 1


def observe(
    model: nn.Module,
    batch: torch.Tensor,
    modules: list[tuple[str, nn.Module]],
    record: Callable[[str, Any], None],
) -> Any:
    """One ``torch.no_grad`` forward pass calling ``record(name, output)`` as each listed module returns;
    holds the model's lock and leaves no hook and no state change behind. Returns the model's output."""
    with model_lock(model):
        state = ModelState(model)
        handles = []
        try:
            for name, module in modules:
                handles.append(module.register_forward_hook(
                    lambda _m, _args, output, name=name: record(name, output)
                ))
            with torch.no_grad():
                return model(batch)
        finally:
            for h in handles:
                h.remove()
            state.restore()


def layer_table(model: nn.Module, example: Image | torch.Tensor) -> list[LayerInfo]:
    """Leaf modules (and modules owning parameters directly) in execution order, with output shapes and
    parameter counts from one forward pass on ``example``. Modules that never ran are listed last with
    ``output_shape=None`` so parameter totals still add up."""
    check_model(model)
    batch = to_batch(example, model=model).to(model_device(model))
    modules = dict(model.named_modules())
    wanted = [
        n
        for n, m in modules.items()
        # leaves, and any module owning parameters directly (the root too: a learnt scale, a CLS token)
        if (n and not any(True for _ in m.children())) or any(True for _ in m.parameters(recurse=False))
        or (not n and not any(True for _ in m.children()))
    ]
    shapes: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def record(name: str, output: Any) -> None:
        calls[name] = calls.get(name, 0) + 1
        if name not in shapes:
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    observe(model, batch, [(n, modules[n]) for n in wanted], record)
    order = [n for n in shapes] + [n for n in wanted if n not in shapes]
    rows = []
    for n in order:
        m = modules[n]
        own = list(m.parameters(recurse=False))
        rows.append(
            LayerInfo(
                name=n,
                type=type(m).__name__,
                output_shape=shapes.get(n),
                params=sum(p.numel() for p in own),
                trainable=sum(p.numel() for p in own if p.requires_grad),
                calls=calls.get(n, 0),
            )
        )
    return rows


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the 2-D convolutions (``nn.Conv2d`` and subclasses), in registration order."""
    return [n for n, m in check_model(model).named_modules() if isinstance(m, nn.Conv2d)]


def spatial_probe(model: nn.Module, batch: torch.Tensor) -> tuple[str | None, torch.Tensor]:
    """One forward pass under ``torch.no_grad`` that returns the :func:`suggest_target_layer` choice (or
    ``None``) together with the model's output, so callers needing both pay for one pass."""
    modules = [(n, m) for n, m in model.named_modules() if n]
    calls: dict[str, int] = {}
    spatial: list[str] = []

    def record(name: str, output: Any) -> None:
        calls[name] = calls.get(name, 0) + 1
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
            spatial.append(name)

    output = observe(model, batch, modules, record)
    once = [n for n in spatial if calls[n] == 1]
    return (once[-1] if once else None), output


def suggest_target_layer(model: nn.Module, example: Image | torch.Tensor) -> str:
    """The last module, in the order forward passes finish, whose output still has spatial dimensions:
    an (N, C, H, W) tensor with more than one position (a 1×1 map makes a constant heatmap). Modules run
    more than once per forward pass (a shared ``ReLU``) are skipped, since their output is ambiguous;
    containers finish after their children, so for a ResNet this is ``"layer4"``. CAM methods use it
    when no ``layer`` is given."""
    check_model(model)
    batch = to_batch(example, model=model).to(model_device(model))
    name, _ = spatial_probe(model, batch)
    if name is None:
        raise ValueError(
            f"no module of this {type(model).__name__} outputs an (N, C, H, W) tensor with more than one "
            f"spatial position for an input of shape {tuple(batch.shape)}; CAM methods need such a layer "
            "(e.g. the last convolution block): use a larger image or a model with convolutional features"
        )
    return name
