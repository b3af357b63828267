"""Metrics: can these heatmaps be trusted? Deletion and insertion curves with their AUC, the pointing
game and relevance mass inside a ground-truth mask, Captum's infidelity and max-sensitivity, and the
cascading model-parameter randomisation test (Adebayo et al. 2018), for several methods on several
images, as one table — every number computed by :mod:`cnn_widgets.metrics`.

The view is an ``ipywidgets.VBox``: an anywidget (``js/src/widgets/metrics_view.js``: the selected
method's heatmap over the selected image, method and image selects, the randomisation slider with the
rank correlation at each step, the table, progress and cancel) above two bqplot figures, the deletion
and insertion curves of the selected image, one line per method. Clicking a point of a curve or a table
row selects that method and shows its map; the selects are the keyboard path.

The work runs as jobs of :mod:`cnn_widgets.widgets.jobs` in a worker thread, in this order, and the
table fills in as each job finishes: every method on all images (one batched attribution per method),
then per image the curves of all methods together (:func:`cnn_widgets.metrics.curves`, many perturbed
images per forward pass), then per method the checks that cost many attributions — infidelity,
max-sensitivity and the randomisation test — on the first ``sample`` images. Maps travel once per view
as float16 (:mod:`cnn_widgets.wire`) in custom messages; colormap and opacity apply in the browser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anywidget
import ipywidgets as W
import numpy as np
import torch
import traitlets as t
from bqplot import Axis, Figure, LinearScale, Lines, Scatter
from torch import nn

from .. import metrics, wire
from .._checks import check_layer_names, check_model
from ..attribution import METHODS, attribute, check_method, normalize_targets
from ..attribution.engine import check_target_range
from ..capture import model_session
from ..images import Stats, prepare, to_batch
from ..outputs import Output
from ..style import scale_chart
from ._common import (
    CheckedFloat, CheckedInt, CheckedUnicode, HeatmapDisplay, WidgetValueError, bundle, split_buffers,
)
from .attribution_view import check_labels, check_scoring, class_probabilities, error_text, label_list
from .compare import _image_list
from .jobs import Jobs, Progress
from .panel import Panel

RANDOMIZATION_THRESHOLD = 0.5
"""A method is flagged when the Spearman rank correlation of its map with the original stays above this
at every step of the randomisation cascade (averaged over the images tested): its map does not depend on
the weights it claims to explain. Grad-CAM on ShapesNet falls below it as soon as the classifier is
randomised; an edge detector of the input stays at 1."""

STEPS = 16
"""Default number of steps of the deletion and insertion curves in the widget (17 images per curve)."""

BATCH_SIZE = 128
"""Perturbed images per forward pass of the curves."""

# one colour per method, in order (Tableau 10), so a curve and its table row share a colour
PALETTE: tuple[str, ...] = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)

MethodSpec = str | Callable[[nn.Module, torch.Tensor], Any]

# Columns of the table: (key, heading, which way is better). Headings are text; the browser shows them.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("deletion_auc", "deletion AUC", "lower"),
    ("insertion_auc", "insertion AUC", "higher"),
    ("pointing_game", "pointing game", "higher"),
    ("mass_inside", "mass inside mask", "higher"),
    ("infidelity", "infidelity", "lower"),
    ("sensitivity_max", "max-sensitivity", "lower"),
    ("randomization", "randomisation ρ (lowest)", "lower"),
)

# The two curve charts: (kind, title, x-axis label); bqplot figures in the notebook, SVG in an HTML export.
CHARTS: tuple[tuple[str, str, str], ...] = (
    ("deletion", "deletion · lower AUC is better", "fraction of pixels removed"),
    ("insertion", "insertion · higher AUC is better", "fraction of pixels inserted"),
)


class _MetricsCanvas(anywidget.AnyWidget):
    """The browser half of :class:`Metrics`: heatmap, selects, randomisation slider, table, progress."""

    _esm = bundle("metrics_view")

    method = t.Unicode("").tag(sync=True)
    image = t.Int(0).tag(sync=True)
    step = t.Int(0).tag(sync=True)
    opacity = t.Float(0.5).tag(sync=True, echo_update=False)
    colormap = t.Unicode("inferno").tag(sync=True, echo_update=False)
    sign = t.Unicode("positive").tag(sync=True, echo_update=False)
    clip_percentile = t.Float(99.0).tag(sync=True, echo_update=False)
    font_scale = t.Float(1.0).tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    phase = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    cancelled = t.Bool(False).tag(sync=True)
    _methods = t.List().tag(sync=True)  # [{name, color, error}]
    _image_labels = t.List().tag(sync=True)
    _columns = t.List().tag(sync=True)
    _summary = t.List().tag(sync=True)
    _cascade = t.List().tag(sync=True)  # per method: {"layers": [...], "rho": [...], "images": k} or {}
    _threshold = t.Float(RANDOMIZATION_THRESHOLD).tag(sync=True)
    _images = t.Dict().tag(sync=True)


class Metrics(Panel, HeatmapDisplay, W.VBox):
    """How far to trust each method's heatmaps on ``images``: one table, methods × metrics, averaged
    over the images, with the curves and maps behind it.

    ``methods``: names from :data:`cnn_widgets.METHODS`, or a dict ``{name: method}`` whose values are
    METHODS names or callables ``method(model, image) -> H×W map`` (e.g. an edge detector, to see the
    randomisation test flag it). ``images``: a list or 4-D batch (unnormalised pixels, one size).
    ``labels``: class names (default ``class 0``, …). ``targets``: one class for all, one per image,
    or ``None`` (each image's top prediction). ``masks``: N×H×W ground-truth masks (e.g. the third value
    of :func:`cnn_widgets.zoo.shapes_dataset`) add the pointing game and the relevance mass inside the
    mask. ``baseline``: what deleted pixels become (``"blur"``, ``"black"``, ``"mean"``, ``"road"``, see
    :func:`cnn_widgets.deletion_auc`); ``steps``: curve steps (default :data:`STEPS`). ``sample``:
    infidelity, max-sensitivity and the randomisation test run on the first ``sample`` images (they cost
    many attributions each; 0 skips them). ``randomize``: the cascade's layers (default every layer
    with parameters, output side first). ``layer``, ``options`` (per method), ``mean``/``std``,
    ``output`` and ``logits`` as for :func:`cnn_widgets.compare`. ``seed`` fixes every random draw.

    Traits: ``method`` (the method shown), ``image`` (index), ``step`` (randomisation step, 0 = the
    intact model), ``opacity``, ``colormap``, ``sign``, ``clip_percentile`` (as in
    :class:`~cnn_widgets.AttributionView`, applied in the browser); read-only ``progress``, ``busy``, ``phase`` (what runs now), ``error``. Results:
    :attr:`table` (per method and image), :attr:`summary` (per method, averaged, with ``flagged``),
    :attr:`curves`, :attr:`maps`, :attr:`randomization`. :meth:`wait` blocks until all is computed,
    :meth:`cancel` stops, :meth:`run` computes what is missing. The model is never changed: every
    forward pass runs in :func:`cnn_widgets.capture.model_session`, and the randomisation test
    re-initialises a copy.
    """

    method = CheckedUnicode("")
    image = CheckedInt(0)
    step = CheckedInt(0)
    opacity = CheckedFloat(0.5)
    colormap = CheckedUnicode("inferno")
    sign = CheckedUnicode("positive")
    clip_percentile = CheckedFloat(99.0)
    progress = t.Float(0.0, read_only=True)
    busy = t.Bool(False, read_only=True)
    phase = t.Unicode("", read_only=True)
    error = t.Unicode("", read_only=True)

    def __init__(
        self,
        model: nn.Module,
        images: Any,
        methods: Sequence[str] | Mapping[str, MethodSpec],
        labels: Sequence[str] | None = None,
        *,
        targets: int | Sequence[int | None] | None = None,
        masks: torch.Tensor | np.ndarray | None = None,
        baseline: str = "blur",
        steps: int = STEPS,
        sample: int = 2,
        randomize: Sequence[str] | None = None,
        layer: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        mean: Stats = None,
        std: Stats = None,
        output: Output = None,
        logits: bool = False,
        seed: int = 0,
        opacity: float = 0.5,
        colormap: str = "inferno",
        sign: str = "positive",
        clip_percentile: float = 99.0,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model)
        self._output, _, self._logits = check_scoring(output, "auto", logits)
        self._specs = _method_specs(methods)
        self._names = list(self._specs)
        if not isinstance(baseline, str) or baseline not in metrics.BASELINES:
            got = repr(baseline) if isinstance(baseline, str) else f"a {type(baseline).__name__}"
            raise ValueError(f"baseline must be one of {', '.join(map(repr, metrics.BASELINES))}, got {got} (an image "
                             "as the baseline is for cnn_widgets.deletion_auc/insertion_auc/curves)")
        self._baseline = baseline
        self._steps = metrics._positive_int("steps", steps)
        self._seed = metrics._seed(seed)
        if layer is not None:
            check_layer_names(model, [layer])
        self._layer = layer
        self._options = _method_options(options, self._specs)
        if isinstance(randomize, str):
            raise TypeError("randomize must be a list of layer names, got a str")
        self._randomize = None if randomize is None else check_layer_names(model, list(randomize))
        class_names = label_list(labels)
        pictures = _image_list(images)
        prepared = [prepare(img, mean, std, model=model, single=True) for img in pictures]
        sizes = {tuple(b.shape[-2:]) for b, _ in prepared}
        if len(sizes) > 1:
            raise ValueError(f"Metrics needs images of one size, got {sorted(sizes)} (H, W); resize or crop them first")
        self._mean, self._std = mean, std
        self._pixels = [to_batch(img, model=model, single=True)[0] for img in pictures]
        n = len(pictures)
        self._sample = min(metrics._non_negative_int("sample", sample), n)
        given = normalize_targets(targets, n)
        batch = torch.cat([b for b, _ in prepared])
        self._inputs = batch  # the images as given to the model (their hashes go in the export record)
        try:
            probs, _ = class_probabilities(model, batch, self._output, "auto")
        except RuntimeError as err:
            raise ValueError(f"the model failed on the images (shape {tuple(batch.shape)}): {err}") from err
        classes = probs.shape[1]
        self._labels = check_labels(class_names, classes)
        check_target_range(given, classes)
        top = [int(i) for i in probs.argmax(dim=1).tolist()]
        self._targets = [top[i] if c is None else c for i, c in enumerate(given or [None] * n)]
        self._masks = _check_masks(masks, n, tuple(batch.shape[-2:]))

        self._jobs = Jobs("cnn_widgets-metrics")
        self._maps: dict[str, torch.Tensor] = {}
        self._encoded: dict[str, dict[str, Any]] = {}
        self._errors: dict[str, str] = {}
        self._curves: dict[int, dict[str, tuple[metrics.Curve, metrics.Curve]]] = {}
        self._sanity: dict[str, dict[str, Any]] = {}
        self._cascade_encoded: dict[str, dict[str, Any]] = {}
        self._rows = [
            {"method": m, "image": i, "target": self._targets[i],
             **{key: None for key, _, _ in COLUMNS if key != "randomization"}}
            for m in self._names for i in range(n)
        ]
        self._canvas = _MetricsCanvas()
        self._figures, self._lines = self._make_charts()
        self._scale_charts()
        kwargs.setdefault("layout", W.Layout(align_items="flex-start"))
        super().__init__(children=[self._canvas, W.HBox(self._figures, layout=W.Layout(flex_flow="row wrap"))],
                         **kwargs)
        self.opacity = opacity
        self.colormap = colormap
        self.sign = sign
        self.clip_percentile = clip_percentile
        self.method = self._names[0]
        display = np.stack([d for _, d in prepared])
        image_labels = []
        for i, c in enumerate(self._targets):
            text = f"image {i} · {self._labels[c]} {float(probs[i, c]):.0%}"
            if c != top[i]:
                text += f" (top: {self._labels[top[i]]})"
            image_labels.append(text)
        with self._canvas.hold_sync():
            self._canvas._methods = [
                {"name": m, "color": PALETTE[k % len(PALETTE)], "error": ""} for k, m in enumerate(self._names)
            ]
            self._canvas._image_labels = image_labels
            self._canvas._columns = [
                {"key": key, "title": title, "better": better} for key, title, better in COLUMNS
                if self._masks is not None or key not in ("pointing_game", "mass_inside")
                if self._sample or key not in ("infidelity", "sensitivity_max", "randomization")
            ]
            self._canvas._cascade = [{} for _ in self._names]
            self._canvas._images = wire.encode(torch.from_numpy(display), exact=True)
        for name in ("method", "image", "step", "opacity", "colormap", "sign", "clip_percentile"):
            t.link((self, name), (self._canvas, name))
        for name in ("progress", "busy", "phase", "error", "font_scale"):
            t.dlink((self, name), (self._canvas, name))
        self._canvas.on_msg(self._on_canvas_msg)
        self._publish_summary()
        self.run()

    @t.observe("font_scale")
    def _scale_charts(self, change: t.Bunch | None = None) -> None:
        """The chart text (ticks, title) follows ``font_scale``, as in every view with a chart."""
        for figure in getattr(self, "_figures", ()):  # font_scale can be set before the charts exist
            scale_chart(figure, self.font_scale)

    # -- results -----------------------------------------------------------------------------------

    @property
    def methods(self) -> list[str]:
        """The method names, in table order."""
        return list(self._names)

    @property
    def targets(self) -> list[int]:
        """The class explained on each image."""
        return list(self._targets)

    @property
    def table(self) -> list[dict[str, Any]]:
        """One dict per (method, image): ``method``, ``image`` (index), ``target``, ``deletion_auc``,
        ``insertion_auc``, ``pointing_game`` (bool) and ``mass_inside`` (with masks), ``infidelity`` and
        ``sensitivity_max`` (first ``sample`` images); ``None`` where not computed (yet, or failed)."""
        with self._jobs.lock:
            return [dict(row) for row in self._rows]

    @property
    def summary(self) -> list[dict[str, Any]]:
        """One dict per method: the table's numbers averaged over the images that have them (the
        pointing game as the share of hits), ``randomization`` (``[(layer, mean ρ), …]`` over the
        sample images), ``randomization_min`` (the lowest of those ρ), ``flagged`` (it stays above
        :data:`RANDOMIZATION_THRESHOLD`: the map ignores the model) and ``error`` ("" unless the
        method failed)."""
        with self._jobs.lock:
            return [self._summary_row(m) for m in self._names]

    @property
    def curves(self) -> dict[tuple[str, int], tuple[metrics.Curve, metrics.Curve]]:
        """``(method, image) → (deletion curve, insertion curve)`` computed so far."""
        with self._jobs.lock:
            return {(m, i): pair for i, by_method in self._curves.items() for m, pair in by_method.items()}

    @property
    def maps(self) -> dict[str, torch.Tensor]:
        """``method → N×H×W`` maps (float32) computed so far."""
        with self._jobs.lock:
            return dict(self._maps)

    @property
    def randomization(self) -> dict[str, list[list[tuple[str, float]]]]:
        """``method → [[(layer, ρ), …] per sample image]``: the cascading randomisation test."""
        with self._jobs.lock:
            return {m: [list(r) for r in s["randomization"]] for m, s in self._sanity.items() if "randomization" in s}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is being computed; ``False`` if ``timeout`` passed first."""
        return self._jobs.wait(timeout)

    def cancel(self) -> None:
        """Stop the computation; what is done stays (:meth:`run` computes the rest)."""
        with self._jobs.lock:
            if not self._jobs.cancel():
                return
            self._canvas.cancelled = True
            self.set_trait("busy", False)
            self.set_trait("phase", "cancelled")

    def run(self) -> None:
        """Queue every piece of work not done, failed or on its way (all of it at first)."""
        with self._jobs.lock:
            coming = {job.key for job in self._jobs.live()}
            plan: list[tuple[Any, Callable[[Progress], Any], Callable[[Any], None]]] = []
            for m in self._names:
                if m not in self._maps and m not in self._errors:
                    plan.append((("maps", m), partial(self._attribute, m), partial(self._maps_done, m)))
            for i in range(len(self._pixels)):
                if i not in self._curves:
                    plan.append((("curves", i), partial(self._compute_curves, i), partial(self._curves_done, i)))
            if self._sample:
                for m in self._names:
                    if m not in self._sanity:
                        plan.append((("sanity", m), partial(self._compute_sanity, m), partial(self._sanity_done, m)))
            plan = [p for p in plan if p[0] not in coming]
            if not plan and not coming:
                return
            self._canvas.cancelled = False
            self.set_trait("busy", True)
            for key, work, done in plan:
                self._jobs.submit(key, work, done, partial(self._failed, key), partial(self._progress, key))

    # -- the jobs (run in the worker thread; callbacks hold the jobs' lock) --------------------------

    def _attribute(self, m: str, progress: Progress) -> torch.Tensor:
        spec = self._specs[m]
        if callable(spec):
            maps = []
            for i, x in enumerate(self._pixels):
                with model_session(self._model, eval_mode=True):  # a callable may not restore the model
                    found = spec(self._model, x)
                maps.append(metrics._map_of(found, f"method {m!r}'s map", x.shape[1:])[0].float())
                progress((i + 1) / len(self._pixels))
            return torch.stack(maps)
        needs_layer = METHODS[spec].needs_layer
        result = attribute(
            self._model, torch.stack(self._pixels), spec, list(self._targets), self._layer if needs_layer else None,
            self._mean, self._std, output=self._output, logits=self._logits, progress=progress,
            options=self._options.get(m),
        )
        return result.map.float()

    def _maps_done(self, m: str, maps: torch.Tensor) -> None:
        self._maps[m] = maps
        self._encoded[m] = wire.encode(maps, "float16")
        if self._masks is not None:
            hits = metrics.pointing_game(maps, self._masks)
            shares = metrics.mass_inside(maps, self._masks)
            for i in range(len(self._pixels)):
                row = self._row(m, i)
                row["pointing_game"] = bool(hits[i])
                share = float(shares[i])
                row["mass_inside"] = None if math.isnan(share) else share
        self._send_part("maps", m, self._encoded[m])
        self._advance()

    def _compute_curves(self, i: int, progress: Progress) -> dict[str, tuple[metrics.Curve, metrics.Curve]]:
        ready = [m for m in self._names if m in self._maps]
        if not ready:
            return {}
        found = metrics.curves(
            self._model, self._pixels[i], [self._maps[m][i] for m in ready], [self._targets[i]] * len(ready),
            baseline=self._baseline, steps=self._steps, mean=self._mean, std=self._std, output=self._output,
            batch_size=BATCH_SIZE, seed=self._seed, progress=progress,
        )
        return dict(zip(ready, found))

    def _curves_done(self, i: int, found: dict[str, tuple[metrics.Curve, metrics.Curve]]) -> None:
        self._curves[i] = found
        for m, (deletion, insertion) in found.items():
            row = self._row(m, i)
            row["deletion_auc"], row["insertion_auc"] = deletion.auc, insertion.auc
        if i == self.image:
            self._update_charts()
        self._advance()

    def _compute_sanity(self, m: str, progress: Progress) -> dict[str, Any]:
        """Infidelity, max-sensitivity and the randomisation test of method ``m`` on the sample images."""
        if m not in self._maps:
            return {}
        spec = self._specs[m]
        named: dict[str, Any] = {}
        k = self._sample
        out: dict[str, Any] = {"infidelity": [], "sensitivity_max": [], "randomization": [], "cascade": []}
        common = {"mean": self._mean, "std": self._std, "output": self._output, "seed": self._seed}
        for i in range(k):
            x = self._pixels[i]
            if isinstance(spec, str):  # a callable method picks its own target, layer and options
                named = {"target": self._targets[i], "options": self._options.get(m),
                         "layer": self._layer if METHODS[spec].needs_layer else None}

            def part(lo: float, hi: float, i: int = i) -> Progress:
                return lambda f: progress((i + lo + (hi - lo) * f) / k)

            out["infidelity"].append(metrics.infidelity(self._model, x, self._maps[m][i], self._targets[i], **common))
            progress((i + 0.05) / k)
            out["sensitivity_max"].append(metrics.sensitivity_max(
                self._model, x, spec, **named, progress=part(0.05, 0.35), **common))
            original, steps = metrics.randomization_maps(
                self._model, x, spec, **named, layers=self._randomize, progress=part(0.35, 1.0), **common)
            out["randomization"].append([(name, rho) for name, rho, _ in steps])
            out["cascade"].append(torch.stack([original.float()] + [s[2].float() for s in steps]))
        return out

    def _sanity_done(self, m: str, found: dict[str, Any]) -> None:
        self._sanity[m] = found
        if not found:
            self._advance()
            return
        for i in range(self._sample):
            row = self._row(m, i)
            row["infidelity"] = found["infidelity"][i]
            row["sensitivity_max"] = found["sensitivity_max"][i]
        self._cascade_encoded[m] = wire.encode(torch.stack(found["cascade"]), "float16")
        summary = self._summary_row(m)
        cascade = list(self._canvas._cascade)
        cascade[self._names.index(m)] = {
            "layers": [name for name, _ in summary["randomization"]],
            "rho": [rho for _, rho in summary["randomization"]],
            "per_image": [[rho for _, rho in r] for r in found["randomization"]],
            "flagged": summary["flagged"],
        }
        self._canvas._cascade = cascade
        self._send_part("cascade", m, self._cascade_encoded[m])
        self._advance()

    def _failed(self, key: tuple[str, Any], err: Exception) -> None:
        kind, what = key
        text = error_text(err)
        if kind == "curves":  # the table lacks this image's AUCs; the error says why
            self._curves[what] = {}
            self.set_trait("error", f"the curves of image {what} failed: {text}")
        else:
            self._errors.setdefault(what, f"{what} failed: {text}" if kind == "maps"
                                    else f"{what}: infidelity, sensitivity or randomisation failed: {text}")
            if kind == "sanity":
                self._sanity[what] = {}
            self._canvas._methods = [{**row, "error": self._errors.get(row["name"], "")} for row in self._canvas._methods]
        self._advance()

    def _progress(self, key: tuple[str, Any], fraction: float) -> None:
        kind, what = key
        phase = {
            "maps": f"attributing with {what}",
            "curves": f"deletion and insertion curves, image {what}",
            "sanity": f"infidelity, sensitivity and randomisation of {what}",
        }[kind]
        self.set_trait("phase", phase)
        self.set_trait("progress", (self._units_done() + min(max(fraction, 0.0), 1.0)) / self._units())

    def _units(self) -> int:
        return len(self._names) * (2 if self._sample else 1) + len(self._pixels)

    def _units_done(self) -> int:
        done = sum(m in self._maps or m in self._errors for m in self._names) + len(self._curves)
        return done + (sum(m in self._sanity for m in self._names) if self._sample else 0)

    def _advance(self) -> None:
        """After a job: publish the table, progress and whether work remains."""
        self._publish_summary()
        done = self._units_done()
        self.set_trait("progress", done / self._units())
        if done >= self._units():
            self.set_trait("busy", False)
            self.set_trait("phase", "done")

    # -- table ------------------------------------------------------------------------------------

    def _row(self, m: str, i: int) -> dict[str, Any]:
        return self._rows[self._names.index(m) * len(self._pixels) + i]

    def _summary_row(self, m: str) -> dict[str, Any]:
        rows = [self._row(m, i) for i in range(len(self._pixels))]
        out: dict[str, Any] = {"method": m}
        for key, _, _ in COLUMNS:
            if key == "randomization":
                continue
            values = [float(r[key]) for r in rows if r[key] is not None]
            out[key] = float(np.mean(values)) if values else None
        found = self._sanity.get(m, {}).get("randomization") or []
        if found:
            layers = [name for name, _ in found[0]]
            means = [float(np.mean([r[s][1] for r in found])) for s in range(len(layers))]
            out["randomization"] = list(zip(layers, means))
            out["randomization_min"] = min(means)
            out["flagged"] = out["randomization_min"] > RANDOMIZATION_THRESHOLD
        else:
            out["randomization"], out["randomization_min"], out["flagged"] = [], None, False
        out["error"] = self._errors.get(m, "")
        return out

    def _publish_summary(self) -> None:
        summary = [self._summary_row(m) for m in self._names]
        for row in summary:
            row["randomization"] = [[name, rho] for name, rho in row["randomization"]]
        self._canvas._summary = summary

    # -- curves -----------------------------------------------------------------------------------

    def _make_charts(self) -> tuple[list[Figure], dict[str, list[tuple[Lines, Scatter]]]]:
        font = {"font-size": "12px"}
        figures, lines = [], {}
        for kind, title, label in CHARTS:
            x, y = LinearScale(min=0.0, max=1.0), LinearScale(min=0.0, max=1.0)
            marks, points = [], []
            for k, m in enumerate(self._names):
                colour = PALETTE[k % len(PALETTE)]
                # no legend: the table's colour swatches name the lines (long names do not fit a legend)
                line = Lines(x=[], y=[], scales={"x": x, "y": y}, colors=[colour], labels=[m], stroke_width=2)
                # bqplot reports clicks on a Lines path without saying which; its points say it
                dots = Scatter(x=[], y=[], scales={"x": x, "y": y}, colors=[colour], default_size=36,
                               stroke="white")
                dots.on_element_click(partial(self._line_clicked, m))
                marks.append(line)
                points.append(dots)
            lines[kind] = list(zip(marks, points))
            figure = Figure(
                marks=marks + points,
                axes=[Axis(scale=x, side="bottom", label=label, tick_format=".0%", tick_style=font, label_offset="32px"),
                      Axis(scale=y, side="left", label="score / intact", tick_format=".1f",
                           tick_style=font, label_offset="36px")],
                title=title, title_style={"font-size": "13px"},
                fig_margin={"top": 40, "bottom": 50, "left": 55, "right": 15},
                layout=W.Layout(width="400px", height="300px"),
            )
            figure.add_class(f"cnnw-metrics-{kind}")
            figures.append(figure)
        return figures, lines

    def _update_charts(self) -> None:
        found = self._curves.get(self.image, {})
        for kind, marks in self._lines.items():
            for m, (line, dots) in zip(self._names, marks):
                pair = found.get(m)
                curve = None if pair is None else pair[0 if kind == "deletion" else 1]
                x = [] if curve is None else curve.fractions.tolist()
                y = [] if curve is None else curve.scores.tolist()
                shown = m == self.method
                with line.hold_sync():
                    line.x, line.y = x, y
                    line.labels = [m if curve is None else f"{m} · AUC {curve.auc:.2f}"]
                    line.stroke_width = 4 if shown else 1.5
                    line.opacities = [1.0 if shown else 0.55]
                with dots.hold_sync():
                    dots.x, dots.y = x, y
                    dots.default_size = 48 if shown else 24

    def _line_clicked(self, m: str, mark: Scatter, event: Any) -> None:
        """A click on a point of a method's curve shows that method's map."""
        self.method = m

    @t.observe("image", "method")
    def _selection_changed(self, change: t.Bunch) -> None:
        with self._jobs.lock:
            self._update_charts()

    # -- validation -------------------------------------------------------------------------------

    @t.validate("method")
    def _check_method(self, proposal: t.Bunch) -> str:
        value = proposal["value"]
        if value not in getattr(self, "_names", ()):
            raise WidgetValueError(f"method must be one of {self._names}, got {value!r}")
        return value

    @t.validate("image")
    def _check_image(self, proposal: t.Bunch) -> int:
        value, n = proposal["value"], len(self._pixels)
        if isinstance(value, bool) or not 0 <= value < n:
            raise WidgetValueError(f"image {value!r} is out of range: there are {n} images (0‥{n - 1})")
        return value

    @t.validate("step")
    def _check_step(self, proposal: t.Bunch) -> int:
        value = proposal["value"]
        if isinstance(value, bool) or value < 0:
            raise WidgetValueError(f"step must be an int >= 0 (0: the intact model), got {value!r}")
        return value

    # -- the browser ------------------------------------------------------------------------------

    def _send_part(self, kind: str, m: str, encoded: dict[str, Any]) -> None:
        header, buffers = split_buffers(encoded)
        self._canvas.send({"type": kind, "method": m, **header}, buffers)

    def _on_canvas_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """``{"type": "fetch"}`` (a view rendered: send what is done), ``"cancel"`` and ``"run"``."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "fetch":
            with self._jobs.lock:
                for m, encoded in self._encoded.items():
                    self._send_part("maps", m, encoded)
                for m, encoded in self._cascade_encoded.items():
                    self._send_part("cascade", m, encoded)
        elif kind == "cancel":
            self.cancel()
        elif kind == "run":
            self.run()


    # -- exports (Panel.to_png / save_html) --------------------------------------------------------

    def _shown_values(self) -> np.ndarray | None:
        """metrics_view.js shownValues: the map on the canvas (the method's, or at randomisation step
        ``step`` its map after that step), float32 as the browser decodes it; ``None`` when not computed."""
        i, s = self.image, self.step
        if s > 0:
            encoded = self._cascade_encoded.get(self.method)
            if encoded is None:
                return None
            cascade = wire.decode(encoded).astype(np.float32)  # sample × (steps + 1) × H × W
            if i >= cascade.shape[0]:
                return None
            return cascade[i, min(s, cascade.shape[1] - 1)]
        encoded = self._encoded.get(self.method)
        return None if encoded is None else wire.decode(encoded).astype(np.float32)[i]

    def _export_image(self) -> np.ndarray:
        """The view's canvas once the work is done: the selected method's heatmap over the selected
        image (at randomisation step ``step`` > 0 its map after that step; the plain image where there is
        no map). The table and the curves are not part of the picture."""
        from .. import export

        self.wait()
        with self._jobs.lock:
            picture = wire.decode(self._canvas._images)[self.image]
            values = self._shown_values()
        return export.compose([[export.overlay_pixels(
            picture, values, sign=self.sign, colormap_name=self.colormap,
            clip_percentile=float(self.clip_percentile), opacity=float(self.opacity))]])

    def _export_record(self) -> dict[str, Any]:
        """Methods (a callable as its qualified name), their options and the metric settings, the class
        explained on each image, and the SHA-256 of the whole input batch and of each image."""
        from .. import export

        methods = {m: spec if isinstance(spec, str) else f"{getattr(spec, '__module__', '?')}."
                   f"{getattr(spec, '__qualname__', type(spec).__name__)}" for m, spec in self._specs.items()}
        return {
            **export.model_fields(self._model), **export.image_fields(self._inputs),
            "image_hashes": [export.image_fields(self._inputs[i:i + 1])["image_sha256"] for i in range(len(self._inputs))],
            "layer": self._layer, "method": self.method, "methods": methods,
            "options": {"methods": {m: self._options.get(m, {}) for m in self._names if isinstance(self._specs[m], str)},
                        "baseline": self._baseline, "steps": self._steps, "sample": self._sample, "seed": self._seed,
                        "randomize": self._randomize, "threshold": RANDOMIZATION_THRESHOLD},
            "target": self._targets[self.image], "targets": list(self._targets),
            "target_labels": [self._labels[c] for c in self._targets],
            "image": self.image, "step": self.step,
            "display": {k: getattr(self, k) for k in ("sign", "colormap", "opacity", "clip_percentile")},
        }

    def _export_html(self) -> list[dict[str, Any]]:
        """The canvas view with every map and cascade in the file (its selects, slider, table and display
        controls work offline), and the deletion and insertion curves of the shown image as inline SVG."""
        from .. import export

        self.wait()
        with self._jobs.lock:
            replies = [({"type": kind, "method": m, **split_buffers(enc)[0]}, split_buffers(enc)[1])
                       for kind, store in (("maps", self._encoded), ("cascade", self._cascade_encoded))
                       for m, enc in store.items()]
            found = self._curves.get(self.image, {})
            charts = []
            for k, (_, title, label) in enumerate(CHARTS):
                series = [{"name": m, "color": PALETTE[j % len(PALETTE)], "x": pair[k].fractions.tolist(),
                           "y": pair[k].scores.tolist(), "auc": pair[k].auc, "selected": m == self.method}
                          for j, m in enumerate(self._names) if (pair := found.get(m)) is not None]
                charts.append(export.curves_part(f"{title} · image {self.image}", label, series))
        return [export.widget_part(self._canvas, replies={"fetch": replies}), *charts]


# -- argument checks ----------------------------------------------------------------------------------


def _method_specs(methods: Any) -> dict[str, MethodSpec]:
    """``{display name: METHODS name or callable}`` from a list of names or a dict."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        specs = {}
        for name, spec in methods.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"methods: names must be non-empty strings, got {name!r}")
            if isinstance(spec, str):
                check_method(spec)
            elif not callable(spec):
                raise TypeError(f"methods[{name!r}] must be a METHODS name or a callable (model, image) -> map, "
                                f"got {type(spec).__name__}")
            specs[name] = spec
    elif isinstance(methods, Sequence):
        specs = {}
        for name in methods:
            check_method(name)
            if name in specs:
                raise ValueError(f"method {name!r} is given twice; list each method once")
            specs[name] = name
    else:
        raise TypeError(f"methods must be a list of METHODS names or a dict, got {type(methods).__name__}")
    if not specs:
        raise ValueError(f"methods is empty; pass one or more of: {', '.join(METHODS)}")
    return specs


