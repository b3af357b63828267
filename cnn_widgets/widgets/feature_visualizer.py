"""FeatureVisualizer: the image a channel "wants to see" (:func:`cnn_widgets.visualize_feature`), optimised
in the background while the browser shows it form, and a grid mode with one such image per channel.

Optimisations run as jobs of :mod:`cnn_widgets.widgets.jobs` (one worker thread, so the kernel stays free
for the cancel button). The image in progress travels to the browser as exact uint8 bytes through
:mod:`cnn_widgets.wire`, at most every :data:`IMAGE_INTERVAL` seconds (iopub counts every comm message),
with the step count; finished images are cached per (layer, objective, channel, options), so switching
back to a channel, or from a grid tile to the single view, shows it at once.

Single mode keeps the image in the ``_image`` trait (it survives re-display). Grid mode sends tiles as
custom messages ``{"type": "tiles", "grid": id, "channels": [...], "final": bool, **header}`` with one
buffer of k×H×W×3 bytes; a view asks for the finished tiles when it renders (``{"type": "fetch"}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from time import monotonic
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets as t
from torch import nn

from .. import outputs, wire
from .._checks import check_model, model_input, unknown_name_error
from ..featurevis import (
    DEFAULT_ROTATIONS, DEFAULT_SCALES, OBJECTIVES, Settings, input_normaliser, settings, visualize_feature,
)
from ..images import Stats
from ..layers import observe
from ..outputs import Output
from ._common import CheckedEnum, CheckedInt, CheckedUnicode, WidgetValueError, bundle, split_buffers
from .attribution_view import error_text
from .jobs import Jobs, Progress
from .panel import Panel

MODES: tuple[str, ...] = ("single", "grid")
GRID_WIDTH, GRID_CELL = 640, 72  # the grid's layout in the browser (feature_visualizer.js)
PLACEHOLDER = 128  # grey of a tile not computed yet
IMAGE_INTERVAL = 0.25  # seconds between images in progress sent to the browser
CACHE_SIZE = 1024  # finished images kept (uint8: 12 KB each at 64², 48 KB at 128²)


class FeatureVisualizer(Panel, anywidget.AnyWidget):
    """Activation maximisation of ``model`` in the notebook: the image that maximises ``channel`` of
    ``layer`` (see :func:`cnn_widgets.visualize_feature` for the method and its options), optimised in
    the background with a progress bar, a cancel button and the image updating as it forms.

    Traits (synced, checked; a wrong value raises :class:`~cnn_widgets.widgets.WidgetValueError` naming
    the trait): ``layer`` (a module that runs and returns a tensor with channels; ``layers`` lists
    them in execution order; ``None`` at construction: the last leaf module with an (N, C, H, W) output
    larger than 1×1),
    ``channel`` (``0‥channels-1``; for ``objective="class"`` the class index), ``objective``
    ("channel" | "neuron" | "class"), ``steps``, ``seed`` and ``mode`` ("single", or "grid": every
    channel of the layer as a tile, computed one after another; clicking a tile shows it in single
    mode). Changing any of them shows the cached image at once or starts computing it. Read-only:
    ``layers``, ``channels``, ``size`` (the (height, width) optimised at; ``size=None``:
    :func:`cnn_widgets.featurevis.default_size`), ``progress`` (0–1), ``step``, ``busy``, ``error``,
    ``done`` (finished tiles of the grid).

    ``mean``/``std`` (the model's input normalisation, 0‥1 units) and ``output`` (which part of a
    structured output holds the class scores) pass through to :func:`visualize_feature`, as do the
    options ``lr``, ``jitter``, ``scales``, ``rotations``, ``tv`` and ``l2`` (same defaults).
    :meth:`wait` blocks until the work is done, :attr:`image` is the image on screen, :meth:`cancel`
    and :meth:`run` are the buttons. The model is never changed.
    """

    _esm = bundle("feature_visualizer")

    layer = CheckedUnicode("").tag(sync=True)
    channel = CheckedInt(0).tag(sync=True)
    objective = CheckedEnum(OBJECTIVES, default_value="channel").tag(sync=True)
    steps = CheckedInt(256).tag(sync=True)
    seed = CheckedInt(0).tag(sync=True)
    mode = CheckedEnum(MODES, default_value="single").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channels = t.Int(0, read_only=True).tag(sync=True)
    size = t.Tuple(t.Int(), t.Int(), default_value=(0, 0), read_only=True).tag(sync=True)
    progress = t.Float(0.0, read_only=True).tag(sync=True)
    step = t.Int(0, read_only=True).tag(sync=True)
    busy = t.Bool(False, read_only=True).tag(sync=True)
    error = t.Unicode("", read_only=True).tag(sync=True)
    done = t.Int(0, read_only=True).tag(sync=True)
    _image = t.Dict().tag(sync=True)
    _grid = t.Dict().tag(sync=True)
    _notice = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        layer: str | None,
        channel: int = 0,
        steps: int = 256,
        size: int | tuple[int, int] | None = None,
        seed: int = 0,
        *,
        objective: str = "channel",
        mode: str = "single",
        mean: Stats = None,
        std: Stats = None,
        output: Output = None,
        lr: float = 0.05,
        jitter: int | None = None,
        scales: Sequence[float] = DEFAULT_SCALES,
        rotations: Sequence[float] = DEFAULT_ROTATIONS,
        tv: float = 0.0,
        l2: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self._model = check_model(model, hooks=True)
        self._output = outputs.check_output(output)
        self._mean, self._std = mean, std
        self._base = settings(
            model, steps=1, size=size, seed=0, lr=lr, jitter=jitter, scales=scales, rotations=rotations, tv=tv,
            l2=l2,
        )
        self._jobs = Jobs("cnn_widgets-featurevis", cache_size=CACHE_SIZE)
        self._quiet = True
        self._shown: torch.Tensor | None = None
        self._grid_id = 0
        self._pending: set[int] = set()
        self._last_image = -float("inf")
        self._shapes_by_layer, self._unusable, self._class_count, self._class_error = _probe(
            model, self._base.size, mean, std, self._output
        )
        super().__init__(**kwargs)
        self.set_trait("size", self._base.size)
        self.set_trait("layers", list(self._shapes_by_layer))
        if layer is None:
            leaves = {n for n, m in model.named_modules() if next(m.children(), None) is None}
            maps = [n for n, s in self._shapes_by_layer.items() if len(s) == 4]
            spatial = [n for n in maps if n in leaves and self._shapes_by_layer[n][2] * self._shapes_by_layer[n][3] > 1]
            if not maps:
                raise ValueError("this model has no layer with (N, C, H, W) output; pass layer= naming one")
            layer = (spatial or maps)[-1]
        self.steps = steps
        self.seed = seed
        self.objective = objective
        self.layer = layer
        self.channel = channel
        self.mode = mode
        self.on_msg(self._on_msg)
        self._quiet = False
        self._request()

    # -- validation -------------------------------------------------------------------------------

    def _count(self, layer: str, objective: str) -> int:
        """How many channels (or classes) ``channel`` chooses from."""
        if objective == "class":
            return self._class_count or 0
        shape = self._shapes_by_layer.get(layer)
        return shape[1] if shape else 0

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str:
        name = proposal["value"]
        if name not in self._shapes_by_layer:
            if name in self._unusable:
                raise WidgetValueError(f"layer {name!r} cannot be visualised: {self._unusable[name]}")
            raise WidgetValueError(str(unknown_name_error("layer", name, self._shapes_by_layer)))
        if self.objective == "neuron" and len(self._shapes_by_layer[name]) != 4:
            raise WidgetValueError(_neuron_error(name, self._shapes_by_layer[name]))
        return name

    @t.validate("objective")
    def _check_objective(self, proposal: t.Bunch) -> str:
        value = proposal["value"]
        if value == "class" and self._class_error:
            raise WidgetValueError(f"objective='class' needs the class scores: {self._class_error}")
        shape = self._shapes_by_layer.get(self.layer)
        if value == "neuron" and shape is not None and len(shape) != 4:
            raise WidgetValueError(_neuron_error(self.layer, shape))
        return value

    @t.validate("channel")
    def _check_channel(self, proposal: t.Bunch) -> int:
        value = proposal["value"]
        if isinstance(value, bool):
            raise WidgetValueError(f"channel must be an int, got {value!r}")
        if not self.layer:  # during construction: checked once the layer is set
            return value
        count = self._count(self.layer, self.objective)
        if not 0 <= value < count:
            where = "the model has" if self.objective == "class" else f"layer {self.layer!r} has"
            noun = "classes" if self.objective == "class" else "channels"
            raise WidgetValueError(f"channel {value} is out of range: {where} {count} {noun} (0‥{count - 1})")
        return value

    @t.validate("steps")
    def _check_steps(self, proposal: t.Bunch) -> int:
        value = proposal["value"]
        if isinstance(value, bool) or value < 1:
            raise WidgetValueError(f"steps must be an int >= 1, got {value!r}")
        return value

    @t.validate("seed")
    def _check_seed(self, proposal: t.Bunch) -> int:
        value = proposal["value"]
        if isinstance(value, bool) or value < 0:
            raise WidgetValueError(f"seed must be an int >= 0, got {value!r}")
        return value

    @t.observe("layer", "objective")
    def _target_changed(self, change: t.Bunch) -> None:
        count = self._count(self.layer, self.objective) if self.layer else 0
        quiet, self._quiet = self._quiet, True
        try:
            with self.hold_sync():
                self.set_trait("channels", count)
                if self.layer and self.channel >= count:
                    self.channel = 0
        finally:
            self._quiet = quiet
        self._request()

    @t.observe("channel", "steps", "seed", "mode")
    def _settings_changed(self, change: t.Bunch) -> None:
        if change["name"] == "channel" and self.mode == "grid":
            return  # the grid shows every channel; the chosen one is outlined in the browser
        self._request()

    # -- requests ---------------------------------------------------------------------------------

    def _settings(self) -> Settings:
        return dataclasses.replace(self._base, steps=self.steps, seed=self.seed)

    def _key(self, channel: int, options: Settings) -> tuple[Any, ...]:
        layer = None if self.objective == "class" else self.layer
        return (layer, self.objective, channel, options)

    def _request(self) -> None:
        """Show what the traits ask for: from the cache at once, else from new jobs (which cancel the
        ones still running)."""
        if self._quiet or not self.layer:
            return
        if self.mode == "grid":
            self._request_grid()
        else:
            self._request_single()

    def _request_single(self) -> None:
        options = self._settings()
        key = self._key(self.channel, options)
        with self._jobs.lock:
            live = self._jobs.live()
            if live and live[-1].key == key and self._grid_id == 0:
                return
            self._grid_id = 0
            self._pending.clear()
            cached = self._jobs.cached(key)
            if cached is not None:
                self._jobs.cancel()
                self._show(key, cached, options.steps, final=True)
                with self.hold_sync():
                    self._status(busy=False, progress=1.0, step=options.steps)
                return
            holder: list[Any] = []
            self._last_image = -float("inf")
            with self.hold_sync():
                self._status(busy=True, progress=0.0, step=0)
            work = partial(self._compute, self.layer, self.objective, self.channel, options, holder)
            self._jobs.submit(
                key, work, partial(self._single_done, key, options), self._failed,
                partial(self._single_progress, key, options, holder), replace=True,
            )

    def _request_grid(self) -> None:
        options = self._settings()
        count = self._count(self.layer, self.objective)
        with self._jobs.lock:
            self._jobs.cancel()
            self._grid_id += 1
            gid = self._grid_id
            self._pending = set()
            self._last_image = -float("inf")
            cached: list[int] = []
            for c in range(count):
                key = self._key(c, options)
                if self._jobs.cached(key) is not None:
                    cached.append(c)
                    continue
                self._pending.add(c)
                holder: list[Any] = []
                self._jobs.submit(
                    key, partial(self._compute, self.layer, self.objective, c, options, holder),
                    partial(self._tile_done, gid, c, key), self._failed,
                    partial(self._tile_progress, gid, c, options, holder),
                )
            with self.hold_sync():
                h, w = options.size
                self._grid = {
                    "id": gid, "layer": self.layer, "objective": self.objective, "count": count, "h": h, "w": w,
                    "steps": options.steps, "seed": options.seed,
                }
                self.set_trait("done", len(cached))
                busy = bool(self._pending)
                self._status(busy=busy, progress=len(cached) / max(count, 1), step=0 if busy else options.steps)
            self._send_tiles(cached, options)

    def cancel(self) -> None:
        """Stop the optimisation in progress (and, in grid mode, the tiles not done yet); what is on
        screen stays."""
        with self._jobs.lock:
            if not self._jobs.cancel():
                return
            self._pending.clear()
            self.set_trait("busy", False)
            if self.mode == "grid":
                self._notice = f"cancelled: {self.done} of {self.channels} tiles done"
            else:
                self._notice = f"cancelled at step {self.step} of {self.steps}"

    def run(self) -> None:
        """Compute (or fetch from the cache) what the traits ask for, e.g. after a cancel."""
        self._request()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no optimisation of this widget is running; ``False`` if ``timeout`` passed first."""
        return self._jobs.wait(timeout)

    def close(self) -> None:
        """Stop the work in progress and close the widget (a discarded view leaves nothing running)."""
        self._jobs.cancel()
        super().close()

    @property
    def image(self) -> torch.Tensor | None:
        """The single-mode image on screen (float32 3×H×W in 0‥1, in steps of 1/255, as shown), or
        ``None`` before the first one arrives; :func:`visualize_feature` gives the unrounded image."""
        return None if self._shown is None else self._shown.permute(2, 0, 1).float() / 255.0

    # -- the jobs (run in the worker thread; callbacks hold the jobs' lock) ---------------------------

    def _compute(
        self, layer: str, objective: str, channel: int, options: Settings, holder: list[Any], progress: Progress
    ) -> torch.Tensor:
        def report(step: int, image: torch.Tensor) -> None:
            holder[:] = [step, image]
            progress(step / options.steps)

        image = visualize_feature(
            self._model, layer, channel, objective=objective, steps=options.steps, size=options.size,
            seed=options.seed, lr=options.lr, jitter=options.jitter, scales=options.scales,
            rotations=options.rotations, tv=options.tv, l2=options.l2, mean=self._mean, std=self._std,
            output=self._output, progress=report, progress_every=1,
        )
        return _to_bytes(image)

    def _image_due(self) -> bool:
        now = monotonic()
        if now - self._last_image < IMAGE_INTERVAL:
            return False
        self._last_image = now
        return True

    def _single_progress(self, key: tuple[Any, ...], options: Settings, holder: list[Any], fraction: float) -> None:
        if not holder:
            return
        step, image = holder
        with self.hold_sync():
            self._status(busy=True, progress=fraction, step=step)
            if self._image_due():
                self._show(key, _to_bytes(image), step, final=False)

    def _single_done(self, key: tuple[Any, ...], options: Settings, pixels: torch.Tensor) -> None:
        with self.hold_sync():
            self._show(key, pixels, options.steps, final=True)
            self._status(busy=False, progress=1.0, step=options.steps)

    def _tile_progress(
        self, gid: int, channel: int, options: Settings, holder: list[Any], fraction: float
    ) -> None:
        if gid != self._grid_id or not holder:
            return
        step, image = holder
        count = max(self.channels, 1)
        with self.hold_sync():
            self._status(busy=True, progress=(self.done + fraction) / count, step=step)
        if self._image_due():
            self._send_tile_images([channel], _to_bytes(image)[None], final=False)

    def _tile_done(self, gid: int, channel: int, key: tuple[Any, ...], pixels: torch.Tensor) -> None:
        if gid != self._grid_id:
            return
        self._pending.discard(channel)
        with self.hold_sync():
            self.set_trait("done", self.done + 1)
            busy = bool(self._pending)
            self._status(busy=busy, progress=self.done / max(self.channels, 1), step=key[3].steps)
        self._send_tile_images([channel], pixels[None], final=True)

    def _failed(self, err: Exception) -> None:
        self._jobs.cancel()  # the other tiles of a grid would fail the same way
        self._pending.clear()
        with self.hold_sync():
            self.set_trait("error", error_text(err))
            self.set_trait("busy", False)
            self.set_trait("progress", 0.0)

    def _status(self, *, busy: bool, progress: float, step: int) -> None:
        if busy or progress:
            self.set_trait("error", "")
            self._notice = ""
        self.set_trait("busy", busy)
        self.set_trait("progress", float(progress))
        self.set_trait("step", int(step))

    def _show(self, key: tuple[Any, ...], pixels: torch.Tensor, step: int, final: bool) -> None:
        layer, objective, channel, options = key
        if final:
            self._shown = pixels
        self._image = {
            "tensor": wire.encode(pixels, exact=True), "layer": layer or "", "objective": objective,
            "channel": channel, "step": int(step), "steps": options.steps, "final": final,
        }

    # -- exports (Panel.to_png / save_html) ---------------------------------------------------------

    def _export_image(self) -> np.ndarray:
        """What the view's canvas shows: the single image at its own size, or the grid of finished
        tiles (grey where not computed yet) with the chosen channel outlined, as grid.js lays it out."""
        from .. import export

        with self._jobs.lock:
            if self.mode == "grid" and self._grid:
                count, h, w = self._grid["count"], self._grid["h"], self._grid["w"]
                options = self._settings()
                tiles = np.full((count, h, w, 3), PLACEHOLDER, np.uint8)
                for c in range(count):
                    cached = self._jobs.cached(self._key(c, options))
                    if cached is not None:
                        tiles[c] = cached.numpy()
                layout = export.layout_grid(count, h, w, max_width=GRID_WIDTH, max_cell=GRID_CELL,
                                            scale=self.font_scale)
                canvas = export.blit_tiles(layout, tiles, list(range(count)))
                if 0 <= self.channel < count:
                    export.outline_slot(canvas, layout, self.channel)
                return export.compose([[canvas]])
            if not self._image:
                raise export.ExportError("this view has nothing to draw yet")
            return np.ascontiguousarray(wire.decode(self._image["tensor"]))

    def _export_html(self) -> list[dict[str, Any]]:
        """The view as it is, with the grid's finished tiles in the file (the offline page's fetch gets
        them), once the work in progress is done."""
        from .. import export

        self.wait()
        replies = []
        with self._jobs.lock:
            done = self._done_tiles()
            if done and done[0]:
                replies.append(self._tiles_message(done[0], self._stack(done[0], done[1]), final=True))
        return [export.widget_part(self, replies={"fetch": replies})]

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        options = dataclasses.asdict(self._settings())
        return {**export.model_fields(self._model), "layer": self.layer, "options": {
            "channel": self.channel, "objective": self.objective, "mode": self.mode, **options}}

    # -- the browser -------------------------------------------------------------------------------

    def _stack(self, channels: list[int], options: Settings) -> torch.Tensor:
        """The cached images of ``channels`` as one k×H×W×3 uint8 tensor."""
        return torch.stack([self._jobs.cached(self._key(c, options)) for c in channels])

    def _done_tiles(self) -> tuple[list[int], Settings] | None:
        """The channels of the grid on screen whose images are cached (``None`` in single mode)."""
        if self.mode != "grid" or not self._grid_id:
            return None
        options = self._settings()
        count = self._count(self.layer, self.objective)
        return [c for c in range(count) if self._jobs.cached(self._key(c, options)) is not None], options

    def _send_tiles(self, channels: list[int], options: Settings) -> None:
        if channels:
            self.send(*self._tiles_message(channels, self._stack(channels, options), final=True))

    def _send_tile_images(self, channels: list[int], stack: torch.Tensor, final: bool) -> None:
        self.send(*self._tiles_message(channels, stack, final))

    def _tiles_message(
        self, channels: list[int], stack: torch.Tensor, final: bool
    ) -> tuple[dict[str, Any], list[memoryview]]:
        header, buffers = split_buffers(wire.encode(stack, exact=True))
        return {"type": "tiles", "grid": self._grid_id, "channels": channels, "final": final, **header}, buffers

    def _on_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """``{"type": "fetch"}`` (a grid view rendered: send the finished tiles), ``"cancel"``, ``"run"``."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "fetch":
            with self._jobs.lock:
                done = self._done_tiles()
                if done:
                    self._send_tiles(*done)
        elif kind == "cancel":
            self.cancel()
        elif kind == "run":
            self.run()


def _to_bytes(image: torch.Tensor) -> torch.Tensor:
    """A 3×H×W image in 0‥1 as H×W×3 uint8 (what the browser paints)."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def _neuron_error(layer: str, shape: Sequence[int]) -> str:
    return (
        f"objective='neuron' needs a layer with (N, C, H, W) output; {layer!r} gives {tuple(shape)} "
        "(use objective='channel', or pick a convolutional layer)"
    )


