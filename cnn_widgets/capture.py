"""Hook-based activation capture that leaves the user's model exactly as it found it.

Every hook lives inside :class:`ActivationCapture`; on exit (normal or by exception) all hooks are removed
and the model's state is restored: buffers (BatchNorm running statistics) bit-identical, ``training``
flags, ``requires_grad`` and ``.grad`` as before. Parameters are never written.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge

from ._checks import call_forward, check_layer_names, check_layers_arg, check_model, model_input
from .images import Stats

POOL_LIMIT = 256 * 2**20
"""Process-wide cap on idle activation buffers kept for reuse across captures: 256 MiB. Buffers the
caller still holds do not count; beyond the cap the least recently returned sizes are freed."""

Layout = tuple[torch.dtype, torch.Size, tuple[int, ...]]
"""``(dtype, shape, strides)`` of a dense tensor: what a buffer is lent as."""

_NUMPY_DTYPES = {
    torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
    torch.complex64: np.complex64, torch.complex128: np.complex128, torch.bool: np.bool_, torch.uint8: np.uint8,
    torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32, torch.int64: np.int64,
}


class _BufferPool:
    """CPU buffers for recorded activations, reused across captures so that a long-running kernel
    copies each activation into warm pages instead of having the OS fault in fresh ones every run.

    A buffer returns to the pool when the last tensor using its memory (views included) is gone: the
    copy's storage holds a numpy view of the buffer, and a weak reference to that view says when it
    died. Until then the buffer is the caller's alone, so a later capture never writes into memory
    someone still holds. The pool keeps at most ``limit`` bytes of idle buffers, dropping the least
    recently returned sizes first; buffers in use are not the pool's and do not count. Thread-safe:
    buffers come back in whichever thread (or garbage collection) drops the last tensor, so returns are
    queued without blocking and filed by the next thread to hold the lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.allocated = 0  # buffers ever allocated: what reuse saves
        self._idle: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._idle_bytes = 0
        self._leases: dict[int, tuple[weakref.ref, np.ndarray]] = {}
        self._returned: deque[np.ndarray] = deque()
        self._lock = threading.Lock()

    @property
    def idle_bytes(self) -> int:
        """Bytes of buffers waiting in the pool for reuse."""
        self._settle()
        return self._idle_bytes

    def copy(self, value: torch.Tensor) -> torch.Tensor:
        """A CPU copy of ``value`` in a pooled buffer: same dtype, shape and channels-last strides;
        other strides become contiguous."""
        nbytes = value.nbytes
        block = self._take(nbytes)
        if block is None:
            with self._lock:
                self.allocated += 1
            block = torch.empty(nbytes, dtype=torch.uint8).numpy()  # torch's allocator: 64-byte aligned
        stride = value.stride() if _channels_last(value) else None
        return self._lend(block, value.dtype, value.shape, stride).copy_(value)

    def prepare(self, layouts: Iterable[Layout]) -> dict[Layout, list[torch.Tensor]]:
        """Idle buffers lent ahead as tensors of these layouts (as many as are idle), so that a forward
        pass about to produce them only has to copy. Dropping an unused one returns its buffer."""
        ready: dict[Layout, list[torch.Tensor]] = {}
        for layout in layouts:
            dtype, shape, stride = layout
            block = self._take(shape.numel() * dtype.itemsize)
            if block is not None:
                ready.setdefault(layout, []).append(self._lend(block, dtype, shape, stride))
        return ready

    def _take(self, nbytes: int) -> np.ndarray | None:
        """An idle buffer of exactly ``nbytes``, now out of the pool, or ``None``."""
        with self._lock:
            self._take_returned()
            idle = self._idle.get(nbytes)
            block = idle.pop() if idle else None
            if block is not None:
                self._idle_bytes -= nbytes
                if not idle:
                    del self._idle[nbytes]
        if self._returned:
            self._settle()
        return block

    def _lend(
        self, block: np.ndarray, dtype: torch.dtype, shape: torch.Size, stride: tuple[int, ...] | None
    ) -> torch.Tensor:
        """A tensor on ``block``'s memory (contiguous unless dense ``stride`` is given) whose storage
        holds a fresh numpy view of it; when that view dies, the buffer comes back."""
        np_dtype = _NUMPY_DTYPES.get(dtype)
        lease = block.view(np.uint8 if np_dtype is None else np_dtype)  # a new view: the pool keeps `block`
        if np_dtype is not None and stride is None:
            lease = lease.reshape(shape)  # shaped in numpy: cheaper than torch views inside a forward
        ref = weakref.ref(lease, self._give_back)
        self._leases[id(ref)] = (ref, block)
        out = torch.from_numpy(lease)
        if np_dtype is None:
            out = out.view(dtype)
        if stride is not None:
            return out.as_strided(shape, stride)  # bounds-checked against the buffer by torch
        return out if np_dtype is not None else out.view(shape)

    def _give_back(self, ref: weakref.ref) -> None:
        """Weak-reference callback: the last tensor on a buffer is gone."""
        self._returned.append(self._leases.pop(id(ref))[1])
        self._settle()

    def _settle(self) -> None:
        """File queued returns if the lock is free; every holder settles after releasing it, so nothing
        stays queued."""
        while self._returned and self._lock.acquire(blocking=False):
            try:
                self._take_returned()
            finally:
                self._lock.release()

    def _take_returned(self) -> None:
        """With the lock held: file queued returns, then drop the oldest sizes beyond the limit."""
        while self._returned:
            block = self._returned.popleft()
            self._idle.setdefault(block.nbytes, []).append(block)
            self._idle.move_to_end(block.nbytes)
            self._idle_bytes += block.nbytes
        while self._idle_bytes > self.limit:
            nbytes, blocks = next(iter(self._idle.items()))
            blocks.pop()
            self._idle_bytes -= nbytes
            if not blocks:
                del self._idle[nbytes]


