"""compare(): a grid of attribution heatmaps, methods (rows) × images (columns), with one colour scale per
method (the default: methods differ in units, and a scale shared with Grad-CAM makes a gradient row look
empty), one shared by every panel, or one per panel — switchable in the browser (captum#1103 asked for
exactly this).

:func:`compare` checks every argument, runs one forward pass for the column labels and returns the
widget at once, showing the images. Each method then runs on all images in one batch, as a job of
:mod:`cnn_widgets.widgets.jobs` (one method after another in a worker thread, so the kernel stays free),
and its row fills in when it is done; ``progress``, ``busy`` and each row's ``status`` follow the work,
and the browser shows a progress bar and a cancel button. :meth:`Compare.wait` blocks until every row
is settled: ``grid = compare(...); grid.wait()`` and ``grid.results`` is complete.

A finished row travels once per view as a float16 tensor (:mod:`cnn_widgets.wire`, scaled per panel so
small gradients keep their precision) in a custom message ``{"type": "row", "row": r, **header}`` with
the data buffer; a view asks for the rows already done when it renders (``{"type": "fetch"}``). Scale,
opacity, colormap, sign and clipping are applied in the browser (``js/src/widgets/compare.js``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import anywidget
import numpy as np
import torch
import traitlets as t
from torch import nn

from .. import wire
from .._checks import check_layer_names, check_model
from ..attribution import METHODS, Attribution, attribute, check_method, check_options, normalize_targets
from ..attribution.engine import check_target_range
from ..images import Image, Stats, check_one_size, prepare, split_images
from ..outputs import Output
from ..style import check_scale
from ._common import CheckedFloat, CheckedUnicode, HeatmapDisplay, bundle, check_choice, split_buffers
from .attribution_view import check_labels, check_scoring, class_probabilities, error_text, label_list
from .jobs import Jobs, Progress

from ._common import COMPARE_SCALES as SCALES  # one list with the browser
from .panel import Panel

# A row's status: waiting for the worker, computing, finished, failed (``errors`` says why), cancelled.
STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")


class _Row(NamedTuple):
    """What one row computes: the method, its layer (only for methods that need one) and options."""

    method: str
    layer: str | None
    options: dict[str, Any]


class _Display(HeatmapDisplay):
    """The display traits of :class:`Compare` and their checks; :func:`compare` checks its display
    arguments with this before anything runs."""

    scale = CheckedUnicode("per-method").tag(sync=True, echo_update=False)
    opacity = CheckedFloat(0.5).tag(sync=True, echo_update=False)
    colormap = CheckedUnicode("inferno").tag(sync=True, echo_update=False)
    sign = CheckedUnicode("positive").tag(sync=True, echo_update=False)
    clip_percentile = CheckedFloat(99.0).tag(sync=True, echo_update=False)

    @t.validate("scale")
    def _check_scale(self, proposal: t.Bunch) -> str:
        return check_choice("scale", proposal["value"], SCALES)


class Compare(Panel, _Display, anywidget.AnyWidget):
    """The widget :func:`compare` returns. ``scale``: "per-method" (the default: one colour range per row;
    methods differ in units, so this is the fair way to compare images under each method, and a range
    shared with Grad-CAM would leave a gradient row looking empty), "shared" (one range for every panel)
    or "per-panel". ``font_scale``: text size multiplier (see :func:`cnn_widgets.style`). ``opacity``,
    ``colormap``, ``sign`` and ``clip_percentile`` as in :class:`~cnn_widgets.AttributionView`.
    Read-only: ``methods``, ``targets`` (class index per image), ``status`` (per method, one of
    :data:`STATUSES`), ``errors`` (per method, "" unless it failed), ``notes`` (per method, the
    attribution's caveats), ``progress`` (0–1, the whole grid), ``busy``,
    ``row_labels``, ``column_labels``. :meth:`wait` blocks until the rows are computed, :attr:`results`
    holds the attributions; :meth:`cancel` stops the rows not done yet and :meth:`run` computes them."""

    _esm = bundle("compare")

    methods = t.List(t.Unicode(), read_only=True).tag(sync=True)
    targets = t.List(t.Int(), read_only=True).tag(sync=True)
    status = t.List(t.Unicode(), read_only=True).tag(sync=True)
    errors = t.List(t.Unicode(), read_only=True).tag(sync=True)
    notes = t.List(t.List(t.Unicode()), read_only=True).tag(sync=True)
    progress = t.Float(0.0, read_only=True).tag(sync=True)
    busy = t.Bool(False, read_only=True).tag(sync=True)
    row_labels = t.List(t.Unicode(), read_only=True).tag(sync=True)
    column_labels = t.List(t.Unicode(), read_only=True).tag(sync=True)
    _images = t.Dict().tag(sync=True)

    def __init__(
        self, model: nn.Module, batch: torch.Tensor, rows: Sequence[_Row], output: Output, logits: bool,
        **kwargs: Any,
    ) -> None:
        self._model = model
        self._batch = batch
        self._rows = list(rows)
        self._output = output
        self._logits = logits
        self._results: list[Attribution | None] = [None] * len(self._rows)
        self._encoded: list[dict[str, Any] | None] = [None] * len(self._rows)
        self._jobs = Jobs("cnn_widgets-compare")
        super().__init__(**kwargs)
        self.on_msg(self._on_msg)

    @property
    def results(self) -> list[Attribution | None]:
        """One :class:`~cnn_widgets.Attribution` per method (batch maps N×H×W), ``None`` where it failed or
        is not computed yet (see :meth:`wait`)."""
        return list(self._results)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no row is being computed; ``False`` if ``timeout`` passed first."""
        return self._jobs.wait(timeout)

    def cancel(self) -> None:
        """Stop the computation: rows not done yet become "cancelled" (:meth:`run` computes them)."""
        with self._jobs.lock:
            if not self._jobs.cancel():
                return
            status = ["cancelled" if s in ("queued", "running") else s for s in self.status]
            self._publish(status)

    def run(self) -> None:
        """Compute every row that is neither done, failed nor on its way (all rows at first)."""
        with self._jobs.lock:
            coming = {job.key for job in self._jobs.live()}
            status = list(self.status)
            for r, state in enumerate(status):
                if state in ("done", "failed") or r in coming:
                    continue
                status[r] = "queued"
                self._jobs.submit(
                    r, partial(self._compute, r), partial(self._done, r), partial(self._failed, r),
                    partial(self._progress, r),
                )
            self._publish(status)

    # -- the jobs (run in the worker thread; callbacks hold the jobs' lock) ---------------------------

    def _compute(self, r: int, progress: Progress) -> tuple[Attribution, dict[str, Any]]:
        row = self._rows[r]
        result = attribute(
            self._model, self._batch, row.method, list(self.targets), row.layer, output=self._output,
            logits=self._logits, progress=progress, options=row.options,
        )
        return result, wire.encode(result.map, "float16")

    def _progress(self, r: int, fraction: float) -> None:
        status = list(self.status)
        status[r] = "running"
        self._publish(status, fraction)

    def _done(self, r: int, value: tuple[Attribution, dict[str, Any]]) -> None:
        self._results[r], self._encoded[r] = value
        status = list(self.status)
        status[r] = "done"
        notes = list(self.notes)
        notes[r] = list(value[0].notes)
        with self.hold_sync():
            self.set_trait("notes", notes)
            self._publish(status)
        self._send_row(r)

    def _failed(self, r: int, err: Exception) -> None:
        status = list(self.status)
        status[r] = "failed"
        errors = list(self.errors)
        errors[r] = f"{self._rows[r].method} failed: {error_text(err)}"
        with self.hold_sync():
            self.set_trait("errors", errors)
            self._publish(status)

    def _publish(self, status: list[str], fraction: float = 0.0) -> None:
        """Set ``status`` and the ``progress`` and ``busy`` that follow from it (``fraction``: of the
        running row)."""
        settled = sum(s in ("done", "failed") for s in status)
        running = "running" in status
        with self.hold_sync():
            self.set_trait("status", status)
            self.set_trait("progress", (settled + (fraction if running else 0.0)) / max(len(status), 1))
            self.set_trait("busy", running or "queued" in status)

    # -- exports (cnn_widgets/export.py) ----------------------------------------------------------

    def _export_image(self) -> Any:
        """The panels of the rows computed (after the rows still running finish)."""
        from .. import export

        self.wait()
        return export.compare_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        rows = [{"method": r.method, "layer": r.layer, "options": dict(r.options or {})} for r in self._rows]
        return {**export.model_fields(self._model), **export.image_fields(self._batch), "method": list(self.methods),
                "layer": [r.layer for r in self._rows], "options": rows, "target": list(self.targets),
                "display": {k: getattr(self, k) for k in ("scale", "sign", "colormap", "opacity", "clip_percentile")}}

    def _export_html(self) -> list[dict[str, Any]]:
        """The grid with every computed row in the file (display controls work offline)."""
        from .. import export

        self.wait()
        rows = []
        for r, encoded in enumerate(self._encoded):
            if encoded is not None:
                header, buffers = split_buffers(encoded)
                rows.append(({"type": "row", "row": r, **header}, buffers))
        return [export.widget_part(self, replies={"fetch": rows})]

    # -- the browser -------------------------------------------------------------------------------

    def _send_row(self, r: int) -> None:
        header, buffers = split_buffers(self._encoded[r])  # type: ignore[arg-type]
        self.send({"type": "row", "row": r, **header}, buffers)

    def _on_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """``{"type": "fetch"}`` (a view rendered: send the rows done), ``"cancel"`` and ``"run"``."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "fetch":
            with self._jobs.lock:
                for r, encoded in enumerate(self._encoded):
                    if encoded is not None:
                        self._send_row(r)
        elif kind == "cancel":
            self.cancel()
        elif kind == "run":
            self.run()


def _image_list(images: Any) -> list[Image]:
    """A list of images from a list/tuple (of images or ``(image, label)`` pairs), a 4-D tensor or
    array (a batch), or one image (see :func:`cnn_widgets.images.split_images`)."""
    return split_images(images)[0]


def _method_list(methods: str | Sequence[str]) -> list[str]:
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError(f"methods is empty; pass one or more of: {', '.join(METHODS)}")
    for name in names:
        check_method(name)
    return names


def _checked_rows(
    model: nn.Module, names: list[str], layer: str | None, options: Mapping[str, Any] | None
) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(method, layer if it needs one, options) per method, every option checked against the schema."""
    options = dict(options or {})
    for key, value in options.items():
        if key not in names:
            raise ValueError(f"options given for {key!r}, which is not among the methods {names}")
        if not isinstance(value, Mapping):
            raise TypeError(f"options[{key!r}] must be a dict of option values, got {type(value).__name__}")
        check_options(METHODS[key], value)
    if layer is not None:
        check_layer_names(model, [layer])
        if not any(METHODS[m].needs_layer for m in names):
            raise ValueError(
                f"layer={layer!r} was given but none of {names} takes a layer; drop it, or add a layer method: "
                + ", ".join(n for n, m in METHODS.items() if m.needs_layer)
            )
    return [(m, layer if METHODS[m].needs_layer else None, dict(options.get(m, {}))) for m in names]


def compare(
    model: nn.Module,
    images: Any,
    methods: str | Sequence[str],
    *,
    targets: int | Sequence[int | None] | None = None,
    labels: Sequence[str] | None = None,
    mean: Stats = None,
    std: Stats = None,
    layer: str | None = None,
    scale: str = "per-method",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    opacity: float = 0.5,
    colormap: str = "inferno",
    sign: str = "positive",
    clip_percentile: float = 99.0,
    output: Output = None,
    scores: str = "auto",
    logits: bool = False,
    font_scale: float | None = None,
) -> Compare:
    """Attribute every image with every method and show them as a grid, methods × images.

    Returns at once: the methods run in the background, one after another, and each row fills in when
    its method is done. Call ``.wait()`` on the result to block until all are (then ``.results`` is
    complete), ``.cancel()`` to stop.

    ``images``: a list of images (any form :mod:`cnn_widgets.images` accepts, all of one size) or a
    4-D batch. ``targets``: one class for all, one per image (``None`` entries: that image's top
    prediction; a list, tuple, tensor or array), or ``None``. ``layer`` goes to the methods that need
    one (default: :func:`cnn_widgets.suggest_target_layer`). ``options``: per method, e.g.
    ``{"occlusion": {"strides": 4}}``. ``output``, ``scores`` and ``logits`` as for
    :class:`~cnn_widgets.AttributionView` (``scores`` sets how the column labels' probabilities are
    read). ``scale``: colour range "per-method" (default), "shared" or "per-panel" (see :class:`Compare`).
    ``font_scale``: this grid's text size multiplier (default: :func:`cnn_widgets.style`'s). A method
    that fails shows its message in its row; bad arguments (display ones included)
    raise ``ValueError``/``TypeError`` before anything is computed.
    """
    check_model(model)
    names = _method_list(methods)
    display = {
        "scale": scale, "opacity": opacity, "colormap": colormap, "sign": sign, "clip_percentile": clip_percentile,
    }
    _Display(**display)
    if font_scale is not None:
        check_scale("font_scale", font_scale)
        display["font_scale"] = font_scale
    label_list(labels)
    output, scores, logits = check_scoring(output, scores, logits)
    rows = _checked_rows(model, names, layer, options)
    pictures = _image_list(images)
    given = normalize_targets(targets, len(pictures))
    prepared = [prepare(img, mean, std, model=model, single=True) for img in pictures]
    check_one_size((tuple(b.shape[-2:]) for b, _ in prepared), "compare")
    batch = torch.cat([b for b, _ in prepared])
    pixels = np.stack([d for _, d in prepared])
    probs, auto_layer = class_probabilities(model, batch, output, scores)
    classes = probs.shape[1]
    names_of_classes = check_labels(labels, classes)
    check_target_range(given, classes)
    top = [int(i) for i in probs.argmax(dim=1).tolist()]
    chosen = [top[i] if c is None else c for i, c in enumerate(given or [None] * len(top))]
    # layer methods get the suggested layer when none is given, so each row is labelled before it runs
    plan = [_Row(m, (lay or auto_layer) if METHODS[m].needs_layer else None, opts) for m, lay, opts in rows]
    columns = []
    for i, c in enumerate(chosen):
        text = f"image {i} · {names_of_classes[c]} {float(probs[i, c]):.0%}"
        if c != top[i]:
            text += f" (top: {names_of_classes[top[i]]})"
        columns.append(text)

    widget = Compare(model, batch, plan, output, logits, **display)
    with widget.hold_sync():
        widget.set_trait("methods", names)
        widget.set_trait("targets", chosen)
        widget.set_trait("status", ["queued"] * len(plan))
        widget.set_trait("errors", [""] * len(plan))
        widget.set_trait("notes", [[] for _ in plan])
        widget.set_trait("row_labels", [f"{r.method} · {r.layer}" if r.layer else r.method for r in plan])
        widget.set_trait("column_labels", columns)
        widget._images = wire.encode(torch.from_numpy(pixels), exact=True)
    widget.run()
    return widget
