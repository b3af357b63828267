"""What every cnn_widgets view shares, whatever it shows: the text scale for a projector (``font_scale``),
the exports, a ``TypeError`` for an unknown keyword argument and a quiet garbage collection.

Each public widget class lists :class:`Panel` first among its bases, so a shared behaviour is added here
once and every view has it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from typing import Any

import numpy as np
import traitlets as t

from .. import export
from ..style import FONT_SCALE_RANGE, default_scale, follow, unfollow
from ._common import CheckedFloat, WidgetValueError


class Panel(t.HasTraits):
    """Base of every public view: ``font_scale`` multiplies every caption, label and tile text size.

    Its default is :func:`cnn_widgets.style`'s scale, and the view follows later ``style()`` calls
    until it is given a ``font_scale`` of its own (constructor argument or trait). A keyword argument
    that names neither a constructor parameter nor a trait of the view is a ``TypeError``."""

    font_scale = CheckedFloat(1.0, help="text size multiplier (1.5 for a projector)").tag(sync=True)
    _styling = False  # True while style() sets font_scale (so the view keeps following it)

    def __new__(cls, /, *args: Any, **kwargs: Any) -> Panel:
        # Checked before the constructor runs (as Python does): traitlets would only warn about an unknown
        # keyword, and a mistyped option would silently keep its default.
        for name in kwargs:
            if name not in _keywords(cls):
                raise _unexpected_keyword(cls, name)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "font_scale" not in kwargs:
            follow(self)

    def __del__(self) -> None:
        """Close a collected view as ipywidgets does, but only one that was opened: a view whose constructor
        failed first (a missing or bad argument) has nothing to close, and its ``close()`` would need
        attributes the constructor never set (Python prints that error as "Exception ignored in")."""
        if getattr(self, "comm", None) is not None:
            self.close()

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

    # -- exports (cnn_widgets/export.py) ---------------------------------------------------------------

    def to_png(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write the picture the view's "save PNG" button downloads to ``path``, without a browser, and
        its reproducibility record to ``<path>.json``; returns the record (see :mod:`cnn_widgets.export`)."""
        return export.to_png(self, path)

    def save_html(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write one self-contained HTML file showing the view as it is now (no network, no kernel: a
        handout); returns the reproducibility record embedded in it (see :mod:`cnn_widgets.export`)."""
        return export.save_html(self, path)

    # A view with its own picture overrides these; a box of views (Explorer) exports its views.

    def _export_image(self) -> np.ndarray:
        return export.parts_image(self)

    def _export_record(self) -> dict[str, Any]:
        return export.parts_record(self)

    def _export_html(self) -> list[dict[str, Any]]:
        if hasattr(self, "_esm"):
            return [export.widget_part(self)]
        return export.parts_html(self)


@functools.cache
def _keywords(cls: type[Panel]) -> frozenset[str]:
    """The keyword arguments a view accepts: its constructor's named parameters, its traits (``layout``,
    ``font_scale``, a box's ``children``, ...) and ipywidgets' ``model_id``."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    return frozenset(named | set(cls.class_trait_names()) | {"model_id"})


def _unexpected_keyword(cls: type[Panel], name: str) -> TypeError:
    """The ``TypeError`` Python gives for an unexpected keyword, with the nearest accepted ones."""
    public = sorted(k for k in _keywords(cls) if not k.startswith("_"))
    near = difflib.get_close_matches(name, public, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
    return TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}{hint}")