_POOL = _BufferPool(POOL_LIMIT)


def _channels_last(t: torch.Tensor) -> bool:
    """Dense channels-last (4-D or 5-D) but not plain contiguous: the one stride order worth keeping."""
    if t.is_contiguous():
        return False
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return t.dim() in formats and t.is_contiguous(memory_format=formats[t.dim()])


# per model, the layouts its last capture copied into: the next capture lends buffers ahead in these
_LAYOUTS: "weakref.WeakKeyDictionary[nn.Module, list[Layout]]" = weakref.WeakKeyDictionary()
_LAYOUTS_GUARD = threading.Lock()


def _last_layouts(model: nn.Module) -> list[Layout]:
    """The layouts of the copies made by the last capture of ``model`` (what the next one will likely
    need)."""
    with _LAYOUTS_GUARD:
        return _LAYOUTS.get(model, [])


def _leaf_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and not any(True for _ in m.children())] or (
        [""] if not any(True for _ in model.children()) else []
    )


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
    forward gives ``name`` and ``name#1``. Values are detached CPU copies taken the moment each module
    returns (a later in-place op such as ``ReLU(inplace=True)`` or ``out += identity`` cannot change
    them), each in its own memory, shared with nothing. The copies live in buffers reused across
    captures (see :data:`POOL_LIMIT`): a buffer is reused only once every tensor on its memory is gone.

    With ``gradients=True`` the gradient flowing into each recorded output is stored in
    :attr:`gradients` under the same key when the caller runs a backward pass inside the context, and
    :attr:`grad_edges` holds each recorded output's autograd edge as it was when the module returned:
    ``torch.autograd.grad(score, [cap.grad_edges[key]])`` is the gradient with respect to that output
    even if a later in-place op (``ReLU(inplace=True)``, ``out += identity``) rewrote the tensor, and it
    back-propagates no further than the module (no parameter gradients, no input gradient).

    Run the model yourself inside the context (its mode is yours: call ``model.eval()`` for
    deterministic Dropout/BatchNorm; the mode is restored on exit), or call :meth:`run` with any image
    form and this capture's ``mean``/``std``. On exit the model's state is put back as it was on entry,
    your own passes' effects included (BatchNorm statistics of a train-mode forward, ``.grad`` of a
    backward): run training steps outside the context. A layer named explicitly that never runs is an error.
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
        self._ready: dict[Layout, list[torch.Tensor]] = {}
        self._layouts: list[Layout] = []

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

    def _copy(self, value: torch.Tensor) -> torch.Tensor:
        """A CPU copy of ``value`` sharing memory with nothing: into a buffer lent at entry when one of
        its layout is ready (inside the forward pass only the copy is left to do), else from the pool;
        quantized, sparse, nested and empty tensors are cloned."""
        if value.layout != torch.strided or value.is_quantized or value.is_nested or value.numel() == 0:
            return value.to("cpu", copy=True)
        layout = (value.dtype, value.shape, value.stride())
        ready = self._ready.get(layout)
        if ready:
            out = ready.pop().copy_(value)
        else:
            out = _POOL.copy(value)
            layout = (out.dtype, out.shape, out.stride())
        self._layouts.append(layout)
        return out

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
            # copied now, before any later op can write to the output in place
            self.activations[key] = self._copy(output.detach() if output.requires_grad else output)
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
        self._skipped.clear()
        self._ran = False
        self._layouts = []
        modules = dict(self.model.named_modules())
        try:
            self._ready = _POOL.prepare(_last_layouts(self.model))
            self._handles.append(self.model.register_forward_hook(self._mark_ran))
            for name in self.layers:
                self._handles.append(modules[name].register_forward_hook(self._hook_for(name)))
        except BaseException as err:
            self._close(type(err), err, err.__traceback__)
            raise
        return self

    def _close(self, exc_type: Any = None, exc: Any = None, tb: Any = None) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._ready = {}  # buffers lent but not used go back to the pool
        if self._layouts:
            with _LAYOUTS_GUARD:
                _LAYOUTS[self.model] = self._layouts
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
