"""Shared by every test module: the strict "model untouched" check (the ``untouched`` fixture) and the
hypothesis profiles (``default``: few, derandomised examples inside ``make test``; ``fuzz``: many, for
``make fuzz``, selected with ``--hypothesis-profile=fuzz``).

Test modules get the check through the fixture rather than ``from conftest import ...``: conftest
modules outside packages all import as ``conftest``, so which one an import finds depends on the order
pytest collected them in (``tests/browser`` has its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.modules.module as module_globals
from hypothesis import HealthCheck, settings
from torch import nn

from cnn_widgets import model_lock

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]  # models are built and run inside examples
settings.register_profile(
    "default", max_examples=12, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "fuzz", max_examples=1500, deadline=None, derandomize=False, print_blob=True, suppress_health_check=_QUIET
)
# loaded explicitly, so a CI environment variable does not switch hypothesis to its "ci" profile (100
# examples); --hypothesis-profile=fuzz is applied after this, at pytest_configure
settings.load_profile("default")


def hook_census(model: nn.Module) -> dict[str, int]:
    """Every hook container torch knows about, with its size: per module (eager or TorchScript), per
    parameter and buffer, the global module hooks, and the torch-function and dispatch mode stacks."""
    census: dict[str, int] = {}
    for name, m in model.named_modules():
        for attr, value in vars(m).items():
            if "hook" in attr and isinstance(value, dict):
                census[f"{name or '<root>'}.{attr}"] = len(value)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"):
            census[f"{name}.{attr}"] = len(getattr(t, attr, None) or {})
    for attr in dir(module_globals):
        value = getattr(module_globals, attr)
        if attr.startswith("_global_") and isinstance(value, dict):
            census[attr] = len(value)
    census["torch_function_mode_stack"] = torch._C._len_torch_function_stack()
    census["torch_dispatch_mode_stack"] = torch._C._len_torch_dispatch_stack()
    return census


def _bits(t: torch.Tensor) -> bytes | None:
    """The exact bytes of ``t`` (``None`` for a meta tensor, which has none)."""
    if t.is_meta:
        return None
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _tensor_record(t: torch.Tensor) -> tuple[Any, ...]:
    return (t, t.dtype, tuple(t.shape), t.device, _bits(t))


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a visualisation could disturb: identity, dtype, shape and exact bits of every
    parameter and buffer (and their write counters) and gradient; ``requires_grad``; ``training`` and
    ``inplace`` flags; the modules and their attribute names; the hook census; and the global grad mode,
    which a leaked ``no_grad`` would change."""
    return {
        "params": {
            n: (*_tensor_record(p), p._version, p.requires_grad, None if p.grad is None else _tensor_record(p.grad))
            for n, p in model.named_parameters()
        },
        "buffers": {n: (*_tensor_record(b), b._version) for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if isinstance(getattr(m, "inplace", None), bool)},
        "modules": [(n, id(m)) for n, m in model.named_modules()],
        "attrs": {n: sorted(vars(m)) for n, m in model.named_modules() if not isinstance(m, torch.jit.ScriptModule)},
        "hooks": hook_census(model),
        "grad_enabled": torch.is_grad_enabled(),
    }


def _same_tensor(what: str, before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert after[0] is before[0], f"{what} was replaced by another tensor"
    assert after[1:4] == before[1:4], f"{what} changed dtype, shape or device: {before[1:4]} → {after[1:4]}"
    assert after[4] == before[4], f"{what} changed value"


def assert_untouched(model: nn.Module, before: dict[str, Any], *, buffer_writes: bool = False) -> None:
    """``model`` is exactly as ``before = snapshot(model)`` recorded it (see :func:`snapshot`).
    ``buffer_writes=True`` allows buffers written and put back (same values, moved version counters):
    the user's own train-mode forward inside an ``ActivationCapture`` context does that."""
    after = snapshot(model)
    assert after["hooks"] == before["hooks"], {
        k: (before["hooks"].get(k), v) for k, v in after["hooks"].items() if before["hooks"].get(k) != v
    }
    assert after["grad_enabled"] == before["grad_enabled"], "the global grad mode changed"
    assert after["modules"] == before["modules"], "modules were added, removed or replaced"
    assert after["attrs"] == before["attrs"], "module attributes were added or removed"
    assert after["training"] == before["training"], "training flags changed"
    assert after["inplace"] == before["inplace"], "inplace flags changed"
    assert after["params"].keys() == before["params"].keys()
    for n, old in before["params"].items():
        new = after["params"][n]
        _same_tensor(f"parameter {n}", old[:5], new[:5])
        assert new[5] == old[5], f"parameter {n} was written (its version counter moved)"
        assert new[6] == old[6], f"requires_grad of {n} changed"
        if old[7] is None:
            assert new[7] is None, f".grad of {n} appeared"
        else:
            assert new[7] is not None, f".grad of {n} was removed"
            _same_tensor(f".grad of {n}", old[7], new[7])
    assert after["buffers"].keys() == before["buffers"].keys(), "buffers were added or removed"
    for n, old in before["buffers"].items():
        new = after["buffers"][n]
        _same_tensor(f"buffer {n}", old[:5], new[:5])
        assert buffer_writes or new[5] == old[5], f"buffer {n} was written (its version counter moved)"


class Untouched:
    """The strict check as a fixture object: ``with untouched(model): ...`` snapshots on entry and
    asserts on exit; ``snapshot``/``check`` for checks part-way; ``census`` for the hook census alone.
    ``empty=True`` also requires that the model carried no hooks to begin with; ``buffer_writes=True``
    allows buffers written and put back (a forward in the model's own train mode, as
    ``ActivationCapture`` runs it)."""

    census = staticmethod(hook_census)
    snapshot = staticmethod(snapshot)
    check = staticmethod(assert_untouched)

    @contextmanager
    def __call__(
        self, model: nn.Module, *, empty: bool = True, buffer_writes: bool = False
    ) -> Iterator[dict[str, Any]]:
        with model_lock(model):  # not in the middle of a view's run (its eval mode and hooks)
            before = snapshot(model)
        if empty:
            assert not any(before["hooks"].values()), {k: v for k, v in before["hooks"].items() if v}
        yield before
        # a model traced in train mode has train-mode BatchNorm baked into its graph: every forward
        # writes the statistics, which the library puts back (the values are checked all the same)
        traced_train = isinstance(model, torch.jit.TopLevelTracedModule) and model.training
        with model_lock(model):  # as the README tells user code: a view's run in progress has ended
            assert_untouched(model, before, buffer_writes=buffer_writes or traced_train)


@pytest.fixture(scope="session")
def untouched() -> Untouched:
    """The strict "model untouched" check (see :class:`Untouched`)."""
    return Untouched()


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("single_thread")``):
    its models are small, and with two threads a busy second core (another process) makes every op wait
    for it, tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _workers_end_with_their_test() -> Iterator[None]:
    """After each test, wait (up to a minute) for the library's worker threads that the test's views
    started: a slow machine must not let one test's background work run into the next test's checks
    of threads, objects alive or a model's state."""
    yield
    deadline = time.monotonic() + 60
    for thread in threading.enumerate():
        if thread.name.startswith("cnn_widgets-"):
            thread.join(max(0.0, deadline - time.monotonic()))
