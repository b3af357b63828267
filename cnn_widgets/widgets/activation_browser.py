"""ActivationBrowser: every layer's output for one image, a layer slider and a channel overlay.

All layers are captured in one forward pass and encoded once with :mod:`cnn_widgets.wire` (uint8 per
channel). When the encoded total fits ``budget_mb`` every layer is in the ``_data`` trait and the slider
never needs the kernel; beyond it the browser asks for layers with custom messages
(``{"type": "fetch", "layers": [...], "version": v}``), one reply per layer
(``{"type": "layer", "name": ..., "version": v, **wire header}`` + the data buffer), prefetching the
neighbours of the layer on screen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import anywidget
import torch
import traitlets as t
from torch import nn

from .. import wire
from .._checks import check_model, unknown_name_error
from ..capture import capture_activations
from ..images import Image, Stats, prepare
from ._common import (
    WidgetValueError, bundle, check_colormap, check_index, check_name, check_opacity, split_buffers,
)

from ._common import ACTIVATION_SCALES as SCALES  # one list with the browser
SORTS = ("index", "mean", "max")
MB = 1024 * 1024


def display_tensor(activation: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """Batch item 0 of an activation as ``(tiles × rows × cols, kind)``, or ``None`` if it cannot be shown.

    (C,H,W) maps are C tiles ("grid"); a (F,) vector is F one-cell tiles ("vector"); (C,L) sequences
    are C tiles of one row; higher ranks fold the middle dimensions into the rows. Empty and complex
    tensors have nothing to show.
    """
    a = activation[0] if activation.ndim >= 1 and activation.shape[0] == 1 else activation
    if a.numel() == 0 or a.is_complex():
        return None
    a = a.float()
    if a.ndim <= 1:
        return a.reshape(-1, 1, 1), "vector"
    if a.ndim == 2:
        return a.unsqueeze(1), "grid"
    if a.ndim == 3:
        return a, "grid"
    return a.reshape(a.shape[0], -1, a.shape[-1]), "grid"


def _encode(x: torch.Tensor, kind: str) -> dict[str, Any]:
    # A vector is quantised as one slice (one scale/offset for all F values): per-feature slices
    # would put four floats of JSON beside every byte of data.
    return wire.encode(x.reshape(1, -1) if kind == "vector" else x)


def _header_bytes(encoded: dict[str, Any]) -> int:
    header, _ = split_buffers(encoded)
    return len(json.dumps(header))


class ActivationBrowser(anywidget.AnyWidget):
    """Browse the activations of every layer of ``model`` for one ``image``.

    ``layers=None`` shows every leaf module with a tensor output, in execution order. ``mean``/``std``
    normalise the image for the model (the display shows it unnormalised). Traits: ``layer``,
    ``channel`` (-1 none; set by clicking a tile), ``scale`` ("channel" | "layer" | "global" colour
    range), ``sort`` ("index" | "mean" | "max" tile order), ``colormap``, ``opacity`` of the overlay,
    and ``budget_mb``: above it layers are fetched lazily instead of all being sent at once.
    """

    _esm = bundle("activation_browser")

    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channel = t.Int(-1).tag(sync=True)
    scale = t.Enum(SCALES, default_value="channel").tag(sync=True)
    sort = t.Enum(SORTS, default_value="index").tag(sync=True)
    colormap = t.Unicode("viridis").tag(sync=True)
    opacity = t.Float(0.6).tag(sync=True)
    budget_mb = t.Float(32.0).tag(sync=True)
    _meta = t.Dict().tag(sync=True)
    _data = t.Dict().tag(sync=True)
    _mode = t.Enum(("eager", "lazy"), default_value="eager").tag(sync=True)
    _image = t.Dict().tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        image: Image,
        layers: Iterable[str] | None = None,
        mean: Stats = None,
        std: Stats = None,
        *,
        layer: str | None = None,
        scale: str = "channel",
        sort: str = "index",
        colormap: str = "viridis",
        opacity: float = 0.6,
        budget_mb: float = 32.0,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model)
        self._wanted = None if layers is None else ([layers] if isinstance(layers, str) else list(layers))
        self._encoded: dict[str, dict[str, Any]] = {}
        self._version = 0
        super().__init__(**kwargs)
        self.on_msg(self._on_custom_msg)
        with self.hold_sync():
            self.scale = scale
            self.sort = sort
            self.colormap = colormap
            self.opacity = opacity
            self.budget_mb = budget_mb
            self.set_image(image, mean, std, layer=layer)

    def set_image(self, image: Image, mean: Stats = None, std: Stats = None, *, layer: str | None = None) -> None:
        """Show another image (one new forward pass; the browser drops the layers it had). The current
        layer stays unless ``layer`` names another."""
        batch, display = prepare(image, mean, std, model=self._model, single=True)
        try:
            acts = capture_activations(self._model, batch, self._wanted)
        except RuntimeError as err:
            raise ValueError(
                f"the model failed on an input of shape {tuple(batch.shape)}: {err}; check the image size "
                "and channels the model expects (and mean/std)"
            ) from err
        encoded: dict[str, dict[str, Any]] = {}
        meta = []
        for name, act in acts.items():
            shown = display_tensor(act)
            if shown is None:
                continue
            x, kind = shown
            enc = _encode(x, kind)
            encoded[name] = enc
            meta.append({
                "name": name,
                "kind": kind,
                "shape": list(x.shape),
                "source_shape": list(act.shape[1:] if act.ndim and act.shape[0] == 1 else act.shape),
                "min": min(enc["min"]),
                "max": max(enc["max"]),
                "nbytes": wire.nbytes(enc) + _header_bytes(enc),
            })
        if not encoded:
            raise ValueError(
                f"none of the {len(acts)} captured layers produced a non-empty real tensor to show; "
                "pass layers=[...] naming modules whose output is a tensor"
            )
        self._encoded = encoded
        self._version += 1
        names = list(encoded)
        with self.hold_sync():
            self.set_trait("layers", names)
            self._image = wire.encode(torch.from_numpy(display), exact=True)
            self._meta = {
                "version": self._version,
                "layers": meta,
                "global": [min(m["min"] for m in meta), max(m["max"] for m in meta)],
            }
            self._apply_budget()
            self.channel = -1
            keep = self.layer if self.layer in encoded else names[0]
            self.layer = keep if layer is None else layer

    def total_bytes(self) -> int:
        """Encoded size of every layer (payload plus JSON header), the number ``budget_mb`` caps."""
        return sum(m["nbytes"] for m in self._meta.get("layers", ()))

    def _apply_budget(self) -> None:
        eager = self.total_bytes() <= self.budget_mb * MB
        with self.hold_sync():
            self._mode = "eager" if eager else "lazy"
            self._data = dict(self._encoded) if eager else {}

    @t.observe("budget_mb")
    def _budget_changed(self, change: t.Bunch) -> None:
        if self._encoded:
            self._apply_budget()

    @t.validate("budget_mb")
    def _check_budget(self, proposal: t.Bunch) -> float:
        value = proposal["value"]
        if not value > 0:
            raise WidgetValueError(f"budget_mb must be a positive number of megabytes, got {value!r}")
        return value

    @t.validate("opacity")
    def _check_opacity(self, proposal: t.Bunch) -> float:
        return check_opacity(proposal["value"])

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str:
        return check_name("layer", proposal["value"], self._encoded)

    @t.observe("layer")
    def _layer_changed(self, change: t.Bunch) -> None:
        if self.channel >= self._tiles(self.layer):
            self.channel = -1

    @t.validate("channel")
    def _check_channel(self, proposal: t.Bunch) -> int:
        count = self._tiles(self.layer)
        return check_index("channel", proposal["value"], count, f"layer {self.layer!r} has {count} channels")

    @t.validate("colormap")
    def _check_colormap(self, proposal: t.Bunch) -> str:
        return check_colormap(proposal["value"])

    def _tiles(self, name: str) -> int:
        for m in self._meta.get("layers", ()):
            if m["name"] == name:
                return int(m["shape"][0])
        return 0

    def _on_custom_msg(self, widget: Any, content: dict[str, Any], buffers: Sequence[Any]) -> None:
        """Answer a browser fetch: one message per known layer, with its wire data as the buffer."""
        if not isinstance(content, dict) or content.get("type") != "fetch":
            return
        if content.get("version") != self._version:
            return  # asked before set_image(); the browser has reset since
        names = [n for n in content.get("layers", ()) if isinstance(n, str)]
        unknown = [n for n in names if n not in self._encoded]
        if unknown:
            self.send({
                "type": "error",
                "version": self._version,
                "layers": unknown,
                "message": str(unknown_name_error("layer", unknown[0], self.layers)),
            })
        for name in names:
            if name in self._encoded:
                header, bufs = split_buffers(self._encoded[name])
                self.send({"type": "layer", "name": name, "version": self._version, **header}, bufs)
