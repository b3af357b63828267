"""ModelSummary: ``layer_table`` as a widget, Keras' ``model.summary()`` and ``plot_model`` for any
``nn.Module``.

A table of every leaf layer (name, type, output shape, parameters, calls, buffers) folded into a tree by
the dotted names, totals below, and above it an architecture strip: one block per layer call in
execution order, its height growing with the spatial size, its width with the channels, its colour by
layer type, with arcs where data skips ahead (residual joins, forks, concatenations).

The arcs come from one traced forward pass (:func:`trace_calls`): forward hooks on the leaf modules and a
``TorchFunctionMode`` that follows tensors through the operations between modules (``out += identity``,
``torch.cat``, ``flatten``), so each call knows which earlier calls produced its inputs. The table and
the strip are drawn in the browser from one JSON description; only the visible rows and blocks are in
the DOM, so models with thousands of layers stay responsive. Clicking a row or a block sets
``selected``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anywidget
import torch
import traitlets as t
from torch import nn
from torch.overrides import TorchFunctionMode

from .._checks import call_forward, check_model, model_input
from ..capture import model_session
from ..images import Image, Stats, to_batch
from ..layers import LayerInfo, layer_table
from ._common import CheckedUnicode, bundle, check_name
from .panel import Panel

INPUT = -1  # the producer index of the model's input
_INPLACE_DUNDERS = frozenset(
    f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor",
                            "lshift", "rshift", "matmul")
) | {"__setitem__"}


@dataclass
class Call:
    """One call of a leaf module in a forward pass. ``producers``: indices (in execution order) of the
    earlier calls whose outputs reach this call's inputs, directly or through operations outside any
    module; :data:`INPUT` for the model's input. ``input``/``output``: detached copies of the first
    tensor argument and of the output, kept only when the tracer's ``keep`` asked for them."""

    name: str
    type: str
    index: int
    repeat: int
    producers: tuple[int, ...]
    shape: tuple[int, ...] | None = None
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None


@dataclass
class Trace:
    """What :func:`trace_calls` saw: the leaf calls in execution order, and the output shape and call
    count of every module (containers included) that ran."""

    calls: list[Call]
    shapes: dict[str, tuple[int, ...] | None]
    counts: dict[str, int]


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors in a (nested) tuple, list or dict."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _shape(output: Any) -> tuple[int, ...] | None:
    return tuple(output.shape) if isinstance(output, torch.Tensor) else None


