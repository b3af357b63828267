"""compare(): a grid of attribution heatmaps, methods (rows) × images (columns), with a colour scale
shared by every panel, one per method, or one per panel — switchable in the browser (captum#1103 asked
for exactly this).

Every map is computed once, in the kernel, when :func:`compare` is called (each method on all images in
one batch). All maps travel together as one stacked float16 tensor (:mod:`cnn_widgets.wire`), each panel
divided by its peak magnitude so small gradients keep their precision; scale, opacity, colormap, sign
and clipping are then applied in the browser (``js/src/widgets/compare.js``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets as t
from torch import nn

from .. import wire
from .._checks import check_layer_names, check_model, unknown_name_error
from ..attribution import METHODS, Attribution, attribute
from ..images import Image, Stats, prepare
from ._common import HeatmapDisplay, bundle, check_choice
from ..capture import model_lock
from .attribution_view import check_labels, class_probabilities, error_text

from ._common import COMPARE_SCALES as SCALES  # one list with the browser


class Compare(HeatmapDisplay, anywidget.AnyWidget):
    """The widget :func:`compare` returns. ``scale``: "shared" (one colour range for every panel),
    "per-method" (one per row; methods differ in units, so this is the fair way to compare images
    under each method) or "per-panel". ``opacity``, ``colormap``, ``sign`` and ``clip_percentile`` as
    in :class:`~cnn_widgets.AttributionView`. Read-only: ``methods``, ``targets`` (class index per image),
    ``errors`` (per method, "" when it worked), ``row_labels``, ``column_labels``; :attr:`results` holds
    the attributions."""

    _esm = bundle("compare")

    scale = t.Unicode("shared").tag(sync=True, echo_update=False)
    opacity = t.Float(0.5).tag(sync=True, echo_update=False)
    colormap = t.Unicode("inferno").tag(sync=True, echo_update=False)
    sign = t.Unicode("positive").tag(sync=True, echo_update=False)
    clip_percentile = t.Float(99.0).tag(sync=True, echo_update=False)
    methods = t.List(t.Unicode(), read_only=True).tag(sync=True)
    targets = t.List(t.Int(), read_only=True).tag(sync=True)
    errors = t.List(t.Unicode(), read_only=True).tag(sync=True)
    row_labels = t.List(t.Unicode(), read_only=True).tag(sync=True)
    column_labels = t.List(t.Unicode(), read_only=True).tag(sync=True)
    _maps = t.Dict().tag(sync=True)
    _peaks = t.List().tag(sync=True)
    _images = t.Dict().tag(sync=True)

    def __init__(self, results: Sequence[Attribution | None], **kwargs: Any) -> None:
        self._results = list(results)
        super().__init__(**kwargs)

    @property
    def results(self) -> list[Attribution | None]:
        """One :class:`~cnn_widgets.Attribution` per method (batch maps N×H×W), ``None`` where it failed."""
        return list(self._results)

    @t.validate("scale")
    def _check_scale(self, proposal: t.Bunch) -> str:
        return check_choice("scale", proposal["value"], SCALES)


def _image_list(images: Any) -> list[Image]:
    """A list of images from a list/tuple, a 4-D tensor or array (a batch), or one image."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is empty; pass at least one image")
        return list(images)
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch; pass at least one image")
        return [images[i] for i in range(images.shape[0])]
    return [images]


def _method_list(methods: str | Sequence[str]) -> list[str]:
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError(f"methods is empty; pass one or more of: {', '.join(METHODS)}")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"methods must be names (str) from cnn_widgets.METHODS, got {name!r}")
        if name not in METHODS:
            err = unknown_name_error("method", name, METHODS)
            raise ValueError(f"{err}; available methods: {', '.join(METHODS)}")
    return names


