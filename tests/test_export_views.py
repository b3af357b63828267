"""PNG / HTML exports of the views added after the first export round (Metrics, TrainingMonitor,
TopActivations, ChannelImportance, ClassHeatmaps): the picture is written with its record, equals what the
view's JS paints (node runs the JS functions on the same arrays), the record names what was computed, and
user strings stay text in the HTML.
"""

from __future__ import annotations

import io
import json
import pathlib
import re

import numpy as np
import pytest
import torch
from PIL import Image

import archs
import test_export
from cnn_widgets import export, model_lock, wire, zoo

pytestmark = pytest.mark.usefixtures("single_thread")

needs_node = test_export.needs_node
_as_json = test_export._as_json

# {"op": "overlay", rgb, values, name, sign, clip, opacity} → the RGBA the view's canvas gets
BRIDGE = """
import { isDiverging, lut } from "./src/colormap.js";
import { blendOverlay, overlayColormap, overlayRange, sortedMagnitudes } from "./src/overlay.js";
import { patchPixels } from "./src/dataset_views.js";
import { filterTiles } from "./src/filters.js";
import { blitTiles, colorizeRgb, colorizeScalar, layoutGrid, packLut } from "./src/grid.js";
import { colorRange, tileRanges } from "./src/colormap.js";
function grid(L, pixels) {
  const dst = new Uint32Array(L.width * L.height);
  blitTiles(dst, L, pixels, Int32Array.from({ length: L.count }, (_, i) => i));
  return { w: L.width, h: L.height, rgba: Array.from(new Uint8Array(dst.buffer)) };
}
const f32 = (a) => Float32Array.from(a.map((v) => (v === null ? NaN : v)));
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const out = [];
for (const q of JSON.parse(Buffer.concat(chunks).toString())) {
  if (q.op === "overlay") {
    const name = overlayColormap(q.name, q.sign);
    const values = f32(q.values);
    const r = overlayRange(sortedMagnitudes(values, q.sign), q.clip, isDiverging(name));
    out.push(Array.from(blendOverlay(Uint8Array.from(q.rgb), values,
      { sign: q.sign, lo: r.lo, hi: r.hi, table: lut(name), opacity: q.opacity })));
  } else if (q.op === "patch") {  // top_activations.js: one patch
    out.push(Array.from(patchPixels(Uint8Array.from(q.rgb), f32(q.heat), q.box, q.side,
      { lo: 0, hi: q.hi, table: lut("inferno"), opacity: q.opacity })));
  } else if (q.op === "filters") {  // training_monitor.js grid, or top_activations.js one filter (q.one)
    const t = filterTiles(f32(q.values), q.shape, -1, q.groups);
    const [, , kh, kw] = q.shape;
    if (q.one !== undefined) {
      const n = t.rgb ? 3 * kh * kw : kh * kw;
      const one = t.values.subarray(q.one * n, (q.one + 1) * n);
      const [lo, hi] = colorRange(t.min[q.one], t.max[q.one], !t.rgb && isDiverging("RdBu_r"));
      const px = t.rgb ? colorizeRgb(one, 1, [lo], [hi]) : colorizeScalar(one, 1, [lo], [hi], packLut(lut("RdBu_r")));
      out.push({ w: kw, h: kh, rgba: Array.from(new Uint8Array(px.buffer)) });
    } else {
      const r = tileRanges("channel", t.min, t.max, !t.rgb && isDiverging("RdBu_r"));
      const px = t.rgb ? colorizeRgb(t.values, t.count, r.lo, r.hi) : colorizeScalar(t.values, t.count, r.lo, r.hi, packLut(lut("RdBu_r")));
      out.push(grid(layoutGrid({ count: t.count, tileH: kh, tileW: kw, maxWidth: 420, maxCell: 48 }), px));
    }
  } else if (q.op === "activations") {  // training_monitor.js
    const [C, ah, aw] = q.shape;
    const r = tileRanges("channel", q.min, q.max, false);
    out.push(grid(layoutGrid({ count: C, tileH: ah, tileW: aw, maxWidth: 420, maxCell: 64 }),
      colorizeScalar(f32(q.values), C, r.lo, r.hi, packLut(lut("viridis")))));
  } else if (q.op === "cells") {  // class_heatmaps.js: each cell on [0, hi]
    const size = q.values.length / q.count;
    const values = f32(q.values);
    const cells = [];
    for (let i = 0; i < q.count; i++) {
      const px = colorizeScalar(values.subarray(i * size, (i + 1) * size), 1, [0], [q.hi > 0 ? q.hi : 1], packLut(lut("inferno")));
      cells.push(Array.from(new Uint8Array(px.buffer)));
    }
    out.push(cells);
  } else throw new Error(`unknown op ${q.op}`);
}
process.stdout.write(JSON.stringify(out));
"""


