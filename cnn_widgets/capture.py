"""Hook-based activation capture that leaves the user's model exactly as it found it.

Every hook lives inside :class:`ActivationCapture`; on exit (normal or by exception) all hooks are removed
and the model's state is restored: buffers (BatchNorm running statistics) bit-identical, ``training``
flags, ``requires_grad`` and ``.grad`` as before. Parameters are never written.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.overrides import TorchFunctionMode

from ._checks import check_layer_names, check_model, model_device

_INPLACE_DUNDERS = frozenset(
    f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor",
                            "lshift", "rshift", "matmul")
) | {"__setitem__"}


def _is_inplace(func: Any, kwargs: dict[str, Any]) -> bool:
    name = getattr(func, "__name__", "")
    return (
        (name.endswith("_") and not name.startswith("__"))
        or name in _INPLACE_DUNDERS
        or kwargs.get("inplace") is True
        or "out" in kwargs
    )


class _CopyBeforeWrite(TorchFunctionMode):
    """Copies a recorded activation just before an in-place op would overwrite it.

    Recording references instead of copies keeps capture close to a plain forward's cost; this mode
    catches ``ReLU(inplace=True)``, ``out += identity``, ``x[...] = v`` and ``out=`` writes."""

    def __init__(self, capture: "ActivationCapture") -> None:
        super().__init__()
        self.capture = capture

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.capture._watch and _is_inplace(func, kwargs):
            target = kwargs.get("out", args[0] if args else kwargs.get("input"))
            for t in target if isinstance(target, (tuple, list)) else (target,):
                if isinstance(t, torch.Tensor):
                    self.capture._copy_out(t)
        return func(*args, **kwargs)


def _leaf_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and not any(True for _ in m.children())] or (
        [""] if not any(True for _ in model.children()) else []
    )


def _storage_users(t: torch.Tensor) -> int:
    """How many tensors (and storage handles) reference ``t``'s memory; a large number when the
    private counter this reads is unavailable, so callers fall back to copying."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    if counter is None:
        return 1 << 30
    storage = t.untyped_storage()
    return int(counter(storage._cdata)) - 1  # minus the `storage` handle made just here


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock held by everything that installs hooks on ``model`` or changes its mode for a moment
    (capture, layer table, attribution, widgets' worker threads), so two such runs never overlap and
    one never sees the other's hooks. Re-entrant: nested use in one thread is fine."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


class ModelState:
    """A snapshot of everything a visualisation could disturb, restored by :meth:`restore`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.training = [(m, m.training) for m in model.modules()]
        self.params = []
        for p in model.parameters():
            grad = p.grad
            self.params.append((p, p.requires_grad, grad, None if grad is None else grad.detach().clone()))
        # by owner and name, so a forward that rebinds a buffer (self.n = self.n + 1) is undone too
        self.buffers = [
            (m, name, b, b.detach().clone())
            for m in model.modules()
            for name, b in m._buffers.items()
            if b is not None
        ]

    def restore(self) -> None:
        """Put flags, gradients and buffers back as they were at construction."""
        for m, flag in self.training:
            m.training = flag
        with torch.no_grad():
            for p, requires_grad, grad, saved in self.params:
                p.requires_grad_(requires_grad)
                if grad is None:
                    p.grad = None
                else:
                    grad.copy_(saved)
                    p.grad = grad
            for m, name, b, saved in self.buffers:
                if m._buffers.get(name) is not b:
                    m._buffers[name] = b
                if not torch.equal(b, saved):
                    b.copy_(saved)


class ActivationCapture:
    """Context manager that records module outputs during forward passes.

    ``layers=None`` records every leaf module whose output is a tensor. Keys of :attr:`activations` are
    qualified names from ``model.named_modules()`` in execution order; a module called twice in one
    forward gives ``name`` and ``name#1``. Values are detached CPU copies (copies, because a later
    in-place op such as ``ReLU(inplace=True)`` or ``out += identity`` would otherwise change them).

    With ``gradients=True`` the gradient flowing into each recorded output is stored in
    :attr:`gradients` under the same key when the caller runs a backward pass inside the context, and
    :attr:`grad_edges` holds each recorded output's autograd edge as it was when the module returned:
    ``torch.autograd.grad(score, [cap.grad_edges[key]])`` is the gradient with respect to that output
    even if a later in-place op (``ReLU(inplace=True)``, ``out += identity``) rewrote the tensor, and it
    back-propagates no further than the module (no parameter gradients, no input gradient).
    """

    def __init__(
        self, model: nn.Module, layers: Iterable[str] | None = None, *, gradients: bool = False
    ) -> None:
        self.model = check_model(model)
        self.explicit = layers is not None
        self.layers = list(dict.fromkeys(  # a name listed twice is still one hook
            check_layer_names(model, [layers] if isinstance(layers, str) else layers)
            if layers is not None
            else _leaf_names(model)
        ))
        self.want_gradients = gradients
        self.activations: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.grad_edges: dict[str, GradientEdge] = {}
        self._handles: list[Any] = []
        self._state: ModelState | None = None
        self._skipped: dict[str, str] = {}
        self._watch: dict[int, list[str]] = {}
        self._mode: _CopyBeforeWrite | None = None

    def _make_private(self) -> None:
        """On exit, copy every recorded activation that shares memory with anything else — another
        recorded activation (a view module such as Flatten), the input, the returned output, the autograd
        graph — so a later in-place write anywhere cannot change it. Storages only we hold stay as they
        are: that is most of them, and why capture costs little more than a forward pass."""
        for keys in self._watch.values():
            first = self.activations[keys[0]]
            outside = _storage_users(first) - len(keys)
            for i, key in enumerate(keys):
                if outside > 0 or i > 0:
                    self.activations[key] = self.activations[key].clone()
        self._watch.clear()

    def _copy_out(self, t: torch.Tensor) -> None:
        """Replace recorded activations sharing ``t``'s storage by private copies."""
        for key in self._watch.pop(t.untyped_storage().data_ptr(), ()):
            self.activations[key] = self.activations[key].clone()

    def _hook_for(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                self._skipped.setdefault(name, type(output).__name__)
                return
            key = name
            k = 1
            while key in self.activations:
                key = f"{name}#{k}"
                k += 1
            value = output.detach()
            if value.device.type == "cpu":
                self._watch.setdefault(value.untyped_storage().data_ptr(), []).append(key)
            else:
                value = value.to("cpu")
            self.activations[key] = value
            if self.want_gradients:
                self.outputs[key] = output
                if output.requires_grad:
                    self.grad_edges[key] = get_gradient_edge(output)

                    def store(grad: torch.Tensor, key: str = key) -> None:
                        self.gradients[key] = grad.detach().to("cpu", copy=True)

                    output.register_hook(store)

        return hook

    def __enter__(self) -> "ActivationCapture":
        self._lock = model_lock(self.model)
        self._lock.acquire()
        try:
            self._state = ModelState(self.model)
        except BaseException:
            self._lock.release()
            raise
        self.activations.clear()
        self.gradients.clear()
        self.outputs.clear()
        self.grad_edges.clear()
        self._watch.clear()
        modules = dict(self.model.named_modules())
        try:
            for name in self.layers:
                self._handles.append(modules[name].register_forward_hook(self._hook_for(name)))
            self._mode = _CopyBeforeWrite(self)
            self._mode.__enter__()
        except BaseException:
            self._close()
            raise
        return self

    def _close(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        self._make_private()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._state is not None:
            try:
                self._state.restore()
            finally:
                self._state = None
                self._lock.release()

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close()
        if exc_type is None and self.explicit:
            missing = [n for n in self.layers if n in self._skipped]
            if missing:
                name = missing[0]
                raise ValueError(
                    f"layer {name!r} returned a {self._skipped[name]}, not a tensor, so it has no activation "
                    "to show; pick one of its submodules instead"
                )


def capture_activations(
    model: nn.Module, inputs: Any, layers: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Run one forward pass under ``torch.no_grad`` and return ``{layer name: activation}``.

    ``inputs`` is a tensor batch (moved to the model's device) or anything
    :func:`cnn_widgets.images.to_batch` accepts; ``layers=None`` means every leaf module with a tensor
    output. The model is left untouched: no hooks remain and its state is restored, even on error.
    """
    from .images import to_batch

    check_model(model)
    batch = to_batch(inputs, model=model).to(model_device(model))
    with ActivationCapture(model, layers) as cap, torch.no_grad():
        model(batch)
    return dict(cap.activations)