def _target_list(targets: int | Sequence[int] | None, top: list[int], classes: int) -> list[int]:
    n = len(top)
    if targets is None:
        return list(top)
    given = [targets] * n if isinstance(targets, (int, np.integer)) else list(targets)
    if len(given) != n:
        raise ValueError(f"got {len(given)} targets for {n} images; pass one per image, one int, or None")
    out = []
    for value in given:
        if value is None:
            out.append(top[len(out)])
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"targets must be class indices (int) or None, got {value!r}")
        if not 0 <= value < classes:
            raise ValueError(
                f"target {value} is out of range: the model has {classes} classes (0‥{classes - 1}); "
                "pass a valid class index, or None for the top prediction"
            )
        out.append(int(value))
    return out


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
    scale: str = "shared",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    opacity: float = 0.5,
    colormap: str = "inferno",
    sign: str = "positive",
    clip_percentile: float = 99.0,
) -> Compare:
    """Attribute every image with every method and show them as a grid, methods × images.

    ``images``: a list of images (any form :mod:`cnn_widgets.images` accepts, all of one size) or a
    4-D batch. ``targets``: one class for all, one per image (``None`` entries: that image's top
    prediction), or ``None``. ``layer`` is used by the methods that need one. ``options``: per method,
    e.g. ``{"occlusion": {"strides": 4}}``. A method that fails shows its message in its row; bad
    arguments raise ``ValueError``/``TypeError`` before anything is computed.
    """
    check_model(model)
    names = _method_list(methods)
    pictures = _image_list(images)
    options = dict(options or {})
    for key, value in options.items():
        if key not in names:
            raise ValueError(f"options given for {key!r}, which is not among the methods {names}")
        if not isinstance(value, Mapping):
            raise TypeError(f"options[{key!r}] must be a dict of option values, got {type(value).__name__}")
    if layer is not None:
        check_layer_names(model, [layer])
    prepared = [prepare(img, mean, std, model=model, single=True) for img in pictures]
    sizes = {tuple(b.shape[-2:]) for b, _ in prepared}
    if len(sizes) > 1:
        raise ValueError(
            f"compare needs images of one size, got {sorted(sizes)} (H, W); resize or crop them to a common "
            "size first"
        )
    batch = torch.cat([b for b, _ in prepared])
    display = np.stack([d for _, d in prepared])
    probs, _ = class_probabilities(model, batch)
    classes = probs.shape[1]
    names_of_classes = check_labels(labels, classes)
    top = [int(i) for i in probs.argmax(dim=1).tolist()]
    chosen = _target_list(targets, top, classes)

    n, (h, w) = batch.shape[0], batch.shape[-2:]
    maps = torch.zeros(len(names), n, h, w)
    results: list[Attribution | None] = []
    errors: list[str] = []
    rows: list[str] = []
    for m, method in enumerate(names):
        try:
            with model_lock(model):
                res = attribute(model, batch, method, chosen, layer, options=options.get(method, {}))
        except Exception as err:  # one failing method must not hide the others: its row says why
            results.append(None)
            errors.append(f"{method} failed: {error_text(err)}")
            rows.append(method)
            continue
        results.append(res)
        errors.append("")
        maps[m] = res.map
        rows.append(f"{method} · {res.layer}" if res.layer else method)
    peaks = maps.abs().amax(dim=(2, 3))
    safe = torch.where(peaks > 0, peaks, torch.ones_like(peaks))
    columns = []
    for i, c in enumerate(chosen):
        text = f"image {i} · {names_of_classes[c]} {float(probs[i, c]):.0%}"
        if c != top[i]:
            text += f" (top: {names_of_classes[top[i]]})"
        columns.append(text)

    widget = Compare(results)
    widget.set_trait("methods", names)
    widget.set_trait("targets", chosen)
    widget.set_trait("errors", errors)
    widget.set_trait("row_labels", rows)
    widget.set_trait("column_labels", columns)
    with widget.hold_sync():
        widget._images = wire.encode(torch.from_numpy(display), exact=True)
        widget._peaks = peaks.tolist()
        widget._maps = wire.encode(maps / safe[:, :, None, None], "float16")
        widget.scale = scale
        widget.opacity = opacity
        widget.colormap = colormap
        widget.sign = sign
        widget.clip_percentile = clip_percentile
    return widget
