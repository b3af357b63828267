"""PNG / HTML exports and the shared colormap table: Python colours exactly as the browser's JS does.

The JS side runs in node on the same arrays (js/src/colormap.js, overlay.js, grid.js, filters.js imported
as they are), so a change on either side that breaks the ±1 agreement fails here.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import archs
from cnn_widgets import colormap, export, wire
from cnn_widgets.widgets._common import COLORMAPS, DIVERGING
from cnn_widgets.widgets.activation_browser import ActivationBrowser
from cnn_widgets.widgets.attribution_view import AttributionView
from cnn_widgets.widgets.filter_grid import FilterGrid
from cnn_widgets.zoo import load_shapesnet, shapes_dataset

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")

# Reads {"op": ..., ...} requests (one JSON list on stdin) and answers each with the JS functions' output.
BRIDGE = """
import { colorIndex, colorRange, lut, tileRanges, COLORMAPS } from "./src/colormap.js";
import { blendOverlay, overlayColormap, overlayRange, sortedMagnitudes } from "./src/overlay.js";
import { blitTiles, colorizeScalar, layoutGrid, packLut } from "./src/grid.js";
import { filterTiles } from "./src/filters.js";
const f32 = (a) => Float32Array.from(a.map((v) => (v === null ? NaN : v)));
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const out = [];
for (const q of JSON.parse(Buffer.concat(chunks).toString())) {
  if (q.op === "names") out.push(COLORMAPS);
  else if (q.op === "index") out.push(Array.from(f32(q.values), (v) => colorIndex(v, q.lo, q.hi)));
  else if (q.op === "apply") {
    const t = lut(q.name);
    out.push(Array.from(f32(q.values), (v) => { const k = 3 * colorIndex(v, q.lo, q.hi); return [t[k], t[k + 1], t[k + 2]]; }));
  } else if (q.op === "range") out.push(colorRange(q.lo, q.hi, q.diverging));
  else if (q.op === "tiles") {
    const r = tileRanges(q.mode, q.min, q.max, q.diverging, q.global);
    out.push([Array.from(r.lo), Array.from(r.hi)]);
  } else if (q.op === "overlay") {
    const name = overlayColormap(q.name, q.sign);
    const values = f32(q.values);
    const range = overlayRange(sortedMagnitudes(values, q.sign), q.clip, ["RdBu_r", "coolwarm"].includes(name));
    const px = blendOverlay(Uint8Array.from(q.rgb), values, { sign: q.sign, lo: range.lo, hi: range.hi, table: lut(name), opacity: q.opacity });
    out.push({ range: [range.lo, range.hi, range.empty], rgba: Array.from(px) });
  } else if (q.op === "grid") {
    const L = layoutGrid(q.layout);
    const values = f32(q.values);
    const count = q.layout.count;
    const lo = new Float64Array(count).fill(q.lo);
    const hi = new Float64Array(count).fill(q.hi);
    const tiles = colorizeScalar(values, count, lo, hi, packLut(lut(q.name)));
    const dst = new Uint32Array(L.width * L.height);
    blitTiles(dst, L, tiles, Int32Array.from(q.order));
    out.push({ L, rgba: Array.from(new Uint8Array(dst.buffer)) });
  } else if (q.op === "filters") {
    const t = filterTiles(f32(q.values), q.shape, q.k, q.groups);
    out.push({ values: Array.from(t.values), min: t.min, max: t.max, rgb: t.rgb });
  } else throw new Error(`unknown op ${q.op}`);
}
process.stdout.write(JSON.stringify(out));
"""


def run_js(requests: list[dict]) -> list:
    """Answer ``requests`` with the JS modules in node (a throwaway .mjs beside js/src)."""
    script = ROOT / "js" / "_export_bridge.test-tmp.mjs"
    script.write_text(BRIDGE, encoding="utf-8")
    try:
        done = subprocess.run([NODE, script.name], cwd=script.parent, input=json.dumps(requests, allow_nan=False),
                              capture_output=True, text=True, timeout=120)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _as_json(values: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, np.float32).ravel()]


def _values(seed: int, n: int = 400) -> np.ndarray:
    """Awkward float32 values: normal, tiny, huge-ish, exact range ends, zeros and NaN."""
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(n) * rng.choice([1e-6, 1.0, 50.0])).astype(np.float32)
    v[:5] = [0.0, np.nan, -0.0, v.max(), v.min()]
    return v


@pytest.fixture(scope="module")
def shapes():
    model = load_shapesnet()
    images, _, _ = shapes_dataset(3, seed=1)
    return model, images


# -- the one colormap table --------------------------------------------------------------------------------


def test_colormap_table_matches_matplotlib_and_the_names_python_validates():
    matplotlib = pytest.importorskip("matplotlib")
    data = json.loads((ROOT / "cnn_widgets" / "colormaps.json").read_text())
    assert tuple(data["luts"]) == COLORMAPS == colormap.names()
    assert tuple(data["diverging"]) == DIVERGING
    for name, b64 in data["luts"].items():
        got = np.frombuffer(base64.b64decode(b64), np.uint8).reshape(256, 3)
        want = matplotlib.colormaps[name].resampled(256)(np.linspace(0, 1, 256))[:, :3] * 255
        assert np.abs(got.astype(float) - want).max() <= 0.5 + 1e-9, name
        assert np.array_equal(colormap.lut(name), got)
    assert not (ROOT / "js" / "src" / "colormap_data.js").exists(), "the old generated table is gone"


def test_generator_writes_the_committed_table():
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_colormaps", ROOT / "js" / "scripts" / "make_colormaps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert module.render() == (ROOT / "cnn_widgets" / "colormaps.json").read_text()


def test_unknown_colormap_and_sign_are_clear_errors():
    with pytest.raises(ValueError, match="unknown colormap 'virdis'.*viridis"):
        colormap.lut("virdis")
    with pytest.raises(ValueError, match="unknown sign"):
        colormap.sign_value(np.zeros(2), "both")
    with pytest.raises(ValueError, match="unknown scale"):
        colormap.tile_ranges("bogus", [0], [1], False)


@needs_node
def test_python_colour_mapping_equals_the_browsers():
    cases = []
    for seed, name in enumerate(COLORMAPS):
        v = _values(seed)
        lo, hi = colormap.color_range(float(np.nanmin(v)), float(np.nanmax(v)), colormap.is_diverging(name))
        cases.append((v, lo, hi, name))
    cases.append((np.array([4.0, 4.0], np.float32), 3.0, 5.0, "viridis"))  # a constant tile: the middle
    cases.append((np.linspace(0, 1, 2001, dtype=np.float32), 0.0, 1.0, "gray"))  # every rounding boundary
    requests = []
    for v, lo, hi, name in cases:
        requests.append({"op": "index", "values": _as_json(v), "lo": lo, "hi": hi})
        requests.append({"op": "apply", "values": _as_json(v), "lo": lo, "hi": hi, "name": name})
    got = run_js([{"op": "names"}] + requests)
    assert tuple(got[0]) == colormap.names()
    for i, (v, lo, hi, name) in enumerate(cases):
        assert colormap.color_index(v, lo, hi).tolist() == got[1 + 2 * i]
        assert np.array_equal(colormap.apply(v, lo, hi, name), np.array(got[2 + 2 * i], np.uint8))


@needs_node
def test_python_ranges_equal_the_browsers():
    rng = np.random.default_rng(3)
    mins = (rng.standard_normal(6) - 1).tolist()
    maxs = (np.array(mins) + rng.random(6) * 3).tolist()
    maxs[2] = mins[2]  # a constant tile
    requests, want = [], []
    for lo, hi, div in [(-1, 3, True), (2, 5, False), (4, 4, False), (0, 0, True), (-2.5, -1, True)]:
        requests.append({"op": "range", "lo": lo, "hi": hi, "diverging": div})
        want.append(list(colormap.color_range(lo, hi, div)))
    for mode in ("channel", "layer", "global"):
        for div in (False, True):
            requests.append({"op": "tiles", "mode": mode, "min": mins, "max": maxs, "diverging": div, "global": [-7, 9]})
            want.append([a.tolist() for a in colormap.tile_ranges(mode, mins, maxs, div, (-7, 9))])
    assert run_js(requests) == want


@needs_node
@pytest.mark.parametrize("sign", colormap.SIGNS)
def test_python_overlay_blending_equals_the_browsers(sign):
    rng = np.random.default_rng(len(sign))
    h, w = 12, 17
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    requests, cases = [], []
    for name in ("inferno", "RdBu_r", "gray"):
        for clip, opacity in ((99.0, 0.5), (100.0, 1.0), (50.0, 0.35), (0.0, 0.0)):
            v = _values(rng.integers(1 << 30), h * w)
            cases.append((v, name, clip, opacity))
            requests.append({"op": "overlay", "values": _as_json(v), "rgb": rgb.ravel().tolist(), "name": name,
                             "sign": sign, "clip": clip, "opacity": opacity})
    cases.append((np.zeros(h * w, np.float32), "inferno", 99.0, 0.5))  # nothing to show: the image
    requests.append({"op": "overlay", "values": [0.0] * (h * w), "rgb": rgb.ravel().tolist(), "name": "inferno",
                     "sign": sign, "clip": 99.0, "opacity": 0.5})
    for (v, name, clip, opacity), js in zip(cases, run_js(requests)):
        shown = colormap.overlay_colormap(name, sign)
        lo, hi, empty = colormap.overlay_range(colormap.sorted_magnitudes(v, sign), clip, colormap.is_diverging(shown))
        assert [lo, hi, empty] == js["range"]
        py = export.overlay_pixels(rgb, v.reshape(h, w), sign=sign, colormap_name=name, clip_percentile=clip,
                                   opacity=opacity)
        want = np.array(js["rgba"], np.uint8).reshape(h, w, 4)
        assert (want[..., 3] == 255).all()
        assert np.abs(py.astype(int) - want[..., :3]).max() <= 1, (name, clip, opacity)


@needs_node
def test_python_tile_grid_equals_the_browsers():
    rng = np.random.default_rng(7)
    requests, cases = [], []
    for count, th, tw, extra in [(16, 8, 8, {}), (5, 3, 3, {"maxWidth": 560, "maxCell": 64}), (40, 1, 1, {"cols": 32}),
                                 (3, 200, 120, {}), (7, 5, 9, {"cols": 4, "maxWidth": 240})]:
        v = rng.standard_normal(count * th * tw).astype(np.float32)
        order = rng.permutation(count).tolist()
        layout = {"count": count, "tileH": th, "tileW": tw, **extra}
        cases.append((v, count, th, tw, extra, order))
        requests.append({"op": "grid", "layout": layout, "values": _as_json(v), "lo": -1.0, "hi": 1.5,
                         "name": "magma", "order": order})
    for (v, count, th, tw, extra, order), js in zip(cases, run_js(requests)):
        keys = {"cols": "cols", "maxWidth": "max_width", "maxCell": "max_cell"}
        L = export.layout_grid(count, th, tw, **{keys[k]: x for k, x in extra.items()})
        assert L == js["L"]
        tiles = colormap.apply(v, -1.0, 1.5, "magma").reshape(count, th, tw, 3)
        assert np.array_equal(export.blit_tiles(L, tiles, order), np.array(js["rgba"], np.uint8).reshape(L["height"], L["width"], 4))


@needs_node
def test_python_filter_tiles_equal_the_browsers(shapes):
    model, _ = shapes
    requests, cases = [], []
    for conv in (model.features.conv1, model.features.conv2):
        msg = wire.encode(conv.weight)
        w = wire.decode(msg)
        for k in (-1, 0, w.shape[1] - 1):
            cases.append((w, k))
            requests.append({"op": "filters", "values": _as_json(w), "shape": list(w.shape), "k": k, "groups": 1})
    for (w, k), js in zip(cases, run_js(requests)):
        values, rgb = export.filter_tiles(w, k)
        assert rgb == js["rgb"]
        assert np.array_equal(values.ravel(), np.array(js["values"], np.float32))
        mins, maxs = export._slice_range(values, w.shape[0])
        assert mins.tolist() == js["min"] and maxs.tolist() == js["max"]
