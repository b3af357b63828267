"""ActivationBrowser: every layer's output for one image, a layer slider and a channel overlay.

All layers come from one forward pass and travel as :mod:`cnn_widgets.wire` uint8 tensors. Two
transports: "eager", every layer in the ``_data`` trait (the slider never needs the kernel), when the
encoded total fits ``budget_mb``; else "lazy", the browser asks for layers with custom messages
(``{"type": "fetch", "layers": [...], "version": v}``), one reply per layer
(``{"type": "layer", "name": ..., "version": v, **wire header}`` + the data buffer).

The first layer on screen comes first: up to ``SYNC_MB`` encoded everything is encoded before the widget
is returned; above it only the layer on screen and its neighbours are, the widget starts lazy, and a
background thread encodes the rest once the browser has had its first layer. If the total fits the
budget the widget then turns eager (all of ``_data`` in one update).

All of the widget's tensor work (forward pass, statistics, encoding) runs on one intra-op thread: with
torch's default of one thread per core, each of its hundreds of small ops waits for a scheduler slot
whenever another process holds a core (seconds instead of tenths on a busy machine).

By default only floating-point outputs that depend on the input are listed: in graphs converted from ONNX
or traced with ``torch.fx`` many modules compute shapes (int64) or constants. Dependence is read off
autograd: the input requires grad, no parameter does, and an output depends on the input iff it then
requires grad.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anywidget
import torch
import traitlets as t
from torch import nn

from .. import wire
from .._checks import call_forward, check_layers_arg, check_model, model_input, unknown_name_error
from ..capture import ActivationCapture, capture_activations, model_session
from ..images import Image, Stats, prepare
from ._common import (
    CheckedEnum, CheckedFloat, CheckedInt, CheckedUnicode, WidgetValueError, bundle, check_colormap,
    check_index, check_name, check_opacity, split_buffers,
)

from ._common import ACTIVATION_SCALES as SCALES  # one list with the browser
from .panel import Panel
SORTS = ("index", "mean", "max")
MB = 1024 * 1024
ALL = "all"
# Up to this many encoded MB every layer is encoded before the widget is returned (a few tenths of a
# second, and about as long on the wire); above it the rest is encoded after the first layer went out.
SYNC_MB = 10.0
# Seconds the background encoder waits for the browser's first fetch before it starts anyway.
ENCODE_DELAY = 2.0


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops of the calling thread on one intra-op thread; the previous count is restored."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def _wire_shape(x: torch.Tensor, kind: str) -> list[int]:
    # A vector is quantised as one slice (one min/max for all F values): per-feature slices would put
    # eight bytes of range beside every byte of data.
    return [1, x.numel()] if kind == "vector" else list(x.shape)


def _encode(x: torch.Tensor, kind: str) -> dict[str, Any]:
    return wire.encode(x.reshape(_wire_shape(x, kind)))


def _header_bytes(encoded: dict[str, Any]) -> int:
    header, _ = split_buffers(encoded)
    return len(json.dumps(header))


def _extent(x: torch.Tensor) -> tuple[float, float]:
    """Smallest and largest value of a float32 ``x`` as its wire message will state them (non-finite
    values are encoded as 0), without encoding it."""
    lo, hi = (v.item() for v in x.aminmax())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        finite = torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype))
        lo, hi = (v.item() for v in finite.aminmax())
    return lo, hi


def input_dependent_activations(model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Like :func:`~cnn_widgets.capture_activations` (every leaf layer) on a ready model input, keeping
    only floating-point outputs that depend on the input: one forward in eval mode with autograd recording
    the input alone (every parameter's ``requires_grad`` off for the pass, restored after); an output
    depends on the input iff it then requires grad. Shape arithmetic (int64) and constants drop out.

    A model that cannot run under autograd (e.g. it writes with ``out=``) is run once more without it,
    keeping every floating-point output: the test is lost, the activations are not."""
    with model_session(model, eval_mode=True, hooks=True):
        with ActivationCapture(model, gradients=True) as cap:
            for p in model.parameters():
                p.requires_grad_(False)
            x = batch.detach().requires_grad_(True)
            try:
                with torch.enable_grad():
                    call_forward(model, x.clone())  # a non-leaf: a model may write its input in place
            except ValueError:
                cap.outputs.clear()
                cap.grad_edges.clear()
                cap.activations.clear()
                with torch.no_grad():
                    call_forward(model, batch.clone())  # fails again, with the same clear error, on a bad input
                return {k: v for k, v in cap.activations.items() if v.is_floating_point()}
            keep = {k for k, out in cap.outputs.items() if out.is_floating_point() and out.requires_grad}
            cap.outputs.clear()  # let go of the autograd graph
            cap.grad_edges.clear()
    return {k: v for k, v in cap.activations.items() if k in keep}


