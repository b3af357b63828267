"""What every cnn_widgets view shares, whatever it shows: the text scale for a projector (``font_scale``).

Each public widget class lists :class:`Panel` first among its bases, so a shared behaviour is added here
once and every view has it.
"""

from __future__ import annotations

import traitlets as t

from ._common import CheckedFloat, WidgetValueError

FONT_SCALE_RANGE = (0.5, 4.0)


class Panel(t.HasTraits):
    """Base of every public view: ``font_scale`` multiplies every caption, label and tile text size."""

    font_scale = CheckedFloat(1.0, help="text size multiplier (1.5 for a projector)").tag(sync=True)

    @t.validate("font_scale")
    def _check_font_scale(self, proposal: t.Bunch) -> float:
        value = float(proposal["value"])
        lo, hi = FONT_SCALE_RANGE
        if not lo <= value <= hi:
            raise WidgetValueError(f"font_scale must be between {lo} and {hi}, got {value!r}")
        return value
