"""ClassHeatmaps: where the model looks, on average, per class — a grid with one row per class (by label) and
two columns, the images it classifies correctly and incorrectly; each cell is the mean attribution map of
its images (:func:`cnn_widgets.attribute`, batched; each image's map explains its predicted class) with the
number of images. Clicking a cell lists its images as thumbnails, each with its own map.

The pass over the data and the thumbnails of a cell run in the widget's job engine
(:mod:`cnn_widgets.widgets.jobs`), with progress and cancel. Maps travel as float16 and thumbnails as uint8
through :mod:`cnn_widgets.wire`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anywidget
import numpy as np
import torch
import torch.nn.functional as F
import traitlets as t
from torch import nn

from .. import wire
from .._checks import check_model
from ..attribution import METHODS, attribute
from ..dataset.scan import positive_int
from ..dataset.source import Source, batches, rereadable
from ..images import Stats
from ..outputs import Output, check_output
from ._common import CheckedInt, CheckedUnicode, WidgetValueError, bundle, check_name
from .attribution_view import check_labels, class_probabilities, label_list
from .jobs import Jobs, JobView, Progress
from .panel import Panel
from .top_activations import dataset_images

COLUMNS: tuple[str, ...] = ("correct", "incorrect")
MAP_SIDE = 64  # largest side of the averaged maps and thumbnails sent to the browser
PAGE = 24  # thumbnails shown for a cell


class ClassHeatmaps(Panel, JobView, anywidget.AnyWidget):
    """Mean ``method`` attribution map per class and per correct/incorrect prediction over ``data``.

    ``data``, ``mean``, ``std``, ``batch_size`` as in :func:`cnn_widgets.scan`; the data must carry labels.
    ``method``, ``layer``, ``output``, ``options`` as in :func:`cnn_widgets.attribute`. ``labels``: class
    names (default ``class 0``, …), one per class output: another count is reported in ``error`` when the
    model has run (the model is not run before the background work). Traits: ``method`` (changing it
    recomputes), ``selected_class``
    (-1: no cell) and ``selected_column`` ("correct" / "incorrect"): the cell whose images are listed
    (clicking a cell sets both); read-only ``progress``, ``busy``, ``error``, ``status``; :meth:`cancel`,
    :meth:`wait` as in the other views.
    :attr:`averages` (classes × 2 × H × W float64), :attr:`counts` and :meth:`cell_indices` give the numbers.
    """

    _esm = bundle("class_heatmaps")

    method = CheckedUnicode("grad_cam").tag(sync=True)
    selected_class = CheckedInt(-1).tag(sync=True)
    selected_column = CheckedUnicode("correct").tag(sync=True)
    progress = t.Float(0.0, read_only=True).tag(sync=True)
    busy = t.Bool(False, read_only=True).tag(sync=True)
    error = t.Unicode("", read_only=True).tag(sync=True)
    status = t.Unicode("", read_only=True).tag(sync=True)
    _methods = t.List().tag(sync=True)
    _grid = t.Dict().tag(sync=True)
    _cell = t.Dict().tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        method: str = "grad_cam",
        *,
        labels: Sequence[str] | None = None,
        mean: Stats = None,
        std: Stats = None,
        layer: str | None = None,
        output: Output = None,
        options: Mapping[str, Any] | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model)
        rereadable(data, "ClassHeatmaps", "the maps, then a cell's images; each method")
        self._data, self._mean, self._std = data, mean, std
        self._names = label_list(labels)
        self._layer, self._output = layer, check_output(output)
        self._options = dict(options or {})
        self._batch_size = positive_int("batch_size", batch_size)
        self._jobs = Jobs("cnn_widgets-class-heatmaps", cache_size=0)
        self._sums: np.ndarray | None = None
        self._counts: np.ndarray | None = None
        self._indices: list[list[list[int]]] = []
        self._quiet = True
        super().__init__(**kwargs)
        self._methods = list(METHODS)
        self.method = method
        self.on_msg(self._on_msg)
        self._quiet = False
        self._request()

    # -- validation -------------------------------------------------------------------------------

    @t.validate("method")
    def _check_method(self, proposal: t.Bunch) -> str:
        return check_name("method", proposal["value"], METHODS)

    @t.validate("selected_column")
    def _check_column(self, proposal: t.Bunch) -> str:
        value = proposal["value"]
        if value not in COLUMNS:
            raise WidgetValueError(f"selected_column must be 'correct' or 'incorrect', got {value!r}")
        return value

    @t.validate("selected_class")
    def _check_class(self, proposal: t.Bunch) -> int:
        value = proposal["value"]
        classes = 0 if self._counts is None else len(self._counts)
        if self._counts is None:
            if isinstance(value, bool) or value < -1:
                raise WidgetValueError(f"selected_class must be an int ≥ -1 (-1 for none), got {value!r}")
            return value
        if isinstance(value, bool) or not -1 <= value < classes:
            raise WidgetValueError(f"selected_class {value!r} is out of range: there are {classes} classes; use -1‥{classes - 1}")
        return value

    # -- the averages -----------------------------------------------------------------------------

    @t.observe("method")
    def _method_changed(self, change: t.Bunch) -> None:
        self._request()

    @t.observe("selected_class", "selected_column")
    def _cell_changed(self, change: t.Bunch) -> None:
        if not self._quiet:
            self._request_cell()

    def _request(self) -> None:
        if self._quiet:
            return
        method = self.method
        self._start(f"{method} maps of every image", lambda p: self._average(method, p), self._show_grid)

    def _maps(self, x: torch.Tensor, method: str, progress: Progress) -> tuple[torch.Tensor, list[int]]:
        """Maps (N, H, W) of normalised inputs ``x`` explaining each image's predicted class."""
        result = attribute(self._model, x, method, None, self._layer if METHODS[method].needs_layer else None,
                           output=self._output, progress=progress, options=self._options)
        targets = result.target if isinstance(result.target, list) else [result.target]
        return result.map.reshape(len(x), *result.map.shape[-2:]), [int(v) for v in targets]

    def _average(self, method: str, progress: Progress) -> tuple[np.ndarray, np.ndarray, list[list[list[int]]], str]:
        source = Source(self._data)
        total = source.total
        sums: dict[tuple[int, int], np.ndarray] = {}
        counts: dict[tuple[int, int], int] = {}
        indices: dict[tuple[int, int], list[int]] = {}
        size: tuple[int, int] | None = None
        seen = skipped = 0
        classes = 0
        for batch in batches(source, model=self._model, mean=self._mean, std=self._std, batch_size=self._batch_size):
            n = len(batch)
            x = batch.x
            if self._names is not None and not seen:  # one name per class output, as AttributionView's
                check_labels(self._names, class_probabilities(self._model, x[:1], self._output)[0].shape[1])
            frac = (lambda f, s=seen: progress((s + f * n) / total)) if total else progress
            maps, predicted = self._maps(x, method, frac)
            if size is None:
                size = tuple(maps.shape[-2:])  # type: ignore[assignment]
            elif tuple(maps.shape[-2:]) != size:
                maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            values = maps.double().numpy()
            for i in range(n):
                label = int(batch.labels[i])
                if label < 0:
                    skipped += 1
                    continue
                key = (label, 0 if predicted[i] == label else 1)
                if key not in sums:
                    sums[key] = np.zeros(size, np.float64)  # type: ignore[arg-type]
                    counts[key], indices[key] = 0, []
                sums[key] += values[i]
                counts[key] += 1
                indices[key].append(seen + i)
                classes = max(classes, label + 1, predicted[i] + 1)
            seen += n
        if not counts:
            raise ValueError("ClassHeatmaps needs labelled data: give (images, labels), (image, label) pairs or a "
                             "dataset of them" if seen else "the data holds no images")
        if self._names is not None:
            classes = max(classes, len(self._names))
        assert size is not None
        total_sums = np.zeros((classes, 2, *size))
        total_counts = np.zeros((classes, 2), np.int64)
        cell_indices = [[[], []] for _ in range(classes)]
        for (label, col), s in sums.items():
            total_sums[label, col] = s
            total_counts[label, col] = counts[(label, col)]
            cell_indices[label][col] = indices[(label, col)]
        note = f"{skipped} unlabelled images left out" if skipped else ""
        return total_sums, total_counts, cell_indices, note

    def _show_grid(self, value: tuple[np.ndarray, np.ndarray, list[list[list[int]]], str]) -> None:
        sums, counts, indices, note = value
        classes = len(counts)
        names = self._names or []
        if len(names) < classes:
            names = names + [f"class {i}" for i in range(len(names), classes)]
        self._sums, self._counts, self._indices = sums, counts, indices
        means = self.averages
        with self.hold_sync():
            self._grid = {
                "method": self.method, "classes": names[:classes], "counts": counts.tolist(), "note": note,
                "maps": wire.encode(torch.from_numpy(np.nan_to_num(means)).float().reshape(classes * 2, *means.shape[-2:]),
                                    "float16", max_size=MAP_SIDE),
            }
            self._cell = {}
            self._quiet = True  # the numbers behind a listed cell changed: the list closes
            try:
                self.selected_class = -1
            finally:
                self._quiet = False

    @property
    def averages(self) -> np.ndarray:
        """(classes, 2, H, W) float64 mean maps (column 0 correct, 1 incorrect); NaN for an empty cell."""
        if self._sums is None or self._counts is None:
            raise ValueError("the averages are not computed yet; call wait() first")
        with np.errstate(invalid="ignore"):
            return self._sums / self._counts[:, :, None, None]

    @property
    def counts(self) -> np.ndarray:
        """(classes, 2) number of images per cell (correct, incorrect)."""
        if self._counts is None:
            raise ValueError("the averages are not computed yet; call wait() first")
        return self._counts.copy()

    def cell_indices(self, label: int, correct: bool) -> list[int]:
        """Dataset indices of the images of one cell, in data order."""
        if self._counts is None:
            raise ValueError("the averages are not computed yet; call wait() first")
        return list(self._indices[label][0 if correct else 1])

    # -- one cell's images ------------------------------------------------------------------------

    def _request_cell(self) -> None:
        label, column = self.selected_class, self.selected_column
        if label < 0 or self._counts is None:
            self._cell = {}
            return
        wanted = self._indices[label][COLUMNS.index(column)][:PAGE]
        if not wanted:
            self._cell = {"class": label, "column": column, "total": 0, "indices": []}
            return
        method = self.method
        self._start(f"{method} maps of {len(wanted)} images", lambda p: self._thumbnails(label, column, wanted, method, p),
                    self._show_cell)

    def _thumbnails(self, label: int, column: str, wanted: list[int], method: str, progress: Progress) -> dict[str, Any]:
        x, pixels = dataset_images(self._data, wanted, self._model, self._mean, self._std)
        maps, predicted = self._maps(x, method, progress)
        small = wire.downsample(pixels[:, :3] if pixels.shape[1] >= 3 else pixels[:, :1].expand(-1, 3, -1, -1), MAP_SIDE)
        rgb = small.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).contiguous()
        heat = F.interpolate(maps[:, None].float(), size=tuple(rgb.shape[1:3]), mode="bilinear", align_corners=False)[:, 0]
        col = COLUMNS.index(column)
        return {
            "class": label, "column": column, "total": int(self._counts[label, col]) if self._counts is not None else 0,
            "indices": wanted, "predicted": predicted, "method": method,
            "images": wire.encode(rgb, exact=True), "maps": wire.encode(heat, "float16"),
        }

    def _show_cell(self, payload: dict[str, Any]) -> None:
        if (payload["class"], payload["column"]) == (self.selected_class, self.selected_column):
            self._cell = payload

    # -- buttons ----------------------------------------------------------------------------------

    def _rerun(self) -> None:
        self._request()

    def _on_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """Besides "cancel" and "run" (:class:`~cnn_widgets.widgets.jobs.JobView`), a click on a cell."""
        if isinstance(content, dict) and content.get("type") == "cell" and isinstance(content.get("class"), int) \
                and content.get("column") in COLUMNS:
            self.select(content["class"], content["column"] == "correct")
        else:
            super()._on_msg(widget, content, buffers)

    def select(self, label: int, correct: bool) -> None:
        """List the images of one cell (what clicking it does); ``label=-1`` closes the list."""
        self._quiet = True
        try:
            self.selected_column = COLUMNS[0 if correct else 1]
            self.selected_class = label
        finally:
            self._quiet = False
        self._request_cell()

    # -- exports (Panel.to_png / save_html) ---------------------------------------------------------

    def _export_image(self) -> np.ndarray:
        """The grid of mean maps (a row per class; an empty cell blank) and the listed cell's thumbnails,
        as the view paints them, once the work in progress is done."""
        from .. import export

        self.wait()
        return export.class_heatmaps_image(self)

    def _export_record(self) -> dict[str, Any]:
        """Method, its layer and options, classes and per-cell counts, the listed cell and its images
        (a dataset-wide view: no single image hash)."""
        from .. import export

        self.wait()
        g = self._grid
        return {**export.model_fields(self._model), "method": g.get("method", self.method), "layer": self._layer,
                "options": dict(self._options), "classes": list(g.get("classes", [])), "counts": g.get("counts"),
                "images": None if self._counts is None else int(self._counts.sum()),
                "selected": {"class": self.selected_class, "column": self.selected_column},
                "listed": list(self._cell.get("indices", [])) if self.selected_class >= 0 else []}

    def _export_html(self) -> list[dict[str, Any]]:
        """The grid and the listed cell (choosing another cell needs the kernel)."""
        from .. import export

        self.wait()
        return [export.widget_part(self)]

