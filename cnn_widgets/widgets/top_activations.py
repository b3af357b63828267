"""TopActivations: what one channel responds to, from the data set — per channel the k dataset images that
excite it most (a :func:`cnn_widgets.scan`), each cropped to the receptive field around its arg-max
(:func:`cnn_widgets.dataset.receptive.receptive_field`, from the layer's real strides, paddings and
dilations; the part of the field outside the image drawn as padding), with the channel's activation
upsampled over the patch as a heatmap, and the channel's filter beside them when the layer is a conv.

One layer's patches for every channel travel at once (uint8 images and heat maps through
:mod:`cnn_widgets.wire`, sized to a budget), so moving the channel slider or re-sorting costs no kernel round
trip. A missing scan, a scan of another layer and importance (for sorting) are computed in the widget's job
engine (:mod:`cnn_widgets.widgets.jobs`): a worker thread, with progress and a cancel button.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import anywidget
import numpy as np
import torch
import torch.nn.functional as F
import traitlets as t
from torch import nn

from .. import wire
from .._checks import call_forward, check_layer_names, check_model, model_input
from ..capture import ActivationCapture, model_session
from ..dataset import Importance, ScanResult, channel_importance
from ..dataset import scan as run_scan
from ..dataset.receptive import ReceptiveField, receptive_field
from ..dataset.scan import positive_int
from ..dataset.source import Source, rereadable
from ..images import Stats, to_batch
from ..layers import conv_layers
from ._common import CheckedEnum, CheckedInt, CheckedUnicode, WidgetValueError, bundle, check_index, check_name
from .jobs import Jobs, JobView, Progress
from .panel import Panel

SORTS: tuple[str, ...] = ("channel", "mean", "importance")
PATCH_BUDGET = 6 * 1024 * 1024  # bytes of patches + heat maps per layer sent to the browser
PATCH_MAX, PATCH_MIN = 64, 16  # patch side in pixels, before and after the budget


# ------------------------------------------------------------------------------------ data access
def dataset_images(
    data: Any, indices: Sequence[int], model: nn.Module, mean: Stats = None, std: Stats = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``indices`` of ``data`` (dataset indices as :func:`cnn_widgets.scan` numbers them):
    ``(model input, pixels)``, both (N, C, H, W) float32; pixels unnormalised in 0‥1. Indexable data is
    indexed; other data is read once from the start."""
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError("no images asked for")
    source = Source(data)
    found: dict[int, torch.Tensor] = {}
    try:
        for i in dict.fromkeys(wanted):
            (image, _), *_ = list(Source(source.view(i, i + 1)).items(0, 1)) or [(None, None)]
            if image is None:
                raise IndexError(i)
            found[i] = to_batch(image, model=model)[:1]
    except TypeError:  # data that cannot be indexed: one pass, keeping the wanted images
        todo = set(wanted)
        seen = 0
        for image, _ in source.items(0, 64):
            pixels = to_batch(image, model=model)
            for j in range(len(pixels)):
                if seen + j in todo:
                    found[seen + j] = pixels[j : j + 1]
            seen += len(pixels)
            if todo <= found.keys():
                break
    except IndexError as err:
        raise ValueError(f"data has no image {err.args[0] if err.args else ''}: it changed since the scan") from None
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ValueError(f"data has no image {missing[0]} (it holds fewer images than the scan saw)")
    pixels = torch.cat([found[i] for i in wanted])
    x = to_batch(pixels, mean, std, model=model)
    lo, hi = pixels.amin(dim=(1, 2, 3), keepdim=True), pixels.amax(dim=(1, 2, 3), keepdim=True)
    outside = (lo < 0) | (hi > 1)  # not 0‥1 pixels (e.g. normalised data): each image stretched to 0‥1
    stretched = (pixels - lo) / (hi - lo).clamp_min(1e-12)
    return x, torch.where(outside, stretched, pixels)


def counted(data: Any, batch_size: int, progress: Progress) -> Any:
    """``data`` as an iterable of ``(images, labels)`` chunks that reports the fraction read to
    ``progress`` (which raises :class:`~cnn_widgets.Cancelled` to stop a job) before each chunk."""
    source = Source(data)
    total = source.total

    def chunks() -> Any:
        done = 0
        for image, label in source.items(0, batch_size):
            progress(done / total if total else 0.0)
            yield (image, label) if label is not None else image
            done += int(image.shape[0]) if getattr(image, "ndim", 0) == 4 else 1
        progress(1.0)

    return chunks()


