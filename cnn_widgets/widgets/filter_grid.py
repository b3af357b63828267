"""FilterGrid: the weights of one conv layer as a grid of coloured tiles, one tile per output filter.

Only the current layer's weights travel, once, as a single :mod:`cnn_widgets.wire` tensor (uint8 per
filter). Choosing the input channel, the colour scale and the colormap happens in the browser; only a
new ``layer`` makes the kernel send numbers.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets as t
from torch import nn

from .. import wire
from .._checks import check_model
from ..images import traced_conv_args
from ..layers import conv_layers
from ._common import (
    CheckedEnum, CheckedInt, CheckedUnicode, WidgetValueError, bundle, check_colormap, check_index, check_name,
)

from ._common import FILTER_NORMALIZE as NORMALIZE  # one list with the browser
from .panel import Panel


class FilterGrid(Panel, anywidget.AnyWidget):
    """Conv filters of ``model`` as tiles (``layer`` defaults to the first ``nn.Conv2d``).

    ``input_channel=-1`` shows each filter's mean over its input channels, or true colour for a layer
    reading exactly 3 channels (a first conv on RGB images); ``k`` shows input channel ``k`` of each
    filter (for grouped convs: within the filter's group). ``scale`` colours each tile on its own range
    ("filter") or all on one ("layer"), the word ActivationBrowser and compare() use for their colour
    ranges; ``normalize`` is its old name, kept as an alias (trait and argument). Clicking a tile sets
    ``selected`` (a filter index of the shown layer, -1 for none; also a constructor argument).
    """

    _esm = bundle("filter_grid")

    layer = CheckedUnicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    input_channel = CheckedInt(-1).tag(sync=True)
    scale = CheckedEnum(NORMALIZE, default_value="filter").tag(sync=True)
    normalize = CheckedEnum(NORMALIZE, default_value="filter", help="old name of scale (the same value)")
    selected = CheckedInt(-1).tag(sync=True)
    colormap = CheckedUnicode("RdBu_r").tag(sync=True)
    _weights = t.Dict().tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        input_channel: int = -1,
        scale: str | None = None,
        normalize: str | None = None,
        colormap: str = "RdBu_r",
        selected: int = -1,
        **kwargs: Any,
    ) -> None:
        if scale is not None and normalize is not None and scale != normalize:
            raise WidgetValueError(
                f"scale={scale!r} and normalize={normalize!r} disagree; normalize is the old name of scale, "
                "pass only scale"
            )
        self._model = check_model(model)
        names = conv_layers(model)
        if not names:
            raise ValueError(
                f"FilterGrid needs a model with at least one nn.Conv2d, but this {type(model).__name__} has "
                "none; pass a convolutional network (or use ActivationBrowser to look at any layer)"
            )
        modules = dict(model.named_modules())
        self._convs = {n: modules[n] for n in names}
        super().__init__(**kwargs)
        t.link((self, "scale"), (self, "normalize"))
        self.set_trait("layers", names)
        with self.hold_sync():
            self.layer = names[0] if layer is None else layer
            if not self._weights:  # a bare Conv2d model: its name "" equals the default, no change event
                self._send_layer()
            self.input_channel = input_channel
            self.scale = scale or normalize or "filter"
            self.colormap = colormap
            self.selected = selected  # checked against the layer's filter count, so after the layer

    def _conv(self) -> nn.Conv2d:
        return self._convs[self.layer]

    @t.validate("layer")
    def _check_layer(self, proposal: t.Bunch) -> str:
        return check_name("conv layer", proposal["value"], self._convs)

    @t.observe("layer")
    def _send_layer(self, change: t.Bunch | None = None) -> None:
        conv = self._conv()
        with self.hold_sync():
            if self.input_channel >= conv.weight.shape[1]:
                self.input_channel = -1
            if self.selected >= conv.weight.shape[0]:
                self.selected = -1
            self._weights = {"layer": self.layer, "info": _conv_info(conv), "tensor": wire.encode(conv.weight)}

    @t.validate("input_channel")
    def _check_input_channel(self, proposal: t.Bunch) -> int:
        per_filter = self._conv().weight.shape[1] if self.layer else 0
        return check_index("input_channel", proposal["value"], per_filter,
                           f"each filter of {self.layer!r} has {per_filter} input channels")

    @t.validate("selected")
    def _check_selected(self, proposal: t.Bunch) -> int:
        filters = self._conv().weight.shape[0] if self.layer else 0
        return check_index("selected", proposal["value"], filters, f"{self.layer!r} has {filters} filters")

    @t.validate("colormap")
    def _check_colormap(self, proposal: t.Bunch) -> str:
        return check_colormap(proposal["value"])

    def _export_image(self) -> Any:
        from .. import export

        return export.filter_grid_image(self)

    def _export_record(self) -> dict[str, Any]:
        from .. import export

        return {**export.model_fields(self._model), "layer": self.layer, "options": {
            "input_channel": self.input_channel, "scale": self.scale, "colormap": self.colormap, "selected": self.selected}}


def _conv_info(conv: nn.Conv2d) -> dict[str, Any]:
    """What the caption shows about a conv: sizes, stride, padding, dilation, groups. A traced conv
    keeps only its weight, so the rest comes from its graph (1 where even that is unknown)."""
    out_channels, per_group, *kernel = conv.weight.shape
    traced = {} if hasattr(conv, "groups") else (traced_conv_args(conv) or {})

    def arg(name: str, default: Any) -> Any:
        value = getattr(conv, name, traced.get(name, default))
        return [int(v) for v in value] if isinstance(value, (list, tuple)) else value

    groups = int(arg("groups", 1))
    return {
        "in_channels": int(getattr(conv, "in_channels", per_group * groups)),
        "out_channels": int(out_channels),
        "kernel_size": [int(k) for k in kernel],
        "stride": arg("stride", [1] * len(kernel)),
        "padding": arg("padding", [0] * len(kernel)),
        "dilation": arg("dilation", [1] * len(kernel)),
        "groups": groups,
    }
