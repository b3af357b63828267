"""Pieces shared by the widget classes: the bundled front-end modules, the colormap names and choice lists
the browser shares, trait checks and their errors."""

from __future__ import annotations

import operator
import pathlib
from collections.abc import Collection, Sequence
from typing import Any

import traitlets as t
from traitlets.utils.descriptions import describe

from .._checks import unknown_name_error

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"

# The colormaps the browser knows. ``js/scripts/make_colormaps.py`` writes their lookup tables from
# matplotlib into ``cnn_widgets/colormaps.json`` (read by js/src/colormap.js and cnn_widgets/colormap.py);
# this tuple is the single list of names both sides use.
COLORMAPS: tuple[str, ...] = (
    "viridis", "magma", "inferno", "plasma", "cividis", "gray", "RdBu_r", "coolwarm",
)
# Diverging maps are centred on zero in the browser (symmetric range), so signed data reads naturally.
DIVERGING: tuple[str, ...] = ("RdBu_r", "coolwarm")

# Choice lists the browser shares. ``js/scripts/make_constants.py`` writes them into
# ``js/src/constants_data.js`` (same names), which the views import; ``tests/test_constants.py`` fails
# when that file is out of date. Menus show the choices in this order.
#
# Which part of a signed attribution map the heatmap views show (``sign``).
SIGNS: tuple[str, ...] = ("positive", "negative", "absolute", "all")
# ActivationBrowser ``scale``: each channel on its own colour range, one per layer, one for all layers.
ACTIVATION_SCALES: tuple[str, ...] = ("channel", "layer", "global")
# Compare ``scale``: one colour range for every panel, one per method (row), one per panel.
COMPARE_SCALES: tuple[str, ...] = ("shared", "per-method", "per-panel")
# FilterGrid ``normalize``: each filter on its own colour range, or all on the layer's.
FILTER_NORMALIZE: tuple[str, ...] = ("filter", "layer")
# What make_constants.py exports, in file order.
JS_CONSTANTS: tuple[str, ...] = ("SIGNS", "ACTIVATION_SCALES", "COMPARE_SCALES", "FILTER_NORMALIZE")


def bundle(name: str) -> pathlib.Path | str:
    """The built ES module ``static/<name>.js``; before ``npm run build`` a tiny module that says so.

    Importing the package must not fail just because the front end was not built yet (e.g. a source
    checkout running ``pytest``), and a view must never be silently blank.
    """
    path = STATIC / f"{name}.js"
    if path.is_file():
        return path
    message = (
        f"cnn_widgets: the front-end bundle {path.name} is missing; build it with "
        "`cd js && npm ci && npm run build` (or `make js`) and restart the kernel."
    )
    return (
        "export default { render({ el }) { const p = document.createElement('pre');"
        f" p.textContent = {message!r}; el.appendChild(p); }} }};"
    )


class WidgetValueError(t.TraitError, ValueError):
    """A bad widget argument or trait value: a ``TraitError`` for traitlets and a ``ValueError`` for
    callers, so ``except ValueError`` works whichever way the value was set."""


class _TypeErrorIsValueError:
    """Trait-type mixin: a value of the wrong type raises :class:`WidgetValueError` naming the trait, as
    a wrong value does (plain traitlets raise a bare ``TraitError``)."""

    name: str | None
    allow_none: bool

    def error(self, obj: Any, value: Any, error: Exception | None = None, info: str | None = None) -> Any:
        if self.name is None:  # an element trait: its container words the message
            return super().error(obj, value, error, info)  # type: ignore[misc]
        if error is None:
            expected = info or self.info()  # type: ignore[attr-defined]
            if self.allow_none and not expected.endswith(" or None"):  # type: ignore[attr-defined]
                expected += " or None"
            raise WidgetValueError(f"{self.name} must be {expected}, got {describe('the', value)}")
        try:
            super().error(obj, value, error, info)  # type: ignore[misc]
        except t.TraitError as err:
            raise WidgetValueError(str(err)) from None


class CheckedFloat(_TypeErrorIsValueError, t.Float):
    """``traitlets.Float`` whose type errors are :class:`WidgetValueError`."""


