"""Receptive fields: which input pixels each position of a layer's output map reads, from the layer's real
convolution and pooling geometry (kernel, stride, padding, dilation, ceil mode, adaptive windows).

:func:`receptive_field` traces a weightless copy of the model with ``torch.fx`` (the user's model is never
run or changed), propagates shapes on the meta device, and follows every tensor from the input to the
layer, one axis at a time. Per output row (and column) it keeps two intervals in input coordinates:

* the *field*: the first and last input row that influence it (the bounding box of the input pixels the
  value depends on; padding reads nothing, so this never leaves the image);
* the *window*: the same interval on an unbounded input, i.e. where the field would reach if the image
  went on past its border — the part outside the image is what the views draw as padding.

Each field also knows which two dimensions of its tensor are the map's rows and columns, so a channels-last
stretch (``x.permute(0, 2, 3, 1)`` → LayerNorm → Linear → permute back, as in ConvNeXt) keeps its field:
permutes, transposes and ``movedim`` move the map's dimensions, and a Linear over the channels of such a
tensor is a 1×1 step. Pointwise steps (activations, BatchNorm in eval, additions, concatenation along
channels) take the union of their inputs' fields. Spatial statistics are not part of a field: a
normalisation over positions, or a globally pooled value broadcast back over the map
(squeeze-and-excitation), is treated as pointwise / ignored, as the classic receptive field does. A step
the trace cannot read geometrically (an upsampling, a custom spatial op) makes the result ``exact=False``:
then each of its positions covers everything its inputs cover, with a stride that spreads that extent over
them (a field never compounds). A model fx cannot trace gets the whole image for every position, also ``exact=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .._checks import check_layer_names, check_model
from ..capture import model_lock
from ..images import _TRACE_LOCK, _RunOrderTracer, _weightless_copy, expected_channels, traced_conv_args

_EMPTY_LO = np.iinfo(np.int64).max // 4

# Modules that act on each position independently (in eval mode). Anything else that keeps the map's
# size but is not listed makes the result inexact.
_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink,
    nn.Threshold, nn.LogSigmoid, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm, nn.LocalResponseNorm, nn.Softmax2d,
    nn.Softmax, nn.LogSoftmax, nn.Flatten, nn.Linear,
)

# Steps that only reorder a tensor's dimensions (the map's rows and columns move with them).
_REORDER_METHODS = frozenset({"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis"})
_REORDER_FUNCTIONS = (torch.permute, torch.transpose, torch.swapaxes, torch.swapdims, torch.movedim,
                      torch.moveaxis)


@dataclass
class _Axis:
    """One axis of a tensor's field: per position ``lo``/``hi`` (inclusive input indices of the field;
    ``lo > hi`` when nothing of the input reaches it), ``vlo``/``vhi`` (the window on an unbounded input)
    and ``jump`` (input pixels between neighbouring positions, for extrapolating the window)."""

    lo: np.ndarray
    hi: np.ndarray
    vlo: np.ndarray
    vhi: np.ndarray
    jump: int

    @property
    def size(self) -> int:
        return int(self.lo.shape[0])

    def window_at(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window of positions ``u`` (any ints: outside ``0‥size-1`` it is extrapolated by ``jump``)."""
        last = self.size - 1
        inside = np.clip(u, 0, last)
        shift = (u - inside) * self.jump
        return self.vlo[inside] + shift, self.vhi[inside] + shift

    def whole(self) -> "_Axis":
        """One position covering every position of this axis."""
        return _Axis(
            np.array([self.lo.min()]), np.array([self.hi.max()]), np.array([self.vlo.min()]),
            np.array([self.vhi.max()]), self.jump * self.size,
        )


def _union(axes: Sequence[_Axis]) -> _Axis:
    """The field of a pointwise step over same-sized inputs."""
    first = axes[0]
    lo, hi, vlo, vhi = first.lo.copy(), first.hi.copy(), first.vlo.copy(), first.vhi.copy()
    for a in axes[1:]:
        np.minimum(lo, a.lo, out=lo)
        np.maximum(hi, a.hi, out=hi)
        np.minimum(vlo, a.vlo, out=vlo)
        np.maximum(vhi, a.vhi, out=vhi)
    return _Axis(lo, hi, vlo, vhi, max(a.jump for a in axes))


