"""TrainingMonitor: loss and metrics plotted live while a network trains, and snapshots of its conv
filters and of a fixed probe image's activations, browsed with an epoch slider in the browser.

Attach it to any training loop::

    monitor = TrainingMonitor(model, probe=images[:2])
    display(monitor)
    for epoch in range(epochs):
        for x, y in batches:
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            monitor.step(loss)                       # per batch: the loss (and any per-batch metrics)
        monitor.epoch_end(accuracy=evaluate(model))  # per epoch: metrics, and a snapshot every `every`

or hand ``monitor.callback`` to a loop that takes one (see :meth:`TrainingMonitor.callback`).

The view is an ``ipywidgets.VBox`` holding a bqplot ``Figure`` (loss per step as a line, metrics as
points at epoch ends) and the anywidget canvas (``js/src/widgets/training_monitor.js``). The chart is
updated at most every :data:`UPDATE_INTERVAL` seconds, however fast the steps come. Each snapshot's
filters and activations travel to the browser once, as uint8 through :mod:`cnn_widgets.wire`; the
slider moves over what the browser holds and sends nothing to the kernel.

It never changes training: a snapshot copies the weights and runs the probe through
:func:`cnn_widgets.capture_activations` (one model session: eval mode, no grad, hooks removed, state and
``.grad`` restored) with torch's RNG state saved and restored around it, so weights, buffers, modes,
gradients and every RNG state are what they would have been without the monitor.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anywidget
import ipywidgets as W
import numpy as np
import torch
import traitlets as t
from bqplot import Axis, Figure, LinearScale, Lines
from torch import nn

from .. import wire
from .._checks import check_layers_arg, check_model, model_device, unknown_name_error
from ..capture import capture_activations
from ..images import Image, Stats, prepare, stack_images
from ..layers import conv_layers
from ..style import chart_font, scale_chart
from ._common import WidgetValueError, bundle, split_buffers
from .filter_grid import _conv_info
from .panel import Panel

UPDATE_INTERVAL = 0.1
"""Least time (s) between two chart updates: at most 10 per second, however fast ``step`` is called."""
MAX_POINTS = 4000
"""Points per plotted series at most; longer histories are shown as means over equal runs of steps."""
MAX_PROBE = 8
"""Probe images at most (each one's activations are kept in every snapshot)."""
DEFAULT_LAYERS = 4
"""``layers=None`` monitors the first conv layer and at most this many in all, spread to the last."""
ACTIVATION_SIDE = 64
"""Activation maps larger than this (either side) are area-averaged to it for display."""
DEFAULT_BUDGET_MB = 64.0
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_now = time.monotonic  # the clock of the throttle (a module name, so tests can drive it)


@dataclass(frozen=True)
class Snapshot:
    """What one kept snapshot was taken at: ``epoch`` (epochs finished), ``step`` (steps reported) and
    ``metrics`` (the values reported with it; see :meth:`TrainingMonitor.snapshots`)."""

    epoch: int
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Stored:
    """A kept snapshot: its record, the exact weights, and the display data sent to the browser."""

    id: int
    info: Snapshot
    weights: dict[str, torch.Tensor]
    parts: list[dict[str, Any]]
    buffers: list[memoryview]
    nbytes: int


def _number(what: str, value: Any) -> float:
    """``value`` as a float: a real number, a numpy scalar or a one-element tensor (its graph untouched);
    anything else is a ``TypeError`` naming ``what``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(f"{what} must be a number or a one-element tensor, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().reshape(()).item())
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number or a one-element tensor, got {type(value).__name__} {value!r}")
    return float(value)


def _metrics(values: dict[str, Any]) -> dict[str, float]:
    return {str(name): _number(f"metric {name!r}", v) for name, v in values.items()}


def _json_metrics(values: dict[str, float]) -> dict[str, float | str]:
    """Metrics for the browser: JSON has no NaN or infinity (Jupyter refuses to send them), so those
    travel as the text ``"nan"``, ``"inf"``, ``"-inf"``."""
    return {name: v if math.isfinite(v) else str(v) for name, v in values.items()}


def _positive_int(what: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        more = " or None" if allow_none else ""
        raise ValueError(f"{what} must be an int >= 1{more}, got {value!r}")
    return int(value)


def default_layers(names: Sequence[str]) -> list[str]:
    """The conv layers ``layers=None`` monitors: the first (where edge detectors form) and at most
    :data:`DEFAULT_LAYERS` in all, spread evenly through the network up to the last."""
    if len(names) <= DEFAULT_LAYERS:
        return list(names)
    picks = np.linspace(0, len(names) - 1, DEFAULT_LAYERS).round().astype(int)
    return [names[i] for i in dict.fromkeys(picks.tolist())]


def _thinned(count: int) -> list[int]:
    """Indices kept when ``count`` snapshots are thinned: every second one dropped, first and last kept."""
    return [i for i in range(count) if i % 2 == 0 or i == count - 1]


def _decimated(xs: list[float], ys: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """A series as arrays of at most :data:`MAX_POINTS` points (means over equal runs when longer)."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(x) <= MAX_POINTS:
        return x, y
    run = math.ceil(len(x) / MAX_POINTS)
    cut = len(x) // run * run
    head_x, head_y = x[:cut].reshape(-1, run).mean(1), y[:cut].reshape(-1, run).mean(1)
    if cut < len(x):
        head_x = np.append(head_x, x[cut:].mean())
        head_y = np.append(head_y, y[cut:].mean())
    return head_x, head_y


class _TrainingCanvas(anywidget.AnyWidget):
    """The browser half of :class:`TrainingMonitor`: the snapshot slider, filters, activations, probe."""

    _esm = bundle("training_monitor")

    _layers = t.List().tag(sync=True)  # [{name, info}] of the monitored conv layers
    _probe = t.List().tag(sync=True)  # one exact uint8 H×W×3 wire image per probe image
    _kept = t.List().tag(sync=True)  # [{id, epoch, step, metrics}] of the kept snapshots, in order
    font_scale = t.Float(1.0).tag(sync=True)  # the view's, forwarded


class TrainingMonitor(Panel, W.VBox):
    """Watch ``model`` train: loss and metrics live, and its filters and probe activations over time.

    ``probe``: one to :data:`MAX_PROBE` images (one image or a batch in any form
    :func:`cnn_widgets.images.to_batch` takes, or a list of images of one size; with the model's
    ``mean``/``std``), run through the model at every snapshot. ``layers``: conv layer names
    to snapshot; ``None`` picks the first conv layer and at most three more spread evenly to the last
    (:func:`default_layers`; all of them for a model with up to four). Activations are each layer's conv
    output for every probe image (a conv called twice: its first call).

    Snapshots: one when the monitor is created (epoch 0, step 0: the initial weights), then at the end
    of every ``every``-th epoch (:meth:`epoch_end`) and, with ``every_steps=M``, after every M-th
    :meth:`step` as well; :meth:`snapshot` takes one at any time. A snapshot keeps the exact weights of
    each monitored layer (for :meth:`filters`) and their uint8 display forms with the probe's
    activations (what the browser holds). ``budget_mb`` bounds what the kept snapshots take (weights and
    display data, in MiB): beyond it, every second snapshot is dropped, the first and the last kept, as
    often as needed. The budget must hold at least two snapshots.

    Everything a snapshot does leaves training as it was (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        probe: Image,
        layers: str | Iterable[str] | None = None,
        every: int = 1,
        *,
        every_steps: int | None = None,
        budget_mb: float = DEFAULT_BUDGET_MB,
        mean: Stats = None,
        std: Stats = None,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model, hooks=True)
        self._every = _positive_int("every", every)
        self._every_steps = _positive_int("every_steps", every_steps, allow_none=True)
        if isinstance(budget_mb, bool) or not isinstance(budget_mb, numbers.Real) or not budget_mb > 0:
            raise ValueError(f"budget_mb must be a positive number of MiB, got {budget_mb!r}")
        self._budget = float(budget_mb) * 2**20
        self._layer_names = self._check_layers(layers)
        modules = dict(model.named_modules())
        self._convs = {name: modules[name] for name in self._layer_names}
        # unnormalised, for display; checks the channel count (one image, a batch, or a list of images)
        pixels = stack_images(probe, model=model, who="TrainingMonitor's probe")
        if pixels.shape[0] > MAX_PROBE:
            raise ValueError(
                f"probe holds {pixels.shape[0]} images; pass at most {MAX_PROBE} (e.g. probe=images[:2]): "
                "every snapshot keeps each probe image's activations"
            )
        self._batch = stack_images(probe, mean, std, model=model)
        device = model_device(model)
        self._rng_devices = [device] if device.type == "cuda" else []

        self._lock = threading.RLock()
        self._epoch = 0
        self._step = 0
        self._epoch_losses: list[float] = []
        self._series: dict[tuple[str, str], tuple[list[float], list[float]]] = {("step", "loss"): ([], [])}
        self._lines: dict[tuple[str, str], Lines] = {}
        self._last_push = -math.inf
        self._timer: threading.Timer | None = None
        self._stored: list[_Stored] = []
        self._next_id = 0
        first = self._capture(Snapshot(0, 0, {}))  # raises a clear ValueError for a probe the model refuses
        if 2 * first.nbytes > self._budget:
            raise ValueError(
                f"budget_mb={budget_mb} holds fewer than two snapshots: each takes {first.nbytes / 2**20:.2f} MiB "
                f"({len(self._layer_names)} layers: {', '.join(map(repr, self._layer_names))}; "
                f"{self._batch.shape[0]} probe images); raise budget_mb, monitor fewer layers (layers=[...]) "
                "or pass fewer probe images"
            )

        self._canvas = _TrainingCanvas()
        self._make_chart()
        kwargs.setdefault("layout", W.Layout(align_items="flex-start"))
        super().__init__(children=[self._figure, self._canvas], **kwargs)
        self._canvas.on_msg(self._on_canvas_msg)
        t.dlink((self, "font_scale"), (self._canvas, "font_scale"))
        self._scale_chart()
        with self._canvas.hold_sync():
            self._canvas._layers = [
                {"name": n, "info": _conv_info(conv)} for n, conv in self._convs.items()
            ]
            self._canvas._probe = [
                wire.encode(torch.from_numpy(prepare(pixels[i])[1]), exact=True) for i in range(pixels.shape[0])
            ]
        self._keep(first)

    # -- arguments ---------------------------------------------------------------------------------

    def _check_layers(self, layers: object) -> list[str]:
        convs = conv_layers(self._model)
        if not convs:
            raise ValueError(
                f"TrainingMonitor needs a model with at least one nn.Conv2d, but this {type(self._model).__name__} "
                "has none: it snapshots conv filters"
            )
        names = check_layers_arg(layers)
        if names is None:
            return default_layers(convs)
        if not names:
            raise ValueError(f"layers is empty; pass conv layer names such as {convs[0]!r}, or None for the default")
        modules = dict(self._model.named_modules())
        for name in names:
            if name in modules and name not in convs:
                raise ValueError(
                    f"layer {name!r} is a {type(modules[name]).__name__}, not a Conv2d; TrainingMonitor "
                    f"snapshots conv layers: {', '.join(map(repr, convs[:12]))}{', …' if len(convs) > 12 else ''}"
                )
            if name not in convs:
                raise unknown_name_error("conv layer", name, convs)
        return list(dict.fromkeys(names))

    # -- public API --------------------------------------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """The monitored conv layers, in the model's order of registration."""
        return list(self._layer_names)

    @property
    def epoch(self) -> int:
        """Epochs finished (calls of :meth:`epoch_end`)."""
        return self._epoch

    @property
    def steps(self) -> int:
        """Steps reported (calls of :meth:`step`)."""
        return self._step

    @property
    def snapshots(self) -> list[Snapshot]:
        """The kept snapshots, oldest first: ``Snapshot(epoch, step, metrics)``. ``metrics`` holds what was
        reported with it: the :meth:`epoch_end` values (plus ``loss``, the mean step loss of that epoch,
        unless given) for an epoch's snapshot, the step's loss and metrics for a step's, nothing for the
        first one. Indices into this list are what :meth:`filters` takes."""
        with self._lock:
            return [s.info for s in self._stored]

    @property
    def history(self) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """Everything reported, as ``(step, value)`` pairs: ``{"step": {"loss": [...], name: [...]},
        "epoch": {name: [...]}}`` (per-step values and values reported at epoch ends)."""
        with self._lock:
            out: dict[str, dict[str, list[tuple[int, float]]]] = {"step": {}, "epoch": {}}
            for (kind, name), (xs, ys) in self._series.items():
                out[kind][name] = [(int(x), y) for x, y in zip(xs, ys)]
            return out

    @property
    def budget_mb(self) -> float:
        """The memory budget of the kept snapshots, in MiB."""
        return self._budget / 2**20

    @property
    def nbytes(self) -> int:
        """Bytes the kept snapshots take (exact weights plus display data); at most the budget."""
        with self._lock:
            return sum(s.nbytes for s in self._stored)

    def filters(self, layer: str, i: int) -> torch.Tensor:
        """The weights of conv ``layer`` at snapshot ``i`` of :attr:`snapshots` (negative counts from the
        end): an exact copy (same dtype and values as the parameter then), not the uint8 display form."""
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a monitored conv layer's name (str), got {type(layer).__name__}")
        if layer not in self._convs:
            raise unknown_name_error("monitored layer", layer, self._layer_names)
        with self._lock:
            count = len(self._stored)
            if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not -count <= i < count:
                raise ValueError(f"snapshot index {i!r} is out of range: {count} snapshots are kept (0‥{count - 1})")
            return self._stored[int(i)].weights[layer].clone()

    def step(self, loss: Any, **metrics: Any) -> None:
        """Report one training step (batch): its ``loss`` (a number or one-element tensor; its autograd
        graph is not touched) and any per-step ``metrics``. Takes a snapshot after every
        ``every_steps``-th step when that is set."""
        value = _number("loss", loss)
        extra = _metrics(metrics)
        with self._lock:
            self._step += 1
            self._epoch_losses.append(value)
            self._record("step", "loss", value)
            for name, v in extra.items():
                self._record("step", name, v)
            if self._every_steps is not None and self._step % self._every_steps == 0:
                self._take(Snapshot(self._epoch, self._step, {"loss": value, **extra}))
        self._chart_changed()

    def epoch_end(self, **metrics: Any) -> None:
        """Report the end of an epoch with any ``metrics`` (plotted as points at the current step).
        Takes a snapshot at the end of every ``every``-th epoch and brings the chart up to date."""
        values = _metrics(metrics)
        with self._lock:
            self._epoch += 1
            for name, v in values.items():
                self._record("epoch", name, v)
            info = dict(values)
            if self._epoch_losses and "loss" not in info:
                info["loss"] = float(np.mean(self._epoch_losses))
            self._epoch_losses = []
            if self._epoch % self._every == 0:
                self._take(Snapshot(self._epoch, self._step, info))
        self.flush()

    def snapshot(self, **metrics: Any) -> Snapshot:
        """Take a snapshot now (labelled with the current epoch and step and these ``metrics``)."""
        values = _metrics(metrics)
        with self._lock:
            return self._take(Snapshot(self._epoch, self._step, values))

    @property
    def callback(self) -> Callable[..., None]:
        """One function for loops that take a callback: ``callback(loss=None, *, epoch_end=False,
        **metrics)``. With ``epoch_end=False`` it is :meth:`step` (``loss`` required); with
        ``epoch_end=True`` it reports the end of an epoch with ``metrics`` (after a final :meth:`step`
        when ``loss`` is given too)."""

        def callback(loss: Any = None, *, epoch_end: bool = False, **metrics: Any) -> None:
            if not isinstance(epoch_end, bool):
                raise TypeError(f"epoch_end must be True or False, got {epoch_end!r}")
            if not epoch_end:
                if loss is None:
                    raise ValueError("callback(loss, **metrics) reports a step and needs its loss; "
                                     "callback(epoch_end=True, **metrics) reports the end of an epoch")
                self.step(loss, **metrics)
                return
            if loss is not None:
                self.step(loss)
            self.epoch_end(**metrics)

        return callback

    def flush(self) -> None:
        """Bring the chart up to date now (a pending throttled update is sent at once)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._push_chart()

    def close(self) -> None:
        """Close the view (chart and canvas) and stop a pending chart update."""
        if hasattr(self, "_canvas"):  # also called by __del__ of a monitor whose construction failed
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            self._canvas.close()
            self._figure.close()
        super().close()

    # -- snapshots (called with the lock held) -----------------------------------------------------

    def _capture(self, info: Snapshot) -> _Stored:
        """Copy the monitored weights and run the probe: one model session (eval, no grad, state and
        ``.grad`` restored) inside a saved and restored torch RNG state."""
        weights = {name: conv.weight.detach().to("cpu", copy=True) for name, conv in self._convs.items()}
        with torch.random.fork_rng(devices=self._rng_devices):
            acts = capture_activations(self._model, self._batch, self._layer_names)
        parts: list[dict[str, Any]] = []
        buffers: list[memoryview] = []

        def add(what: str, layer: str, image: int, encoded: dict[str, Any]) -> None:
            header, data = split_buffers(encoded)
            parts.append({"what": what, "layer": layer, "image": image, **header})
            buffers.extend(data)

        for name in self._layer_names:
            add("filters", name, -1, wire.encode(weights[name]))
            act = acts[name]
            for n in range(act.shape[0]):
                add("activations", name, n, wire.encode(act[n], max_size=ACTIVATION_SIDE))
        nbytes = sum(w.nbytes for w in weights.values()) + sum(b.nbytes for b in buffers)
        self._next_id += 1
        return _Stored(self._next_id - 1, info, weights, parts, buffers, nbytes)

    def _take(self, info: Snapshot) -> Snapshot:
        stored = self._capture(info)
        # one snapshot per step: the epoch's replaces a step's taken at the same step (never the first)
        if len(self._stored) > 1 and info.step and self._stored[-1].info.step == info.step:
            self._stored.pop()
        self._keep(stored)
        return info

    def _keep(self, stored: _Stored) -> None:
        self._stored.append(stored)
        while len(self._stored) > 2 and sum(s.nbytes for s in self._stored) > self._budget:
            self._stored = [self._stored[i] for i in _thinned(len(self._stored))]
        self._send_snapshot(stored)
        self._canvas._kept = [
            {"id": s.id, "epoch": s.info.epoch, "step": s.info.step, "metrics": _json_metrics(s.info.metrics)}
            for s in self._stored
        ]

    # -- exports (Panel.to_png / save_html) ---------------------------------------------------------

    def _export_image(self) -> np.ndarray:
        """What the canvas shows until its slider or selects move: the newest snapshot's filters of the
        first monitored layer, the first probe image's activations there, and the probe image."""
        from .. import export

        with self._lock:
            return export.training_monitor_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        with self._lock:
            info = self._stored[-1].info
            return {**export.model_fields(self._model), **export.image_fields(self._batch),
                    "layer": self._layer_names[0], "layers": list(self._layer_names),
                    "snapshot": {"epoch": info.epoch, "step": info.step, "metrics": dict(info.metrics)},
                    "snapshots": len(self._stored), "epoch": self._epoch, "steps": self._step,
                    "options": {"every": self._every, "every_steps": self._every_steps, "budget_mb": self.budget_mb}}

    def _export_html(self) -> list[dict[str, Any]]:
        """The canvas with every kept snapshot in the file (its slider and selects work offline) and the
        chart as SVG: the losses on one chart, the other metrics on a second."""
        from .. import export

        self.flush()
        with self._lock:
            replies = [({"type": "snapshot", "id": s.id, "parts": s.parts}, s.buffers) for s in self._stored]
            charts = []
            for ylabel, on_loss in (("loss", True), ("metrics", False)):
                series = []
                for (kind, name), (xs, ys) in self._series.items():
                    if ("loss" in name.lower()) == on_loss and xs:
                        x, y = _decimated(xs, ys)
                        line = self._lines[(kind, name)]
                        series.append({"name": line.labels[0], "color": line.colors[0], "x": x.tolist(),
                                       "y": y.tolist(), "dots": kind == "epoch"})
                if series:
                    charts.append(export.curves_part(f"training · {ylabel}", "step", series, ylabel=ylabel,
                                                     x_range=None, y_range=None, percent=False))
        return [export.widget_part(self._canvas, replies={"fetch": replies}), *charts]

    # -- the browser -------------------------------------------------------------------------------

    def _send_snapshot(self, stored: _Stored) -> None:
        self._canvas.send({"type": "snapshot", "id": stored.id, "parts": stored.parts}, stored.buffers)

    def _on_canvas_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """``{"type": "fetch", "have": [ids]}``: a view rendered; send the kept snapshots it lacks."""
        if not isinstance(content, dict) or content.get("type") != "fetch":
            return
        have = content.get("have")
        have = set(have) if isinstance(have, list) else set()
        with self._lock:
            for stored in self._stored:
                if stored.id not in have:
                    self._send_snapshot(stored)

    # -- the chart ---------------------------------------------------------------------------------

    def _make_chart(self) -> None:
        self._x = LinearScale()
        self._y_loss = LinearScale()
        self._y_metric = LinearScale()
        self._metric_axis = Axis(scale=self._y_metric, side="right", label="metrics", visible=False)
        self._figure = Figure(
            marks=[],
            axes=[
                Axis(scale=self._x, label="step", tick_format="d"),
                Axis(scale=self._y_loss, side="left", label="loss"),
                self._metric_axis,
            ],
            title="training",
            legend_location="top-right",
            # the plot area shows the page (the notebook cell, light or dark) like the rest of the view
            background_style={"fill": "none"},
        )
        self._figure.add_class("cnnw-training-chart")
        self._line_for("step", "loss")

    @t.observe("font_scale")
    def _scale_chart(self, change: t.Bunch | None = None) -> None:
        """Chart fonts (12 px ticks and legend, 13 px title at scale 1), margins and size follow
        ``font_scale``."""
        s = self.font_scale
        with self._figure.hold_sync():
            scale_chart(self._figure, s)
            self._figure.legend_text = chart_font(s)
            self._figure.fig_margin = {
                "top": round(40 * s), "bottom": round(45 * s), "left": round(60 * s), "right": round(60 * s),
            }
            self._figure.layout.width = f"{round(640 * s)}px"
            self._figure.layout.height = f"{round(300 * s)}px"

    def _line_for(self, kind: str, name: str) -> Lines:
        """The mark of a series, made on first use: per-step values as a line, epoch values as points
        joined by a line; names containing "loss" share the loss axis, the others the metrics axis."""
        key = (kind, name)
        line = self._lines.get(key)
        if line is not None:
            return line
        on_loss = "loss" in name.lower()
        label = name
        if (("epoch" if kind == "step" else "step"), name) in self._series:
            label = f"{name} ({'per step' if kind == 'step' else 'epoch'})"
        line = Lines(
            x=np.zeros(0), y=np.zeros(0), labels=[label], display_legend=True,
            colors=[_PALETTE[len(self._lines) % len(_PALETTE)]],
            scales={"x": self._x, "y": self._y_loss if on_loss else self._y_metric},
            marker="circle" if kind == "epoch" else None, marker_size=24,
            stroke_width=1.5 if kind == "step" else 1.0,
        )
        self._lines[key] = line
        if not on_loss:
            self._metric_axis.visible = True
        self._figure.marks = [*self._figure.marks, line]
        return line

    def _record(self, kind: str, name: str, value: float) -> None:
        xs, ys = self._series.setdefault((kind, name), ([], []))
        xs.append(float(self._step))
        ys.append(value)

    def _chart_changed(self) -> None:
        """Push the chart now if the last push is :data:`UPDATE_INTERVAL` old, else once that much time
        has passed (one pending timer at most)."""
        with self._lock:
            wait = self._last_push + UPDATE_INTERVAL - _now()
            if wait <= 0:
                self.flush()
                return
            if self._timer is not None:
                return
            self._timer = threading.Timer(wait, self._timed_push)
            self._timer.daemon = True
            self._timer.start()

    def _timed_push(self) -> None:
        with self._lock:
            if self._timer is None:  # flushed or closed meanwhile
                return
            self._timer = None
            self._push_chart()

    def _push_chart(self) -> None:
        self._last_push = _now()
        for key, (xs, ys) in list(self._series.items()):
            line = self._line_for(*key)
            x, y = _decimated(xs, ys)
            if len(line.x) == len(x) and np.array_equal(line.x, x) and np.array_equal(line.y, y, equal_nan=True):
                continue
            with line.hold_sync():
                line.x = x
                line.y = y
