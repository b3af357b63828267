"""ChannelImportance: which channels of a layer the model needs, over a data set — per channel the drop in
accuracy (or rise in cross-entropy) when the channel is permuted across the batch (bars, with the standard
deviation over repeats as error bars) and when it is zeroed (dots), from
:func:`cnn_widgets.channel_importance` (seeded, so the same call shows the same numbers).

The view is an ``ipywidgets.VBox`` of a small anywidget control strip (the keyboard path: a channel menu in
the current order, the sort order, progress and cancel; ``js/src/widgets/channel_importance.js``) and a
bqplot figure, whose bars select a channel on click. The computation runs in the widget's job engine
(:mod:`cnn_widgets.widgets.jobs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anywidget
import ipywidgets as W
import numpy as np
import traitlets as t
from bqplot import Axis, Bars, Figure, LinearScale, Lines, OrdinalScale, Scatter
from torch import nn

from .._checks import check_layer_names, check_model
from ..dataset import Importance, channel_importance
from ..dataset.importance import METRICS
from ..dataset.source import rereadable
from ..dataset.scan import positive_int
from ..images import Stats
from ..outputs import Output, check_output
from ..style import scale_chart
from ._common import CheckedEnum, CheckedInt, CheckedUnicode, WidgetValueError, bundle, check_index
from .jobs import Jobs, JobView, Progress
from .panel import Panel
from .top_activations import counted

SORTS: tuple[str, ...] = ("channel", "permutation", "zeroing")
_BAR, _BAR_SELECTED, _DOT = "#5b8db8", "#e8590c", "#2f2f2f"
_FONT = {"font-size": "12px"}
_TICKS = 24  # channel numbers under the axis at most (every n-th bar), so they stay legible


class _Controls(anywidget.AnyWidget):
    """The browser half of :class:`ChannelImportance`: channel menu, sort, progress and cancel."""

    _esm = bundle("channel_importance")

    channel = t.Int(-1).tag(sync=True)
    sort = t.Unicode("permutation").tag(sync=True)
    metric = t.Unicode("accuracy").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    font_scale = t.Float(1.0).tag(sync=True)
    _rows = t.Dict().tag(sync=True)


class ChannelImportance(Panel, JobView, W.VBox):
    """Permutation and zeroing importance of every channel of ``layer`` over ``data``.

    ``metric``: "accuracy" (drop in accuracy) or "loss" (rise in mean cross-entropy; a model at 100 %
    accuracy often loses none to one channel). ``repeats``, ``seed``, ``mean``, ``std``, ``output``
    (which part of a structured output holds the class scores), ``batch_size``: as in
    :func:`cnn_widgets.channel_importance`; ``importance``: a result to show instead of computing.

    Traits: ``layer``, ``metric`` (changing either recomputes), ``channel`` (-1: none; clicking a bar
    or the channel menu sets it), ``sort`` ("channel", "permutation", "zeroing": descending), read-only
    ``progress``, ``busy``, ``error``. :attr:`importance` is the result shown; :meth:`wait`,
    :meth:`cancel` as in the other views.
    """

    layer = CheckedUnicode("").tag(sync=True)
    channel = CheckedInt(-1).tag(sync=True)
    metric = CheckedEnum(METRICS, default_value="accuracy").tag(sync=True)
    sort = CheckedEnum(SORTS, default_value="permutation").tag(sync=True)
    progress = t.Float(0.0, read_only=True)
    busy = t.Bool(False, read_only=True)
    error = t.Unicode("", read_only=True)

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        layer: str,
        metric: str = "accuracy",
        *,
        repeats: int = 3,
        seed: int = 0,
        mean: Stats = None,
        std: Stats = None,
        output: Output = None,
        batch_size: int = 64,
        importance: Importance | None = None,
        channel: int = -1,
        sort: str = "permutation",
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model, hooks=True)
        rereadable(data, "ChannelImportance", "each layer and metric")
        self._data, self._mean, self._std = data, mean, std
        self._output = check_output(output)
        self._repeats = positive_int("repeats", repeats)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int ≥ 0, got {seed!r}")
        self._seed = int(seed)
        self._batch_size = positive_int("batch_size", batch_size)
        if importance is not None and not isinstance(importance, Importance):
            raise TypeError(f"importance must be an Importance (cnn_widgets.channel_importance(...)) or None, "
                            f"got {type(importance).__name__}")
        self._result: Importance | None = None
        self._order: list[int] = []
        self._jobs = Jobs("cnn_widgets-channel-importance", cache_size=8)
        self._given: dict[tuple[str, str], Importance] = {}  # a result passed in, by (layer, metric)
        self._quiet = True
        self._controls = _Controls()
        self._bars, self._errors, self._dots, self._figure = self._make_chart()
        self._scale_charts()
        super().__init__(children=[self._controls, self._figure], **kwargs)
        self.layer = layer
        self.metric = metric
        self.sort = sort
        for name in ("channel", "sort", "metric", "font_scale"):
            t.link((self, name), (self._controls, name))
        for name in ("progress", "busy", "error"):
            t.dlink((self, name), (self._controls, name))
        self._controls.on_msg(self._on_msg)
        self._quiet = False
        if importance is not None:
            if importance.layer != layer or importance.metric != self.metric:
                raise ValueError(f"importance is of layer {importance.layer!r} by {importance.metric!r}, not of "
                                 f"{layer!r} by {self.metric!r}")
            self._given[(importance.layer, importance.metric)] = importance
            self._show(importance)
        else:
            self._request()
        if channel != -1:
            self.channel = channel

    @t.observe("font_scale")
    def _scale_charts(self, change: t.Bunch | None = None) -> None:
        """The chart text (ticks, title) follows ``font_scale``, as in every view with a chart."""
        if hasattr(self, "_figure"):  # font_scale can be set before the chart exists
            scale_chart(self._figure, self.font_scale)

    # -- validation -------------------------------------------------------------------------------

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str:
        value = proposal["value"]
        try:
            check_layer_names(self._model, [value])
        except ValueError as err:
            raise WidgetValueError(str(err)) from None
        return value

    @t.validate("channel")
    def _check_channel(self, proposal: t.Bunch) -> int:
        result = self._result
        count = 0 if result is None else len(result.permutation)
        value = proposal["value"]
        if result is None:
            if isinstance(value, bool) or value < -1:
                raise WidgetValueError(f"channel must be an int ≥ -1 (-1 for none), got {value!r}")
            return value
        return check_index("channel", value, count, f"{self.layer!r} has {count} channels")

    # -- requests ---------------------------------------------------------------------------------

    @t.observe("layer", "metric")
    def _settings_changed(self, change: t.Bunch) -> None:
        self._request()

    @t.observe("sort", "channel")
    def _view_changed(self, change: t.Bunch) -> None:
        self._update_chart()

    def _request(self) -> None:
        if self._quiet:
            return
        layer, metric = self.layer, self.metric
        key = (layer, metric)
        with self._jobs.lock:
            cached = self._given.get(key) or self._jobs.cached(key)
            if cached is not None:
                if self._jobs.cancel():  # a computation for another layer or metric: it is not shown now
                    self.set_trait("busy", False)
                    self.set_trait("progress", 1.0)
                    self._set_status("")
                self._show(cached)
                return
            self._start(f"channel importance of {layer} ({metric})", lambda p: self._compute(layer, metric, p),
                        self._show, key=key)

    def _compute(self, layer: str, metric: str, progress: Progress) -> Importance:
        return channel_importance(
            self._model, counted(self._data, self._batch_size, progress), layer, metric=metric,
            repeats=self._repeats, seed=self._seed, mean=self._mean, std=self._std, output=self._output,
            batch_size=self._batch_size, progress=False,
        )

    def _set_status(self, text: str) -> None:
        self._controls.status = text  # the status shows in the control strip only

    def _rerun(self) -> None:
        self._request()

    @property
    def importance(self) -> Importance | None:
        """The result on screen (``None`` before the first one)."""
        return self._result

    # -- the chart --------------------------------------------------------------------------------

    def _make_chart(self) -> tuple[Bars, Lines, Scatter, Figure]:
        x = OrdinalScale()
        y = LinearScale()
        bars = Bars(x=[], y=[], scales={"x": x, "y": y}, colors=[_BAR], padding=0.2)
        errors = Lines(x=[], y=[], scales={"x": x, "y": y}, colors=[_DOT], stroke_width=1.5)
        dots = Scatter(x=[], y=[], scales={"x": x, "y": y}, colors=[_DOT], default_size=28, marker="circle")
        bars.on_element_click(self._bar_clicked)
        figure = Figure(
            marks=[bars, errors, dots],
            axes=[Axis(scale=x, label="channel", tick_style=_FONT, num_ticks=_TICKS), Axis(scale=y, side="left", tick_style=_FONT)],
            title="", title_style={"font-size": "13px"},
            fig_margin={"top": 40, "bottom": 45, "left": 60, "right": 20},
            layout=W.Layout(width="100%", max_width="900px", height="320px"),
        )
        figure.add_class("cnnw-channel-importance-chart")
        return bars, errors, dots, figure

    def _show(self, result: Importance) -> None:
        self._result = result
        channels = len(result.permutation)
        if self.channel >= channels:
            self.channel = -1
        self._controls._rows = {
            "layer": result.layer, "metric": result.metric, "baseline": float(result.baseline),
            "permutation": [float(v) for v in result.permutation], "std": [float(v) for v in result.std],
            "zeroing": [float(v) for v in result.zeroing], "repeats": result.repeats, "seed": result.seed,
            "count": result.count,
        }
        self._update_chart()

    def order(self) -> list[int]:
        """Channels in the chart's order (``sort``)."""
        r = self._result
        if r is None:
            return []
        channels = np.arange(len(r.permutation))
        if self.sort == "channel":
            return channels.tolist()
        key = r.permutation if self.sort == "permutation" else r.zeroing
        return np.lexsort((channels, -np.nan_to_num(key, nan=-np.inf))).tolist()

    def _on_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """Besides cancel and run: ``{"type": "png"}`` from the "save PNG" button (the chart is bqplot,
        with no canvas in the browser to copy), answered with the PNG that :meth:`to_png` writes."""
        if not (isinstance(content, dict) and content.get("type") == "png"):
            super()._on_msg(widget, content, buffers)
            return
        from .. import export

        if self.busy or self.importance is None:
            self._controls.send({"type": "png", "error": "still computing: save when the bars are shown"})
            return
        try:
            data, _ = export.png_bytes(self)
        except Exception as err:  # the browser shows why; the kernel stays up
            self._controls.send({"type": "png", "error": str(err)})
        else:
            self._controls.send({"type": "png"}, [data])

    def _update_chart(self) -> None:
        r = self._result
        if r is None:
            return
        order = self.order()
        self._order = order
        names = [str(c) for c in order]
        perm = r.permutation[order]
        std = r.std[order]
        what = "drop in accuracy" if r.metric == "accuracy" else "rise in cross-entropy"
        with self._bars.hold_sync(), self._errors.hold_sync(), self._dots.hold_sync():
            self._bars.x = names
            self._bars.y = perm.tolist()
            self._bars.colors = [_BAR_SELECTED if c == self.channel else _BAR for c in order]
            self._errors.x = [[n, n] for n in names]
            self._errors.y = [[float(m - s), float(m + s)] for m, s in zip(perm, std)]
            self._dots.x = names
            self._dots.y = r.zeroing[order].tolist()
        base = f"{r.baseline:.1%}" if r.metric == "accuracy" else f"{r.baseline:.3f}"
        self._figure.title = (f"{r.layer}: {what} per channel · bars permuted (± std over {r.repeats}), dots zeroed"
                              f" · baseline {base} on {r.count} images")
        self._figure.axes[1].label = what

    def _bar_clicked(self, bars: Bars, event: dict[str, Any]) -> None:
        """bqplot ``element_click``: the clicked bar's index in the chart's order."""
        index = (event.get("data") or {}).get("index")
        if isinstance(index, int) and 0 <= index < len(self._order):
            self.channel = self._order[index]

    # -- exports (Panel.to_png / save_html) ---------------------------------------------------------

    def _export_image(self) -> np.ndarray:
        """The chart redrawn with Pillow (bqplot has no canvas to copy): a bar per channel in the
        chart's order, the selected one orange, ± std lines and zeroing dots."""
        from .. import export

        self.wait()
        return export.importance_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        self.wait()
        r = self._result
        return {**export.model_fields(self._model), "layer": self.layer, "channel": self.channel,
                "baseline": None if r is None else float(r.baseline), "images": None if r is None else int(r.count),
                "options": {"metric": self.metric, "repeats": self._repeats, "seed": self._seed,
                            "batch_size": self._batch_size, "sort": self.sort}}

    def _export_html(self) -> list[dict[str, Any]]:
        """The controls (channel menu and sort work offline) and the chart as a picture."""
        from .. import export

        self.wait()
        return [export.widget_part(self._controls),
                export.picture_part(export.importance_image(self), self._figure.title)]