class _Layers:
    """One image's layers as the browser gets them: display tensors until encoded, wire messages after.
    Encoding happens one layer at a time under a lock (the fetch handler and the background encoder never
    run two at once) on one intra-op thread; a layer's float tensor is dropped once it is encoded."""

    def __init__(self, version: int, shown: dict[str, tuple[torch.Tensor, str]]) -> None:
        self.version = version
        self.names = list(shown)
        self.raw = dict(shown)
        self.encoded: dict[str, dict[str, Any]] = {}
        # exact once encoded; before, what a finite tensor of that shape encodes to
        self.nbytes = {name: wire.encoded_nbytes(_wire_shape(x, kind)) for name, (x, kind) in shown.items()}
        self.lock = threading.Lock()
        self.served = threading.Event()  # the browser has had a layer: background encoding may start
        self.stop = threading.Event()

    def get(self, name: str) -> dict[str, Any]:
        """The wire message of layer ``name``, encoding it now if needed."""
        with self.lock:
            enc = self.encoded.get(name)
            if enc is None:
                x, kind = self.raw.pop(name)
                with one_thread():
                    enc = _encode(x, kind)
                self.encoded[name] = enc
                self.nbytes[name] = wire.nbytes(enc) + _header_bytes(enc)
            return enc

    def total(self) -> int:
        """Encoded bytes of every layer (for a layer not encoded yet, as if its values were finite)."""
        return sum(self.nbytes.values())

    def encode_rest(self, order: Sequence[str]) -> bool:
        """Background thread: after the first layer went out (or ``ENCODE_DELAY``), encode the others in
        ``order``. False if stopped first."""
        self.served.wait(ENCODE_DELAY)
        with one_thread():
            for name in order:
                if self.stop.is_set():
                    return False
                self.get(name)
        return True


