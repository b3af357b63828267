"""PNG / HTML exports of the views added after the first export round (Metrics, TrainingMonitor,
TopActivations, ChannelImportance, ClassHeatmaps): the picture is written with its record, equals what the
view's JS paints (node runs the JS functions on the same arrays), the record names what was computed, and
user strings stay text in the HTML.
"""

from __future__ import annotations

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
from cnn_widgets import export, wire, zoo

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")

# {"op": "overlay", rgb, values, name, sign, clip, opacity} → the RGBA the view's canvas gets
BRIDGE = """
import { isDiverging, lut } from "./src/colormap.js";
import { blendOverlay, overlayColormap, overlayRange, sortedMagnitudes } from "./src/overlay.js";
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
  } else throw new Error(`unknown op ${q.op}`);
}
process.stdout.write(JSON.stringify(out));
"""


def run_js(requests: list[dict]) -> list:
    """Answer ``requests`` with the JS modules in node (a throwaway .mjs beside js/src)."""
    script = ROOT / "js" / "_export_views_bridge.test-tmp.mjs"
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
