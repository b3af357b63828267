"""ConvExplainer: how one number of a convolution's output map is made, with the model's own numbers.

Pick an output channel and a position (click the map, or arrow keys): the view shows the input patch the
kernel reads (from the conv's *input*, the previous layer's activation, padded cells drawn as padding,
dilation and stride as they are), the filter's weights, their products and sums per input channel, the
bias, and the result next to the value the model computed. If the conv is followed directly by a
BatchNorm2d, a ReLU and/or a pooling layer, each of those steps is worked out too.

One traced forward pass per layer (:func:`~cnn_widgets.widgets.model_summary.trace_calls`) keeps copies of
the conv's input and output and of the outputs of the steps after it; the conv's input and output maps
travel once per layer as :mod:`cnn_widgets.wire` tensors (for drawing); the explanation of one
(channel, position, input channel) is computed here in float64 and sent as a small JSON dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anywidget
import torch
import torch.nn.functional as F
import traitlets as t
from torch import nn

from .. import wire
from .._checks import check_model, model_input
from ..images import Image, Stats, to_batch
from ..layers import conv_layers
from ._common import CheckedInt, CheckedTuple, CheckedUnicode, WidgetValueError, bundle, check_name
from .model_summary import Call, Trace, trace_calls
from .panel import Panel

# The steps worked out after the conv, in the order they may follow it (each one optional).
_NORM, _RELU, _POOL = 1, 2, 3
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


def _stage(module: nn.Module) -> int:
    """Which step after a conv ``module`` can be (0: none this view explains)."""
    if isinstance(module, nn.BatchNorm2d):
        return _NORM
    if isinstance(module, nn.ReLU):
        return _RELU
    if isinstance(module, _POOLS) and not getattr(module, "return_indices", False):
        return _POOL
    return 0


@dataclass
class _Chain:
    """The traced calls of one conv layer (its first call) and of the steps right after it."""

    conv: Call | None = None
    steps: list[Call] = field(default_factory=list)
    closed: bool = False


def _keeper(
    modules: dict[str, nn.Module], starts: Collection[str]
) -> tuple[Callable[[Call, list[Call]], bool], _Chain]:
    """A ``keep`` for :func:`trace_calls` that keeps the first call of the first module to run whose name
    is in ``starts``, and each call after it that reads only the previous kept call's output and is a
    later step (BatchNorm2d, then ReLU, then pooling)."""
    chain = _Chain()

    def keep(call: Call, calls: list[Call]) -> bool:
        if chain.conv is None:
            if call.name in starts and call.repeat == 0:
                chain.conv = call
                return True
            return False
        if chain.closed:
            return False
        last = chain.steps[-1] if chain.steps else chain.conv
        last_stage = _stage(modules[last.name]) if chain.steps else 0
        stage = _stage(modules[call.name])
        if call.index == last.index + 1 and call.producers == (last.index,) and stage > last_stage:
            chain.steps.append(call)
            return True
        chain.closed = True
        return False

    return keep, chain


def _num(v: Any) -> float | None:
    """A finite float for JSON (``None`` for NaN and infinities, which JSON cannot carry)."""
    f = float(v)
    return f if math.isfinite(f) else None


def _grid(x: torch.Tensor) -> list[list[float | None]]:
    return [[_num(v) for v in row] for row in x.tolist()]


def conv_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)``: the rows and columns ``conv`` pads its input with (``"same"``
    puts the odd one at the bottom/right, as torch does)."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
    ph, pw = (int(p) for p in conv.padding)
    return (ph, ph, pw, pw)


def conv_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """Kernel, stride, dilation, groups, the padding (``[top, bottom, left, right]``, see
    :func:`conv_padding`) and its mode, channel counts, and whether there is a bias."""
    return {
        "kernel": list(conv.kernel_size), "stride": list(conv.stride), "dilation": list(conv.dilation),
        "groups": conv.groups, "padding": list(conv_padding(conv)), "padding_mode": conv.padding_mode,
        "in_channels": conv.in_channels, "out_channels": conv.out_channels, "bias": conv.bias is not None,
    }


def explain_conv(
    conv: nn.Conv2d, x: torch.Tensor, out: torch.Tensor, channel: int, position: Sequence[int], input_channel: int
) -> dict[str, Any]:
    """The numbers behind ``out[0, channel, y, x]`` of ``conv`` applied to ``x`` (its captured input):
    the input rows and columns the kernel reads (negative or past the edge: padding), the patch of
    ``input_channel`` with the weights and their products, the sum per input channel of the group, the
    total, the bias, ``value`` = total + bias (float64) and ``captured``, the model's own number."""
    y, xx = position
    geo = conv_geometry(conv)
    top, bottom, left, right = geo["padding"]
    (kh, kw), (sy, sx), (dy, dx) = conv.kernel_size, conv.stride, conv.dilation
    weight = conv.weight.detach().to("cpu", torch.float64)
    per_in, per_out = weight.shape[1], weight.shape[0] // conv.groups
    group = channel // per_out
    first = group * per_in
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    source = x.detach().to("cpu", torch.float64)[:1, first:first + per_in]
    padded = F.pad(source, (left, right, top, bottom), mode=mode)[0]
    rows = [y * sy + i * dy for i in range(kh)]
    cols = [xx * sx + j * dx for j in range(kw)]
    patch = padded[:, rows][:, :, cols]
    products = patch * weight[channel]
    sums = products.sum(dim=(1, 2))
    total = float(sums.sum())
    bias = float(conv.bias.detach()[channel]) if conv.bias is not None else 0.0
    captured = float(out[0, channel, y, xx])
    height, width = x.shape[-2:]
    local = input_channel - first
    # what rounding in the model's own dtype can explain: its epsilon times the magnitudes summed
    eps = torch.finfo(out.dtype).eps if out.dtype.is_floating_point else 0.0
    tolerance = 8 * eps * (float(products.abs().sum()) + abs(bias)) + 1e-12
    return {
        **geo,
        "channel": channel, "position": [y, xx], "input_channel": input_channel, "group": group,
        "group_channels": [first, first + per_in],
        "rows": [r - top for r in rows], "cols": [c - left for c in cols],
        "pad": [[not (0 <= r - top < height and 0 <= c - left < width) for c in cols] for r in rows],
        "patch": _grid(patch[local]), "weights": _grid(weight[channel, local]), "products": _grid(products[local]),
        "channel_sum": _num(sums[local]), "channel_sums": [_num(v) for v in sums.tolist()],
        "sum": _num(total), "bias": _num(bias) if conv.bias is not None else None, "value": _num(total + bias),
        "captured": _num(captured), "match": abs(total + bias - captured) <= tolerance,
    }


