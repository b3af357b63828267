"""Explorer: ModelSummary, FilterGrid, ActivationBrowser and AttributionView (with its prediction bars)
in one linked layout, over a strip of images.

One selection runs through every part. The Explorer's synced traits ``layer``, ``channel``,
``image_index``, ``target`` and ``method`` are the single source of truth: a change in any part (a
summary row clicked, the activation slider moved, a filter picked, a prediction bar clicked) sets the
Explorer's trait, and the Explorer moves every other part to match. Because they are synced traits of
the Explorer's own widget model, ``ipywidgets.jslink`` works on them as well as ``observe``.

Layers map between the parts by execution order (the :func:`~cnn_widgets.layer_table` order, a container
at its last layer): the FilterGrid shows the layer's conv or the nearest conv before it, the
ActivationBrowser the layer itself or the nearest layer it lists, the AttributionView's ``layer`` follows
only for methods that take one (``METHODS[name].needs_layer``), to the layer or the nearest one before
it with a spatial output. A channel of the activation grid is the filter of the same index when the
FilterGrid's conv has as many filters as the layer has channels (a conv and the BatchNorm/ReLU after it).

Switching images calls ``set_image`` on the two parts that depend on the image (ActivationBrowser and
AttributionView); the summary and the filters do not depend on it and are left alone. The strip's
predicted labels come from background jobs (:mod:`cnn_widgets.widgets.jobs`, one thread, cached per
image), the next image first; the current image's prediction is read off the AttributionView.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import anywidget
import ipywidgets as W
import numpy as np
import torch
import traitlets as t
from torch import nn

from .. import outputs, wire
from .._checks import check_model, model_input
from ..attribution import METHODS
from ..capture import model_session
from ..dataset.source import rereadable
from ..images import Image, Stats, is_label, prepare, split_images
from ..layers import conv_layers, probe
from ..outputs import Output, check_output
from ._common import CheckedInt, CheckedUnicode, WidgetValueError, bundle, check_name
from .activation_browser import ActivationBrowser, one_thread
from .attribution_view import AttributionView, error_text, label_list
from .channel_importance_view import ChannelImportance
from .class_heatmaps import ClassHeatmaps
from .filter_grid import FilterGrid
from .jobs import Jobs, Progress
from .model_summary import ModelSummary
from .panel import Panel
from .top_activations import TopActivations, dataset_images

THUMB_SIZE = 64  # thumbnails are sent at most this many pixels on their longer side
PREFETCH_WINDOW = 32  # predictions are computed for at most this many images on each side of the current
PREDICT_YIELD = 5.0  # seconds a background prediction waits at most for the attribution on screen


def _ignore(_: Any) -> None:
    """A background job's result or error that needs no answer."""


