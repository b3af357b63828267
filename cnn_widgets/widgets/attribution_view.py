"""AttributionView: an attribution heatmap over the input image, a method picker with option controls
generated from :data:`cnn_widgets.METHODS`, and the model's top predictions as clickable bqplot bars.

The view is an ``ipywidgets.HBox`` holding two widgets: the anywidget canvas (``js/src/widgets/
attribution_view.js``) and a bqplot ``Figure``. The public traits live on the HBox and are linked to the
canvas's synced traits. Each result's signed map travels once, as float16 (:mod:`cnn_widgets.wire`);
``opacity``, ``colormap``, ``sign`` and ``clip_percentile`` are applied in the browser, so moving them
sends no numbers (their browser-side changes are not even echoed back).

Attributions run as jobs of :mod:`cnn_widgets.widgets.jobs` (a worker thread, so the kernel stays free to
receive a cancel click while a slow method works): ``attribute``'s ``progress`` callback publishes the
fraction done and raises :class:`~cnn_widgets.Cancelled` once the job is cancelled (by the cancel button,
:meth:`AttributionView.cancel`, or any newer request). The last :data:`~cnn_widgets.widgets.jobs.CACHE_SIZE`
results are cached per (image, method, target, layer, options).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

import anywidget
import ipywidgets as W
import torch
import traitlets as t
from bqplot import Axis, Bars, Figure, LinearScale, OrdinalScale
from torch import nn

from .. import wire
from .. import outputs
from .._checks import check_layer_names, check_model, is_script, model_input, unknown_name_error
from ..attribution import METHODS, Attribution, attribute
from ..capture import model_session
from ..images import Image, Stats, prepare
from ..layers import conv_layers, probe
from ..outputs import Output, check_output, check_scores
from ..style import chart_font, scale_chart
from ._common import CheckedDict, CheckedFloat, CheckedInt, CheckedUnicode, HeatmapDisplay, WidgetValueError, bundle
from ._common import SIGNS, check_choice  # noqa: F401  (re-exported: they were defined here)
from .jobs import CACHE_SIZE, Jobs, Progress
from .panel import Panel

TOP_K = 5
_BAR = "#5b8db8"
_BAR_TARGET = "#e8590c"

def label_list(labels: Sequence[str] | None) -> list[str] | None:
    """``labels`` as a list of str (``None`` stays ``None``), or a ``TypeError``; checkable before the
    model has run (:func:`check_labels` then checks the count)."""
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of class names (str), got {type(labels).__name__}")
    return [str(x) for x in labels]


def check_labels(labels: Sequence[str] | None, classes: int) -> list[str]:
    """Class names for ``classes`` outputs: ``labels`` checked, or ``class 0``, ``class 1``, … ."""
    names = label_list(labels)
    if names is None:
        return [f"class {i}" for i in range(classes)]
    if len(names) != classes:
        raise ValueError(
            f"got {len(names)} labels but the model has {classes} classes; pass one name per class output"
        )
    return names


def class_probabilities(
    model: nn.Module, batch: torch.Tensor, output: Output = None, scores: str = "auto"
) -> tuple[torch.Tensor, str | None]:
    """Probabilities (N, classes) of ``model`` on ``batch`` (softmax of the selected scores unless they
    already are probabilities, see :func:`cnn_widgets.outputs.probabilities`) and the suggested CAM
    layer (or ``None``), from one eval-mode forward pass with the model left as it was."""
    with model_session(model, eval_mode=True):
        found = probe(model, model_input(model, batch), output, layer=not is_script(model))
    # A model with non-finite scores still gets a view: the chart shows 0 and attribute() reports it.
    return outputs.probabilities(found.scores, scores, squashed=found.sigmoid_scores(model)), found.layer


def check_scoring(output: object, scores: object, logits: object) -> tuple[Output, str, bool]:
    """The widgets' ``output=``, ``scores=`` and ``logits=`` arguments, checked before any forward pass
    (``output`` and ``logits`` go to :func:`cnn_widgets.attribute`, ``scores`` to
    :func:`class_probabilities`)."""
    if not isinstance(logits, bool):
        raise TypeError(f"logits must be True or False, got {logits!r}")
    return check_output(output), check_scores(scores), logits


def _freeze(value: Any) -> Hashable:
    """A hashable, order-independent form of an options value (dicts sorted, lists as tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _check_json_option(name: str, value: Any) -> None:
    """Options travel to the browser, so they must be JSON values; say how to pass anything else."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if math.isfinite(value):
            return
        raise WidgetValueError(f"option {name}={value!r} must be a finite number")
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return
    raise WidgetValueError(
        f"option {name}={type(value).__name__} cannot be a widget option: widget options are numbers, "
        "booleans, strings, None or lists of ints (they are shown in the browser). For a tensor (e.g. "
        "baselines) call cnn_widgets.attribute(...) directly"
    )


def error_text(err: BaseException) -> str:
    """The message shown in a widget for a failed computation: bad-input errors as they are, anything
    else prefixed with its type so it can be searched for."""
    if isinstance(err, (ValueError, TypeError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


class _AttributionCanvas(anywidget.AnyWidget):
    """The browser half of :class:`AttributionView`: image, heatmap, controls, progress and cancel."""

    _esm = bundle("attribution_view")

    method = t.Unicode("").tag(sync=True)
    target = t.Int(None, allow_none=True).tag(sync=True)
    layer = t.Unicode(None, allow_none=True).tag(sync=True)
    options = t.Dict().tag(sync=True)
    opacity = t.Float(0.5).tag(sync=True, echo_update=False)
    colormap = t.Unicode("inferno").tag(sync=True, echo_update=False)
    sign = t.Unicode("positive").tag(sync=True, echo_update=False)
    clip_percentile = t.Float(99.0).tag(sync=True, echo_update=False)
    progress = t.Float(0.0).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    _methods = t.List().tag(sync=True)
    _layers = t.List().tag(sync=True)
    _auto_layer = t.Unicode("").tag(sync=True)
    _predictions = t.List().tag(sync=True)
    _image = t.Dict().tag(sync=True)
    _result = t.Dict().tag(sync=True)
    _notice = t.Unicode("").tag(sync=True)
    font_scale = t.Float(1.0).tag(sync=True)  # the view's, forwarded


class AttributionView(Panel, HeatmapDisplay, W.HBox):
    """Explain one prediction of ``model`` on ``image`` with any method of :data:`cnn_widgets.METHODS`.

    ``target``: the class explained (``None``: the top prediction); clicking a bar of the top-k chart
    sets it. ``layer``: for methods that need one (``None``: :func:`cnn_widgets.suggest_target_layer`).
    ``labels``: class names (default ``class 0``, ``class 1``, …). ``mean``/``std`` normalise the image
    for the model; the picture shows it unnormalised. ``output``: which part of a structured model
    output holds the class scores (see :mod:`cnn_widgets.outputs`); ``scores``: how the chart reads
    them ("auto": rows that already are probabilities are shown as they are, else softmaxed; "logits";
    "probabilities"); ``logits=True`` attributes the scores before a final softmax (see
    :func:`cnn_widgets.attribute`).

    Traits: ``method``, ``target``, ``layer``, ``options`` (the method's options by Captum's names;
    changing any of these recomputes), ``opacity``, ``colormap``, ``sign`` ("positive" | "negative" |
    "absolute" | "all", the last with a diverging colormap) and ``clip_percentile`` (colour range ends
    at this percentile of the shown magnitudes), applied in the browser; read-only ``progress`` (0–1),
    ``busy``, ``error`` (why the last computation failed, else ""), ``labels`` and ``predictions``;
    ``font_scale`` (text size multiplier for a projector, default :func:`cnn_widgets.style`'s) scales
    the canvas's text and the chart's. The chart sits beside the heatmap when the row has room and
    wraps below it otherwise.
    A value of the wrong type or out of range raises :class:`~cnn_widgets.widgets.WidgetValueError`
    (a ``ValueError``) naming the trait.

    Computations run in the background, one at a time: :meth:`wait` blocks until the current one is
    done, :attr:`result` is the attribution on screen, :meth:`cancel` and :meth:`run` are the buttons.
    """

    method = CheckedUnicode("grad_cam")
    target = CheckedInt(None, allow_none=True)
    layer = CheckedUnicode(None, allow_none=True)
    options = CheckedDict()
    opacity = CheckedFloat(0.5)
    colormap = CheckedUnicode("inferno")
    sign = CheckedUnicode("positive")
    clip_percentile = CheckedFloat(99.0)
    progress = t.Float(0.0, read_only=True)
    busy = t.Bool(False, read_only=True)
    error = t.Unicode("", read_only=True)
    labels = t.List(t.Unicode(), read_only=True)
    predictions = t.List(t.Dict(), read_only=True)

    def __init__(
        self,
        model: nn.Module,
        image: Image,
        method: str = "grad_cam",
        target: int | None = None,
        labels: Sequence[str] | None = None,
        mean: Stats = None,
        std: Stats = None,
        layer: str | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        opacity: float = 0.5,
        colormap: str = "inferno",
        sign: str = "positive",
        clip_percentile: float = 99.0,
        output: Output = None,
        scores: str = "auto",
        logits: bool = False,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model)
        self._output, self._scores, self._logits = check_scoring(output, scores, logits)
        # one result per cache entry: (Attribution, browser payload)
        self._jobs = Jobs("cnn_widgets-attribution", cache_size=CACHE_SIZE)
        self._shown: Attribution | None = None
        self._options_by_method: dict[str, dict[str, Any]] = {}
        self._quiet = True
        self._image_version = 0
        self._canvas = _AttributionCanvas(layout=W.Layout(max_width="100%"))  # narrow pages: no overflow
        self._bars, self._figure = self._make_chart()
        kwargs.setdefault("layout", W.Layout(flex_flow="row wrap", align_items="flex-start"))
        super().__init__(children=[self._canvas, self._figure], **kwargs)
        # what needs no forward pass is checked before the image's; the target needs the class count
        self.method = method
        self.layer = layer
        self.options = dict(options) if isinstance(options, Mapping) else {} if options is None else options
        self.opacity = opacity
        self.colormap = colormap
        self.sign = sign
        self.clip_percentile = clip_percentile
        self._load_image(image, mean, std, label_list(labels))
        self._canvas._methods = [info.to_json() for info in METHODS.values()]
        self.target = target
        for name in ("method", "target", "layer", "options", "opacity", "colormap", "sign", "clip_percentile"):
            t.link((self, name), (self._canvas, name))
        for name in ("progress", "busy", "error", "font_scale"):
            t.dlink((self, name), (self._canvas, name))
        self._canvas.on_msg(self._on_canvas_msg)
        self._quiet = False
        self._request()

    # -- image and predictions -------------------------------------------------------------------

    def set_image(self, image: Image, mean: Stats = None, std: Stats = None) -> None:
        """Explain another image (same model and labels); ``target`` and the method stay."""
        self._jobs.cancel()  # first let go of the model: the new image's forward pass needs it
        self._load_image(image, mean, std, self.labels)
        self._request()

    def _load_image(self, image: Image, mean: Stats, std: Stats, labels: Sequence[str] | None) -> None:
        batch, display = prepare(image, mean, std, model=self._model, single=True)
        try:
            probs, auto_layer = class_probabilities(self._model, batch, self._output, self._scores)
        except RuntimeError as err:
            raise ValueError(
                f"the model failed on an input of shape {tuple(batch.shape)}: {err}; check the image size "
                "and channels the model expects (and mean/std)"
            ) from err
        names = check_labels(labels, probs.shape[1])
        p = probs[0]
        k = min(TOP_K, p.numel())
        top = torch.topk(p, k)
        if self._image_version:
            with self._jobs.lock:
                self._shown = None
                self._canvas._result = {}
        self._input = batch[0]
        self._probs = p
        self._top = int(top.indices[0])
        self._auto_layer = auto_layer
        self._image_version += 1
        self.set_trait("labels", names)
        self.set_trait("predictions", [
            {"index": int(i), "label": names[int(i)], "probability": float(v)}
            for v, i in zip(top.values.tolist(), top.indices.tolist())
        ])
        choices = ([auto_layer] if auto_layer else []) + conv_layers(self._model)
        with self._canvas.hold_sync():
            self._canvas._auto_layer = auto_layer or ""
            self._canvas._layers = list(dict.fromkeys(choices))
            self._canvas._predictions = list(self.predictions)  # the class picker, as the bars list them
            self._canvas._image = wire.encode(torch.from_numpy(display), exact=True)
        self._update_chart()

    def _make_chart(self) -> tuple[Bars, Figure]:
        # bqplot clips marks to the plot area, so a value label drawn past its bar's end needs room
        # there: the probability axis runs to LABEL_ROOM × 100 %, which leaves the plot's right
        # 1 - 1/LABEL_ROOM (≥ 50 px of 220 at font_scale 1) free for "100.0%" behind a full bar.
        # Sizes, margins and fonts follow font_scale (_scale_chart).
        label_room = 1.3
        x = OrdinalScale(reverse=True)
        y = LinearScale(min=0.0, max=label_room)
        bars = Bars(
            x=[], y=[], scales={"x": x, "y": y}, orientation="horizontal", color_mode="group",
            label_display=True, label_display_format=".1%", padding=0.25,
            # labels start 4 px past the bar end, in the theme's text colour, and are transparent to
            # clicks so a click on a label still lands on its bar. The base sits just below 0 so a
            # probability of exactly 0 counts as a positive bar (bqplot would put its label left of the
            # axis, clipped).
            base=-1e-9,
        )
        bars.on_element_click(self._bar_clicked)
        figure = Figure(
            marks=[bars],
            axes=[Axis(scale=x, side="left"),
                  Axis(scale=y, side="bottom", tick_format=".0%", tick_values=[0.0, 0.5, 1.0])],
            title="top predictions · click a bar to explain it",
            # the plot area shows the page (the notebook cell, light or dark) like the rest of the view
            background_style={"fill": "none"},
            layout=W.Layout(width="340px", height="240px"),
        )
        figure.add_class("cnnw-predictions")
        return bars, figure

    @t.observe("font_scale")
    def _scale_chart(self, change: t.Bunch | None = None) -> None:
        """Chart fonts (12 px ticks and value labels, 13 px title at scale 1), margins and size follow
        ``font_scale``; colours come from the page theme (bqplot's CSS variables and JupyterLab's)."""
        s = self.font_scale
        with self._figure.hold_sync(), self._bars.hold_sync():
            scale_chart(self._figure, s)
            self._bars.label_display_vertical_offset = 4.0 * s
            self._bars.label_font_style = {
                "fill": "var(--jp-ui-font-color1, #222)", "pointer-events": "none", "text-anchor": "start",
                **chart_font(s),
            }
            self._figure.fig_margin = {
                "top": round(40 * s), "bottom": round(30 * s), "left": round(100 * s), "right": round(20 * s),
            }
            self._figure.layout.width = f"{round(340 * s)}px"
            self._figure.layout.height = f"{round((80 + 34 * len(self.predictions)) * s)}px"

    def _update_chart(self) -> None:
        rows = self.predictions
        target = self._resolved_target()
        seen: dict[str, int] = {}
        names = []
        for row in rows:  # ordinal scales need distinct names; repeated labels get their class index
            label = row["label"]
            seen[label] = seen.get(label, 0) + 1
            names.append(label if seen[label] == 1 else f"{label} [{row['index']}]")
        with self._bars.hold_sync():
            self._bars.x = names
            self._bars.y = [row["probability"] for row in rows]
            self._bars.colors = [_BAR_TARGET if row["index"] == target else _BAR for row in rows]
        self._scale_chart()

    def _bar_clicked(self, bars: Bars, event: dict[str, Any]) -> None:
        """bqplot ``element_click``: the clicked bar's data carries its index in the top-k list."""
        data = event.get("data") or {}
        index = data.get("index")
        if isinstance(index, int) and 0 <= index < len(self.predictions):
            self.target = self.predictions[index]["index"]

    # -- validation -------------------------------------------------------------------------------

    @t.validate("method")
    def _check_method(self, proposal: t.Bunch) -> str:
        name = proposal["value"]
        if name not in METHODS:
            err = unknown_name_error("method", name, METHODS)
            raise WidgetValueError(f"{err}; available methods: {', '.join(METHODS)}")
        return name

    @t.validate("target")
    def _check_target(self, proposal: t.Bunch) -> int | None:
        value = proposal["value"]
        classes = len(self.labels)
        if isinstance(value, bool):
            raise WidgetValueError(f"target must be a class index (int) or None, got {value!r}")
        if value is not None and not 0 <= value < classes:
            raise WidgetValueError(
                f"target {value} is out of range: the model has {classes} classes (0‥{classes - 1}); "
                "pass a valid class index, or None for the top prediction"
            )
        return value

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str | None:
        value = proposal["value"]
        if value is None:
            return None
        try:
            check_layer_names(self._model, [value])
        except ValueError as err:
            raise WidgetValueError(str(err)) from None
        return value

    @t.validate("options")
    def _check_options(self, proposal: t.Bunch) -> dict[str, Any]:
        value = dict(proposal["value"])
        for name, v in value.items():
            if not isinstance(name, str):
                raise WidgetValueError(f"option names must be strings, got {name!r}")
            _check_json_option(name, v)
        return value

    # -- exports (cnn_widgets/export.py) ----------------------------------------------------------

    def _export_image(self) -> Any:
        """The heatmap over the image as on screen (after the computation in progress finishes)."""
        from .. import export

        self.wait()
        return export.attribution_view_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        r = self._shown
        shown = {"method": r.method, "target": r.target, "layer": r.layer, "options": r.options} if r else {
            "method": self.method, "target": self._resolved_target(), "layer": self._resolved_layer(),
            "options": dict(self.options)}
        display = {k: getattr(self, k) for k in ("sign", "colormap", "opacity", "clip_percentile")}
        return {**export.model_fields(self._model), **export.image_fields(self._input[None]), **shown,
                "display": display, "target_label": self.labels[int(shown["target"])]}

    def _export_html(self) -> list[dict[str, Any]]:
        """The canvas view (display controls work offline; a new method or target needs the kernel) and
        the prediction bars as HTML."""
        from .. import export

        self.wait()
        return [export.widget_part(self._canvas),
                export.bars_part("top predictions", self.predictions, self._resolved_target())]

    # -- requests ---------------------------------------------------------------------------------

    @t.observe("method")
    def _method_changed(self, change: t.Bunch) -> None:
        with self._silenced():
            self.options = self._options_by_method.get(change["new"], {})
        self._request()

    @t.observe("options")
    def _options_changed(self, change: t.Bunch) -> None:
        self._options_by_method[self.method] = dict(change["new"])
        self._request()

    @t.observe("target", "layer")
    def _target_changed(self, change: t.Bunch) -> None:
        if change["name"] == "target":
            self._update_chart()
        self._request()

    @contextmanager
    def _silenced(self) -> Iterator[None]:
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    def _resolved_target(self) -> int:
        return self._top if self.target is None else self.target

    def _resolved_layer(self) -> str | None:
        if not METHODS[self.method].needs_layer:
            return None
        return self.layer if self.layer is not None else self._auto_layer

    def _request(self) -> None:
        """Show the result for the current traits: from the cache at once, else from a new job (which
        cancels any job still running)."""
        if self._quiet:
            return
        method, target, layer, options = self.method, self.target, self._resolved_layer(), dict(self.options)
        key = (self._image_version, method, self._resolved_target(), layer, _freeze(options))
        with self._jobs.lock:
            live = self._jobs.live()
            if live and live[-1].key == key:
                return
            cached = self._jobs.cached(key)
            if cached is not None:
                self._jobs.cancel()
                self._done(cached)
                return
            self.set_trait("error", "")
            self.set_trait("progress", 0.0)
            self.set_trait("busy", True)
            self._canvas._notice = ""
            work = partial(self._compute, self._input, method, target, layer, options)
            self._jobs.submit(key, work, self._done, partial(self._fail, method), self._progress, replace=True)

    def cancel(self) -> None:
        """Stop the computation in progress (if any); the last result stays on screen."""
        with self._jobs.lock:
            if not self._jobs.cancel():
                return
            self.set_trait("busy", False)
            self.set_trait("progress", 0.0)
            shown = f"; showing {self._shown.method}" if self._shown is not None else ""
            self._canvas._notice = f"cancelled{shown}"

    def run(self) -> None:
        """Compute (or fetch from the cache) the result for the current traits, e.g. after a cancel."""
        self._request()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no computation of this view is running; ``False`` if ``timeout`` passed first."""
        return self._jobs.wait(timeout)

    @property
    def result(self) -> Attribution | None:
        """The attribution on screen (``None`` before the first one arrives)."""
        return self._shown

    # -- the jobs (run in the worker thread; callbacks hold the jobs' lock) ---------------------------

    def _compute(
        self, image: torch.Tensor, method: str, target: int | None, layer: str | None, options: dict[str, Any],
        progress: Progress,
    ) -> tuple[Attribution, dict[str, Any]]:
        result = attribute(
            self._model, image, method, target, layer, output=self._output, logits=self._logits,
            progress=progress, options=options,
        )
        return result, self._payload(result)

    def _done(self, value: tuple[Attribution, dict[str, Any]]) -> None:
        self._show(*value)
        self.set_trait("progress", 1.0)
        self.set_trait("busy", False)

    def _fail(self, method: str, err: Exception) -> None:
        self.set_trait("error", f"{method} failed: {error_text(err)}")
        self.set_trait("progress", 0.0)
        self.set_trait("busy", False)

    def _progress(self, fraction: float) -> None:
        self.set_trait("progress", fraction)

    def _payload(self, result: Attribution) -> dict[str, Any]:
        target = int(result.target)
        return {
            "map": wire.encode(result.map[None], "float16"),  # scaled float16: small gradients survive
            "method": result.method,
            "target": target,
            "target_label": self.labels[target],
            "probability": float(self._probs[target]),
            "top_prediction": target == self._top,
            "layer": result.layer,
            "notes": list(result.notes),
        }

    def _show(self, result: Attribution, payload: dict[str, Any]) -> None:
        self._shown = result
        self.set_trait("error", "")
        self._canvas._notice = ""
        self._canvas._result = payload

    def _on_canvas_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """Buttons in the browser: ``{"type": "cancel"}`` and ``{"type": "run"}``."""
        kind = content.get("type") if isinstance(content, dict) else None
        actions: dict[str, Callable[[], None]] = {"cancel": self.cancel, "run": self.run}
        if kind in actions:
            actions[kind]()