def _method_options(options: Any, specs: Mapping[str, MethodSpec]) -> dict[str, dict[str, Any]]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict {{method: {{option: value}}}}, got {type(options).__name__}")
    out = {}
    for key, value in options.items():
        if not isinstance(specs.get(key), str):
            raise ValueError(f"options given for {key!r}, which is not a METHODS method of this table")
        if not isinstance(value, Mapping):
            raise TypeError(f"options[{key!r}] must be a dict of option values, got {type(value).__name__}")
        out[key] = dict(value)
    return out


def _check_masks(masks: Any, n: int, size: tuple[int, int]) -> torch.Tensor | None:
    if masks is None:
        return None
    if not isinstance(masks, (torch.Tensor, np.ndarray)):
        raise TypeError(f"masks must be an N×H×W tensor or array of booleans, got {type(masks).__name__}")
    region = torch.as_tensor(masks).detach().cpu()
    if tuple(region.shape) != (n, *size):
        raise ValueError(f"masks must have shape {(n, *size)} (one H×W mask per image), got {tuple(region.shape)}")
    if region.dtype != torch.bool:
        if region.is_complex() or not bool(((region == 0) | (region == 1)).all()):
            raise ValueError("masks must be boolean (or 0/1): True on the object")
        region = region != 0
    return region