class CheckedInt(_TypeErrorIsValueError, t.Int):
    """``traitlets.Int`` whose type errors are :class:`WidgetValueError`. Integers of any kind (numpy,
    0-d tensors) become ints through ``operator.index``; floats are refused, also integral ones (plain
    traitlets would cast 2.0); bools pass as they are, for the validators to judge."""

    def validate(self, obj: Any, value: Any) -> Any:
        if not isinstance(value, bool):
            try:
                value = operator.index(value)
            except TypeError:
                self.error(obj, value)
        return super().validate(obj, value)


class CheckedUnicode(_TypeErrorIsValueError, t.Unicode):
    """``traitlets.Unicode`` whose type errors are :class:`WidgetValueError`."""


class CheckedDict(_TypeErrorIsValueError, t.Dict):
    """``traitlets.Dict`` whose type errors are :class:`WidgetValueError`."""


class CheckedEnum(_TypeErrorIsValueError, t.Enum):
    """``traitlets.Enum`` whose errors (a value not among the choices) are :class:`WidgetValueError`."""


class CheckedTuple(_TypeErrorIsValueError, t.Tuple):
    """``traitlets.Tuple`` whose type errors are :class:`WidgetValueError`."""


def check_colormap(name: Any) -> str:
    """Return ``name`` if the browser has this colormap, else raise with the nearest names."""
    if not isinstance(name, str):
        raise WidgetValueError(f"colormap must be a name such as 'viridis', got {type(name).__name__}")
    if name not in COLORMAPS:
        raise WidgetValueError(
            f"{unknown_name_error('colormap', name, COLORMAPS)} (available: {', '.join(COLORMAPS)})"
        )
    return name


def check_choice(what: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise WidgetValueError(f"{what} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_name(what: str, name: str, known: Collection[str]) -> str:
    """``name`` if it is in ``known``, else a ``ValueError`` naming the nearest known names."""
    if name not in known:
        raise WidgetValueError(str(unknown_name_error(what, name, known)))
    return name


def check_opacity(value: float) -> float:
    """``value`` if it is an opacity, between 0 and 1."""
    if not 0.0 <= value <= 1.0:
        raise WidgetValueError(f"opacity must be between 0 and 1, got {value!r}")
    return value


def check_index(what: str, value: Any, count: int, where: str) -> int:
    """Validate an index trait that is -1 (none) or in ``0‥count-1``; ``where`` says what has ``count``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WidgetValueError(f"{what} must be an int (-1 for none), got {value!r}")
    if not -1 <= value < count:
        span = f"0‥{count - 1}, or -1" if count else "only -1"
        raise WidgetValueError(f"{what} {value} is out of range: {where}; use {span}")
    return value


class HeatmapDisplay(t.HasTraits):
    """Checks of the heatmap display traits that :class:`~cnn_widgets.AttributionView` and
    :class:`~cnn_widgets.Compare` share: ``opacity``, ``colormap``, ``sign`` and ``clip_percentile``.

    A mixin of validators only: each widget declares the traits itself (synced or not)."""

    @t.validate("opacity")
    def _check_opacity(self, proposal: t.Bunch) -> float:
        return check_opacity(proposal["value"])

    @t.validate("colormap")
    def _check_colormap(self, proposal: t.Bunch) -> str:
        return check_colormap(proposal["value"])

    @t.validate("sign")
    def _check_sign(self, proposal: t.Bunch) -> str:
        return check_choice("sign", proposal["value"], SIGNS)

    @t.validate("clip_percentile")
    def _check_clip(self, proposal: t.Bunch) -> float:
        value = proposal["value"]
        if not 50.0 <= value <= 100.0:
            raise WidgetValueError(
                f"clip_percentile must be between 50 and 100 (100: no clipping), got {value!r}"
            )
        return value


def split_buffers(encoded: dict[str, Any]) -> tuple[dict[str, Any], list[memoryview]]:
    """An encoded tensor as (JSON header, [data buffer]) for a custom message."""
    header = {k: v for k, v in encoded.items() if k != "data"}
    return header, [encoded["data"]]

