"""What a model is made of: the summary table, conv discovery and layer choices shared by the widgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge

from . import outputs
from ._checks import call_forward, check_autograd, check_model, model_input
from .capture import model_session
from .images import Image, Stats, to_batch
from .outputs import Output


@dataclass(frozen=True)
class LayerInfo:
    """One row of a model summary; ``output_shape`` includes the batch dimension. ``buffers`` counts
    the elements of the module's own buffers (BatchNorm statistics, a weight stored as a buffer in a
    converted ONNX model), so totals add up."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    trainable: int
    calls: int = 1
    buffers: int = 0


def observe(
    model: nn.Module,
    batch: torch.Tensor,
    modules: list[tuple[str, nn.Module]],
    record: Callable[[str, Any], None],
    *,
    grad: bool = False,
) -> Any:
    """One eval-mode forward pass (under ``torch.no_grad`` unless ``grad``) calling ``record(name,
    output)`` as each listed module returns, inside a :func:`~cnn_widgets.capture.model_session`: no hook
    and no state change is left behind (a model in train mode would update its BatchNorm statistics). Returns the model's output; raw torch errors become ``ValueError``."""
    with model_session(model, eval_mode=True, hooks=True):
        handles = []
        try:
            for name, module in modules:
                handles.append(module.register_forward_hook(
                    lambda _m, _args, output, name=name: record(name, output)
                ))
            with torch.set_grad_enabled(grad):
                return call_forward(model, batch)
        finally:
            for h in handles:
                h.remove()


def _prepared(model: nn.Module, example: Image | torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    return model_input(model, to_batch(example, mean, std, model=model))


def layer_table(
    model: nn.Module, example: Image | torch.Tensor, mean: Stats = None, std: Stats = None
) -> list[LayerInfo]:
    """Leaf modules (and modules owning parameters or buffers directly) in execution order, with output
    shapes, parameter and buffer counts from one eval-mode forward pass on ``example`` (any image form,
    ``mean``/``std`` in 0‥1 units). Modules that never ran are listed last with ``output_shape=None``
    so totals still add up."""
    check_model(model, hooks=True)
    batch = _prepared(model, example, mean, std)
    modules = dict(model.named_modules())

    def owns(m: nn.Module) -> bool:
        return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))

    wanted = [
        n
        for n, m in modules.items()
        # leaves, and any module owning tensors directly (the root too: a learnt scale, a CLS token)
        if (n and not any(True for _ in m.children())) or owns(m)
        or (not n and not any(True for _ in m.children()))
    ]
    shapes: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def record(name: str, output: Any) -> None:
        calls[name] = calls.get(name, 0) + 1
        if name not in shapes:
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    with model_session(model, eval_mode=True, hooks=True):
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
                buffers=sum(b.numel() for b in m.buffers(recurse=False)),
            )
        )
    return rows


