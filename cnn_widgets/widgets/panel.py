"""What every cnn_widgets view shares, whatever it shows: the text scale for a projector (``font_scale``).

Each public widget class lists :class:`Panel` first among its bases, so a shared behaviour is added here
once and every view has it.
"""

from __future__ import annotations

from typing import Any

import traitlets as t

from ..style import FONT_SCALE_RANGE, default_scale, follow, unfollow
from ._common import CheckedFloat, WidgetValueError


class Panel(t.HasTraits):
    """Base of every public view: ``font_scale`` multiplies every caption, label and tile text size.

    Its default is :func:`cnn_widgets.style`'s scale, and the view follows later ``style()`` calls
    until it is given a ``font_scale`` of its own (constructor argument or trait)."""

    font_scale = CheckedFloat(1.0, help="text size multiplier (1.5 for a projector)").tag(sync=True)
    _styling = False  # True while style() sets font_scale (so the view keeps following it)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "font_scale" not in kwargs:
            follow(self)

    @t.default("font_scale")
    def _default_font_scale(self) -> float:
        return default_scale()

    @t.observe("font_scale")
    def _font_scale_chosen(self, change: t.Bunch) -> None:
        if not self._styling:
            unfollow(self)

    def _restyle(self, scale: float) -> None:
        """Apply :func:`cnn_widgets.style`'s new scale (the view keeps following it)."""
        self._styling = True
        try:
            self.font_scale = scale
        finally:
            self._styling = False

    @t.validate("font_scale")
    def _check_font_scale(self, proposal: t.Bunch) -> float:
        value = float(proposal["value"])
        lo, hi = FONT_SCALE_RANGE
        if not lo <= value <= hi:
            raise WidgetValueError(f"font_scale must be between {lo} and {hi}, got {value!r}")
        return value
