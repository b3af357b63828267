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


def run_js(requests: list[dict], bridge: str = BRIDGE, name: str = "_export_bridge") -> list:
    """Answer ``requests`` with the JS modules in node: the ``bridge`` script, written as a throwaway
    ``<name>.test-tmp.mjs`` beside js/src."""
    script = ROOT / "js" / f"{name}.test-tmp.mjs"
    script.write_text(bridge, encoding="utf-8")
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
                                 (3, 200, 120, {}), (7, 5, 9, {"cols": 4, "maxWidth": 240}),
                                 (16, 3, 3, {"maxWidth": 560, "maxCell": 64, "scale": 1.5}),
                                 (64, 16, 16, {"scale": 1.3}), (9, 5, 5, {"maxWidth": 240, "scale": 2.5})]:
        v = rng.standard_normal(count * th * tw).astype(np.float32)
        order = rng.permutation(count).tolist()
        layout = {"count": count, "tileH": th, "tileW": tw, **extra}
        cases.append((v, count, th, tw, extra, order))
        requests.append({"op": "grid", "layout": layout, "values": _as_json(v), "lo": -1.0, "hi": 1.5,
                         "name": "magma", "order": order})
    for (v, count, th, tw, extra, order), js in zip(cases, run_js(requests)):
        keys = {"cols": "cols", "maxWidth": "max_width", "maxCell": "max_cell", "scale": "scale"}
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


# -- PNG, HTML and the record, from Python ---------------------------------------------------------------


def _views(model, images):
    """One of every public view on ``model`` (computed views finished)."""
    from cnn_widgets.widgets.compare import compare
    from cnn_widgets.widgets.conv_explainer import ConvExplainer
    from cnn_widgets.widgets.model_summary import ModelSummary

    conv = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    av = AttributionView(model, images[0], "saliency")
    av.wait()
    cmp = compare(model, [images[0], images[1]], ["saliency", "input_x_gradient"])
    cmp.wait()
    fg = FilterGrid(model)
    fg.selected = 0
    return {
        "ActivationBrowser": ActivationBrowser(model, images[0], channel=1),
        "FilterGrid": fg,
        "AttributionView": av,
        "Compare": cmp,
        "ConvExplainer": ConvExplainer(model, images[0], conv),
        "ModelSummary": ModelSummary(model, images[0], selected=conv),
    }


def test_every_view_writes_its_picture_and_record(shapes, tmp_path, untouched):
    model, images = shapes
    views = _views(model, images)
    params = sum(p.numel() for p in model.parameters())
    with untouched(model):
        for name, view in views.items():
            path = tmp_path / f"{name}.png"
            rec = view.to_png(path)
            with Image.open(path) as im:
                assert np.array_equal(np.asarray(im.convert("RGB")), export.image(view)), name
                assert json.loads(im.text["cnnw-record"]) == rec
            assert json.loads(pathlib.Path(f"{path}.json").read_text()) == rec
            assert set(export.RECORD_KEYS) <= set(rec) and rec["widget"] == name
            assert rec["model"] == "cnn_widgets.zoo.shapesnet.ShapesNet" and rec["parameters"] == params
            assert rec["versions"] == {"cnn_widgets": "0.1.0", "torch": torch.__version__,
                                       "captum": __import__("captum").__version__}
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", rec["timestamp"])
            html_rec = view.save_html(tmp_path / f"{name}.html")
            assert {k: v for k, v in html_rec.items() if k != "timestamp"} == {k: v for k, v in rec.items() if k != "timestamp"}
    for view in views.values():
        view.close()


def test_record_names_what_was_computed_and_hashes_the_models_input(shapes):
    model, images = shapes
    av = AttributionView(model, images[0], "grad_cam", target=2)
    av.wait()
    rec = export.record(av)
    assert (rec["method"], rec["target"], rec["layer"]) == ("grad_cam", 2, av.result.layer)
    assert rec["options"] == json.loads(json.dumps(av.result.options, default=repr))
    assert rec["image_shape"] == [1, 3, 64, 64]
    ab = ActivationBrowser(model, images[0])
    assert export.record(ab)["image_sha256"] == rec["image_sha256"], "same image, same model input"
    assert export.record(ActivationBrowser(model, images[1]))["image_sha256"] != rec["image_sha256"]
    normalised = export.record(ActivationBrowser(model, images[0], mean=0.5, std=0.25))["image_sha256"]
    assert normalised != rec["image_sha256"], "the hash is of the input as given to the model"
    want = __import__("hashlib").sha256(images[0][None].numpy().astype("<f4").tobytes()).hexdigest()
    assert rec["image_sha256"] == want


