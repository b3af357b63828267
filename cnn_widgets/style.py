"""Projector-ready views: one text scale for every cnn_widgets view.

``cnn_widgets.style(scale=1.5)`` sets the ``font_scale`` that views created afterwards start with and
applies it at once to every live view that follows the default (a view given its own ``font_scale``,
as a constructor argument or by setting the trait, keeps it). The browser multiplies every caption,
label, tile text and control of a view by its ``font_scale`` (the ``--cnnw-scale`` CSS property on the
view's root, ``js/src/scale.js``).

This module holds the setting and the registry of the views that follow it (weak references: a view
that is garbage collected drops out); :class:`cnn_widgets.widgets.panel.Panel` registers every view.
"""

from __future__ import annotations

import numbers
import threading
import weakref
from typing import Any

FONT_SCALE_RANGE: tuple[float, float] = (0.5, 4.0)
"""The accepted text scales (half size to four times)."""

_lock = threading.Lock()
_scale = 1.0
_following: weakref.WeakSet[Any] = weakref.WeakSet()


def check_scale(name: str, value: object) -> float:
    """``value`` as a float inside :data:`FONT_SCALE_RANGE`, or a ``TypeError``/``ValueError`` naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    scale = float(value)
    lo, hi = FONT_SCALE_RANGE
    if not lo <= scale <= hi:  # NaN fails this too
        raise ValueError(f"{name} must be between {lo} and {hi} (1.5 suits a projector), got {value!r}")
    return scale


def default_scale() -> float:
    """The ``font_scale`` a view created now starts with."""
    return _scale


def follow(panel: Any) -> None:
    """Register ``panel`` (a view without a ``font_scale`` of its own) for :func:`style` updates."""
    with _lock:
        _following.add(panel)


def unfollow(panel: Any) -> None:
    """``panel`` was given its own ``font_scale``: :func:`style` leaves it alone from now on."""
    with _lock:
        _following.discard(panel)


def is_following(panel: Any) -> bool:
    """Whether :func:`style` updates ``panel``."""
    with _lock:
        return panel in _following


def style(scale: float | None = None) -> dict[str, float]:
    """Set the text scale of every cnn_widgets view (``scale=1.5`` for a projector at the back of a
    room) and return the current settings, ``{"scale": ...}``; ``style()`` only returns them.

    Views created afterwards start with ``font_scale=scale``; live views that follow the default change
    at once. A view given its own ``font_scale`` (``AttributionView(..., font_scale=2)`` or
    ``view.font_scale = 2``) keeps it. ``scale`` must be between 0.5 and 4.
    """
    global _scale
    if scale is not None:
        value = check_scale("scale", scale)
        with _lock:
            _scale = value
            views = list(_following)
        for view in views:
            view._restyle(value)
    return {"scale": _scale}


CHART_FONT_PX = 12.0
"""Tick and value labels of bqplot charts at scale 1 (px)."""
CHART_TITLE_PX = 13.0
"""Titles of bqplot charts at scale 1 (px)."""


def chart_font(scale: float, px: float = CHART_FONT_PX) -> dict[str, str]:
    """A bqplot text style ``{"font-size": ...}`` of ``px`` pixels at scale 1, at ``scale``."""
    return {"font-size": f"{px * scale:g}px"}


def scale_chart(figure: Any, scale: float) -> None:
    """Bring a bqplot ``Figure``'s text to ``scale`` (a view's ``font_scale``): every axis's tick labels
    (:data:`CHART_FONT_PX` at scale 1) and the title (:data:`CHART_TITLE_PX`, in the theme's text colour
    unless the figure sets one); other styles stay. Call it from the view's ``font_scale`` observer;
    margins and the figure's size are the view's own business."""
    with figure.hold_sync():
        for axis in figure.axes:
            axis.tick_style = {**axis.tick_style, **chart_font(scale)}
        figure.title_style = {
            "fill": "var(--jp-ui-font-color1, #222)", **figure.title_style, **chart_font(scale, CHART_TITLE_PX),
        }