def _windowed(a: _Axis, out_size: int, kernel: int, stride: int, pad: int, dilation: int) -> _Axis:
    """A sliding window (conv or pooling) along one axis: output position y reads input positions
    ``y·stride − pad + i·dilation`` for i < kernel; positions outside the input are padding."""
    taps = np.arange(out_size)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    valid = (taps >= 0) & (taps < a.size)
    clipped = np.clip(taps, 0, a.size - 1)
    lo = np.where(valid, a.lo[clipped], _EMPTY_LO).min(axis=1)
    hi = np.where(valid, a.hi[clipped], -_EMPTY_LO).max(axis=1)
    vlo, _ = a.window_at(taps[:, 0])
    _, vhi = a.window_at(taps[:, -1])
    return _Axis(lo, hi, vlo, vhi, a.jump * stride)


def _spread(a: _Axis, n: int) -> _Axis:
    """``n`` positions that each cover all of the one position ``a``: their jump spreads its extent over
    them (never grows), as upsampling would."""
    return _Axis(*(np.repeat(v, n) for v in (a.lo, a.hi, a.vlo, a.vhi)), max(1, -(-a.jump // n)))


def _adaptive(a: _Axis, out_size: int) -> _Axis:
    """Adaptive pooling: output i pools input ``floor(i·n/o)`` ‥ ``ceil((i+1)·n/o) − 1``."""
    n = a.size
    starts = [(i * n) // out_size for i in range(out_size)]
    stops = [-((-(i + 1) * n) // out_size) for i in range(out_size)]
    lo = np.array([a.lo[s:e].min() for s, e in zip(starts, stops)])
    hi = np.array([a.hi[s:e].max() for s, e in zip(starts, stops)])
    vlo = np.array([a.vlo[s] for s in starts])
    vhi = np.array([a.vhi[e - 1] for e in stops])
    return _Axis(lo, hi, vlo, vhi, a.jump * max(1, n // out_size))


@dataclass
class _Field:
    """The field of one tensor: its two spatial axes (a tensor without a map has 1×1)."""

    rows: _Axis
    cols: _Axis
    dims: tuple[int, int] | None = None  # the tensor dimensions of rows and columns (None: no map)

    def whole(self) -> "_Field":
        return _Field(self.rows.whole(), self.cols.whole(), self.dims)

    def aligned(self, own: tuple[int, ...] | None, shape: tuple[int, ...]) -> "_Field | None":
        """This field on a tensor of ``shape`` made from this one's (``own``) by a step that keeps the map:
        its dimensions counted from the last (as broadcasting and reshapes that add or drop leading
        dimensions do), if the map's size is there; else ``None``."""
        if self.dims is None or own is None:
            return None
        shift = len(shape) - len(own)
        r, c = self.dims[0] + shift, self.dims[1] + shift
        if min(r, c) < 0 or (shape[r], shape[c]) != (self.rows.size, self.cols.size):
            return None
        return _Field(self.rows, self.cols, (r, c))


@dataclass(frozen=True)
class Crop:
    """The input region of one output position. ``top``/``left``/``height``/``width``: the window (may
    extend past the image: that part is padding); ``inside``: ``(top, bottom, left, right)``, the rows
    ``top‥bottom-1`` and columns ``left‥right-1`` of the image that influence the position (empty when
    ``bottom <= top``). The window always contains ``inside``."""

    top: int
    left: int
    height: int
    width: int
    inside: tuple[int, int, int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """What each position of ``layer``'s output map reads of an input of ``input_size`` (H, W).

    ``rows``/``cols``: (h, 2) / (w, 2) int64 arrays, per output row/column the first and last input
    row/column that influence it (first > last: none); ``window_rows``/``window_cols``: the same on an
    unbounded input (may be negative or past the image: padding). ``stride``: input pixels between
    neighbouring outputs (y, x); ``size``: the window's extent (y, x) at the map's centre. ``exact``:
    False when some step was not geometrically understood (see ``notes``); a model fx cannot trace gives
    ``output_size`` (0, 0) and the whole image for any position."""

    layer: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray
    window_rows: np.ndarray
    window_cols: np.ndarray
    stride: tuple[int, int]
    exact: bool
    notes: tuple[str, ...] = field(default=())
    channels_last: bool = False  # the layer's 4-D output holds its map as (N, H, W, C), not (N, C, H, W)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.output_size
        r, c = self.window_rows[min(h // 2, len(self.window_rows) - 1)], self.window_cols[min(w // 2, len(self.window_cols) - 1)]
        return int(r[1] - r[0] + 1), int(c[1] - c[0] + 1)

    def crop(self, y: int, x: int) -> Crop:
        """The region of output position (y, x) (see :class:`Crop`)."""
        h, w = self.output_size
        if (h, w) == (0, 0):  # not traced: every position reads the whole image
            y = x = 0
        elif not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"position ({y}, {x}) is outside {self.layer!r}'s {h}×{w} output map")
        (r0, r1), (c0, c1) = self.rows[y], self.cols[x]
        (v0, v1), (u0, u1) = self.window_rows[y], self.window_cols[x]
        top, bottom = int(min(v0, r0)), int(max(v1, r1))
        left, right = int(min(u0, c0)), int(max(u1, c1))
        inside = (int(r0), int(max(r1 + 1, r0)), int(c0), int(max(c1 + 1, c0)))
        if r1 < r0 or c1 < c0:
            inside = (0, 0, 0, 0)
        return Crop(top, left, bottom - top + 1, right - left + 1, inside)


def _input_shape(model: nn.Module, input_size: object) -> tuple[int, int, int, int]:
    """``input_size`` (H, W), (C, H, W), (N, C, H, W) or one int for a square as an (1, C, H, W) shape."""
    if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
        dims = [int(input_size)] * 2
    elif isinstance(input_size, (tuple, list, torch.Size)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in input_size
    ) and 2 <= len(input_size) <= 4:
        dims = [int(v) for v in input_size]
    else:
        raise TypeError(f"input_size must be (H, W), (C, H, W) or (N, C, H, W) ints, got {input_size!r}")
    if any(v < 1 for v in dims):
        raise ValueError(f"input_size must be positive, got {tuple(dims)}")
    if len(dims) == 2:
        dims = [expected_channels(model) or 3, *dims]
    return (1, *dims[-3:])  # type: ignore[return-value]


def receptive_field(model: nn.Module, layer: str, input_size: object) -> ReceptiveField:
    """The receptive field of every position of ``layer``'s output for inputs of ``input_size`` (see the
    module doc). ``layer``: a module name from ``model.named_modules()`` (a block counts from its output);
    ``input_size``: (H, W), (C, H, W) or (N, C, H, W). The model is not run: a weightless copy is traced."""
    check_model(model)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) from model.named_modules(), got {type(layer).__name__}")
    (layer,) = check_layer_names(model, [layer])
    shape = _input_shape(model, input_size)
    h, w = shape[2], shape[3]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    from torch.fx.passes.shape_prop import ShapeProp

    with model_lock(model), _TRACE_LOCK:
        try:
            twin = _weightless_copy(model).eval()  # a copy: batch statistics would not trace on meta
            gm = fx.GraphModule(twin, _RunOrderTracer().trace(twin))
        except Exception as err:  # any model fx cannot trace (control flow on values, scripted parts...)
            return _whole(layer, (h, w), f"the model could not be traced with torch.fx ({type(err).__name__}), "
                          "so every position is given the whole image")
        try:
            ShapeProp(gm).propagate(torch.empty(shape, dtype=dtype, device="meta"))
        except Exception as err:
            cause = err.__cause__ or err  # ShapeProp wraps the model's own error
            raise ValueError(f"the model cannot take an input of size {shape[1:]} (input_size): {cause}") from None
    return _Propagation(gm, (h, w)).run(layer)


def _whole(layer: str, size: tuple[int, int], note: str) -> ReceptiveField:
    """Every position reads the whole image (the map's size unknown: ``output_size`` (0, 0))."""
    h, w = size
    rows, cols = np.array([[0, h - 1]]), np.array([[0, w - 1]])
    return ReceptiveField(layer, size, (0, 0), rows, cols, rows, cols, (h, w), False, (note,))


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


class _Propagation:
    """Fields of every node of a shape-propagated graph, in graph order."""

    def __init__(self, gm: fx.GraphModule, size: tuple[int, int]) -> None:
        self.gm = gm
        self.size = size
        self.modules = dict(gm.named_modules())
        self.fields: dict[fx.Node, _Field | None] = {}
        self.notes: list[str] = []

    # ------------------------------------------------------------------------------------- driver
    def run(self, layer: str) -> ReceptiveField:
        target = self._layer_node(layer)
        if target is None:
            return _whole(layer, self.size, f"{layer!r} does not appear in the traced graph (it runs inside a "
                          "traced leaf), so every position is given the whole image")
        for node in self.gm.graph.nodes:
            self.fields[node] = self._field(node)
            if node is target:
                break
        found = self.fields[target]
        shape = _shape(target)
        if found is None or shape is None:
            return _whole(layer, self.size, f"{layer!r} does not output a tensor computed from the input")
        if len(shape) < 4:
            found = found.whole()
        channels_last = len(shape) >= 4 and found.dims != (len(shape) - 2, len(shape) - 1)
        if channels_last:  # e.g. a ConvNeXt block's (N, H, W, C) stretch
            self.notes.append(f"{layer!r} outputs its map channels-last: its positions are not (H, W) of a "
                              "(N, C, H, W) map, so every position is given all of the map's field")
            found = found.whole()
        r, c = found.rows, found.cols
        return ReceptiveField(
            layer, self.size, (r.size, c.size), np.stack([r.lo, r.hi], 1), np.stack([c.lo, c.hi], 1),
            np.stack([r.vlo, r.vhi], 1), np.stack([c.vlo, c.vhi], 1), (r.jump, c.jump), not self.notes,
            tuple(dict.fromkeys(self.notes)), channels_last,
        )

    def _layer_node(self, layer: str) -> fx.Node | None:
        """The node whose value is ``layer``'s output: its own call, or a block's last node."""
        last = None
        for node in self.gm.graph.nodes:
            if node.op == "call_module" and node.target == layer:
                return node
            if layer in node.meta.get("nn_module_stack", {}):
                last = node
        return last

    # ----------------------------------------------------------------------------------- one node
    def _inputs(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
        return [n for n in found if self.fields.get(n) is not None]

    def _field(self, node: fx.Node) -> _Field | None:
        if node.op == "placeholder":
            return self._input_field(node) if not self.fields else None
        if node.op in ("get_attr", "output"):
            return None
        inputs = self._inputs(node)
        if not inputs:
            return None
        shape = _shape(node)
        if shape is None:  # a tuple, a size, a number: carries its inputs' fields, wholly
            return self._combine(inputs, None, node)
        reordered = self._reordered(node, shape)
        if reordered is not None:
            return reordered
        geometry = self._geometry(node)
        source = self.fields.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        dims = (len(shape) - 2, len(shape) - 1)
        if geometry is not None and source is not None and source.dims == dims:  # a channels-first map
            kind, args = geometry
            out_h, out_w = shape[-2], shape[-1]
            if kind == "window":
                (kh, kw), (sh, sw), (pt, pl), (dh, dw) = args
                rows, cols = _windowed(source.rows, out_h, kh, sh, pt, dh), _windowed(source.cols, out_w, kw, sw, pl, dw)
                return _Field(rows, cols, dims)
            return _Field(_adaptive(source.rows, out_h), _adaptive(source.cols, out_w), dims)
        return self._combine(inputs, shape, node)

    def _reordered(self, node: fx.Node, shape: tuple[int, ...]) -> _Field | None:
        """The field after a step that only reorders dimensions (permute, transpose, movedim...): the
        same field, on the dimensions the map's rows and columns moved to; ``None`` for any other step."""
        if node.op == "call_method":
            if node.target not in _REORDER_METHODS:
                return None
            step = lambda t, *a, **k: getattr(t, str(node.target))(*a, **k)  # noqa: E731
        elif node.op == "call_function" and node.target in _REORDER_FUNCTIONS:
            step = node.target
        elif node.op == "call_function" and node.target is getattr and node.args[1:] == ("mT",):
            step = lambda t: t.mT  # noqa: E731
        else:
            return None
        tensor, rest = node.args[0], node.args[1:] if node.target is not getattr else ()
        source = self.fields.get(tensor) if isinstance(tensor, fx.Node) else None
        own = _shape(tensor) if isinstance(tensor, fx.Node) else None
        if source is None or own is None or source.dims is None:
            return None
        nodes: list[fx.Node] = []
        fx.node.map_arg((rest, node.kwargs), nodes.append)
        if nodes:  # dimensions computed at run time
            return None
        probe = torch.empty(tuple(range(2, len(own) + 2)), device="meta")  # distinct sizes name the dimensions
        try:
            moved = [int(v) - 2 for v in step(probe, *rest, **node.kwargs).shape]
        except Exception:  # noqa: BLE001 - not a pure reordering after all: read as any other step
            return None
        if sorted(moved) != list(range(len(own))) or len(moved) != len(shape):
            return None
        return _Field(source.rows, source.cols, (moved.index(source.dims[0]), moved.index(source.dims[1])))

    def _input_field(self, node: fx.Node) -> _Field:
        def axis(n: int) -> _Axis:
            r = np.arange(n, dtype=np.int64)
            return _Axis(r, r.copy(), r.copy(), r.copy(), 1)

        ndim = len(_shape(node) or (0, 0))
        return _Field(axis(self.size[0]), axis(self.size[1]), (ndim - 2, ndim - 1))

    def _combine(self, inputs: list[fx.Node], shape: tuple[int, ...] | None, node: fx.Node) -> _Field:
        """A non-geometric step: pointwise when the spatial size is kept, else a reduction to all of it."""
        fields = [(self.fields[n], _shape(n)) for n in inputs]
        whole = [f.whole() for f, _ in fields if f is not None]
        if shape is None or len(shape) < 3:
            return _Field(_union([f.rows for f in whole]), _union([f.cols for f in whole]))
        kept = [a for a in (f.aligned(s, shape) for f, s in fields if f is not None) if a is not None]
        kept = [a for a in kept if a.dims == kept[0].dims]
        if kept and not self._mixes(node, shape, kept[0].dims):
            if not self._pointwise(node):
                self.notes.append(f"{_describe(node, self.modules)} was taken to act on each position alone")
            return _Field(_union([f.rows for f in kept]), _union([f.cols for f in kept]), kept[0].dims)
        h, w = shape[-2], shape[-1]
        if kept:
            self.notes.append(f"{_describe(node, self.modules)} mixes the positions of a row or column: each of "
                              "its positions is given all of its input's field")
        # a size the step made itself (upsampling, unknown op) or a broadcast from 1×1
        elif (h, w) != (1, 1) and all(not (s and len(s) >= 3 and (s[-2], s[-1]) == (1, 1)) for _, s in fields):
            self.notes.append(f"{_describe(node, self.modules)} changes the map's size in a way not read "
                              "geometrically: each of its positions is given all of its input's field")
        rows, cols = _union([f.rows for f in whole]), _union([f.cols for f in whole])
        return _Field(_spread(rows, h), _spread(cols, w), (len(shape) - 2, len(shape) - 1))

    def _pointwise(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.modules[str(node.target)], _POINTWISE)
        return True  # functions and methods that keep the spatial size (add, mul, cat, relu, ...)

    def _mixes(self, node: fx.Node, shape: tuple[int, ...], dims: tuple[int, int] | None) -> bool:
        """Whether ``node`` is a Linear over a dimension of the map (over channels it is a 1×1 step)."""
        linear = (node.op == "call_module" and isinstance(self.modules[str(node.target)], nn.Linear)) or (
            node.op == "call_function" and node.target is F.linear)
        return linear and dims is not None and len(shape) - 1 in dims

    def _geometry(self, node: fx.Node) -> tuple[str, Any] | None:
        """("window", (kernel, stride, (pad_top, pad_left), dilation)) or ("adaptive", None) for a sliding
        window or adaptive pooling step; ``None`` for anything else. Padding is read as the amount before
        the first position; what is after follows from the output size the shapes give."""
        if node.op == "call_module":
            m = self.modules[str(node.target)]
            if isinstance(m, nn.Conv2d):
                from ..widgets.conv_explainer import conv_padding

                top, _, left, _ = conv_padding(m)
                return "window", (_pair(m.kernel_size), _pair(m.stride), (top, left), _pair(m.dilation))
            if isinstance(m, torch.jit.ScriptModule) and getattr(m, "original_name", None) == "Conv2d":
                args = traced_conv_args(m) or (
                    {k: getattr(m, k) for k in ("stride", "padding", "dilation")} if hasattr(m, "stride") else None
                )
                if args is None or isinstance(args.get("padding"), str):
                    return None
                kernel = tuple(m.weight.shape[2:])
                return "window", (_pair(kernel), _pair(args["stride"]), _pair(args["padding"]), _pair(args["dilation"]))
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                stride = m.stride if m.stride not in (None, ()) else m.kernel_size
                dilation = getattr(m, "dilation", 1)
                return "window", (_pair(m.kernel_size), _pair(stride), _pair(m.padding), _pair(dilation))
            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                return "adaptive", None
            if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
                left, _, top, _ = m.padding
                return "window", ((1, 1), (1, 1), (top, left), (1, 1))
            return None
        if node.op != "call_function":
            return None
        args = _call_args(node)
        if args is None:
            return None
        fn = node.target
        if fn in (F.conv2d, torch.conv2d):
            weight = args.get("weight")
            wshape = _shape(weight) if isinstance(weight, fx.Node) else None
            padding = args.get("padding", 0)
            if wshape is None or isinstance(padding, str):
                return None
            return "window", (_pair(wshape[2:]), _pair(args.get("stride", 1)), _pair(padding), _pair(args.get("dilation", 1)))
        if fn in (F.max_pool2d, F.avg_pool2d, torch.max_pool2d):
            kernel = args["kernel_size"]
            stride = args.get("stride") or kernel
            return "window", (_pair(kernel), _pair(stride), _pair(args.get("padding", 0)), _pair(args.get("dilation", 1)))
        if fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            return "adaptive", None
        if fn is F.pad and args.get("mode", "constant") == "constant":
            pad = args["pad"]
            if len(pad) >= 4:
                return "window", ((1, 1), (1, 1), (int(pad[2]), int(pad[0])), (1, 1))
        return None


_SIGNATURES: dict[Any, tuple[str, ...]] = {
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    torch.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.max_pool2d: ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    torch.max_pool2d: ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    F.avg_pool2d: ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    F.adaptive_avg_pool2d: ("input", "output_size"),
    F.adaptive_max_pool2d: ("input", "output_size", "return_indices"),
    F.pad: ("input", "pad", "mode", "value"),
}


def _call_args(node: fx.Node) -> dict[str, Any] | None:
    names = _SIGNATURES.get(node.target)
    if names is None:
        return None
    args = dict(zip(names, node.args))
    args.update(node.kwargs)
    return args


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target!r} ({type(modules[str(node.target)]).__name__})"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{name}()"


__all__ = ["Crop", "ReceptiveField", "receptive_field"]