def test_html_is_one_file_without_network_and_embedded_data_cannot_end_a_script(tmp_path):
    model, x = archs.build("xss_named")
    layer = f"blocks.{archs.XSS_NAME}"
    view = ActivationBrowser(model, x, layer=layer)
    rec = view.save_html(tmp_path / "x.html")
    text = (tmp_path / "x.html").read_text()
    assert rec["layer"] == layer
    assert archs.XSS_NAME not in text, "every < of the data is escaped"
    assert "\\u003cimg src=x onerror=pwned=1\\u003e" in text
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text), "nothing is loaded from elsewhere"
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp.split("style-src")[0], csp
    scripts = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', text, re.S)
    assert [name for name, _ in scripts] == ["cnnw-record", "cnnw-state"]
    assert json.loads(scripts[0][1]) == rec
    (part,) = json.loads(scripts[1][1])
    assert part["state"]["layer"] == layer and part["state"]["_mode"] == "eager"
    assert set(part["state"]["_data"]) == set(view.layers), "every layer travels, so the slider works offline"
    assert "$b64" in json.dumps(part["state"]["_data"][layer])
    view.close()


def test_compare_html_answers_the_views_fetch_with_its_rows(shapes, tmp_path):
    from cnn_widgets.widgets.compare import compare

    model, images = shapes
    view = compare(model, [images[0]], ["saliency", "grad_cam"])
    view.wait()
    (part,) = view._export_html()
    rows = part["replies"]["fetch"]
    assert [content["row"] for content, _ in rows] == [0, 1]
    for (content, buffers), encoded in zip(rows, view._encoded):
        assert content["type"] == "row" and bytes(buffers[0]) == bytes(encoded["data"])


def test_attribution_view_html_has_its_bars_as_data_not_markup(shapes, tmp_path):
    model, images = shapes
    labels = [archs.XSS_NAME, "b", "c", "d", "e"]
    view = AttributionView(model, images[0], "saliency", labels=labels)
    canvas, bars = view._export_html()
    assert canvas["kind"] == "widget" and bars["kind"] == "bars"
    assert {r["label"] for r in bars["rows"]} <= set(labels)
    assert bars["target"] == view.predictions[0]["index"]
    view.save_html(tmp_path / "v.html")
    assert archs.XSS_NAME not in (tmp_path / "v.html").read_text()


@pytest.mark.parametrize("arch", ["plain", "nested", "dict_output", "train_bn", "shared", "xss_named"])
def test_exports_on_odd_architectures_leave_the_model_untouched(arch, tmp_path, untouched):
    model, x = archs.build(arch)
    ab = ActivationBrowser(model, x, channel=0)
    fg = FilterGrid(model)
    fg.selected = 0
    with untouched(model):
        for view in (ab, fg):
            picture = export.image(view)
            assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 0
            view.to_png(tmp_path / "p.png")
            view.save_html(tmp_path / "p.html")
    ab.close()


def test_what_cannot_be_exported_says_so():
    from cnn_widgets.widgets.panel import Panel

    with pytest.raises(export.ExportError, match="not a cnn_widgets view.*ActivationBrowser"):
        export.to_png(object(), "x.png")
    assert issubclass(export.ExportError, TypeError)

    class Bare(Panel):
        pass

    with pytest.raises(export.ExportError, match="Bare has no PNG export"):
        export.image(Bare())
    with pytest.raises(export.ExportError, match="Bare has no HTML export"):
        export.html_document(Bare())
    with pytest.raises(export.ExportError, match="nothing to draw"):
        export.compose([[], []])


def test_compose_lays_canvases_out_on_white_with_gaps():
    red = np.zeros((3, 4, 4), np.uint8)
    red[..., 0] = 255
    red[..., 3] = 255
    red[0, 0, 3] = 0  # transparent: the background shows
    blue = np.zeros((5, 2, 3), np.uint8)
    blue[..., 2] = 255
    out = export.compose([[red, blue], [blue]])
    g = export.GAP
    assert out.shape == (5 + g + 5, 4 + g + 2, 3)
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [255, 0, 0]
    assert out[4, 0].tolist() == [255, 255, 255], "a shorter canvas is top-aligned"
    assert out[0, 4 + g].tolist() == [0, 0, 255] and out[5 + g, 0].tolist() == [0, 0, 255]
    assert out[5 + g, 2].tolist() == [255, 255, 255]


def test_a_box_of_views_exports_its_views(shapes, tmp_path):
    """A layout of views (as Explorer is) exports each view: pictures stacked, HTML parts in order."""
    import ipywidgets as W

    from cnn_widgets.widgets.panel import Panel

    class Board(Panel, W.VBox):
        pass

    model, images = shapes
    ab, fg = ActivationBrowser(model, images[0]), FilterGrid(model)
    board = Board(children=[W.HBox([ab, W.Label("text")]), fg])
    assert export.parts(board) == [ab, fg]
    picture = export.image(board)
    a, f = export.image(ab), export.image(fg)
    assert picture.shape == (a.shape[0] + export.GAP + f.shape[0], max(a.shape[1], f.shape[1]), 3)
    assert np.array_equal(picture[:a.shape[0], :a.shape[1]], a)
    rec = board.to_png(tmp_path / "b.png")
    assert rec["widget"] == "Board" and [p["widget"] for p in rec["parts"]] == ["ActivationBrowser", "FilterGrid"]
    assert rec["image_sha256"] == export.record(ab)["image_sha256"]
    assert [p["kind"] for p in board._export_html()] == ["widget", "widget"]
    board.save_html(tmp_path / "b.html")
    with pytest.raises(export.ExportError, match="Board has no PNG export"):
        export.image(Board(children=[W.Label("nothing to draw")]))