class ImageStrip(Panel, anywidget.AnyWidget):
    """A row of thumbnails, each with its true label (when known) and the predicted label as text;
    ``index`` is the current one (click, or arrow keys / Home / End on a focused thumbnail)."""

    _esm = bundle("image_strip")

    index = CheckedInt(0).tag(sync=True)
    _thumbs = t.List().tag(sync=True)
    _captions = t.List().tag(sync=True)

    def __init__(self, thumbs: Sequence[np.ndarray], captions: Sequence[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.hold_sync():
            self._thumbs = [wire.encode(torch.from_numpy(_thumbnail(x)), exact=True) for x in thumbs]
            self._captions = [dict(c) for c in captions]

    @t.validate("index")
    def _check_index(self, proposal: t.Bunch) -> int:
        return _check_image_index(proposal["value"], len(self._thumbs))


def _thumbnail(display: np.ndarray) -> np.ndarray:
    """An H×W×3 uint8 picture shrunk (area average) to at most :data:`THUMB_SIZE` pixels a side."""
    if max(display.shape[:2]) <= THUMB_SIZE:
        return np.ascontiguousarray(display)
    chw = torch.from_numpy(display).permute(2, 0, 1).float()
    small = wire.downsample(chw, THUMB_SIZE).round().clamp(0, 255).to(torch.uint8)
    return small.permute(1, 2, 0).contiguous().numpy()


def _check_image_index(value: Any, count: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WidgetValueError(f"image_index must be an int, got {value!r}")
    if not 0 <= value < count:
        raise WidgetValueError(
            f"image_index {value} is out of range: there {'is' if count == 1 else 'are'} {count} "
            f"image{'' if count == 1 else 's'}; use 0‥{count - 1}"
        )
    return value


def _layer_positions(summary: ModelSummary, model: nn.Module) -> tuple[dict[str, int], dict[str, Any]]:
    """Execution position of every layer name the Explorer accepts, and the output shape of each:
    the summary's rows in execution order, and every container of them at its last row (one that runs:
    a ``torch.fx`` graph calls its leaves itself, never their containers)."""
    positions: dict[str, int] = {}
    shapes: dict[str, Any] = {}
    modules = dict(model.named_modules())
    # a torch.fx graph calls its leaves itself: its containers never run (no hook, no CAM layer there)
    called = ({str(n.target) for n in model.graph.nodes if n.op == "call_module"}
              if isinstance(model, torch.fx.GraphModule) else None)
    for i, row in enumerate(summary.rows):
        positions[row.name] = i
        shapes[row.name] = row.output_shape
        parts = row.name.split(".")
        for k in range(1, len(parts)):
            prefix = ".".join(parts[:k])
            if prefix in modules and row.output_shape is not None and (called is None or prefix in called):
                positions[prefix] = i  # rows come in execution order: the container's last one wins
                shapes[prefix] = row.output_shape
    return positions, shapes


class Explorer(Panel, W.VBox):
    """ModelSummary, FilterGrid, ActivationBrowser and AttributionView of ``model`` in one linked
    layout, over a thumbnail strip of ``images``.

    ``images``: one image or several (a list, an (N, C, H, W) tensor, or ``(image, label)`` pairs whose
    labels are the true classes shown under the thumbnails; ``true_labels=`` gives them otherwise).
    ``labels``: class names (default ``class 0``, …); ``mean``/``std`` normalise the images for the
    model (0‥1 units); ``output`` selects the class scores of a structured output (see
    :mod:`cnn_widgets.outputs`). ``data``: a data set as :func:`cnn_widgets.scan` reads it (with labels);
    the Explorer then has two tabs, "image" and "dataset", the latter holding :attr:`top_activations`,
    :attr:`channel_importance` and :attr:`class_heatmaps`, built when the tab is first opened and moved
    to the Explorer's layer and channel while it is shown.

    Parts: :attr:`summary`, :attr:`filters`, :attr:`activations`, :attr:`attribution` and :attr:`strip`,
    each a widget to display elsewhere. Traits (synced, so ``jslink`` works): ``layer`` (a layer or
    container name of the summary), ``channel`` (-1: none), ``image_index``, ``target`` (``None``: the
    top prediction) and ``method`` (a name of :data:`cnn_widgets.METHODS`). A bad value raises
    :class:`~cnn_widgets.widgets.WidgetValueError` (a ``ValueError``) naming the trait.
    """

    layer = CheckedUnicode("").tag(sync=True)
    channel = CheckedInt(-1).tag(sync=True)
    image_index = CheckedInt(0).tag(sync=True)
    target = CheckedInt(None, allow_none=True).tag(sync=True)
    method = CheckedUnicode("grad_cam").tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        images: Any,
        labels: Sequence[str] | None = None,
        mean: Stats = None,
        std: Stats = None,
        output: Output = None,
        data: Any = None,
        *,
        true_labels: Sequence[int] | None = None,
        image_index: int = 0,
        layer: str | None = None,
        method: str = "grad_cam",
        target: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._ready = False  # first: the trait observers act only once every part exists
        self._jobs = Jobs("cnn_widgets-explorer", cache_size=0)  # close() needs it
        self._model = check_model(model, hooks=True)
        if not conv_layers(model):
            raise ValueError(
                f"Explorer needs a model with at least one nn.Conv2d (it shows the filters of its convolutions), "
                f"but this {type(model).__name__} has none; use AttributionView and ActivationBrowser on it"
            )
        self._output = check_output(output)
        if data is not None:  # data the dataset tab could not read fails now, not when the tab opens
            rereadable(data, "Explorer", "its dataset tab reads it for each view and layer")
            if hasattr(data, "__len__") and len(data) == 0:
                raise ValueError("data is empty; pass a data set of images with their labels")
            try:
                dataset_images(data, [0], self._model, mean, std)
            except (TypeError, ValueError) as err:
                raise type(err)(f"data: its first image cannot be read: {err}") from err
        self._data = data
        self.top_activations: TopActivations | None = None
        self.channel_importance: ChannelImportance | None = None
        self.class_heatmaps: ClassHeatmaps | None = None
        self.tabs: W.Tab | None = None
        names = label_list(labels)
        self._mean, self._std = mean, std
        self._images, truths = split_images(images)
        if true_labels is not None:
            truths = self._check_true_labels(true_labels)
        self._batches: list[torch.Tensor] = []
        displays = []
        for i, image in enumerate(self._images):
            try:
                with one_thread():  # see the parts below
                    batch, display = prepare(image, mean, std, model=self._model, single=True)
            except (TypeError, ValueError) as err:
                where = f"images[{i}]: " if len(self._images) > 1 else ""
                raise type(err)(f"{where}{err}") from None
            self._batches.append(batch)
            displays.append(display)
        if method not in METHODS:  # before the parts' forward passes: the cheapest check first
            check_name("method", method, METHODS)
        start = _check_image_index(image_index, len(self._images))
        first = self._images[start]
        self._moving = 0
        self._predicted: dict[int, int] = {}
        self._queued: set[int] = set()

        def panel(flex: str, **extra: str) -> W.Layout:
            """A panel's flex basis: panels sit side by side when they fit, else stack (given at
            construction, so no layout update follows the panel's opening message)."""
            return W.Layout(flex=flex, min_width="0", **extra)

        # one intra-op thread: the parts' many small forward passes otherwise wait for a scheduler slot
        # whenever another process holds a core (several times slower on a busy machine)
        with one_thread():
            self.summary = ModelSummary(model, first, mean, std, layout=panel("0 1 800px"))
            self.filters = FilterGrid(model, layout=panel("1 1 560px"))
            self.activations = ActivationBrowser(model, first, mean=mean, std=std, layout=panel("1 1 640px"))
            self.attribution = AttributionView(
                model, first, method=method, target=target, labels=names, mean=mean, std=std, output=output,
                layout=panel("1 1 560px", flex_flow="row wrap", align_items="flex-start"),
            )
        self.class_names: list[str] = list(self.attribution.labels)
        self._truths = [self._check_truth(i, v) for i, v in enumerate(truths)]
        self._positions, self._shapes = _layer_positions(self.summary, self._model)
        self._row_names = {row.name for row in self.summary.rows}
        self.strip = ImageStrip(displays, [self._caption(i) for i in range(len(self._images))])

        kwargs.setdefault("layout", W.Layout(width="100%"))
        children = self._layout()
        if data is not None:  # the dataset views are built when their tab is first opened
            self.tabs = W.Tab(
                children=[W.VBox(children), W.VBox([W.Label("the dataset views load when this tab opens")])],
                titles=("image", "dataset"),
            )
            self.tabs.observe(self._tab_changed, "selected_index")
            children = [self.tabs]
        super().__init__(children=children, **kwargs)
        self.add_class("cnnw-explorer")
        for part in (self.summary, self.filters, self.activations, self.attribution, self.strip):
            t.dlink((self, "font_scale"), (part, "font_scale"))

        self.image_index = start
        self.strip.index = start
        self.method = method
        self.target = self.attribution.target
        self.layer = layer if layer is not None else self._default_layer()
        self._ready = True
        self._layer_changed(t.Bunch(new=self.layer))
        self._note_prediction(start)
        self._connect()
        self._prefetch(start)

    # -- construction ------------------------------------------------------------------------------

    def _layout(self) -> list[W.Widget]:
        """Two rows of two panels (summary and attribution, activations and filters) under the strip;
        each row wraps to one column on a narrow screen."""
        row = partial(W.Layout, display="flex", flex_flow="row wrap", align_items="flex-start", width="100%",
                      grid_gap="8px 16px")
        return [
            self.strip,
            W.Box([self.summary, self.attribution], layout=row()),
            W.Box([self.activations, self.filters], layout=row()),
        ]

    def _default_layer(self) -> str:
        """Where the parts start: the AttributionView's CAM layer (the last spatial layer the scores
        depend on), else the ActivationBrowser's first layer."""
        auto = getattr(self.attribution, "_auto_layer", None)
        return auto if auto in self._positions else self.activations.layer

    def _check_true_labels(self, values: Sequence[int]) -> list[Any]:
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(f"true_labels must be a list of class indices, got {type(values).__name__}")
        values = list(values.tolist() if isinstance(values, (torch.Tensor, np.ndarray)) else values)
        if len(values) != len(self._images):
            raise ValueError(f"got {len(values)} true_labels for {len(self._images)} images; pass one per image")
        return values

    def _check_truth(self, i: int, value: Any) -> int | None:
        if value is None:
            return None
        if not is_label(value):
            raise TypeError(f"the true label of image {i} must be a class index (int), got {value!r}")
        k = int(value)
        classes = len(self.class_names)
        if not 0 <= k < classes:
            raise ValueError(
                f"the true label of image {i} is {k}, but the model has {classes} classes (0‥{classes - 1})"
            )
        return k

    def _caption(self, i: int) -> dict[str, Any]:
        truth, guess = self._truths[i], self._predicted.get(i)
        return {
            "truth": None if truth is None else self.class_names[truth],
            "predicted": None if guess is None else self.class_names[guess],
        }

    def _connect(self) -> None:
        """Parts → Explorer: a change made in any part (in the browser or from Python) sets the
        Explorer's trait, whose observer moves the other parts."""
        self.summary.observe(self._from_summary, "selected")
        self.filters.observe(self._from_part_layer, "layer")
        self.activations.observe(self._from_part_layer, "layer")
        self.attribution.observe(self._from_attribution_layer, "layer")
        self.activations.observe(self._from_activation_channel, "channel")
        self.filters.observe(self._from_filter, "selected")
        self.attribution.observe(self._from_attribution, names=["target", "method"])
        self.attribution.observe(self._predictions_changed, "predictions")
        self.strip.observe(self._from_strip, "index")

    # -- validation ----------------------------------------------------------------------------------

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str:
        value = proposal["value"]
        if value not in self._positions:
            known = sorted(self._positions, key=lambda n: (self._positions[n], n not in self._row_names))
            shown = ", ".join(repr(n) for n in known[:40]) + (", …" if len(known) > 40 else "")
            hint = _near(value, known)
            raise WidgetValueError(f"unknown layer {value!r}{hint}; the layers of this model: {shown}")
        return value

    @t.validate("channel")
    def _check_channel(self, proposal: t.Bunch) -> int:
        value = proposal["value"]
        count = self.activations._tiles(self.activations.layer)
        if isinstance(value, bool):
            raise WidgetValueError(f"channel must be an int (-1 for none), got {value!r}")
        if not -1 <= value < count:
            raise WidgetValueError(
                f"channel {value!r} is out of range: layer {self.activations.layer!r} shows {count} channels; "
                f"use 0‥{count - 1}, or -1 for none"
            )
        return value

    @t.validate("image_index")
    def _check_index(self, proposal: t.Bunch) -> int:
        return _check_image_index(proposal["value"], len(self._images))

    @t.validate("method")
    def _check_method(self, proposal: t.Bunch) -> str:
        value = proposal["value"]
        if value not in METHODS:
            raise WidgetValueError(
                f"unknown method {value!r}{_near(value, METHODS)}; available methods: {', '.join(METHODS)}"
            )
        return value

    @t.validate("target")
    def _check_target(self, proposal: t.Bunch) -> int | None:
        value = proposal["value"]
        classes = len(self.attribution.labels)
        if isinstance(value, bool) or (value is not None and not 0 <= value < classes):
            raise WidgetValueError(
                f"target {value!r} is out of range: the model has {classes} classes (0‥{classes - 1}); "
                "pass a class index, or None for the top prediction"
            )
        return value

    # -- layer mapping -------------------------------------------------------------------------------

    def conv_for(self, layer: str) -> str | None:
        """The FilterGrid layer for ``layer``: its conv, or the nearest conv before it (``None`` if
        no conv runs at or before it)."""
        at = self._positions[layer]
        before = [c for c in self.filters.layers if self._positions.get(c, at + 1) <= at]
        return max(before, key=self._positions.__getitem__) if before else None

    def activation_layer_for(self, layer: str) -> str:
        """The ActivationBrowser layer for ``layer``: itself when listed, else the nearest listed layer
        at or before it, else the first one after it."""
        shown = self.activations.layers
        if layer in shown:
            return layer
        at = self._positions[layer]
        placed = [n for n in shown if n in self._positions]
        before = [n for n in placed if self._positions[n] <= at]
        if before:
            return max(before, key=self._positions.__getitem__)
        after = [n for n in placed if self._positions[n] > at]
        return min(after, key=self._positions.__getitem__) if after else self.activations.layer

    def cam_layer_for(self, layer: str) -> str | None:
        """The AttributionView layer for ``layer``: itself when its output is spatial (N, C, H, W with
        more than one position), else the nearest such layer before it (``None``: there is none)."""
        at = self._positions[layer]
        spatial = [n for n, p in self._positions.items() if p <= at and _is_spatial(self._shapes.get(n))]
        if layer in spatial:
            return layer
        # at equal positions the outermost container: its output is what the default CAM layer names
        return max(spatial, key=lambda n: (self._positions[n], n not in self._row_names, -n.count("."))) \
            if spatial else None

    def _filter_for_channel(self) -> bool:
        """Whether channel k of the shown activation layer is filter k of the FilterGrid's conv."""
        conv = dict(self._model.named_modules()).get(self.filters.layer)
        weight = getattr(conv, "weight", None)
        count = self.activations._tiles(self.activations.layer)
        return weight is not None and count > 0 and int(weight.shape[0]) == count and self._same_block()

    def _same_block(self) -> bool:
        """No other conv runs between the FilterGrid's conv and the shown activation layer."""
        conv = self.conv_for(self.activations.layer) if self.activations.layer in self._positions else None
        return conv == self.filters.layer

    # -- Explorer → parts ---------------------------------------------------------------------------

    @contextmanager
    def _move(self) -> Iterator[None]:
        """While the Explorer moves its parts, their change events are its own echo: ignored."""
        self._moving += 1
        try:
            yield
        finally:
            self._moving -= 1

    @t.observe("layer")
    def _layer_changed(self, change: t.Bunch) -> None:
        if not self._ready:
            return  # __init__ applies the first layer once every part exists
        layer = change["new"]
        with self._move():
            self.summary.selected = layer
            conv = self.conv_for(layer)
            if conv is not None:
                self.filters.layer = conv
            self.activations.layer = self.activation_layer_for(layer)
            self._move_cam_layer()
        self._sync_channel(self.activations.channel)  # and the dataset views

    def _move_cam_layer(self) -> None:
        if METHODS[self.attribution.method].needs_layer:
            cam = self.cam_layer_for(self.layer)
            if cam is not None and cam != self.attribution.layer:
                self.attribution.layer = cam

    @t.observe("channel")
    def _channel_changed(self, change: t.Bunch) -> None:
        if self._ready and not self._moving:
            self._sync_channel(change["new"])

    def _sync_channel(self, channel: int) -> None:
        """Put ``channel`` on the ActivationBrowser and, when it is one of the filters shown, on the
        FilterGrid (else the FilterGrid's selection is cleared)."""
        with self._move():
            self.activations.channel = channel
            self.filters.selected = channel if channel >= 0 and self._filter_for_channel() else -1
            self.channel = channel
        self._sync_dataset()

    @t.observe("method")
    def _method_changed(self, change: t.Bunch) -> None:
        if not self._ready:
            return
        with self._move():
            if METHODS[change["new"]].needs_layer:  # the layer first: one computation, not two
                cam = self.cam_layer_for(self.layer)
                if cam is not None:
                    self.attribution.layer = cam
            self.attribution.method = change["new"]

    @t.observe("target")
    def _target_changed(self, change: t.Bunch) -> None:
        if self._ready:
            with self._move():
                self.attribution.target = change["new"]

    @t.observe("image_index")
    def _image_changed(self, change: t.Bunch) -> None:
        if not self._ready or self._moving:
            return
        self._show_image(change["new"])

    def _show_image(self, i: int) -> None:
        """The image-dependent parts get image ``i`` (one ``set_image`` each); the rest stays."""
        image = self._images[i]
        channel = self.channel
        with self._move(), one_thread():
            self.strip.index = i
            self.activations.set_image(image, self._mean, self._std)
            self.attribution.set_image(image, self._mean, self._std)
        self._note_prediction(i)
        # the same channel on the new image, when the layer still has it
        self._sync_channel(channel if channel < self.activations._tiles(self.activations.layer) else -1)
        self._prefetch(i)

    # -- parts → Explorer ---------------------------------------------------------------------------

    def _from_summary(self, change: t.Bunch) -> None:
        if not self._moving and change["new"] is not None:
            self.layer = change["new"]

    def _from_part_layer(self, change: t.Bunch) -> None:
        if not self._moving and change["new"] in self._positions:
            self.layer = change["new"]

    def _from_attribution_layer(self, change: t.Bunch) -> None:
        if not self._moving and change["new"] is not None and change["new"] in self._positions:
            self.layer = change["new"]

    def _from_activation_channel(self, change: t.Bunch) -> None:
        if not self._moving:
            self.channel = change["new"]

    def _from_filter(self, change: t.Bunch) -> None:
        """A filter picked in the FilterGrid is the channel of the same index when they correspond."""
        if self._moving:
            return
        k = change["new"]
        if k < 0:
            if self.channel >= 0 and self._filter_for_channel():
                self.channel = -1
        elif self._filter_for_channel():
            self.channel = k

    def _from_attribution(self, change: t.Bunch) -> None:
        if not self._moving:
            setattr(self, change["name"], change["new"])

    def _from_strip(self, change: t.Bunch) -> None:
        if not self._moving:
            self.image_index = change["new"]

    # -- predictions for the strip -----------------------------------------------------------------

    def _predictions_changed(self, change: t.Bunch) -> None:
        self._note_prediction(self.image_index)

    def _note_prediction(self, i: int) -> None:
        """The current image's predicted class, read off the AttributionView (no forward pass)."""
        rows = self.attribution.predictions
        if rows and self._images:
            self._set_prediction(i, int(rows[0]["index"]))

    def _set_prediction(self, i: int, k: int) -> None:
        with self._jobs.lock:
            if self._predicted.get(i) == k:
                return
            self._predicted[i] = k
            captions = list(self.strip._captions)
            captions[i] = self._caption(i)
            self.strip._captions = captions

    def _prefetch(self, i: int) -> None:
        """Queue background work around image ``i``: the next image's activations first (the
        ActivationBrowser keeps them for its next ``set_image``), then predictions, nearest first."""
        n = len(self._images)
        order = [j for d in range(1, PREFETCH_WINDOW + 1) for j in (i + d, i - d) if 0 <= j < n]
        with self._jobs.lock:
            if i + 1 < n:
                self._jobs.submit(
                    ("activations", i + 1), partial(self._prefetch_activations, i + 1), _ignore, _ignore,
                )
            for j in order:
                if j in self._predicted or j in self._queued:
                    continue
                self._queued.add(j)
                self._jobs.submit(
                    ("predict", j), partial(self._predict, j), partial(self._predicted_one, j),
                    partial(self._prediction_failed, j),
                )

    def _predict(self, i: int, progress: Progress) -> int:
        """Worker thread: the top class of image ``i`` (one no-grad forward pass on one thread), after
        the attribution on screen is done (both need the model's lock; the heatmap comes first)."""
        self.attribution.wait(PREDICT_YIELD)
        progress(0.0)  # stops here if cancelled
        with one_thread(), model_session(self._model, eval_mode=True), torch.no_grad():
            found = probe(self._model, model_input(self._model, self._batches[i]), self._output)
        return int(outputs.probabilities(found.scores, "auto")[0].argmax())

    def _prefetch_activations(self, i: int, progress: Progress) -> None:
        """Worker thread: image ``i``'s activations, after the heatmap on screen is done (a failure
        here shows, with its reason, when the image is picked)."""
        self.attribution.wait(PREDICT_YIELD)
        progress(0.0)  # stops here if cancelled
        self.activations.prefetch(self._images[i], self._mean, self._std)

    def _predicted_one(self, i: int, k: int) -> None:
        self._queued.discard(i)
        self._set_prediction(i, k)

    def _prediction_failed(self, i: int, err: Exception) -> None:
        """A failed background prediction shows as such under its thumbnail, with the reason."""
        self._queued.discard(i)
        captions = list(self.strip._captions)
        captions[i] = {**self._caption(i), "error": error_text(err)}
        self.strip._captions = captions

    # -- the dataset tab -----------------------------------------------------------------------------

    def dataset_layer_for(self, layer: str) -> str | None:
        """The dataset views' layer for ``layer``: the ActivationBrowser's layer when it has a spatial
        map, else the nearest spatial layer before it (``None``: there is none)."""
        shown = self.activation_layer_for(layer)
        return shown if _is_spatial(self._shapes.get(shown)) else self.cam_layer_for(layer)

    def _channels_match(self, layer: str) -> bool:
        """Whether channel k of ``layer`` is channel k of the ActivationBrowser's layer: the same layer,
        or one with as many channels and no conv between them (pooling and activations keep channels)."""
        shown = self.activations.layer
        if layer == shown:
            return True
        a, b = self._shapes.get(layer), self._shapes.get(shown)
        return (
            a is not None and b is not None and len(a) == len(b) == 4 and a[1] == b[1]
            and layer in self._positions and shown in self._positions and self.conv_for(layer) == self.conv_for(shown)
        )

    def _dataset_shown(self) -> bool:
        return self.tabs is not None and self.tabs.selected_index == 1

    def _tab_changed(self, change: t.Bunch) -> None:
        if change["new"] == 1:
            if self.top_activations is None:
                self._build_dataset()
            self._sync_dataset()

    def _build_dataset(self) -> None:
        """The dataset tab's views, on the current layer and channel (first opening of the tab). A view
        that cannot be built (e.g. ``data`` without labels) shows why instead."""
        layer = self.dataset_layer_for(self.layer) or self.filters.layers[0]
        channel = self.channel if self._channels_match(layer) else -1
        common = dict(mean=self._mean, std=self._std)
        views: list[W.Widget] = []
        builders = (
            # with no channel chosen, the top images of channel 0 (an empty view would explain nothing)
            ("top_activations", lambda: TopActivations(
                self._model, self._data, layer, channel=max(channel, 0), **common)),
            ("channel_importance", lambda: ChannelImportance(
                self._model, self._data, layer, channel=channel, output=self._output, **common)),
            ("class_heatmaps", lambda: ClassHeatmaps(
                self._model, self._data, self.method, labels=self.class_names, output=self._output, **common)),
        )
        for name, build in builders:
            try:
                with one_thread():
                    view = build()
            except (TypeError, ValueError) as err:
                note = W.Label(f"{name.replace('_', ' ')}: {error_text(err)}")
                note.add_class("cnnw-explorer-error")
                views.append(note)
                continue
            setattr(self, name, view)
            t.dlink((self, "font_scale"), (view, "font_scale"))
            views.append(view)
        for view in (self.top_activations, self.channel_importance):
            if view is not None:
                view.observe(self._from_dataset_layer, "layer")
                view.observe(self._from_dataset_channel, "channel")
        assert self.tabs is not None
        self.tabs.children[1].children = views

    def _sync_dataset(self) -> None:
        """Move the dataset views to the Explorer's layer and channel, while their tab is shown (a
        hidden tab is moved when it opens: no scan for a layer passed on the way). Clearing the channel
        (-1) leaves theirs as it is."""
        if not self._dataset_shown():
            return
        layer = self.dataset_layer_for(self.layer)
        if layer is None:
            return
        with self._move():
            for view in (self.top_activations, self.channel_importance):
                if view is None:
                    continue
                if view.layer != layer:
                    view.layer = layer
                if self._channels_match(layer) and self.channel >= 0 and view.channel != self.channel:
                    try:
                        view.channel = self.channel
                    except ValueError:  # the view's numbers for this layer are still on their way
                        pass

    def _from_dataset_layer(self, change: t.Bunch) -> None:
        if not self._moving and change["new"] in self._positions:
            self.layer = change["new"]

    def _from_dataset_channel(self, change: t.Bunch) -> None:
        if not self._moving and self._channels_match(change["owner"].layer):
            self.channel = change["new"]

    # -- public helpers ------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background work is done: the strip's predictions, the attribution and the
        dataset views (once built); ``False`` if ``timeout`` passed first (for one of them)."""
        views = (self.attribution, self.top_activations, self.channel_importance, self.class_heatmaps)
        return self._jobs.wait(timeout) and all(v.wait(timeout) for v in views if v is not None)

    def close(self) -> None:
        """Close the Explorer and its parts and stop their background work."""
        self._jobs.cancel()
        for name in ("strip", "summary", "filters", "activations", "attribution", "top_activations",
                     "channel_importance", "class_heatmaps"):
            part = getattr(self, name, None)
            if part is not None:
                if hasattr(part, "cancel"):
                    part.cancel()
                part.close()
        super().close()


def _is_spatial(shape: Any) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def _near(name: Any, known: Any) -> str:
    """`` (did you mean …?)`` with the nearest known names, or nothing."""
    if not isinstance(name, str):
        return ""
    near = difflib.get_close_matches(name, list(known), n=5, cutoff=0.4)
    return f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