def scan_layer(
    model: nn.Module, data: Any, layer: str, k: int, mean: Stats, std: Stats, batch_size: int, progress: Progress
) -> ScanResult:
    """:func:`cnn_widgets.scan` of one layer, with progress and cancel for the job engine."""
    return run_scan(model, counted(data, batch_size, progress), layer, k=k, mean=mean, std=std,
                    batch_size=batch_size, progress=False)


# --------------------------------------------------------------------------------------- patches
def patch_side(channels: int, k: int, window: int) -> int:
    """Patch side in pixels: the window's size, at most :data:`PATCH_MAX`, smaller if the layer's
    patches (3 bytes of image + 1 of heat per pixel) would pass :data:`PATCH_BUDGET`."""
    fit = int(math.sqrt(PATCH_BUDGET / max(channels * k * 4, 1)))
    return max(PATCH_MIN, min(PATCH_MAX, window, fit))


def crop_patch(picture: torch.Tensor, rf: ReceptiveField, y: int, x: int, side: int) -> tuple[torch.Tensor, list[int]]:
    """The window of output position (y, x) cut from ``picture`` (C, H, W), zero outside the part
    of the image that influences it, resized to side×side; and that part's box in patch pixels
    ``[top, left, bottom, right]`` (the rest is padding). Only that part of the image is resized into
    its box, so however far the window reaches past the image, nothing larger than the image and the
    patch is allocated."""
    crop = rf.crop(y, x)
    top, bottom, left, right = crop.inside
    sy, sx = side / crop.height, side / crop.width
    box = [round((top - crop.top) * sy), round((left - crop.left) * sx), round((bottom - crop.top) * sy),
           round((right - crop.left) * sx)]
    out = picture.new_zeros(picture.shape[0], side, side)
    h, w = box[2] - box[0], box[3] - box[1]
    if bottom > top and right > left and h > 0 and w > 0:
        part = picture[None, :, top:bottom, left:right]
        mode = "area" if part.shape[2] >= h and part.shape[3] >= w else "nearest"
        out[:, box[0] : box[2], box[1] : box[3]] = F.interpolate(part, size=(h, w), mode=mode)[0]
    return out, box


class _Layer:
    """What is known of one layer: its scan and its channel importance (each ``None`` until computed)."""

    def __init__(self, scan: ScanResult | None, importance: Importance | None = None) -> None:
        self.scan = scan
        self.importance = importance


