"""A copy of a model in which every nonlinearity call is its own module, for Captum's module hooks.

Captum's DeepLift (and DeepLiftShap), guided backprop and deconvolution attach hooks to nonlinearity
*modules*. A module that runs more than once per forward pass (torchvision's ResNet blocks reuse one
``nn.ReLU``) breaks them, and functional calls (``F.relu``, ``torch.relu``, ``x.relu()``) are invisible
to them, so they are treated as linear. :func:`unshared_copy` traces a deep copy with ``torch.fx`` and
rewrites it: every call site gets its own module, functional nonlinearities become modules, and
``inplace`` is off everywhere. The user's model is never touched.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ._checks import is_script


class UnshareError(ValueError):
    """The model cannot be traced and rewritten by :func:`unshared_copy`; the message says why."""


# Functional nonlinearities Captum's DeepLift handles as modules (its ``SUPPORTED_NON_LINEAR``). Each
# builder has the call's signature (so arguments bind as in the call) and returns the equivalent
# module, or None when there is none (softmax with a dtype).
def _relu(input: Any, inplace: bool = False) -> nn.Module:
    return nn.ReLU()


def _elu(input: Any, alpha: float = 1.0, inplace: bool = False) -> nn.Module:
    return nn.ELU(alpha)


def _leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> nn.Module:
    return nn.LeakyReLU(negative_slope)


def _sigmoid(input: Any) -> nn.Module:
    return nn.Sigmoid()


def _tanh(input: Any) -> nn.Module:
    return nn.Tanh()


def _softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> nn.Module:
    return nn.Softplus(beta, threshold)


def _softmax(input: Any, dim: int | None = None, dtype: Any = None) -> nn.Module | None:
    return nn.Softmax(dim) if dtype is None else None


def _f_softmax(
    input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None
) -> nn.Module | None:
    return _softmax(input, dim, dtype)


_FUNCTIONS: dict[Any, Callable[..., nn.Module | None]] = {
    F.relu: _relu,
    torch.relu: _relu,
    torch.relu_: _relu,
    F.elu: _elu,
    F.elu_: _elu,
    F.leaky_relu: _leaky_relu,
    F.leaky_relu_: _leaky_relu,
    F.sigmoid: _sigmoid,
    torch.sigmoid: _sigmoid,
    torch.sigmoid_: _sigmoid,
    F.tanh: _tanh,
    torch.tanh: _tanh,
    torch.tanh_: _tanh,
    F.softplus: _softplus,
    F.softmax: _f_softmax,
    torch.softmax: _softmax,
}
_METHODS: dict[str, Callable[..., nn.Module | None]] = {
    "relu": _relu,
    "relu_": _relu,
    "sigmoid": _sigmoid,
    "sigmoid_": _sigmoid,
    "tanh": _tanh,
    "tanh_": _tanh,
    "softmax": _softmax,
}


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


class _Tracer(fx.Tracer):
    """fx's default tracer (``torch.nn`` modules stay leaves) that refuses to trace through a module
    with hooks: they would run on fx proxies and be missing from the copy."""

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        name = self.path_of_module(m)
        if _has_hooks(m) and not self.is_leaf_module(m, name):
            raise UnshareError(
                f"module {name!r} ({type(m).__name__}) has hooks, which the traced copy would lose"
            )
        return super().call_module(m, forward, args, kwargs)


def _free_name(gm: fx.GraphModule, base: str) -> str:
    """``base``, ``base_1``, ``base_2``, …: the first that names nothing in ``gm`` yet."""
    parent, _, leaf = base.rpartition(".")
    try:
        owner = gm.get_submodule(parent)
    except AttributeError:  # no such module yet: add_submodule will create it
        return base
    candidates = (f"{leaf}_{k}" if k else leaf for k in itertools.count())
    name = next(n for n in candidates if not hasattr(owner, n))
    return f"{parent}.{name}" if parent else name


def _mentions_node(value: Any) -> bool:
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return bool(found)


def _functional(node: fx.Node) -> tuple[fx.Node, nn.Module, bool, str, str] | None:
    """For a functional nonlinearity call with constant options: its input, the equivalent module,
    whether the call was in place, the function's name and a description of the call. None for any
    other node."""
    if node.op == "call_function" and node.target in _FUNCTIONS:
        builder, name = _FUNCTIONS[node.target], str(node.target.__name__)
        described = f"{getattr(node.target, '__module__', None) or 'torch'}.{name}()"
    elif node.op == "call_method" and node.target in _METHODS:
        builder, name = _METHODS[node.target], node.target
        described = f"Tensor.{name}()"
    else:
        return None
    try:
        bound = inspect.signature(builder).bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    options = {k: v for k, v in bound.arguments.items() if k != "input"}
    if not isinstance(bound.arguments["input"], fx.Node) or _mentions_node(options):
        return None
    module = builder(*node.args, **node.kwargs)
    if module is None:
        return None
    inplace = name.endswith("_") or bool(options.get("inplace", False))
    return bound.arguments["input"], module, inplace, name.rstrip("_"), described


def _redirect_later_uses(node: fx.Node, mutated: Any) -> None:
    """``node`` wrote into ``mutated`` in place; point every later use of ``mutated`` at ``node``, so
    the graph stays right once the write is out of place."""
    if not isinstance(mutated, fx.Node):
        return
    later: set[fx.Node] = set()
    n = node.next
    while n.op != "root":
        later.add(n)
        n = n.next
    for user in list(mutated.users):
        if user in later:
            user.replace_input_with(mutated, node)


def _rewrite(gm: fx.GraphModule) -> dict[str, str]:
    """Unshare modules, turn functional nonlinearities into modules, undo in-place writes of both;
    returns the call-site map (module name in ``gm`` → what it was in the original)."""
    call_sites: dict[str, str] = {}
    seen: set[int] = set()
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            original = str(node.target)
            module = gm.get_submodule(original)
            if id(module) in seen:
                # a deep copy that shares the original's parameters and buffers (weights stay tied)
                memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
                module = copy.deepcopy(module, memo)
                node.target = _free_name(gm, original)
                gm.add_submodule(node.target, module)
            seen.add(id(module))
            call_sites[node.target] = original
            if getattr(module, "inplace", False) is True and node.args:
                _redirect_later_uses(node, node.args[0])
            continue
        found = _functional(node)
        if found is None:
            continue
        source, module, inplace, function, described = found
        stack = node.meta.get("nn_module_stack")
        scope = next(reversed(stack.values()))[0] if stack else ""  # the innermost module's name
        name = _free_name(gm, f"{scope}.{function}_fn".lstrip("."))
        gm.add_submodule(name, module)
        with gm.graph.inserting_before(node):
            replacement = gm.graph.call_module(name, (source,))
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
        call_sites[name] = f"{described} in {scope or 'forward'}"
        if inplace:
            _redirect_later_uses(replacement, source)
    for m in gm.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    gm.graph.lint()
    gm.recompile()
    return call_sites


def _check_same_output(gm: fx.GraphModule, reference: Any, example: torch.Tensor) -> None:
    if not isinstance(reference, torch.Tensor):
        raise UnshareError(
            f"the model returns a {type(reference).__name__}, not a tensor; cannot check the copy"
        )
    with torch.no_grad():
        got = gm(example.clone())
    finite = reference[torch.isfinite(reference)]  # NaN scores are compared with equal_nan, not scaled
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    same = got.shape == reference.shape and torch.allclose(
        got, reference, rtol=0, atol=1e-5 * scale, equal_nan=True
    )
    if not same:
        raise UnshareError(
            "the traced copy computes a different output than the model (torch.fx does not follow every "
            "in-place write, e.g. `b = a; b += 1` changes `a` only in the model)"
        )


def unshared_copy(model: nn.Module, example: torch.Tensor | None = None) -> fx.GraphModule:
    """A ``torch.fx``-traced deep copy of ``model`` in eval mode (``training`` branches are traced in
    eval mode) in which every module call site has its own module (the second use of
    ``layer1.0.relu`` becomes ``layer1.0.relu_1``, a deep copy sharing its parameters), functional ReLU,
    ELU, leaky ReLU, sigmoid, tanh, softplus and softmax calls are modules named after the function and
    the module whose forward calls it (``layer1.0.relu_fn``, ``layer1.0.relu_fn_1``; ``relu_fn`` in the
    model's own forward), and no module works in place (later uses of what an in-place call overwrote
    read its result instead). ``copy.call_sites`` maps each module call in the copy to the original
    module's name, or to a description such as ``"torch.nn.functional.relu() in layer1.0"``.

    ``example``: an input on which the copy's output is checked against a deep copy of the model's.
    Raises :class:`UnshareError` for a TorchScript model, a model that cannot be deep-copied or that
    torch.fx cannot trace (data-dependent control flow, …), a traced-through module with hooks, or a
    failed ``example`` check.
    """
    if is_script(model):
        raise UnshareError(f"{type(model).__name__} is a TorchScript module, which torch.fx cannot trace")
    try:
        clone = copy.deepcopy(model).eval()
    except Exception as exc:  # a lock, an open file, … in the model
        raise UnshareError(f"cannot deep-copy {type(model).__name__}: {type(exc).__name__}: {exc}") from exc
    if _has_hooks(clone):
        raise UnshareError(
            f"the model ({type(model).__name__}) has hooks, which the traced copy would lose"
        )
    reference = None
    if example is not None:
        with torch.no_grad():
            reference = clone(example.clone())
    try:
        graph = _Tracer().trace(clone)
    except UnshareError:
        raise
    except Exception as exc:  # fx raises TraceError, NameError, TypeError, … depending on the model
        raise UnshareError(
            f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: {exc}"
        ) from exc
    gm = fx.GraphModule(clone, graph, class_name=f"Unshared{type(model).__name__}")
    gm.call_sites = _rewrite(gm)
    gm.eval()
    if example is not None:
        _check_same_output(gm, reference, example)
    return gm