class _Flow(TorchFunctionMode):
    """Follows tensors through the operations run outside leaf modules: every result (and the target of
    an in-place operation) is tagged with the union of the producers of the tensors it was made from.
    Tags are held by tensor identity with a weak reference, so the pass keeps no tensor alive."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[int, tuple[weakref.ref, frozenset[int]]] = {}
        self.depth = 0  # > 0 while a leaf module runs: its inner operations are the module's business

    def sources(self, obj: Any) -> frozenset[int]:
        found: frozenset[int] = frozenset()
        for x in _tensors(obj):
            entry = self.tags.get(id(x))
            if entry is not None and entry[0]() is x:
                found |= entry[1]
        return found

    def tag(self, obj: Any, sources: frozenset[int]) -> None:
        for x in _tensors(obj):
            self.tags[id(x)] = (weakref.ref(x), sources)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.depth == 0:
            sources = self.sources((args, kwargs))
            if sources:
                self.tag(result, sources)
                if _writes_into(func, kwargs):
                    self.tag(kwargs.get("out", args[0] if args else None), sources)
        return result


def _writes_into(func: Any, kwargs: dict[str, Any]) -> bool:
    """Whether a torch function writes into its first argument (or ``out=``)."""
    name = getattr(func, "__name__", "")
    return (
        (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_DUNDERS
        or kwargs.get("inplace") is True or "out" in kwargs
    )


def _is_leaf(module: nn.Module) -> bool:
    return not any(True for _ in module.children())


def trace_calls(
    model: nn.Module, batch: torch.Tensor, keep: Callable[[Call, list[Call]], bool] | None = None
) -> Trace:
    """One forward pass of ``model`` on ``batch`` (already prepared for it) under ``torch.no_grad``,
    inside a :func:`~cnn_widgets.capture.model_session` in eval mode, recording every leaf module call
    in execution order with the calls that produced its inputs. ``keep(call, calls_so_far)`` is asked
    as each call starts; when it says yes, copies of the call's first input tensor and of its output
    are kept on the :class:`Call`. No hook, mode or state change outlives the call."""
    modules = dict(model.named_modules())
    leaves = {n for n, m in modules.items() if _is_leaf(m)}
    calls: list[Call] = []
    shapes: dict[str, tuple[int, ...] | None] = {}
    counts: dict[str, int] = {}
    flow = _Flow()
    open_calls: dict[int, list[tuple[Call, bool]]] = {}  # per module object: its running calls

    def enter(name: str, module: nn.Module, args: Any, kwargs: Any) -> None:
        repeat = counts.get(name, 0)
        call = Call(name, type(module).__name__, len(calls), repeat, tuple(sorted(flow.sources((args, kwargs)))))
        kept = bool(keep and keep(call, calls))
        if kept:
            first = next(_tensors((args, kwargs)), None)
            call.input = None if first is None else first.detach().clone()
        calls.append(call)
        open_calls.setdefault(id(module), []).append((call, kept))
        flow.depth += 1

    def leave(name: str, module: nn.Module, output: Any) -> None:
        counts[name] = counts.get(name, 0) + 1
        shapes.setdefault(name, _shape(output))
        if name not in leaves:
            return
        call, kept = open_calls[id(module)].pop()
        call.shape = _shape(output)
        if kept and isinstance(output, torch.Tensor):
            call.output = output.detach().clone()
        flow.depth -= 1
        flow.tag(output, frozenset((call.index,)))

    x = batch.detach()
    with model_session(model, eval_mode=True, hooks=True):
        handles = []
        try:
            for name, module in modules.items():
                if name in leaves:
                    handles.append(module.register_forward_pre_hook(
                        lambda m, args, kwargs, name=name: enter(name, m, args, kwargs), with_kwargs=True
                    ))
                handles.append(module.register_forward_hook(
                    lambda m, _args, output, name=name: leave(name, m, output)
                ))
            with torch.no_grad(), flow:
                flow.tag(x, frozenset((INPUT,)))
                call_forward(model, x)
        finally:
            for h in handles:
                h.remove()
    return Trace(calls, shapes, counts)


def build_tree(
    rows: list[LayerInfo], types: dict[str, str], shapes: dict[str, tuple[int, ...] | None],
    counts: dict[str, int],
) -> list[dict[str, Any]]:
    """The table's nodes in depth-first order: the ``layer_table`` rows, and one group node per module
    that is a dotted-name prefix of a row (a container), placed where its first row runs. Each node has
    ``name``, ``label`` (the last name part), ``type``, ``depth``, ``group``, ``end`` (the index after
    its subtree), ``shape``, ``calls``, and ``params``, ``trainable``, ``buffers`` (a group's sums over
    its subtree, its own tensors included)."""
    own = {r.name: r for r in rows}
    children: dict[str | None, list[str]] = {}
    placed: set[str] = set()

    def attach(name: str) -> None:
        if name in placed:
            return
        placed.add(name)
        parent = name.rpartition(".")[0] if "." in name else None
        if parent is not None:
            attach(parent)
        children.setdefault(parent, []).append(name)

    for r in rows:  # execution order, so a group sits where its first row runs
        attach(r.name)
    nodes: list[dict[str, Any]] = []

    def walk(name: str, depth: int) -> tuple[int, int, int]:
        row = own.get(name)
        shape = row.output_shape if row else shapes.get(name)
        kids = children.get(name, []) if name else []
        node: dict[str, Any] = {
            "name": name,
            "label": name.rpartition(".")[2] if name else "(model)",
            "type": types[name],
            "depth": depth,
            "group": bool(kids),
            "shape": None if shape is None else list(shape),
            "calls": row.calls if row else counts.get(name, 0),
        }
        nodes.append(node)
        sums = (row.params, row.trainable, row.buffers) if row else (0, 0, 0)
        for kid in kids:
            sub = walk(kid, depth + 1)
            sums = (sums[0] + sub[0], sums[1] + sub[1], sums[2] + sub[2])
        node["params"], node["trainable"], node["buffers"] = sums
        node["end"] = len(nodes)
        return sums

    for top in children.get(None, []):
        walk(top, 0)
    return nodes


def _blocks(trace: Trace, index: dict[str, int]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """The strip's blocks (one per leaf call, in execution order) and its arcs: ``[producer, call]``
    for every producer of a call other than the call just before it (:data:`INPUT` = the input)."""
    blocks, joins = [], []
    for call in trace.calls:
        before = call.index - 1 if call.index else INPUT
        blocks.append({
            "node": index[call.name], "repeat": call.repeat,
            "shape": None if call.shape is None else list(call.shape),
            "chained": before in call.producers,
        })
        joins.extend([p, call.index] for p in call.producers if p != before)
    return blocks, joins


class ModelSummary(Panel, anywidget.AnyWidget):
    """The summary of ``model`` run on ``example`` (any image form; ``mean``/``std`` in 0‥1 units): the
    :func:`~cnn_widgets.layer_table` rows as a collapsible tree with totals, under an architecture strip
    with residual joins. ``selected`` is the name of the clicked row or block (``None``: nothing), a
    leaf layer or a container; :attr:`rows` and :attr:`totals` hold the numbers shown."""

    _esm = bundle("model_summary")

    selected = CheckedUnicode(None, allow_none=True).tag(sync=True)
    _summary = t.Dict().tag(sync=True)

    def __init__(
        self, model: nn.Module, example: Image | torch.Tensor, mean: Stats = None, std: Stats = None,
        *, selected: str | None = None, **kwargs: Any,
    ) -> None:
        check_model(model, hooks=True)
        batch = model_input(model, to_batch(example, mean, std, model=model))
        with model_session(model, eval_mode=True, hooks=True):
            self.rows: list[LayerInfo] = layer_table(model, example, mean, std)
            trace = trace_calls(model, batch)
        types = {n: type(m).__name__ for n, m in model.named_modules()}
        nodes = build_tree(self.rows, types, trace.shapes, trace.counts)
        index = {node["name"]: i for i, node in enumerate(nodes)}
        blocks, joins = _blocks(trace, index)
        self.totals: dict[str, int] = {
            "params": sum(r.params for r in self.rows),
            "trainable": sum(r.trainable for r in self.rows),
            "buffers": sum(r.buffers for r in self.rows),
            "layers": len(self.rows),
            "calls": len(trace.calls),
        }
        self._names = frozenset(index)
        self._model, self._input = model, batch  # for the export record
        super().__init__(**kwargs)
        with self.hold_sync():
            self._summary = {
                "model": type(model).__name__, "input": list(batch.shape), "nodes": nodes,
                "blocks": blocks, "joins": joins, "totals": self.totals,
            }
            self.selected = selected

    def _export_image(self) -> Any:
        from .. import export

        return export.model_summary_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        return {**export.model_fields(self._model), **export.image_fields(self._input), "layer": self.selected}

    @t.validate("selected")
    def _check_selected(self, proposal: t.Bunch) -> str | None:
        value = proposal["value"]
        return None if value is None else check_name("layer", value, self._names)
