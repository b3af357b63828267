"""Hook-based activation capture that leaves the user's model exactly as it found it.

Every hook lives inside :class:`ActivationCapture`; on exit (normal or by exception) all hooks are removed
and the model's state is restored: buffers (BatchNorm running statistics) bit-identical, ``training``
flags, ``requires_grad`` and ``.grad`` as before. Parameters are never written.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.overrides import TorchFunctionMode

from ._checks import call_forward, check_layer_names, check_layers_arg, check_model, model_input
from .images import Stats

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


def _buffer_slots(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of a module's own buffers; ScriptModules keep them in a wrapper without
    ``.get``, so only ``items()`` is used."""
    return [(name, b) for name, b in module._buffers.items() if b is not None]


class ModelState:
    """A snapshot of everything a visualisation could disturb, restored by :meth:`restore`.

    Works for eager modules and ScriptModules (``torch.jit.script``/``trace``: a graph traced in train
    mode updates BatchNorm statistics whatever ``training`` says, so buffers are always restored).
    Raises ``TypeError`` up front when the model cannot be snapshotted (meta tensors, no storage)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        try:
            modules = list(model.modules())
            self.training = [(m, m.training) for m in modules]
            self.params = []
            for p in model.parameters():
                grad = p.grad
                self.params.append((p, p.requires_grad, grad, None if grad is None else grad.detach().clone()))
            # by owner and name, so a forward that rebinds a buffer (self.n = self.n + 1) is undone too
            self.buffers = [(m, name, b, b.detach().clone()) for m in modules for name, b in _buffer_slots(m)]
        except (RuntimeError, NotImplementedError, AttributeError) as err:
            raise TypeError(
                f"cannot take a snapshot of this {type(model).__name__}'s state ({err}), so cnn_widgets "
                "cannot guarantee to leave it unchanged; pass a model whose parameters and buffers are "
                "ordinary tensors on a real device"
            ) from err

    def restore(self) -> None:
        """Put flags, gradients and buffers back as they were at construction. Every item is restored
        even if one fails; the first failure is raised afterwards."""
        errors: list[BaseException] = []

        def attempt(action: Callable[[], None]) -> None:
            try:
                action()
            except Exception as err:  # keep restoring the rest; report the first failure at the end
                errors.append(err)

        def put_flag(m: nn.Module, flag: bool) -> None:
            if m.training != flag:
                m.training = flag

        def put_param(p: torch.Tensor, requires_grad: bool, grad: Any, saved: Any) -> None:
            p.requires_grad_(requires_grad)
            if grad is None:
                p.grad = None
            else:
                grad.copy_(saved)
                p.grad = grad

        def put_buffer(m: nn.Module, name: str, b: torch.Tensor, saved: torch.Tensor) -> None:
            if name in m._buffers.keys() and m._buffers[name] is not b and not isinstance(
                m, torch.jit.ScriptModule
            ):
                m._buffers[name] = b
            if not torch.equal(b, saved):
                b.copy_(saved)

        for m, flag in self.training:
            attempt(lambda: put_flag(m, flag))
        with torch.no_grad():
            for item in self.params:
                attempt(lambda: put_param(*item))
            for item in self.buffers:
                attempt(lambda: put_buffer(*item))
        if errors:
            raise errors[0]


class _Active(threading.local):
    """The sessions this thread holds, by model identity (nested entries reuse the outer one)."""

    def __init__(self) -> None:
        self.sessions: dict[int, ModelState] = {}


_ACTIVE = _Active()


@contextmanager
def model_session(model: nn.Module, *, eval_mode: bool = False, hooks: bool = False) -> Iterator[ModelState]:
    """The one way any work touches a user's model: hold :func:`model_lock`, snapshot the state once,
    and restore it on exit, also on error. Entering again in the same thread (a capture inside an
    attribution) reuses the outer session instead of snapshotting again. ``eval_mode`` switches the
    model to eval for the session; ``hooks`` refuses models that cannot carry module hooks."""
    check_model(model, hooks=hooks)
    lock = model_lock(model)
    with lock:
        outer = _ACTIVE.sessions.get(id(model))
        if outer is not None and outer.model is model:
            if eval_mode and any(m.training for m in model.modules()):
                model.eval()
            yield outer
            return
        state = ModelState(model)
        _ACTIVE.sessions[id(model)] = state
        try:
            if eval_mode and any(m.training for m in model.modules()):
                model.eval()
            yield state
        finally:
            del _ACTIVE.sessions[id(model)]
            state.restore()


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

    Run the model yourself inside the context (its mode is yours: call ``model.eval()`` for
    deterministic Dropout/BatchNorm; the mode is restored on exit), or call :meth:`run` with any image
    form and this capture's ``mean``/``std``. A layer named explicitly that never runs is an error.
    TorchScript modules ignore module hooks and are refused with a ``TypeError``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str] | None = None,
        *,
        gradients: bool = False,
        mean: Stats = None,
        std: Stats = None,
    ) -> None:
        self.model = check_model(model, hooks=True)
        names = check_layers_arg(layers)
        self.explicit = names is not None
        self.layers = list(dict.fromkeys(  # a name listed twice is still one hook
            check_layer_names(model, names) if names is not None else _leaf_names(model)
        ))
        self.mean, self.std = mean, std
        self.want_gradients = gradients
        self.activations: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.grad_edges: dict[str, GradientEdge] = {}
        self._handles: list[Any] = []
        self._session: Any = None
        self._ran = False
        self._skipped: dict[str, str] = {}
        self._watch: dict[int, list[str]] = {}
        self._mode: _CopyBeforeWrite | None = None

    def run(self, image: Any) -> Any:
        """Inside the context: one forward pass on ``image`` (any form :mod:`cnn_widgets.images`
        accepts, normalised with this capture's ``mean``/``std``); returns the model's output. Raw
        torch errors become a ``ValueError`` naming the input shape."""
        from .images import to_batch

        if self._session is None:
            raise RuntimeError("ActivationCapture.run() needs the capture to be entered: use `with ... as cap:`")
        batch = model_input(self.model, to_batch(image, self.mean, self.std, model=self.model))
        with torch.set_grad_enabled(self.want_gradients and torch.is_grad_enabled()):
            return call_forward(self.model, batch)

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

    def _mark_ran(self, module: nn.Module, args: Any, output: Any) -> None:
        self._ran = True

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
                    # the hook lives in the autograd graph, which the garbage collector cannot see
                    # into: referring to the capture (which holds the graph) would leak both for ever
                    gradients = self.gradients

                    def store(grad: torch.Tensor, key: str = key) -> None:
                        gradients[key] = grad.detach().to("cpu", copy=True)

                    output.register_hook(store)

        return hook

    def __enter__(self) -> "ActivationCapture":
        self._session = model_session(self.model, hooks=True)
        self._session.__enter__()
        self.activations.clear()
        self.gradients.clear()
        self.outputs.clear()
        self.grad_edges.clear()
        self._watch.clear()
        self._skipped.clear()
        self._ran = False
        modules = dict(self.model.named_modules())
        try:
            self._handles.append(self.model.register_forward_hook(self._mark_ran))
            for name in self.layers:
                self._handles.append(modules[name].register_forward_hook(self._hook_for(name)))
            self._mode = _CopyBeforeWrite(self)
            self._mode.__enter__()
        except BaseException as err:
            self._close(type(err), err, err.__traceback__)
            raise
        return self

    def _close(self, exc_type: Any = None, exc: Any = None, tb: Any = None) -> None:
        try:
            if self._mode is not None:
                self._mode.__exit__(None, None, None)
                self._mode = None
            self._make_private()
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            session, self._session = self._session, None
            if session is not None:
                session.__exit__(exc_type, exc, tb)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(exc_type, exc, tb)
        if exc_type is None and self.explicit:
            for name in self.layers:
                if name in self._skipped:
                    raise ValueError(
                        f"layer {name!r} returned a {self._skipped[name]}, not a tensor, so it has no "
                        "activation to show; pick one of its submodules instead"
                    )
                if name not in self.activations and self._ran:
                    raise ValueError(
                        f"layer {name!r} did not run during the forward pass (it is registered but the "
                        "model's forward never calls it); pick a layer the model uses"
                    )


def capture_activations(
    model: nn.Module,
    inputs: Any,
    layers: Iterable[str] | None = None,
    mean: Stats = None,
    std: Stats = None,
) -> dict[str, torch.Tensor]:
    """Run one forward pass in eval mode under ``torch.no_grad`` and return ``{layer name: activation}``.

    ``inputs``: anything :func:`cnn_widgets.images.to_batch` accepts (unnormalised pixels, with the
    model's ``mean``/``std`` in 0‥1 units), moved to the model's device and dtype. ``layers=None``
    means every leaf module with a tensor output. The model runs in eval mode, as :func:`attribute`
    does, so Dropout is off, BatchNorm uses its running statistics and two identical calls agree. The
    model is left untouched: no hooks remain and its state (mode included) is restored, even on error.
    """
    from .images import to_batch

    check_model(model, hooks=True)
    names = check_layers_arg(layers)
    batch = model_input(model, to_batch(inputs, mean, std, model=model))
    with model_session(model, eval_mode=True, hooks=True):
        with ActivationCapture(model, names) as cap, torch.no_grad():
            call_forward(model, batch)
    return dict(cap.activations)