def _norm_step(bn: nn.BatchNorm2d, conv_out: torch.Tensor, out: torch.Tensor, channel: int,
               y: int, x: int, v: float) -> dict[str, Any]:
    """``(v - mean) / sqrt(var + eps) * weight + bias`` with the statistics BatchNorm used (running
    ones in eval mode; the batch's own when it tracks none)."""
    if bn.running_mean is not None and not bn.training:
        mean, var = float(bn.running_mean[channel]), float(bn.running_var[channel])
    else:
        c = conv_out[:, channel].double()
        mean, var = float(c.mean()), float(c.var(unbiased=False))
    gamma = float(bn.weight.detach()[channel]) if bn.weight is not None else 1.0
    beta = float(bn.bias.detach()[channel]) if bn.bias is not None else 0.0
    value = (v - mean) / math.sqrt(var + bn.eps) * gamma + beta
    return {"kind": "norm", "input": _num(v), "mean": _num(mean), "var": _num(var), "eps": bn.eps,
            "weight": _num(gamma), "bias": _num(beta), "value": _num(value),
            "captured": _num(out[0, channel, y, x])}


def _pool_step(pool: nn.Module, src: torch.Tensor, out: torch.Tensor, channel: int, y: int, x: int) -> dict[str, Any]:
    """The pooling window (in the pool's input ``src``) that contains ``(y, x)`` — the one centred
    nearest to it when windows overlap — its values, the max or mean, and the pooled output there."""
    height, width = src.shape[-2:]
    oh, ow = out.shape[-2:]
    adaptive = isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
    reduce = "max" if isinstance(pool, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) else "mean"
    step: dict[str, Any] = {"kind": "pool", "reduce": reduce}

    def pair(v: Any) -> tuple[int, int]:
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

    if adaptive:
        def nearest(i: int, n: int, size: int) -> list[int]:
            """The input indices of the adaptive window along one axis that holds ``i`` (centred nearest)."""
            spans = [((o * size) // n, -(-(o + 1) * size // n)) for o in range(n)]
            o = min((o for o, (a, b) in enumerate(spans) if a <= i < b), key=lambda o: abs(sum(spans[o]) - 1 - 2 * i))
            return [o, *range(*spans[o])]

        oy, *rows = nearest(y, oh, height)
        ox, *cols = nearest(x, ow, width)
        step["geometry"] = {"output_size": [oh, ow]}
    else:
        (kh, kw), (sh, sw), (ph, pw) = pair(pool.kernel_size), pair(pool.stride or pool.kernel_size), pair(pool.padding)
        dh, dw = pair(getattr(pool, "dilation", 1))
        ys = [o for o in range(oh) if any(o * sh - ph + i * dh == y for i in range(kh))]
        xs = [o for o in range(ow) if any(o * sw - pw + j * dw == x for j in range(kw))]
        step["geometry"] = {"kernel": [kh, kw], "stride": [sh, sw], "padding": [ph, pw], "dilation": [dh, dw]}
        if not ys or not xs:
            return {**step, "position": None}
        oy = min(ys, key=lambda o: abs(o * sh - ph + (kh - 1) * dh / 2 - y))
        ox = min(xs, key=lambda o: abs(o * sw - pw + (kw - 1) * dw / 2 - x))
        rows = [oy * sh - ph + i * dh for i in range(kh)]
        cols = [ox * sw - pw + j * dw for j in range(kw)]
    plane = src[0, channel].double()
    inside = [[0 <= r < height and 0 <= c < width for c in cols] for r in rows]
    values = [[_num(plane[r, c]) if ok else None for (c, ok) in zip(cols, line)] for r, line in zip(rows, inside)]
    real = [float(plane[r, c]) for r, line in zip(rows, inside) for c, ok in zip(cols, line) if ok]
    if reduce == "max":
        value = max(real)
        divisor = None
    elif adaptive:
        value, divisor = sum(real) / len(real), len(real)
    else:  # AvgPool2d, as torch counts: the window clipped to the padded input, or to the input
        r0, c0 = rows[0], cols[0]
        r1, c1 = min(r0 + kh, height + ph), min(c0 + kw, width + pw)
        full = (r1 - r0) * (c1 - c0)
        clipped = (min(r1, height) - max(r0, 0)) * (min(c1, width) - max(c0, 0))
        divisor = pool.divisor_override or (full if pool.count_include_pad else clipped)
        value = sum(real) / divisor
    at = [rows.index(y), cols.index(x)] if y in rows and x in cols else None  # (y, x) inside the window
    return {**step, "position": [oy, ox], "rows": rows, "cols": cols, "values": values, "divisor": divisor,
            "value": _num(value), "captured": _num(out[0, channel, oy, ox]), "at": at}


class ConvExplainer(Panel, anywidget.AnyWidget):
    """One output number of a ``Conv2d`` layer of ``model`` on ``image`` worked out by hand: the input
    patch, the weights, their products, the per-input-channel sums, plus bias, equal to the map's value;
    then a directly following BatchNorm2d, ReLU and pooling. ``layer`` (default: the first conv that
    runs), ``channel`` (output channel), ``position`` (``(y, x)`` in the output map, default its centre)
    and ``input_channel`` (the input channel whose patch is drawn, inside the channel's group) are the
    traits; :attr:`explanation` holds the numbers shown."""

    _esm = bundle("conv_explainer")

    layer = CheckedUnicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channel = CheckedInt(0).tag(sync=True)
    position = CheckedTuple(t.Int(), t.Int(), default_value=(0, 0)).tag(sync=True)
    input_channel = CheckedInt(0).tag(sync=True)
    _maps = t.Dict().tag(sync=True)
    _explain = t.Dict().tag(sync=True)

    def __init__(
        self, model: nn.Module, image: Image, layer: str | None = None, mean: Stats = None, std: Stats = None,
        *, channel: int = 0, position: tuple[int, int] | None = None, input_channel: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model, hooks=True)
        self._batch = model_input(model, to_batch(image, mean, std, model=model, single=True))
        self._modules = dict(model.named_modules())
        convs = conv_layers(model)
        if not convs:
            raise ValueError(
                f"ConvExplainer needs a model with an nn.Conv2d, but this {type(model).__name__} has none"
            )
        if layer is not None:
            check_name("conv layer", layer, convs)
        trace, chain = self._trace(convs if layer is None else [layer])
        ran = [c.name for c in trace.calls if c.name in set(convs) and c.repeat == 0]
        self._busy = False
        super().__init__(**kwargs)
        self.set_trait("layers", ran)
        with self._quiet(), self.hold_sync():
            self.layer = chain.conv.name  # type: ignore[union-attr]
            self._show(trace, chain, position, channel, input_channel)
        self._refresh()

    def _export_image(self) -> Any:
        from .. import export

        return export.conv_explainer_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        return {**export.model_fields(self._model), **export.image_fields(self._batch), "layer": self.layer,
                "options": {"channel": self.channel, "position": list(self.position), "input_channel": self.input_channel}}

    @property
    def explanation(self) -> dict[str, Any]:
        """The numbers on screen (see :func:`explain_conv`; ``steps`` for what follows the conv)."""
        return dict(self._explain)

    def _conv(self) -> nn.Conv2d:
        return self._modules[self.layer]  # type: ignore[return-value]

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Trait changes inside do not recompute the explanation (the caller does, once)."""
        before, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = before

    def _trace(self, starts: Collection[str]) -> tuple[Trace, _Chain]:
        """One forward pass keeping the first conv of ``starts`` to run and the steps after it."""
        keep, chain = _keeper(self._modules, starts)
        trace = trace_calls(self._model, self._batch, keep)
        if chain.conv is None:
            raise ValueError(
                f"conv layer {next(iter(starts))!r} did not run during the forward pass on this image"
                if len(starts) == 1 else f"none of the {len(starts)} Conv2d layers of this model ran on this image"
            )
        return trace, chain

    def _show(
        self, trace: Trace, chain: _Chain, position: Sequence[int] | None, channel: int, input_channel: int | None
    ) -> None:
        """Send the traced layer's maps, then place channel, position (default: the middle) and input
        channel (default: the first one the channel reads)."""
        assert chain.conv is not None and chain.conv.input is not None and chain.conv.output is not None
        self._chain = chain
        x, out = chain.conv.input, chain.conv.output
        self._maps = {
            "layer": self.layer, "geometry": conv_geometry(self._conv()), "calls": trace.counts[self.layer],
            "input": wire.encode(x[0]), "output": wire.encode(out[0]),
            "steps": [{"name": s.name, "type": s.type} for s in chain.steps],
        }
        h, w = out.shape[-2:]
        self.channel = channel
        self.position = (h // 2, w // 2) if position is None else tuple(position)  # type: ignore[assignment]
        first = self._group_channels(self.channel)[0]
        self.input_channel = first if input_channel is None else input_channel

    def _group_channels(self, channel: int) -> range:
        conv = self._conv()
        per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        first = (channel // per_out) * per_in
        return range(first, first + per_in)

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str:
        return check_name("conv layer", proposal["value"], self.layers)

    @t.validate("channel")
    def _check_channel(self, proposal: t.Bunch) -> int:
        value, count = proposal["value"], self._conv().out_channels
        if not 0 <= value < count:
            raise WidgetValueError(
                f"channel {value} is out of range: {self.layer!r} has {count} output channels (0‥{count - 1})"
            )
        return value

    @t.validate("position")
    def _check_position(self, proposal: t.Bunch) -> tuple[int, int]:
        y, x = proposal["value"]
        h, w = self._chain.conv.output.shape[-2:]  # type: ignore[union-attr]
        if not (0 <= y < h and 0 <= x < w):
            raise WidgetValueError(
                f"position {(y, x)} is outside the {h}×{w} output map of {self.layer!r}; use (y, x) with "
                f"0 ≤ y < {h} and 0 ≤ x < {w}"
            )
        return (int(y), int(x))

    @t.validate("input_channel")
    def _check_input_channel(self, proposal: t.Bunch) -> int:
        value, group = proposal["value"], self._group_channels(self.channel)
        if value not in group:
            raise WidgetValueError(
                f"input_channel {value} is not read by output channel {self.channel} of {self.layer!r}: "
                f"it reads input channels {group.start}‥{group.stop - 1}"
            )
        return value

    @t.observe("layer")
    def _layer_changed(self, change: t.Bunch) -> None:
        if self._busy:
            return
        trace, chain = self._trace([change["new"]])
        with self._quiet(), self.hold_sync():
            self._show(trace, chain, None, 0, None)
        self._refresh()

    @t.observe("channel")
    def _channel_changed(self, change: t.Bunch) -> None:
        group = self._group_channels(change["new"])
        if self.input_channel not in group:
            with self._quiet():
                self.input_channel = group.start
        self._refresh()

    @t.observe("position", "input_channel")
    def _place_changed(self, change: t.Bunch) -> None:
        self._refresh()

    def _refresh(self) -> None:
        """Work out the current (channel, position, input channel) and send it."""
        if self._busy:
            return
        chain = self._chain
        assert chain.conv is not None and chain.conv.input is not None and chain.conv.output is not None
        y, x = self.position
        c = self.channel
        result = explain_conv(self._conv(), chain.conv.input, chain.conv.output, c, (y, x), self.input_channel)
        steps, prev, v = [], chain.conv.output, float(chain.conv.output[0, c, y, x])
        for call in chain.steps:
            module, out = self._modules[call.name], call.output
            assert out is not None
            stage = _stage(module)
            if stage == _NORM:
                step = _norm_step(module, prev, out, c, y, x, v)  # type: ignore[arg-type]
            elif stage == _RELU:
                step = {"kind": "relu", "input": _num(v), "value": _num(max(v, 0.0)), "captured": _num(out[0, c, y, x])}
            else:
                step = _pool_step(module, prev, out, c, y, x)
            steps.append({"name": call.name, "type": call.type, **step})
            if stage != _POOL:  # a pool is the last step: its map has other positions
                prev, v = out, float(out[0, c, y, x])
        self._explain = {"layer": self.layer, **result, "steps": steps}