class TopActivations(Panel, JobView, anywidget.AnyWidget):
    """Per channel of ``layer``, the ``k`` dataset images that excite it most, cropped to the receptive
    field around the arg-max, with the activation as a heatmap over each patch.

    ``scan``: a :class:`~cnn_widgets.ScanResult` covering ``layer`` (its top-k tables are used; ``k``
    at most its k); ``None`` computes one in the background. ``data``, ``mean``, ``std`` as in
    :func:`cnn_widgets.scan` (the same data the scan read). ``importance``: an
    :class:`~cnn_widgets.Importance` of the layer, for ``sort="importance"`` (else computed on demand).

    Traits: ``layer`` (another layer of the scan, or any layer with a map: scanned on demand),
    ``channel`` (-1: none), ``sort`` ("channel", "mean": channel mean descending, "importance":
    permutation importance descending), read-only ``progress``, ``busy``, ``error``, ``status``;
    :meth:`cancel` stops the scan or importance in progress, :meth:`wait` waits for it. ``layer`` and
    ``channel`` link to ActivationBrowser's (``ipywidgets.link``).
    """

    _esm = bundle("top_activations")

    layer = CheckedUnicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channel = CheckedInt(0).tag(sync=True)
    sort = CheckedEnum(SORTS, default_value="channel").tag(sync=True)
    progress = t.Float(0.0, read_only=True).tag(sync=True)
    busy = t.Bool(False, read_only=True).tag(sync=True)
    error = t.Unicode("", read_only=True).tag(sync=True)
    status = t.Unicode("", read_only=True).tag(sync=True)
    _patches = t.Dict().tag(sync=True)
    _filters = t.Dict().tag(sync=True)
    _importance = t.List(allow_none=True, default_value=None).tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        layer: str,
        scan: ScanResult | None = None,
        k: int = 8,
        mean: Stats = None,
        std: Stats = None,
        *,
        importance: Importance | None = None,
        channel: int = 0,
        sort: str = "channel",
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model, hooks=True)
        self._data, self._mean, self._std = data, mean, std
        # refuses what a scan cannot read, now rather than in the background
        rereadable(data, "TopActivations", "the scan, then the top images; each layer")
        self._k = positive_int("k", k)
        self._batch_size = positive_int("batch_size", batch_size)
        if scan is not None and not isinstance(scan, ScanResult):
            raise TypeError(f"scan must be a ScanResult (cnn_widgets.scan(...)) or None, got {type(scan).__name__}")
        if importance is not None and not isinstance(importance, Importance):
            raise TypeError(f"importance must be an Importance (cnn_widgets.channel_importance(...)) or None, "
                            f"got {type(importance).__name__}")
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name (str) from model.named_modules(), got {type(layer).__name__}")
        check_layer_names(model, [layer])
        if scan is not None and layer not in scan.layers:
            raise ValueError(f"the scan does not cover layer {layer!r} (it covers {', '.join(map(repr, scan.layers))}); "
                             "pass scan=None to scan it here, or one of those layers")
        channels = _known_channels(model, layer, scan)
        if channels is not None:  # else checked when the scan is done (see _show)
            check_index("channel", channel, channels, f"{layer!r} has {channels} channels")
        self._layers: dict[str, _Layer] = {}
        if scan is not None:
            for name in scan.layers:
                self._layers[name] = _Layer(scan)
        if importance is not None:
            if importance.layer not in self._layers and importance.layer != layer:
                raise ValueError(f"importance is of layer {importance.layer!r}, not of {layer!r}")
            self._layers.setdefault(importance.layer, _Layer(None))
            self._layers[importance.layer].importance = importance
        self._jobs = Jobs("cnn_widgets-top-activations", cache_size=0)
        self._quiet = True
        self._known = set(dict(model.named_modules()))
        super().__init__(**kwargs)
        choices = list(scan.layers) if scan is not None else []
        choices += [n for n in conv_layers(model) if n not in choices]
        if layer not in choices:
            choices.insert(0, layer)
        self.set_trait("layers", choices)
        with self.hold_sync():
            self.layer = layer
            self.sort = sort
        self._quiet = False
        self.on_msg(self._on_msg)
        self._load(initial_channel=channel)

    # -- validation -------------------------------------------------------------------------------

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str:
        return check_name("layer", proposal["value"], self._known)

    @t.validate("channel")
    def _check_channel(self, proposal: t.Bunch) -> int:
        channels = int(self._patches.get("channels", 0)) if self._patches.get("layer") == self.layer else None
        value = proposal["value"]
        if channels is None:  # the layer's numbers are on their way: any index ≥ -1 for now
            if isinstance(value, bool) or value < -1:
                raise WidgetValueError(f"channel must be an int ≥ -1 (-1 for none), got {value!r}")
            return value
        return check_index("channel", value, channels, f"{self.layer!r} has {channels} channels")

    # -- requests ---------------------------------------------------------------------------------

    @t.observe("layer")
    def _layer_changed(self, change: t.Bunch) -> None:
        if not self._quiet:
            self._load()

    @t.observe("sort")
    def _sort_changed(self, change: t.Bunch) -> None:
        if change["new"] == "importance" and not self._quiet:
            self._need_importance()

    def _load(self, initial_channel: int | None = None) -> None:
        """Show the current layer: at once if scanned, else after a scan in the background."""
        layer = self.layer
        entry = self._layers.get(layer)
        if entry is not None and entry.scan is not None:
            scanned = entry.scan
            self._start("preparing patches", lambda p: self._prepare(layer, scanned, p),
                        partial(self._show, layer, initial_channel))
        else:
            def work(p: Progress) -> tuple[ScanResult, dict[str, Any]]:
                found = scan_layer(self._model, self._data, layer, self._k, self._mean, self._std, self._batch_size,
                                   lambda f: p(0.8 * f))
                return self._prepare(layer, found, lambda f: p(0.8 + 0.2 * f))

            self._start(f"scanning {layer}", work, partial(self._show, layer, initial_channel))
        if self.sort == "importance":
            self._need_importance()

    def _need_importance(self) -> None:
        layer = self.layer
        entry = self._layers.get(layer)
        if entry is not None and entry.importance is not None:
            self._importance = [float(v) for v in entry.importance.permutation]
            return
        self._start(f"channel importance of {layer}", lambda p: channel_importance(
            self._model, counted(self._data, self._batch_size, p), layer, metric="loss", mean=self._mean,
            std=self._std, batch_size=self._batch_size, progress=False,
        ), partial(self._importance_done, layer), replace=False)

    def _importance_done(self, layer: str, importance: Importance) -> None:
        self._layers.setdefault(layer, _Layer(None))
        self._layers[layer].importance = importance
        if layer == self.layer:
            self._importance = [float(v) for v in importance.permutation]

    def _rerun(self) -> None:
        self._load()

    # -- the work (worker thread) -----------------------------------------------------------------

    def _prepare(self, layer: str, scan: ScanResult, progress: Progress) -> tuple[ScanResult, dict[str, Any]]:
        """The browser payload of ``layer``: per channel its top images' patches and heat maps. The top
        images are read and run through the model ``batch_size`` at a time, and of each only the maps of
        the channels it tops are upsampled, so memory stays bounded by the patches themselves."""
        indices = scan.top_indices[layer][:, : self._k]
        positions = scan.top_positions[layer][:, : self._k]
        values = scan.top_values[layer][:, : self._k]
        channels, k = indices.shape
        unique, inverse = np.unique(indices, return_inverse=True)
        slots: dict[int, list[tuple[int, int]]] = {}
        for (c, j), u in np.ndenumerate(inverse.reshape(channels, k)):
            slots.setdefault(int(u), []).append((c, j))
        fields: dict[tuple[int, ...], ReceptiveField] = {}
        side = 0
        images = heat = None
        boxes = [[[0, 0, 0, 0]] * k for _ in range(channels)]
        for start in range(0, len(unique), self._batch_size):
            progress(start / len(unique))
            x, pixels = dataset_images(self._data, unique[start : start + self._batch_size].tolist(), self._model,
                                       self._mean, self._std)
            maps = self._maps(layer, x)
            if maps.ndim != 4:
                raise ValueError(f"layer {layer!r} outputs shape {tuple(maps.shape)}: top patches need a "
                                 "(N, C, H, W) map")
            size = tuple(pixels.shape[1:])
            if size not in fields:
                fields[size] = receptive_field(self._model, layer, size)
            rf = fields[size]
            if rf.channels_last:
                raise ValueError(f"layer {layer!r} outputs its map channels-last, (N, H, W, C) (inside a permute → "
                                 "… → permute block, as in ConvNeXt): top patches need an (N, C, H, W) map; pick "
                                 "a convolution before it or the block it belongs to")
            if images is None:
                side = patch_side(channels, k, max(rf.size))
                images = torch.zeros(channels, k, side, side, 3, dtype=torch.uint8)
                heat = torch.zeros(channels, k, side, side)
            for b in range(len(x)):
                picture = pixels[b, :3] if pixels.shape[1] >= 3 else pixels[b, :1].expand(3, -1, -1)
                for c, j in slots[start + b]:
                    y, xx = (int(v) for v in positions[c, j])
                    patch, boxes[c][j] = crop_patch(picture, rf, y, xx, side)
                    up = F.interpolate(maps[b, c][None, None], size=size[1:], mode="bilinear", align_corners=False)[0]
                    images[c, j] = patch.permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8)
                    heat[c, j] = crop_patch(up, rf, y, xx, side)[0][0]  # type: ignore[index]
        assert images is not None and heat is not None
        first = next(iter(fields.values()))
        payload = {
            "layer": layer, "channels": channels, "k": k, "side": side,
            "images": wire.encode(images, exact=True),
            "heat": wire.encode(heat.reshape(channels, -1)),  # per channel one colour range
            "boxes": boxes, "indices": indices.tolist(), "values": [[_finite(v) for v in row] for row in values],
            "positions": positions.tolist(),
            "means": [_finite(v) for v in scan.channel_mean[layer]],
            "field": {"size": list(first.size), "stride": list(first.stride), "exact": first.exact,
                      "notes": list(first.notes)},
        }
        return scan, payload

    def _maps(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        """The output of ``layer`` for the model inputs ``x``."""
        with model_session(self._model, eval_mode=True, hooks=True), torch.no_grad():
            with ActivationCapture(self._model, [layer]) as cap:
                call_forward(self._model, model_input(self._model, x))
            return cap.activations[layer].detach().float().cpu()

    def _show(self, layer: str, initial_channel: int | None, value: tuple[ScanResult, dict[str, Any]]) -> None:
        scan, payload = value
        entry = self._layers.setdefault(layer, _Layer(scan))
        entry.scan = scan
        if layer != self.layer:
            return
        modules = dict(self._model.named_modules())
        conv = modules.get(layer)
        with self.hold_sync():
            self._patches = payload
            if isinstance(conv, nn.Conv2d):
                self._filters = {"layer": layer, "groups": int(conv.groups), "tensor": wire.encode(conv.weight)}
            else:
                self._filters = {"layer": layer}
            channels = payload["channels"]
            if initial_channel is None:  # another layer: the channel kept if it has it
                self.channel = self.channel if -1 <= self.channel < channels else 0
            else:
                try:
                    self.channel = initial_channel
                except WidgetValueError as err:  # the channel asked for, past the scanned layer's channels
                    self.channel = -1
                    self.set_trait("error", str(err))
            imp = entry.importance
            self._importance = None if imp is None else [float(v) for v in imp.permutation]

    # -- results ----------------------------------------------------------------------------------

    @property
    def scan(self) -> ScanResult | None:
        """The scan of the current layer (``None`` until it is done)."""
        entry = self._layers.get(self.layer)
        return None if entry is None else entry.scan

    def top_images(self, channel: int | None = None) -> list[int]:
        """Dataset indices of the patches shown for ``channel`` (default: the current one), best first."""
        c = self.channel if channel is None else channel
        rows = self._patches.get("indices") if self._patches.get("layer") == self.layer else None
        if rows is None:
            raise ValueError("the layer's patches are not ready yet; call wait() first")
        return list(rows[c])

    # -- exports (Panel.to_png / save_html) ---------------------------------------------------------

    def _export_image(self) -> np.ndarray:
        """The current channel's patches with its activation over each (the heat slider at its start,
        0.5) and its filter, as the view paints them, once the work in progress is done."""
        from .. import export

        self.wait()
        return export.top_activations_image(self)

    def _export_record(self) -> dict[str, Any]:
        """Layer, channel, the dataset indices of its patches and the hash of those images as given to
        the model (read again from ``data``; the model does not run)."""
        from .. import export

        self.wait()
        p, c = self._patches, self.channel
        shown = p.get("layer") == self.layer and 0 <= c < int(p.get("channels", 0))
        indices = [int(i) for i in p["indices"][c]] if shown else []
        images = export.image_fields(dataset_images(self._data, indices, self._model, self._mean, self._std)[0]) if indices else {}
        return {**export.model_fields(self._model), **images, "layer": self.layer, "channel": c, "images": indices,
                "values": p["values"][c] if shown else [], "receptive_field": p.get("field"),
                "options": {"k": self._k, "sort": self.sort, "batch_size": self._batch_size,
                            "opacity": export.PATCH_OPACITY}}

    def _export_html(self) -> list[dict[str, Any]]:
        """The view with every channel of the layer in the file (slider and sort work offline)."""
        from .. import export

        self.wait()
        return [export.widget_part(self)]


def _known_channels(model: nn.Module, layer: str, scan: ScanResult | None) -> int | None:
    """The number of channels of ``layer``'s map when known without running the model (from the scan,
    or a convolution's ``out_channels``), else ``None``."""
    if scan is not None:
        return int(scan.top_indices[layer].shape[0])
    module = dict(model.named_modules())[layer]
    return int(module.out_channels) if isinstance(module, nn.Conv2d) else None


def _finite(v: float) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None