class ActivationBrowser(Panel, anywidget.AnyWidget):
    """Browse the activations of every layer of ``model`` for one ``image``.

    ``layers=None`` shows, in execution order, every leaf module whose output is a floating-point tensor
    that depends on the input (shape arithmetic and constants of fx/ONNX graphs are left out);
    ``layers="all"`` every leaf module with a tensor output; a list of names exactly those modules.
    ``mean``/``std`` normalise the image for the model (the display shows it unnormalised). Traits:
    ``layer``, ``channel`` (-1 none; set by clicking a tile), ``scale`` ("channel" | "layer" | "global"
    colour range), ``sort`` ("index" | "mean" | "max" tile order), ``colormap``, ``opacity`` of the
    overlay, and ``budget_mb``: above it layers are fetched lazily instead of all being sent at once.
    """

    _esm = bundle("activation_browser")

    layer = CheckedUnicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channel = CheckedInt(-1).tag(sync=True)
    scale = CheckedEnum(SCALES, default_value="channel").tag(sync=True)
    sort = CheckedEnum(SORTS, default_value="index").tag(sync=True)
    colormap = CheckedUnicode("viridis").tag(sync=True)
    opacity = CheckedFloat(0.6).tag(sync=True)
    budget_mb = CheckedFloat(32.0).tag(sync=True)
    _meta = t.Dict().tag(sync=True)
    _data = t.Dict().tag(sync=True)
    _mode = t.Enum(("eager", "lazy"), default_value="eager").tag(sync=True)
    _image = t.Dict().tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        image: Image,
        layers: Iterable[str] | str | None = None,
        mean: Stats = None,
        std: Stats = None,
        *,
        layer: str | None = None,
        channel: int = -1,
        scale: str = "channel",
        sort: str = "index",
        colormap: str = "viridis",
        opacity: float = 0.6,
        budget_mb: float = 32.0,
        **kwargs: Any,
    ) -> None:
        self._layers = _Layers(0, {})  # first: close() (also from __del__ after a failed check) needs it
        self._budget_lock = threading.Lock()  # the kernel thread and the background encoder both apply it
        self._model = check_model(model, hooks=True)
        self._all = layers == ALL
        self._wanted = None if self._all else check_layers_arg(layers)
        self._version = 0
        self._prefetched: tuple[tuple[Any, ...], dict[str, torch.Tensor]] | None = None
        self._prefetch_lock = threading.Lock()
        super().__init__(**kwargs)
        self.on_msg(self._on_custom_msg)
        with self.hold_sync():
            self.scale = scale
            self.sort = sort
            self.colormap = colormap
            self.opacity = opacity
            self.budget_mb = budget_mb
            self.set_image(image, mean, std, layer=layer)
            self.channel = channel  # checked against the shown layer, which exists only now

    def set_image(
        self, image: Image, mean: Stats = None, std: Stats = None, *, layer: str | None = None
    ) -> None:
        """Show another image (one new forward pass; the browser drops the layers it had). The current
        layer stays unless ``layer`` names another."""
        with one_thread():
            batch, display = prepare(image, mean, std, model=self._model, single=True)
            batch = model_input(self._model, batch)
            self._input = batch  # the model's input, for the export record's image hash
            key = self._prefetch_key(batch)
            with self._prefetch_lock:
                ready, self._prefetched = self._prefetched, None
            acts = ready[1] if ready is not None and ready[0] == key else self._activations(batch)
            shown = {name: s for name, act in acts.items() if (s := display_tensor(act)) is not None}
            if not shown:
                raise ValueError(
                    f"none of the {len(acts)} captured layers produced a non-empty real tensor to show; "
                    "pass layers=[...] naming modules whose output is a tensor"
                    + ("" if self._all else ", or layers='all' for outputs that do not depend on the input")
                )
            names = list(shown)
            if layer is not None:
                check_name("layer", layer, names)
            target = layer if layer is not None else self.layer if self.layer in shown else names[0]
            self._layers.stop.set()  # the previous image's background encoder, if any
            self._version += 1
            layers = self._layers = _Layers(self._version, shown)
            i = names.index(target)
            for name in names if layers.total() <= SYNC_MB * MB else names[max(0, i - 1):i + 2]:
                layers.get(name)
            meta = []
            for name, (x, kind) in shown.items():
                lo, hi = _extent(x)
                act = acts[name]
                meta.append({
                    "name": name,
                    "kind": kind,
                    "shape": list(x.shape),
                    "source_shape": list(act.shape[1:] if act.ndim and act.shape[0] == 1 else act.shape),
                    "min": lo,
                    "max": hi,
                    "nbytes": layers.nbytes[name],
                })
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
            self.layer = target
        if layers.raw:
            at = {name: k for k, name in enumerate(names)}
            order = sorted(layers.raw, key=lambda n: abs(at[n] - i))  # outward from the shown layer
            threading.Thread(
                target=self._encode_rest, args=(layers, order), name="cnn_widgets-encode", daemon=True
            ).start()

    def prefetch(self, image: Image, mean: Stats = None, std: Stats = None) -> None:
        """Compute another image's activations now and keep them (one image), so that a later
        :meth:`set_image` with the same pixels shows them without a forward pass. Meant for a background
        job (the Explorer prefetches the next image this way); the model's lock orders it with
        ``set_image``. Kept activations are used only while the model's weights and buffers are
        unchanged since (their in-place version counters)."""
        with one_thread():
            batch, _ = prepare(image, mean, std, model=self._model, single=True)
            batch = model_input(self._model, batch)
            key = self._prefetch_key(batch)
            with self._prefetch_lock:
                if self._prefetched is not None and self._prefetched[0] == key:
                    return
            acts = self._activations(batch)
            with self._prefetch_lock:
                self._prefetched = (key, acts)

    def _activations(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The layers this browser shows for a ready model input (one forward pass)."""
        if self._wanted is None and not self._all:
            return input_dependent_activations(self._model, batch)
        return capture_activations(self._model, batch, self._wanted)

    def _prefetch_key(self, batch: torch.Tensor) -> tuple[Any, ...]:
        """What prefetched activations are valid for: these input pixels and the model's weights and
        buffers as they are (every in-place change, e.g. an optimizer step, bumps a tensor's version)."""
        raw = batch.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # any dtype (numpy has no bfloat16)
        digest = hashlib.sha256(raw.numpy().tobytes()).hexdigest()
        state = [*self._model.parameters(), *self._model.buffers()]
        return (digest, tuple(batch.shape), str(batch.dtype), tuple(id(x) for x in state),
                tuple(x._version for x in state))

    def _encode_rest(self, layers: _Layers, order: Sequence[str]) -> None:
        """Background thread: encode the layers not encoded yet, then turn eager if they fit the budget."""
        if layers.encode_rest(order) and layers is self._layers:
            self._apply_budget()

    def total_bytes(self) -> int:
        """Encoded size of every layer (binary buffer plus JSON header), the number ``budget_mb`` caps."""
        return self._layers.total()

    def _apply_budget(self) -> None:
        """Eager when every layer is encoded and the total fits ``budget_mb``, else lazy (while the
        background encoder runs, it applies the budget again when done)."""
        with self._budget_lock:
            layers = self._layers
            if not layers.raw and layers.total() <= self.budget_mb * MB:
                self._data = dict(layers.encoded)  # before the mode: the browser never waits on eager
                self._mode = "eager"
            else:
                self._mode = "lazy"
                self._data = {}

    @t.observe("budget_mb")
    def _budget_changed(self, change: t.Bunch) -> None:
        if self._layers.names:
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
        return check_name("layer", proposal["value"], self._layers.names)

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

    def _export_image(self) -> Any:
        from .. import export

        return export.activation_browser_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        return {**export.model_fields(self._model), **export.image_fields(self._input), "layer": self.layer,
                "channel": self.channel, "options": {"scale": self.scale, "sort": self.sort, "colormap": self.colormap}}

    def _export_html(self) -> list[dict[str, Any]]:
        """Every layer goes into the file (eager), so the layer slider works offline."""
        from .. import export

        data = {name: self._layers.get(name) for name in self._layers.names}
        state = export.widget_state(self, _data=data, _mode="eager", budget_mb=max(self.budget_mb, 1e6))
        return [export.widget_part(self, state)]

    def close(self) -> None:
        """Close the widget and stop encoding layers in the background."""
        self._layers.stop.set()
        super().close()

    def _on_custom_msg(self, widget: Any, content: dict[str, Any], buffers: Sequence[Any]) -> None:
        """Answer a browser fetch: one message per known layer, with its wire data as the buffer."""
        if not isinstance(content, dict) or content.get("type") != "fetch":
            return
        layers = self._layers
        if content.get("version") != layers.version:
            return  # asked before set_image(); the browser has reset since
        names = [n for n in content.get("layers", ()) if isinstance(n, str)]
        unknown = [n for n in names if n not in layers.nbytes]
        if unknown:
            self.send({
                "type": "error",
                "version": layers.version,
                "layers": unknown,
                "message": str(unknown_name_error("layer", unknown[0], self.layers)),
            })
        for name in names:
            if name in layers.nbytes:
                header, bufs = split_buffers(layers.get(name))
                self.send({"type": "layer", "name": name, "version": layers.version, **header}, bufs)
        layers.served.set()
