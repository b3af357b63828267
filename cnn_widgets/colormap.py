"""Colour mapping in Python, pixel for pixel as the browser does it (for PNG exports without a browser).

The lookup tables are ``cnn_widgets/colormaps.json``, the same file ``js/src/colormap.js`` bundles; the
functions mirror ``js/src/colormap.js`` (:func:`color_range`, :func:`tile_ranges`, :func:`color_index`) and
``js/src/overlay.js`` (sign modes, percentile clipping, opacity blending) in float64 over the float32 values
the browser decodes, with the browser's rounding: ``Math.round`` for a colour index, round-half-to-even
for a blended byte (``Uint8ClampedArray``). ``tests/test_export.py`` runs the JS on the same arrays and
requires equal bytes (±1).
"""

from __future__ import annotations

import base64
import functools
import json
import pathlib
from typing import Any

import numpy as np

DATA = pathlib.Path(__file__).resolve().parent / "colormaps.json"
# sign "all" needs a map centred on zero: a sequential choice is replaced by this one (overlay.js)
SIGNED_COLORMAP = "RdBu_r"
SIGNS: tuple[str, ...] = ("positive", "negative", "absolute", "all")


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return json.loads(DATA.read_text(encoding="utf-8"))


def names() -> tuple[str, ...]:
    """The colormaps, in menu order."""
    return tuple(_data()["luts"])


def is_diverging(name: str) -> bool:
    """Whether ``name`` is centred on zero (symmetric colour range)."""
    return name in _data()["diverging"]


@functools.lru_cache(maxsize=None)
def _lut(name: str) -> np.ndarray:
    table = _data()["luts"].get(name)
    if table is None:
        raise ValueError(f"unknown colormap {name!r}; available: {', '.join(names())}")
    out = np.frombuffer(base64.b64decode(table), np.uint8).reshape(256, 3)
    out.setflags(write=False)
    return out


def lut(name: str) -> np.ndarray:
    """The 256×3 uint8 lookup table of colormap ``name`` (row 0 = low end)."""
    return _lut(name)


def color_range(lo: float, hi: float, diverging: bool) -> tuple[float, float]:
    """colorRange: symmetric about zero for diverging maps; a constant range is widened by ±1."""
    if diverging:
        m = max(abs(lo), abs(hi))
        return (-m, m) if m > 0 else (-1.0, 1.0)
    if not hi > lo:
        return lo - 1.0, lo + 1.0
    return float(lo), float(hi)


def tile_ranges(
    mode: str, mins: Any, maxs: Any, diverging: bool, global_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """tileRanges: per-tile (lo, hi) for scale ``mode`` "channel" | "layer" | "global"."""
    mins = np.asarray(mins, np.float64)
    maxs = np.asarray(maxs, np.float64)
    n = mins.size
    if mode == "layer":
        shared = color_range(float(mins.min()) if n else 0.0, float(maxs.max()) if n else 0.0, diverging)
    elif mode == "global":
        if global_range is None:
            raise ValueError("global scale needs the [min, max] over all layers")
        shared = color_range(float(global_range[0]), float(global_range[1]), diverging)
    elif mode == "channel":
        shared = None
    else:
        raise ValueError(f"unknown scale {mode!r}; expected channel, layer or global")
    pairs = [shared or color_range(float(a), float(b), diverging) for a, b in zip(mins, maxs)]
    lo = np.array([p[0] for p in pairs], np.float64)
    hi = np.array([p[1] for p in pairs], np.float64)
    return lo, hi


def color_index(values: Any, lo: Any, hi: Any) -> np.ndarray:
    """colorIndex: the LUT index 0‥255 of each value in [lo, hi] (broadcast), clamped; NaN → 0."""
    v = np.asarray(values, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (v - lo) / (np.asarray(hi, np.float64) - lo) * 255.0
        idx = np.where(t >= 255.0, 255.0, np.floor(t + 0.5))  # Math.round
        idx = np.where(t > 0, idx, 0.0)  # also NaN
    return idx.astype(np.intp)


def apply(values: Any, lo: Any, hi: Any, name: str) -> np.ndarray:
    """Colour ``values`` (any shape) through colormap ``name`` over [lo, hi]: uint8 RGB, shape + (3,)."""
    return lut(name)[color_index(values, lo, hi)]


# -- overlays (js/src/overlay.js) ----------------------------------------------------------------------


def sign_value(values: Any, sign: str) -> np.ndarray:
    """signValue: the shown part of a signed map (float32; NaN stays NaN)."""
    v = np.asarray(values, np.float32)
    zero = np.float32(0)
    if sign == "positive":
        return np.where(np.isnan(v), v, np.where(v > 0, v, zero))
    if sign == "negative":
        return np.where(np.isnan(v), v, np.where(v < 0, -v, zero))
    if sign == "absolute":
        return np.abs(v)
    if sign == "all":
        return v
    raise ValueError(f"unknown sign {sign!r}; expected {', '.join(SIGNS)}")


def overlay_colormap(name: str, sign: str) -> str:
    """overlayColormap: sign "all" with a sequential map uses SIGNED_COLORMAP."""
    return SIGNED_COLORMAP if sign == "all" and not is_diverging(name) else name


def sorted_magnitudes(values: Any, sign: str) -> np.ndarray:
    """sortedMagnitudes: ascending |shown values| as float32, NaN dropped."""
    s = np.abs(sign_value(values, sign)).ravel()
    return np.sort(s[~np.isnan(s)])


def percentile(sorted_values: np.ndarray, p: float) -> float:
    """percentile: linear interpolation between neighbours (numpy's default), NaN for no values."""
    n = sorted_values.size
    if not n:
        return float("nan")
    pos = min(max(p, 0.0), 100.0) / 100.0 * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    a, b = float(sorted_values[lo]), float(sorted_values[hi])
    return a + (b - a) * (pos - lo)


def overlay_range(sorted_values: np.ndarray, clip: float, diverging: bool) -> tuple[float, float, bool]:
    """overlayRange: (lo, hi, empty); the range ends at the ``clip`` percentile of the magnitudes."""
    top = percentile(sorted_values, clip)
    if not top > 0:
        top = float(sorted_values[-1]) if sorted_values.size else 0.0
    if not top > 0:
        return (-1.0 if diverging else 0.0), 1.0, True
    return (-top if diverging else 0.0), top, False


def blend_overlay(
    rgb: np.ndarray, values: Any, *, sign: str, lo: float, hi: float, table: np.ndarray, opacity: float
) -> np.ndarray:
    """blendOverlay: (1 − opacity)·image + opacity·colour(value) per pixel, uint8 H×W×3.

    NaN pixels, an empty range (hi ≤ lo) or opacity 0 keep the image's pixel.
    """
    rgb = np.asarray(rgb, np.uint8)
    s = sign_value(values, sign).reshape(rgb.shape[:-1])
    a = min(max(float(opacity), 0.0), 1.0) if hi > lo else 0.0
    if a == 0:
        return rgb.copy()
    colour = table[color_index(s, lo, hi)].astype(np.float64)
    mixed = np.rint((1.0 - a) * rgb.astype(np.float64) + a * colour).clip(0, 255).astype(np.uint8)
    return np.where(np.isnan(s)[..., None], rgb, mixed)