def _is_conv2d(m: nn.Module) -> bool:
    if isinstance(m, torch.jit.ScriptModule):  # scripted/traced: the eager type survives as a name
        return getattr(m, "original_name", "") == "Conv2d" and getattr(m, "weight", None) is not None
    return isinstance(m, nn.Conv2d)


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the 2-D convolutions (``nn.Conv2d`` and subclasses, also inside a TorchScript module),
    in registration order."""
    return [n for n, m in check_model(model).named_modules() if _is_conv2d(m)]


@dataclass
class Probe:
    """What one forward pass tells about a model and an input: the selected class ``scores``
    (N, classes, detached), the suggested target ``layer`` (when asked for), the name of the final
    Softmax/LogSoftmax/Sigmoid module whose output is the scores (``squasher``), if any, and how often
    each module ran (``calls``; empty for TorchScript)."""

    scores: torch.Tensor
    layer: str | None
    squasher: str | None
    calls: dict[str, int]

    def sigmoid_scores(self, model: nn.Module) -> bool:
        """Whether the scores are a final ``nn.Sigmoid``'s output (a one-column score is then a
        probability, see :func:`cnn_widgets.outputs.as_probabilities`)."""
        return self.squasher is not None and isinstance(model.get_submodule(self.squasher), nn.Sigmoid)


def _reachable(root: Any) -> set[Any]:
    """Every autograd node ``root`` back-propagates into."""
    seen: set[Any] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return seen


def probe(model: nn.Module, batch: torch.Tensor, output: Output = None, *, layer: bool = False) -> Probe:
    """One forward pass on ``batch`` (already prepared for the model) that selects the class scores
    (see :mod:`cnn_widgets.outputs`), finds a final squashing module, and with ``layer=True`` the
    :func:`suggest_target_layer` choice: the last module, in the order forward passes finish, whose
    output has spatial dimensions and on which the scores depend (autograd reachability, so a sibling
    head such as a detector's box branch is never chosen; a final softmax over a dense class map is
    skipped too: it only squashes the scores). TorchScript modules take no hooks: only
    the scores are found."""
    if isinstance(model, torch.jit.ScriptModule):
        with model_session(model), torch.no_grad():
            return Probe(outputs.select(call_forward(model, batch), output).detach(), None, None, {})
    squash = {n for n, _ in outputs.squasher_modules(model)}
    calls: dict[str, int] = {}
    spatial: list[tuple[str, Any]] = []
    squashed: list[tuple[str, torch.Tensor]] = []

    def record(name: str, out: Any) -> None:
        calls[name] = calls.get(name, 0) + 1
        if name in squash and isinstance(out, torch.Tensor):
            squashed.append((name, out))
        if (
            layer and name not in squash and isinstance(out, torch.Tensor) and out.ndim == 4
            and out.shape[2] * out.shape[3] > 1 and out.requires_grad
        ):
            spatial.append((name, get_gradient_edge(out).node))

    x = batch.detach()
    if layer:  # not a leaf: a forward that writes into its input in place still runs
        with torch.enable_grad():  # also inside the caller's torch.no_grad()
            x = x.requires_grad_(True) + 0
    modules = [(n, m) for n, m in model.named_modules() if n]
    with model_session(model, hooks=True):
        if layer:  # dependence on the input only: parameters need no gradient (restored on exit)
            for p in model.parameters():
                p.requires_grad_(False)
        result = observe(model, x, modules, record, grad=layer)
        scores = outputs.select(result, output)
        squasher = outputs.final_squasher(model, squashed, scores)
        chosen = None
        if layer and scores.requires_grad:
            reach = _reachable(scores.grad_fn)
            once = [n for n, node in spatial if calls[n] == 1 and node in reach]
            chosen = once[-1] if once else None
    return Probe(scores.detach(), chosen, squasher, calls)


def suggest_target_layer(
    model: nn.Module, example: Image | torch.Tensor, mean: Stats = None, std: Stats = None,
    *, output: Output = None,
) -> str:
    """The last module, in the order forward passes finish, whose output still has spatial dimensions
    (an (N, C, H, W) tensor with more than one position: a 1×1 map makes a constant heatmap) and on
    which the class scores depend — never a sibling head whose output the prediction does not use.
    Modules run more than once per forward pass (a shared ``ReLU``) are skipped, since their output is
    ambiguous; containers finish after their children, so for a ResNet this is ``"layer4"``. CAM
    methods use it when no ``layer`` is given. ``output=`` selects the class scores of a structured
    output (see :mod:`cnn_widgets.outputs`)."""
    check_model(model, hooks=True)
    check_autograd("suggest_target_layer()")
    outputs.check_output(output)
    batch = _prepared(model, example, mean, std)
    with model_session(model, eval_mode=True, hooks=True):
        name = probe(model, batch, output, layer=True).layer
    if name is None:
        raise ValueError(
            f"no module of this {type(model).__name__} outputs an (N, C, H, W) tensor with more than one "
            f"spatial position that the class scores depend on, for an input of shape {tuple(batch.shape)}; "
            "CAM methods need such a layer (e.g. the last convolution block): use a larger image or a "
            "model with convolutional features"
        )
    return name