def _probe(
    model: nn.Module, size: tuple[int, int], mean: Stats, std: Stats, output: Output
) -> tuple[dict[str, tuple[int, ...]], dict[str, str], int | None, str]:
    """One forward pass on a grey image of the optimised size: the modules whose output can be
    visualised (a floating-point tensor with a channel dimension) with its shape, in the order they
    return; why each other module cannot be; the class count (or ``None`` and why not)."""
    normalise = input_normaliser(model, mean, std)
    batch = model_input(model, normalise(torch.full((1, normalise.channels, *size), 0.5)))
    shapes: dict[str, tuple[int, ...]] = {}
    unusable: dict[str, str] = {}

    def record(name: str, out: Any) -> None:
        if name in shapes or name in unusable:
            return
        if not isinstance(out, torch.Tensor):
            unusable[name] = f"it returns a {type(out).__name__}, not a tensor; pick one of its submodules"
        elif not out.is_floating_point():
            unusable[name] = f"it returns a {out.dtype} tensor (not a feature map)"
        elif out.ndim < 2:
            unusable[name] = f"its output {tuple(out.shape)} has no channel dimension"
        else:
            shapes[name] = tuple(out.shape)

    modules = [(n, m) for n, m in model.named_modules() if n]
    try:
        result = observe(model, batch, modules, record)
    except ValueError as err:
        raise ValueError(
            f"{err} (FeatureVisualizer optimises at {size[0]}×{size[1]}: pass size= for a model with a fixed "
            "input size)"
        ) from err
    for name, _ in modules:
        if name not in shapes and name not in unusable:
            unusable[name] = "it did not run during the forward pass (registered, but the model's forward never calls it)"
    if not shapes:
        raise ValueError("no module of this model returns a floating-point tensor with channels to visualise")
    try:
        scores = outputs.select(result, output)
        return shapes, unusable, int(scores.shape[1]) if scores.ndim >= 2 else 1, ""
    except (ValueError, TypeError) as err:
        return shapes, unusable, None, str(err)