def run_js(requests: list[dict]) -> list:
    """Answer ``requests`` with this module's bridge (the runner of test_export.py)."""
    return test_export.run_js(requests, BRIDGE, "_export_views_bridge")


def _png_and_record(view, tmp_path, name: str) -> tuple[np.ndarray, dict]:
    """Write the PNG; check it holds ``export.image`` and the record (in the file and beside it)."""
    path = tmp_path / f"{name}.png"
    rec = view.to_png(path)
    with Image.open(path) as im:
        picture = np.asarray(im.convert("RGB"))
        assert json.loads(im.text["cnnw-record"]) == rec
    assert np.array_equal(picture, export.image(view))
    assert json.loads(pathlib.Path(f"{path}.json").read_text()) == rec
    assert set(export.RECORD_KEYS) <= set(rec) and rec["widget"] == type(view).__name__
    return picture, rec


def _html(view, tmp_path, name: str) -> tuple[str, dict, list]:
    """Write the HTML; return its text, the embedded record and the parts (state) it carries."""
    path = tmp_path / f"{name}.html"
    rec = view.save_html(path)
    text = path.read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text), "nothing is loaded from elsewhere"
    scripts = dict(re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', text, re.S))
    assert json.loads(scripts["cnnw-record"]) == rec
    return text, rec, json.loads(scripts["cnnw-state"])


@pytest.fixture(scope="module")
def shapes():
    model = zoo.load_shapesnet()
    images, _, masks = zoo.shapes_dataset(3, seed=1)
    return model, images, masks


# -- Metrics -------------------------------------------------------------------------------------------------


def edges(model, image):
    """A "method" that ignores the model (its name goes into the record as module.qualname)."""
    return image.mean(dim=0).diff(dim=1, prepend=image.mean(dim=0)[:, :1]).abs()


@pytest.fixture(scope="module")
def metrics_view(shapes):
    from cnn_widgets.widgets.metrics_view import Metrics

    model, images, masks = shapes
    labels = [archs.XSS_NAME, "b", "c", "d", "e"]
    view = Metrics(model, images[:2], {"grad_cam": "grad_cam", archs.XSS_NAME: edges}, labels=labels,
                   masks=masks[:2], steps=4, sample=1, randomize=["fc"], seed=1)
    assert view.wait(600)
    yield view
    view.close()


@needs_node
def test_metrics_png_is_the_canvas_the_js_paints_at_each_step(metrics_view, tmp_path, untouched):
    view = metrics_view
    model = view._model
    pictures = wire.decode(view._canvas._images)
    cases = [("grad_cam", 0, 0, "positive"), ("grad_cam", 1, 0, "all"), ("grad_cam", 0, 1, "absolute"),
             (archs.XSS_NAME, 1, 0, "positive"), ("grad_cam", 1, 1, "positive")]
    requests, shots = [], []
    with untouched(model):
        for method, image, step, sign in cases:
            view.method, view.image, view.step, view.sign = method, image, step, sign
            picture, rec = _png_and_record(view, tmp_path, f"m{len(shots)}")
            assert (rec["method"], rec["image"], rec["step"], rec["display"]["sign"]) == (method, image, step, sign)
            shots.append(picture)
            if method == "grad_cam" and step == 1 and image == 1:
                continue  # the cascade ran on the first image only: the plain image
            values = view._shown_values()
            assert values is not None
            if step:
                want = view._sanity[method]["cascade"][image][step].numpy()
                assert np.abs(values - want).max() <= 1e-2 * max(1.0, float(np.abs(want).max())), "float16 of the map"
            requests.append({"op": "overlay", "rgb": pictures[image].ravel().tolist(), "values": _as_json(values),
                             "name": view.colormap, "sign": sign, "clip": view.clip_percentile, "opacity": view.opacity})
    js = iter(run_js(requests))
    for (method, image, step, sign), picture in zip(cases, shots):
        assert picture.shape == pictures[image].shape, "the canvas has the image's own pixels"
        if method == "grad_cam" and step == 1 and image == 1:
            assert np.array_equal(picture, pictures[image])
            continue
        want = np.array(next(js), np.uint8).reshape(*pictures[image].shape[:2], 4)[..., :3]
        assert np.abs(picture.astype(int) - want).max() <= 1, (method, image, step, sign)
        assert not np.array_equal(picture, pictures[image]), "the heatmap is over the image"
    view.method, view.image, view.step, view.sign = "grad_cam", 0, 0, "positive"


def test_metrics_record_has_methods_options_targets_and_image_hashes(metrics_view, shapes):
    from cnn_widgets.widgets.attribution_view import AttributionView

    model, images, _ = shapes
    rec = export.record(metrics_view)
    assert rec["methods"] == {"grad_cam": "grad_cam", archs.XSS_NAME: f"{__name__}.edges"}
    assert rec["targets"] == metrics_view.targets and rec["target"] == metrics_view.targets[0]
    assert rec["target_labels"] == [metrics_view._labels[c] for c in metrics_view.targets]
    assert rec["options"]["steps"] == 4 and rec["options"]["sample"] == 1 and rec["options"]["randomize"] == ["fc"]
    assert rec["options"]["methods"] == {"grad_cam": {}} and rec["options"]["baseline"] == "blur"
    assert rec["image_shape"] == [2, 3, 64, 64] and len(rec["image_hashes"]) == 2
    single = AttributionView(model, images[1], "saliency")
    assert rec["image_hashes"][1] == export.record(single)["image_sha256"], "the same image hashes the same"
    assert rec["image_hashes"][0] != rec["image_hashes"][1]
    single.close()


def test_metrics_html_carries_the_maps_the_curves_as_svg_data_and_names_as_text(metrics_view, tmp_path):
    view = metrics_view
    text, rec, parts = _html(view, tmp_path, "metrics")
    assert [p["kind"] for p in parts] == ["widget", "curves", "curves"]
    fetch = parts[0]["replies"]["fetch"]
    assert sorted((c["type"], c["method"]) for c, _ in fetch) == sorted(
        [("maps", "grad_cam"), ("maps", archs.XSS_NAME), ("cascade", "grad_cam"), ("cascade", archs.XSS_NAME)])
    for content, buffers in fetch:
        assert "$b64" in buffers[0]
    for part, (deletion_or_insertion) in zip(parts[1:], (0, 1)):
        by_name = {s["name"]: s for s in part["series"]}
        assert set(by_name) == {"grad_cam", archs.XSS_NAME}
        curve = view.curves[("grad_cam", 0)][deletion_or_insertion]
        assert by_name["grad_cam"]["y"] == pytest.approx(curve.scores.tolist())
        assert by_name["grad_cam"]["auc"] == pytest.approx(curve.auc) and by_name["grad_cam"]["selected"]
    assert archs.XSS_NAME not in text, "every < of the data is escaped"
    assert rec["widget"] == "Metrics"


def _canvas(js: dict) -> np.ndarray:
    return np.array(js["rgba"], np.uint8).reshape(js["h"], js["w"], 4)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


# -- TrainingMonitor -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitor(shapes):
    import copy

    from cnn_widgets.widgets.training_monitor import TrainingMonitor

    model, images, _ = shapes
    with model_lock(model):  # trained below: not the shared model; no run's hooks copied (README)
        net = copy.deepcopy(model)
    view = TrainingMonitor(net, probe=images[:2], layers=["features.conv1", "features.conv2"])
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss = torch.nn.functional.cross_entropy(net(images[:3]), torch.tensor([0, 1, 2]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    view.step(loss)
    view.epoch_end(accuracy=0.5)
    yield view
    view.close()


@needs_node
def test_training_monitor_png_is_the_newest_snapshots_filters_activations_and_probe(monitor, tmp_path):
    picture, rec = _png_and_record(monitor, tmp_path, "tm")
    stored = monitor._stored[-1]
    parts = {(p["what"], p["layer"], p["image"]): {**p, "data": b} for p, b in zip(stored.parts, stored.buffers)}
    w, a = parts[("filters", "features.conv1", -1)], parts[("activations", "features.conv1", 0)]
    weights, acts = wire.decode(w), wire.decode(a)
    mins, maxs = wire.extrema(a)
    f_js, a_js = run_js([
        {"op": "filters", "values": _as_json(weights), "shape": list(weights.shape), "groups": 1},
        {"op": "activations", "values": _as_json(acts), "shape": list(acts.shape), "min": mins.tolist(), "max": maxs.tolist()},
    ])
    probe = wire.decode(monitor._canvas._probe[0])
    _close(picture, export.compose([[_canvas(f_js), _canvas(a_js), probe]]))
    first = export.training_monitor_image(monitor, snapshot=0)
    assert first.shape == picture.shape and not np.array_equal(first, picture), "training changed the filters"
    assert (rec["layer"], rec["snapshot"]["epoch"], rec["snapshot"]["step"]) == ("features.conv1", 1, 1)
    assert rec["snapshot"]["metrics"]["accuracy"] == 0.5 and rec["layers"] == ["features.conv1", "features.conv2"]
    assert rec["image_shape"] == [2, 3, 64, 64] and rec["options"]["every"] == 1


def test_training_monitor_html_holds_every_kept_snapshot_and_the_loss_chart(monitor, tmp_path):
    text, rec, parts = _html(monitor, tmp_path, "tm")
    assert [p["kind"] for p in parts][0] == "widget" and "curves" in [p["kind"] for p in parts]
    fetch = parts[0]["replies"]["fetch"]
    assert [c["id"] for c, _ in fetch] == [s.id for s in monitor._stored]
    assert all(len(b) == len(c["parts"]) for c, b in fetch)
    (loss,) = [p for p in parts if p["kind"] == "curves" and p["ylabel"] == "loss"]
    assert [s["name"] for s in loss["series"]] == ["loss"] and loss["series"][0]["y"] == pytest.approx(
        [v for _, v in monitor.history["step"]["loss"]])


# -- TopActivations ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def top(shapes):
    from cnn_widgets.widgets.top_activations import TopActivations

    model, _, _ = shapes
    images, labels, _ = zoo.shapes_dataset(24, seed=5)
    view = TopActivations(model, (images, labels), "features.conv2", k=3, batch_size=12, channel=2)
    assert view.wait(300) and view.error == ""
    yield view
    view.close()


@needs_node
def test_top_activations_png_is_the_channels_patches_and_filter(top, tmp_path, untouched):
    with untouched(top._model):
        picture, rec = _png_and_record(top, tmp_path, "top")
    p, c = top._patches, top.channel
    side, k = p["side"], p["k"]
    images = wire.decode(p["images"]).reshape(-1, side, side, 3)
    heat = wire.decode(p["heat"]).reshape(-1, side * side)
    hi = float(wire.extrema(p["heat"])[1][c])
    weights = wire.decode(top._filters["tensor"])
    requests = [{"op": "patch", "rgb": images[c * k + j].ravel().tolist(), "heat": _as_json(heat[c * k + j]),
                 "box": p["boxes"][c][j], "side": side, "hi": hi, "opacity": 0.5} for j in range(k)]
    requests.append({"op": "filters", "values": _as_json(weights), "shape": list(weights.shape), "groups": 1, "one": c})
    *patches, filt = run_js(requests)
    want = [np.array(px, np.uint8).reshape(side, side, 4) for px in patches] + [_canvas(filt)]
    _close(picture, export.compose([want]))
    assert (picture[:side, :side] == export.PAD_COLORS[0]).all(axis=2).any() or p["boxes"][c][0] == [0, 0, side, side]
    assert rec["layer"] == "features.conv2" and rec["channel"] == c and rec["images"] == top.top_images()
    assert rec["image_shape"] == [k, 3, 64, 64] and rec["options"]["k"] == 3
    top.channel = -1
    with pytest.raises(export.ExportError, match="nothing to draw"):
        export.image(top)
    top.channel = c


def test_top_activations_html_has_every_channel(top, tmp_path):
    text, rec, parts = _html(top, tmp_path, "top")
    (part,) = parts
    assert part["state"]["_patches"]["channels"] == top._patches["channels"], "the slider works offline"
    assert part["state"]["channel"] == top.channel and rec["widget"] == "TopActivations"


# -- ClassHeatmaps -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heatmaps():
    from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps

    model = zoo.load_shapesnet("cheat")  # some images misclassified: both columns have maps
    images, labels, _ = zoo.shapes_dataset(16, seed=4)
    names = [archs.XSS_NAME] + list(zoo.CLASSES[1:])
    view = ClassHeatmaps(model, (images, labels), "saliency", labels=names, batch_size=16)
    assert view.wait(300) and view.error == ""
    yield view
    view.close()


@needs_node
def test_class_heatmaps_png_is_the_grid_of_mean_maps_and_the_listed_cell(heatmaps, tmp_path):
    view = heatmaps
    picture, rec = _png_and_record(view, tmp_path, "ch")
    maps = wire.decode(view._grid["maps"])
    classes, (mh, mw) = len(view._grid["classes"]), maps.shape[-2:]
    (cells,) = run_js([{"op": "cells", "values": _as_json(maps), "count": len(maps), "hi": float(np.nanmax(maps))}])
    counts = view.counts
    rows = [[np.array(cells[2 * r + c], np.uint8).reshape(mh, mw, 4) if counts[r, c] else np.zeros((mh, mw, 4), np.uint8)
             for c in range(2)] for r in range(classes)]
    _close(picture, export.compose(rows))
    assert (counts == 0).any() and (counts > 0).any()
    label = int(np.argwhere(counts[:, 0] > 0)[0, 0])
    view.select(label, True)
    assert view.wait(300)
    with_cell, _ = _png_and_record(view, tmp_path, "ch2")
    images, heat = wire.decode(view._cell["images"]), wire.decode(view._cell["maps"])
    thumbs = run_js([{"op": "overlay", "rgb": images[i].ravel().tolist(), "values": _as_json(heat[i]), "name": "inferno",
                      "sign": "positive", "clip": 99.0, "opacity": 0.5} for i in range(len(images))])
    row = [np.array(t, np.uint8).reshape(*images.shape[1:3], 4) for t in thumbs]
    _close(with_cell, export.compose(rows + [row]))
    assert rec["method"] == "saliency" and rec["counts"] == counts.tolist() and rec["classes"][0] == archs.XSS_NAME


def test_class_heatmaps_html_keeps_class_names_as_text(heatmaps, tmp_path):
    text, rec, parts = _html(heatmaps, tmp_path, "ch")
    assert archs.XSS_NAME not in text and parts[0]["state"]["_grid"]["classes"][0] == archs.XSS_NAME


# -- ChannelImportance -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def importance(shapes):
    from cnn_widgets.widgets.channel_importance_view import ChannelImportance

    model, _, _ = shapes
    images, labels, _ = zoo.shapes_dataset(16, seed=8)
    view = ChannelImportance(model, (images, labels), "features.conv3", metric="loss", repeats=1, batch_size=16, channel=1)
    assert view.wait(300) and view.error == ""
    yield view
    view.close()


def _runs(columns: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True columns."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(int), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_channel_importance_png_draws_a_bar_per_channel_the_selected_one_orange(importance, tmp_path):
    view = importance
    r = view.importance
    for sort in ("permutation", "channel"):
        view.sort = sort
        picture, rec = _png_and_record(view, tmp_path, f"ci-{sort}")
        colour = lambda rgb: (picture == rgb).all(axis=2)  # noqa: E731
        orange = colour(export.IMPORTANCE_SELECTED)
        marks = colour(export.IMPORTANCE_BAR) | orange | colour(export.IMPORTANCE_DOT)
        slots = _runs(marks.any(axis=0))
        assert len(slots) == len(r.permutation), "every channel has its dot (zeroing), most a bar"
        order = view.order()
        if r.permutation[1] != 0:
            (a, b), = _runs(orange.any(axis=0))
            assert slots[order.index(1)][0] <= a < b <= slots[order.index(1)][1], "the selected channel's bar"
        heights = [int(colour(export.IMPORTANCE_BAR)[:, a:b].any(axis=1).sum() + orange[:, a:b].any(axis=1).sum())
                   for a, b in slots]
        top = int(np.argmax(heights))
        assert abs(r.permutation[order[top]]) == pytest.approx(np.nanmax(np.abs(r.permutation))), "the tallest bar"
        assert (rec["layer"], rec["channel"], rec["options"]["metric"], rec["options"]["sort"]) == (
            "features.conv3", 1, "loss", sort)
    view.sort = "permutation"


def test_channel_importance_html_has_the_menu_data_and_the_chart_as_a_picture(importance, tmp_path):
    text, rec, parts = _html(importance, tmp_path, "ci")
    assert [p["kind"] for p in parts] == ["widget", "picture"]
    assert parts[0]["state"]["_rows"]["permutation"] == pytest.approx(importance.importance.permutation.tolist())
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(parts[1]["png"]))) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), export.image(importance))


def test_channel_importance_save_png_button_gets_the_kernels_picture(importance, tmp_path):
    """The browser has no canvas of the bqplot chart, so its "save PNG" asks the kernel ({type: "png"}):
    the answer is the PNG file to_png writes, record included."""
    view = importance
    sent: list[tuple[dict, list]] = []
    original = view._controls.send
    view._controls.send = lambda content, buffers=None: sent.append((content, buffers or []))
    try:
        view._controls._handle_custom_msg({"type": "png"}, [])
    finally:
        view._controls.send = original
    (content, buffers), = sent
    assert content == {"type": "png"} and len(buffers) == 1
    answered = np.asarray(Image.open(io.BytesIO(bytes(buffers[0]))).convert("RGB"))
    picture, _ = _png_and_record(view, tmp_path, "ci-button")
    np.testing.assert_array_equal(answered, picture)
    assert json.loads(Image.open(io.BytesIO(bytes(buffers[0]))).text["cnnw-record"])["widget"] == "ChannelImportance"
