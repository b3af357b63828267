"""PNG and offline HTML exports of the widgets, each with a reproducibility record.

* :func:`to_png` writes the picture a view's "save PNG" button downloads — its canvases composed into one
  image (:func:`compose`: rows top to bottom, canvases left to right, ``GAP`` px apart, on white) — from
  Python, without a browser: each widget renders it in ``_export_image()`` with the browser's own colour
  arithmetic (:mod:`cnn_widgets.colormap`, the same lookup tables). Beside it, ``<path>.json`` holds the
  record; the PNG carries it too (text chunk ``cnnw-record``).
* :func:`save_html` writes one self-contained HTML file: the widget's ES module, its state (binary
  buffers as base64) and a small in-page stand-in for the Jupyter widget model. It needs no network and
  no kernel; what the browser can do from the data in the file stays interactive, anything that would
  need the kernel does nothing. Bars that bqplot draws in a notebook become plain HTML bars, its curves
  inline SVG polylines (:func:`bars_part`, :func:`curves_part`).
* :func:`record` says how the picture was made: model class and parameter count, layer, method and its
  options, target, a SHA-256 of the input as given to the model, the versions of cnn_widgets, torch and
  captum, and the time.

User strings (layer names, labels) reach the page only as JSON data turned into text by the views
(``textContent``); every ``<`` in embedded JSON is written ``\\u003c``, so no string can end a script.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, PngImagePlugin

from . import colormap, wire

GAP = 8  # px between composed canvases (dom.js composeCanvases uses the same)
BACKGROUND = (255, 255, 255)
ACCENT = (0x19, 0x76, 0xD2)  # dom.js accentColor's fallback: JupyterLab's light brand colour
RECORD_KEYS: tuple[str, ...] = (
    "widget", "model", "parameters", "layer", "method", "options", "target", "image_sha256", "image_shape",
    "versions", "timestamp",
)
# synced traits every ipywidget has: not part of a view's state in an export
_INFRA = {
    "_esm", "_css", "_anywidget_id", "_dom_classes", "layout", "tabbable", "tooltip", "comm", "keys", "log",
    "_model_module", "_model_module_version", "_model_name", "_view_count", "_view_module",
    "_view_module_version", "_view_name",
}


class ExportError(TypeError):
    """This object cannot be exported (it is not a cnn_widgets view, or the view has no picture)."""


# -- the reproducibility record ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of cnn_widgets, torch and captum in this process."""
    import captum

    from . import __version__

    return {"cnn_widgets": __version__, "torch": torch.__version__, "captum": captum.__version__}


def model_fields(model: torch.nn.Module) -> dict[str, Any]:
    """``model`` (module path and class name) and ``parameters`` (count) of a model."""
    cls = type(model)
    return {"model": f"{cls.__module__}.{cls.__qualname__}", "parameters": int(sum(p.numel() for p in model.parameters()))}


def image_fields(batch: torch.Tensor) -> dict[str, Any]:
    """``image_sha256`` and ``image_shape`` of the input exactly as given to the model: SHA-256 of its
    float32 values, C-contiguous, little-endian (so the same image, mean and std give the same hash)."""
    x = batch.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
    return {"image_sha256": hashlib.sha256(x.tobytes()).hexdigest(), "image_shape": list(x.shape)}


def record(widget: Any) -> dict[str, Any]:
    """How ``widget``'s picture was made, as JSON-ready data (see the module docstring for the keys).

    Each widget contributes its fields through ``_export_record()``; keys that do not apply are ``None``.
    """
    fields = _require(widget, "_export_record")()
    out: dict[str, Any] = {key: None for key in RECORD_KEYS}
    out.update(fields)
    out["widget"] = type(widget).__name__
    out["versions"] = versions()
    out["timestamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return json.loads(json.dumps(out, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor of shape {list(value.shape)}"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array of shape {list(value.shape)}"
    return repr(value)


def _require(widget: Any, method: str) -> Any:
    fn = getattr(widget, method, None)
    if fn is None:
        raise ExportError(
            f"{type(widget).__name__} cannot be exported: it is not a cnn_widgets view (no {method}()); "
            "export one of ActivationBrowser, FilterGrid, AttributionView, Compare, ModelSummary, ConvExplainer, "
            "FeatureVisualizer, Metrics, TrainingMonitor, TopActivations, ClassHeatmaps, ChannelImportance"
        )
    return fn


# -- pictures: the browser's canvas arithmetic ------------------------------------------------------------


def compose(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """One RGB picture of canvases: ``rows`` top to bottom, each row's canvases left to right, ``GAP``
    px apart, top-aligned, on white (transparent pixels show the white). Canvases are H×W×3 or H×W×4
    uint8; empty rows are skipped. Mirrors dom.js ``composeCanvases``."""
    rows = [[np.asarray(c, np.uint8) for c in row] for row in rows]
    rows = [row for row in rows if row]
    if not rows:
        raise ExportError("this view has nothing to draw yet")
    widths = [sum(c.shape[1] for c in row) + GAP * (len(row) - 1) for row in rows]
    heights = [max(c.shape[0] for c in row) for row in rows]
    out = np.empty((sum(heights) + GAP * (len(rows) - 1), max(widths), 3), np.uint8)
    out[:] = BACKGROUND
    y = 0
    for row, height in zip(rows, heights):
        x = 0
        for c in row:
            h, w = c.shape[:2]
            if c.shape[2] == 4:
                a = c[..., 3:4].astype(np.float64) / 255.0
                rgb = np.rint(c[..., :3] * a + np.array(BACKGROUND) * (1.0 - a)).astype(np.uint8)
            else:
                rgb = c
            out[y:y + h, x:x + w] = rgb
            x += w + GAP
        y += height + GAP
    return out


def layout_grid(
    count: int, tile_h: int, tile_w: int, cols: int | None = None, max_width: int = 640, max_cell: int = 96,
    min_cell: int = 8, scale: float = 1.0,
) -> dict[str, int]:
    """grid.js layoutGrid: square cells, tiles magnified by a whole factor when they fit; the size
    limits times ``scale`` (the view's ``font_scale``)."""
    n = max(0, int(count))
    c = max(1, min(n or 1, cols if cols is not None else int(np.ceil(np.sqrt(n)))))
    rows = -(-n // c)
    k = scale if np.isfinite(scale) and scale > 0 else 1.0
    width, most, least = (int(np.floor(v * k)) for v in (max_width, max_cell, min_cell))
    budget = max(least, min(most, width // c))
    gap = 2 if budget >= 16 else 1
    inner = budget - gap
    big = max(tile_h, tile_w, 1)
    if big <= inner:
        f = inner // big
        draw_h, draw_w = tile_h * f, tile_w * f
    else:
        draw_h = max(1, int(np.floor(inner * tile_h / big + 0.5)))
        draw_w = max(1, int(np.floor(inner * tile_w / big + 0.5)))
    cell = max(draw_h, draw_w) + gap
    return {"count": n, "cols": c, "rows": rows, "cell": cell, "gap": gap, "tileH": tile_h, "tileW": tile_w,
            "drawH": draw_h, "drawW": draw_w, "width": c * cell, "height": rows * cell}


def _tile_origin(L: Mapping[str, int], slot: int) -> tuple[int, int]:
    col, row = slot % L["cols"], slot // L["cols"]
    return col * L["cell"] + ((L["cell"] - L["drawW"]) >> 1), row * L["cell"] + ((L["cell"] - L["drawH"]) >> 1)


def blit_tiles(L: Mapping[str, int], tiles: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """grid.js blitTiles: ``tiles`` (count×tileH×tileW×3 uint8) into an RGBA canvas, slot i showing tile
    ``order[i]``, nearest neighbour; gaps stay transparent."""
    out = np.zeros((L["height"], L["width"], 4), np.uint8)
    ys = (np.arange(L["drawH"]) * L["tileH"]) // L["drawH"]
    xs = (np.arange(L["drawW"]) * L["tileW"]) // L["drawW"]
    for slot in range(L["count"]):
        x0, y0 = _tile_origin(L, slot)
        out[y0:y0 + L["drawH"], x0:x0 + L["drawW"], :3] = tiles[order[slot]][ys][:, xs]
        out[y0:y0 + L["drawH"], x0:x0 + L["drawW"], 3] = 255
    return out


def outline_slot(canvas: np.ndarray, L: Mapping[str, int], slot: int, color: tuple[int, int, int] = ACCENT) -> None:
    """dom.js outlineSlot: a 3 px accent frame on the cell's edge and a 1 px white frame inside it."""
    if slot < 0:
        return
    x, y, c = (slot % L["cols"]) * L["cell"], (slot // L["cols"]) * L["cell"], L["cell"]

    def frame(x0: int, y0: int, x1: int, y1: int, width: int, rgb: tuple[int, int, int]) -> None:
        px = (*rgb, 255)
        canvas[y0:y0 + width, x0:x1] = px
        canvas[y1 - width:y1, x0:x1] = px
        canvas[y0:y1, x0:x0 + width] = px
        canvas[y0:y1, x1 - width:x1] = px

    frame(x, y, x + c, y + c, 3, color)
    frame(x + 3, y + 3, x + c - 3, y + c - 3, 1, (255, 255, 255))


def scale_nearest(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """An image drawn into height×width with smoothing off (pixel centres, as canvas drawImage does)."""
    h, w = rgb.shape[:2]
    ys = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.intp), h - 1)
    xs = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.intp), w - 1)
    return rgb[ys][:, xs]


def detail_size(h: int, w: int, side: int) -> tuple[int, int]:
    """overlay.js detailSize: (width, height) with the longer side ``side`` px."""
    s = side / max(h, w, 1)
    return max(1, int(np.floor(w * s + 0.5))), max(1, int(np.floor(h * s + 0.5)))


def paint_detail(image: np.ndarray | None, heat: np.ndarray | None, opacity: float, width: int, height: int) -> np.ndarray:
    """overlay.js paintDetail: the image unsmoothed, the heat (RGB) stretched bilinearly over it at
    ``opacity``. The browser's smoothing filter differs slightly from Pillow's, so the heat layer is
    close to, not byte-equal with, the screen."""
    out = np.zeros((height, width, 4), np.uint8)
    if image is not None:
        out[..., :3] = scale_nearest(image, height, width)
        out[..., 3] = 255
    if heat is not None:
        big = np.asarray(Image.fromarray(np.ascontiguousarray(heat)).resize((width, height), Image.BILINEAR), np.float64)
        a = opacity if image is not None else 1.0
        out[..., :3] = np.rint(out[..., :3] * (1.0 - a) + big * a).astype(np.uint8)
        out[..., 3] = 255
    return out


# -- PNG ---------------------------------------------------------------------------------------------------


def image(widget: Any) -> np.ndarray:
    """The RGB uint8 picture ``widget.to_png`` writes (H×W×3)."""
    out = np.asarray(_require(widget, "_export_image")())
    if out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
        raise ExportError(f"{type(widget).__name__}._export_image returned {out.dtype} {out.shape}, not H×W×3 uint8")
    return out


def png_bytes(widget: Any) -> tuple[bytes, dict[str, Any]]:
    """``widget``'s picture as PNG file bytes (its record in the ``cnnw-record`` text chunk) and the record."""
    picture = image(widget)
    rec = record(widget)
    info = PngImagePlugin.PngInfo()
    info.add_text("cnnw-record", json.dumps(rec, indent=1))
    out = io.BytesIO()
    Image.fromarray(picture, "RGB").save(out, format="PNG", pnginfo=info)
    return out.getvalue(), rec


def to_png(widget: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``widget``'s picture to ``path`` (PNG) and its record to ``<path>.json``; return the record."""
    path = os.fspath(path)
    data, rec = png_bytes(widget)
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".json", "w", encoding="utf-8") as f:
        f.write(json.dumps(rec, indent=1) + "\n")
    return rec


# -- offline HTML ------------------------------------------------------------------------------------------


def widget_state(widget: Any, **overrides: Any) -> dict[str, Any]:
    """The synced state of an ipywidget as its view reads it (``model.get``), without the widget
    machinery's own keys; ``overrides`` replace values."""
    keys = [k for k in widget.keys if k not in _INFRA]
    state = widget.get_state(keys)
    state.update(overrides)
    return state


def widget_part(widget: Any, state: Mapping[str, Any] | None = None,
                replies: Mapping[str, Sequence[tuple[Mapping[str, Any], Sequence[Any]]]] | None = None) -> dict[str, Any]:
    """One anywidget view of an export: its ES module, its state and the messages the page answers its
    ``model.send({type})`` with (``{type: [(content, buffers), …]}``)."""
    return {
        "kind": "widget",
        "esm": str(widget._esm),
        "state": dict(widget_state(widget) if state is None else state),
        "replies": {k: [[dict(c), list(b)] for c, b in v] for k, v in (replies or {}).items()},
    }


def bars_part(title: str, rows: Sequence[Mapping[str, Any]], target: int | None) -> dict[str, Any]:
    """Prediction bars as plain HTML: ``rows`` of ``{"index", "label", "probability"}``, the row of class
    ``target`` highlighted."""
    return {
        "kind": "bars",
        "title": title,
        "rows": [{"index": int(r["index"]), "label": str(r["label"]), "probability": float(r["probability"])} for r in rows],
        "target": target,
    }


def curves_part(title: str, xlabel: str, series: Sequence[Mapping[str, Any]], *, ylabel: str = "score / intact",
                x_range: tuple[float, float] | None = (0.0, 1.0), y_range: tuple[float, float] | None = (0.0, 1.0),
                percent: bool = True) -> dict[str, Any]:
    """Line charts as inline SVG (bqplot cannot run offline): ``series`` of ``{"name", "color", "x", "y"}``
    and optionally ``"auc"`` (shown beside the name), ``"selected"`` (a thicker line) and ``"dots"``
    (points joined by a line). Names are drawn as text. ``x_range``/``y_range``: the axes (``None``: the
    data's extent); ``percent``: x ticks as percentages. Non-finite points are left out."""
    clean = []
    for s in series:
        pairs = [(float(a), float(b)) for a, b in zip(s["x"], s["y"]) if np.isfinite(a) and np.isfinite(b)]
        clean.append({"name": str(s["name"]), "color": str(s["color"]), "x": [a for a, _ in pairs],
                      "y": [b for _, b in pairs], "auc": None if s.get("auc") is None else float(s["auc"]),
                      "selected": bool(s.get("selected")), "dots": bool(s.get("dots"))})

    def extent(given: tuple[float, float] | None, key: str) -> list[float]:
        if given is not None:
            return [float(given[0]), float(given[1])]
        values = [v for s in clean for v in s[key]]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        return [lo, hi] if hi > lo else [lo - 1.0, lo + 1.0]

    return {"kind": "curves", "title": str(title), "xlabel": str(xlabel), "ylabel": str(ylabel),
            "x_range": extent(x_range, "x"), "y_range": extent(y_range, "y"), "percent": bool(percent),
            "series": clean}


def picture_part(picture: np.ndarray, alt: str) -> dict[str, Any]:
    """A static picture (RGB uint8) in the page, as a PNG data URL with ``alt`` text."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture, np.uint8), "RGB").save(buf, format="PNG")
    return {"kind": "picture", "alt": str(alt), "png": base64.b64encode(buf.getvalue()).decode("ascii")}


def _pack(value: Any) -> Any:
    """JSON-ready copy with binary buffers as ``{"$b64": …}`` (the page turns them into DataViews)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _pack(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v) for v in value]
    if isinstance(value, np.ndarray):
        return _pack(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and the line separators escaped."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=_jsonable)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


# The page: module sources become blob: URLs; the model stand-in serves get/set/on/off/send from the state.
_LOADER = r"""
const read = (id) => JSON.parse(document.getElementById(id).textContent);
function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === "object") {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "$b64") {
      const bin = atob(v.$b64);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      return new DataView(bytes.buffer);
    }
    const out = {};
    for (const k of keys) out[k] = revive(v[k]);
    return out;
  }
  return v;
}
class Model {
  constructor(state, replies) { this.state = state; this.replies = replies; this.handlers = new Map(); }
  get(key) { return this.state[key]; }
  set(key, value) {
    const old = this.state[key];
    this.state[key] = value;
    if (old !== value) { this.emit(`change:${key}`, value); this.emit("change"); }
  }
  save_changes() {}
  on(event, fn) { for (const e of event.split(" ")) { if (!this.handlers.has(e)) this.handlers.set(e, new Set()); this.handlers.get(e).add(fn); } }
  off(event, fn) { for (const e of (event ?? "").split(" ")) { if (fn) this.handlers.get(e)?.delete(fn); else this.handlers.delete(e); } }
  emit(event, ...args) { for (const fn of [...(this.handlers.get(event) ?? [])]) fn(...args); }
  send(content) {
    for (const [reply, buffers] of this.replies[content?.type] ?? []) setTimeout(() => this.emit("msg:custom", reply, buffers), 0);
  }
}
function bars(part) {
  const fig = document.createElement("figure");
  fig.className = "cnnw-export-bars";
  const cap = document.createElement("figcaption");
  cap.textContent = part.title;
  fig.append(cap);
  for (const row of part.rows) {
    const line = document.createElement("div");
    line.className = row.index === part.target ? "cnnw-export-bar cnnw-export-target" : "cnnw-export-bar";
    const label = document.createElement("span");
    label.className = "cnnw-export-label";
    label.textContent = row.label;
    const track = document.createElement("span");
    track.className = "cnnw-export-track";
    const fill = document.createElement("span");
    fill.className = "cnnw-export-fill";
    fill.style.width = `${(100 * Math.min(1, Math.max(0, row.probability))).toFixed(2)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "cnnw-export-value";
    value.textContent = `${(100 * row.probability).toFixed(1)}%`;
    line.append(label, track, value);
    fig.append(line);
  }
  return fig;
}
const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}
function curves(part) {
  const W = 400, H = 300, L = 55, R = 15, T = 40, B = 50, pw = W - L - R, ph = H - T - B;
  const [x0, x1] = part.x_range, [y0, y1] = part.y_range;
  const px = (x) => L + (x - x0) / (x1 - x0) * pw;
  const py = (y) => T + (1 - (y - y0) / (y1 - y0)) * ph;
  const num = (v) => String(Number(v.toPrecision(3)));
  const fig = document.createElement("figure");
  fig.className = "cnnw-export-curves";
  const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": part.title });
  svg.append(svgEl("text", { x: W / 2, y: 22, "text-anchor": "middle", "font-size": 13 }, part.title));
  svg.append(svgEl("rect", { x: L, y: T, width: pw, height: ph, fill: "none", stroke: "#999" }));
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    const xv = x0 + t * (x1 - x0), yv = y0 + t * (y1 - y0);
    svg.append(svgEl("text", { x: L + t * pw, y: T + ph + 16, "text-anchor": "middle", "font-size": 12 }, part.percent ? `${Math.round(100 * xv)}%` : num(xv)));
    svg.append(svgEl("text", { x: L - 6, y: T + (1 - t) * ph + 4, "text-anchor": "end", "font-size": 12 }, num(yv)));
  }
  svg.append(svgEl("text", { x: L + pw / 2, y: H - 8, "text-anchor": "middle", "font-size": 12 }, part.xlabel));
  svg.append(svgEl("text", { x: 14, y: T + ph / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 14 ${T + ph / 2})` }, part.ylabel));
  const order = [...part.series].sort((a, b) => Number(a.selected) - Number(b.selected));
  for (const s of order) {
    const points = s.x.map((x, i) => `${px(x).toFixed(2)},${py(s.y[i]).toFixed(2)}`).join(" ");
    const line = svgEl("polyline", { points, fill: "none", stroke: s.color, "stroke-width": s.selected ? 4 : 1.5, "stroke-opacity": s.selected ? 1 : 0.55 });
    line.dataset.series = s.name;
    svg.append(line);
    if (s.dots) s.x.forEach((x, i) => svg.append(svgEl("circle", { cx: px(x).toFixed(2), cy: py(s.y[i]).toFixed(2), r: 3, fill: s.color })));
  }
  fig.append(svg);
  const legend = document.createElement("ul");
  legend.className = "cnnw-export-legend";
  for (const s of part.series) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "cnnw-export-swatch";
    swatch.style.background = s.color;
    const name = document.createElement("span");
    name.textContent = s.auc === null ? s.name : `${s.name} · AUC ${s.auc.toFixed(3)}`;
    if (s.selected) name.style.fontWeight = "600";
    item.append(swatch, name);
    legend.append(item);
  }
  fig.append(legend);
  return fig;
}
function picture(part) {
  const img = document.createElement("img");
  img.className = "cnnw-export-picture";
  img.alt = part.alt;
  img.src = `data:image/png;base64,${part.png}`;
  return img;
}
const parts = read("cnnw-state");
const host = document.getElementById("cnnw-export");
let rendered = 0;
for (const part of parts) {
  const el = document.createElement("div");
  el.className = "cnnw-export-part";
  host.append(el);
  if (part.kind === "bars") { el.append(bars(part)); continue; }
  if (part.kind === "curves") { el.append(curves(part)); continue; }
  if (part.kind === "picture") { el.append(picture(part)); continue; }
  const url = URL.createObjectURL(new Blob([part.esm], { type: "text/javascript" }));
  let def = (await import(url)).default;
  if (typeof def === "function") def = await def();
  const model = new Model(revive(part.state), revive(part.replies));
  const experimental = { invoke: () => Promise.reject(new Error("no kernel in an exported page")) };
  if (def.initialize) await def.initialize({ model, experimental });
  await def.render({ model, el, experimental });
  rendered += 1;
}
document.body.dataset.rendered = String(rendered);
"""

_PAGE_CSS = """
:root { color-scheme: light; }
body { margin: 16px; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #fff; }
#cnnw-export { display: flex; flex-flow: row wrap; align-items: flex-start; gap: 16px; }
.cnnw-export-note { color: #555; margin: 0 0 12px; }
.cnnw-export-bars { margin: 0; min-width: 320px; }
.cnnw-export-bars figcaption { font-weight: 600; margin-bottom: 6px; }
.cnnw-export-bar { display: grid; grid-template-columns: 9em 160px 4em; gap: 8px; align-items: center; margin: 4px 0; }
.cnnw-export-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; text-align: right; }
.cnnw-export-track { display: block; height: 18px; background: #eee; }
.cnnw-export-fill { display: block; height: 100%; background: #9e9e9e; }
.cnnw-export-target .cnnw-export-fill { background: #1976d2; }
.cnnw-export-target .cnnw-export-label { font-weight: 600; }
.cnnw-export-curves { margin: 0; }
.cnnw-export-legend { list-style: none; margin: 4px 0 0; padding: 0; max-width: 400px; }
.cnnw-export-legend li { overflow-wrap: anywhere; }
.cnnw-export-swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
"""

# No network at all, and no inline script but the loader (by its hash: an inline event handler could
# never run even if markup got into the page); the views' modules load from blob: URLs the loader makes.
_CSP = ("default-src 'none'; script-src 'sha256-{loader}' blob:; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:")


def _loader_hash() -> str:
    return base64.b64encode(hashlib.sha256(_LOADER.encode("utf-8")).digest()).decode("ascii")


def html_document(widget: Any) -> str:
    """The text of ``widget``'s self-contained HTML export (see :func:`save_html`)."""
    parts = _require(widget, "_export_html")()
    rec = record(widget)
    title = f"cnn_widgets {type(widget).__name__}"
    note = (f"{type(widget).__name__} exported {rec['timestamp']} — a snapshot: controls over the data in this "
            "file work, anything that needs the Python kernel does not.")
    return "\n".join([
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP.format(loader=_loader_hash())}">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_PAGE_CSS}</style>",
        "</head>",
        "<body>",
        f'<p class="cnnw-export-note">{html.escape(note)}</p>',
        '<main id="cnnw-export"></main>',
        f'<script type="application/json" id="cnnw-record">{script_json(rec)}</script>',
        f'<script type="application/json" id="cnnw-state">{script_json(_pack(parts))}</script>',
        f'<script type="module">{_LOADER}</script>',
        "</body>",
        "</html>",
        "",
    ])


def save_html(widget: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``widget`` as one self-contained HTML file at ``path``; return the record embedded in it.

    The page needs no network and no kernel. Interactive, because the data is in the file: the
    ActivationBrowser layer slider (every layer is written), channel and filter clicks, colormaps,
    scales, sorting, opacity, sign and clipping on every heatmap view, Compare's scale modes, the
    ModelSummary tree and its selection. Static, because it needs Python: a new attribution method,
    target, layer or options (AttributionView, Compare), a FilterGrid layer other than the one shown, a
    ConvExplainer position, channel or layer, and links between the views of an Explorer. The
    prediction bars are plain HTML from the same numbers.
    """
    text = html_document(widget)
    with open(os.fspath(path), "w", encoding="utf-8") as f:
        f.write(text)
    start = text.index('id="cnnw-record">') + len('id="cnnw-record">')
    return json.loads(text[start:text.index("</script>", start)])


# -- the views' pictures (each widget's _export_image delegates here) ---------------------------------------

VECTOR_COLS = 32  # activation_browser.js
ACTIVATION_DETAIL_SIDE = 320  # activation_browser.js DETAIL_SIDE
FILTER_GRID = {"max_width": 560, "max_cell": 64}  # filter_grid.js GRID_WIDTH, GRID_CELL
FILTER_DETAIL = {"max_width": 240, "max_cell": 96}  # filter_grid.js DETAIL_WIDTH


def _slice_range(values: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """codec.js sliceRange: per-slice min and max of ``count`` consecutive slices (0 when empty)."""
    v = np.asarray(values, np.float32).reshape(count, -1)
    if v.shape[1] == 0:
        return np.zeros(count), np.zeros(count)
    return v.min(axis=1).astype(np.float64), v.max(axis=1).astype(np.float64)


def _sort_order(mode: str, means: np.ndarray, maxs: np.ndarray, count: int) -> list[int]:
    """grid.js sortOrder: index order, or descending mean / max with ties in index order."""
    if mode == "index":
        return list(range(count))
    key = means if mode == "mean" else maxs
    return sorted(range(count), key=lambda c: (-float(key[c]), c))


def activation_browser_image(widget: Any) -> np.ndarray:
    """ActivationBrowser: the channel grid of the shown layer and the enlarged view beside it."""
    name = widget.layer
    meta = next(m for m in widget._meta["layers"] if m["name"] == name)
    msg = widget._layers.get(name)
    count, tile_h, tile_w = (int(d) for d in meta["shape"])
    values = wire.decode(msg).astype(np.float32).reshape(count, tile_h * tile_w)
    mins, maxs = wire.extrema(msg)
    if len(mins) != count:  # vectors travel as one slice; their tiles are the single values
        mins, maxs = _slice_range(values, count)
    vector = meta["kind"] == "vector"
    cmap = widget.colormap
    mode = "layer" if vector and widget.scale == "channel" else widget.scale
    lo, hi = colormap.tile_ranges(mode, mins, maxs, colormap.is_diverging(cmap), tuple(widget._meta["global"]))
    tiles = colormap.apply(values, lo[:, None], hi[:, None], cmap).reshape(count, tile_h, tile_w, 3)
    L = layout_grid(count, tile_h, tile_w, cols=min(count, VECTOR_COLS) if vector else None, scale=widget.font_scale)
    order = _sort_order(widget.sort, values.astype(np.float64).mean(axis=1), np.asarray(maxs, np.float64), count)
    grid = blit_tiles(L, tiles, order)
    ch = widget.channel
    if 0 <= ch < count:
        outline_slot(grid, L, order.index(ch))
    picture = wire.decode(widget._image)
    width, height = detail_size(picture.shape[0], picture.shape[1], ACTIVATION_DETAIL_SIDE)
    heat = tiles[ch] if 0 <= ch < count and not vector else None
    return compose([[grid, paint_detail(picture, heat, float(widget.opacity), width, height)]])


def filter_tiles(weights: np.ndarray, k: int, groups: int = 1) -> tuple[np.ndarray, bool]:
    """filters.js filterTiles: one tile per filter (O × values): input channel ``k``, or with k = -1 the
    mean over input channels (a float32 running sum, then a float32 division) — or for an ungrouped
    3-channel layer the R, G, B planes (then ``rgb`` is True)."""
    O, I = weights.shape[:2]
    if k == -1 and I == 3 and groups == 1:
        return weights.reshape(O, -1), True
    if k >= 0:
        return weights[:, k].reshape(O, -1), False
    acc = np.zeros((O, weights[0, 0].size), np.float32)
    for i in range(I):
        acc += weights[:, i].reshape(O, -1)
    return acc / np.float32(I), False


def filter_colours(values: np.ndarray, rgb: bool, lo: np.ndarray, hi: np.ndarray, size: tuple[int, int],
                   cmap: str) -> np.ndarray:
    """grid.js colorizeScalar / colorizeRgb of :func:`filter_tiles`' output: O×kh×kw×3 uint8, tile i on
    [lo[i], hi[i]] (the R, G, B planes each through the colour index when ``rgb``)."""
    O, (kh, kw) = len(values), size
    if rgb:
        idx = colormap.color_index(values.reshape(O, 3, kh * kw), lo[:, None, None], hi[:, None, None])
        return idx.transpose(0, 2, 1).reshape(O, kh, kw, 3).astype(np.uint8)
    return colormap.apply(values, lo[:, None], hi[:, None], cmap).reshape(O, kh, kw, 3)


def filter_grid_image(widget: Any) -> np.ndarray:
    """FilterGrid: the filter tiles and, with a filter selected, its input channels beside them."""
    w = widget._weights
    weights = wire.decode(w["tensor"]).astype(np.float32)
    O, I, kh, kw = weights.shape
    size = kh * kw
    k = int(widget.input_channel)
    values, rgb = filter_tiles(weights, k if k < I else -1, int(w["info"]["groups"]))
    mins, maxs = _slice_range(values, O)
    cmap = widget.colormap
    mode = "layer" if widget.scale == "layer" else "channel"
    lo, hi = colormap.tile_ranges(mode, mins, maxs, not rgb and colormap.is_diverging(cmap))
    tiles = filter_colours(values, rgb, lo, hi, (kh, kw), cmap)
    L = layout_grid(O, kh, kw, **FILTER_GRID, scale=widget.font_scale)
    grid = blit_tiles(L, tiles, range(O))
    sel = int(widget.selected)
    row = [grid]
    if 0 <= sel < O:
        outline_slot(grid, L, sel)
        own = weights[sel].reshape(I, size)
        a, b = colormap.color_range(float(own.min()), float(own.max()), colormap.is_diverging(cmap))
        detail = colormap.apply(own, a, b, cmap).reshape(I, kh, kw, 3)
        L = layout_grid(I, kh, kw, cols=I if I <= 4 else None, **FILTER_DETAIL, scale=widget.font_scale)
        row.append(blit_tiles(L, detail, range(I)))
    return compose([row])


def overlay_pixels(image: np.ndarray, values: np.ndarray | None, *, sign: str, colormap_name: str,
                   clip_percentile: float, opacity: float) -> np.ndarray:
    """An attribution map over its image as attribution_view.js and compare.js paint it (one range per map)."""
    if values is None:
        return np.asarray(image, np.uint8)
    name = colormap.overlay_colormap(colormap_name, sign)
    lo, hi, _ = colormap.overlay_range(colormap.sorted_magnitudes(values, sign), clip_percentile, colormap.is_diverging(name))
    return colormap.blend_overlay(image, values, sign=sign, lo=lo, hi=hi, table=colormap.lut(name), opacity=opacity)


def attribution_view_image(view: Any) -> np.ndarray:
    """AttributionView: the heatmap over the input image (the canvas; the bqplot bars are not in it)."""
    canvas = view._canvas
    picture = wire.decode(canvas._image)
    result = canvas._result
    values = None
    if result.get("map") and not view.error:
        m = wire.decode(result["map"]).astype(np.float32)
        if m.shape[-2:] == picture.shape[:2]:
            values = m.reshape(picture.shape[:2])
    return compose([[overlay_pixels(picture, values, sign=view.sign, colormap_name=view.colormap,
                                    clip_percentile=float(view.clip_percentile), opacity=float(view.opacity))]])


def compare_image(widget: Any) -> np.ndarray:
    """Compare: one row of panels per method that has maps (methods × images), as compare.js paints them."""
    pictures = wire.decode(widget._images)  # N×H×W×3
    sign = widget.sign
    name = colormap.overlay_colormap(widget.colormap, sign)
    diverging = colormap.is_diverging(name)
    clip = float(widget.clip_percentile)
    rows = {r: wire.decode(enc).astype(np.float32) for r, enc in enumerate(widget._encoded)
            if enc is not None and not widget.errors[r]}
    sorted_ = {r: [colormap.sorted_magnitudes(panel, sign) for panel in maps] for r, maps in rows.items()}

    def merge(arrays: list[np.ndarray]) -> np.ndarray:  # overlay.js mergeSorted
        return np.sort(np.concatenate(arrays)) if len(arrays) > 1 else arrays[0]

    shared = (colormap.overlay_range(merge([a for all_ in sorted_.values() for a in all_]), clip, diverging)
              if widget.scale == "shared" and rows else None)
    out = []
    for r, maps in rows.items():
        per_row = colormap.overlay_range(merge(sorted_[r]), clip, diverging) if widget.scale == "per-method" else None
        line = []
        for c, panel in enumerate(maps):
            lo, hi, _ = shared or per_row or colormap.overlay_range(sorted_[r][c], clip, diverging)
            line.append(colormap.blend_overlay(pictures[c], panel, sign=sign, lo=lo, hi=hi, table=colormap.lut(name),
                                               opacity=float(widget.opacity)))
        out.append(line)
    return compose(out)


def _frame(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, width: int, rgb: tuple[int, int, int]) -> None:
    """A rectangle's frame ``width`` px thick inside [x0, x1) × [y0, y1), clipped to the canvas."""
    H, W = canvas.shape[:2]
    px = (*rgb, 255)[:canvas.shape[2]]
    cx = lambda v: min(max(v, 0), W)  # noqa: E731
    cy = lambda v: min(max(v, 0), H)  # noqa: E731
    canvas[cy(y0):cy(y0 + width), cx(x0):cx(x1)] = px
    canvas[cy(y1 - width):cy(y1), cx(x0):cx(x1)] = px
    canvas[cy(y0):cy(y1), cx(x0):cx(x0 + width)] = px
    canvas[cy(y0):cy(y1), cx(x1 - width):cx(x1)] = px


CONV_MAP_PX, CONV_MIN_CELL, CONV_MAX_CELL = 288, 2, 32  # conv_explainer.js MAP_PX, MIN_CELL, MAX_CELL


def _conv_map(msg: dict[str, Any], c: int, pad: Sequence[int], cmap: str, signed: bool) -> tuple[np.ndarray, int]:
    """conv_explainer.js paintMap: channel ``c`` in square cells, padding cells hatched grey."""
    values = wire.decode(msg).astype(np.float32)
    mins, maxs = wire.extrema(msg)
    _, H, W = values.shape
    top, bottom, left, right = (int(p) for p in pad)
    rows, cols = H + top + bottom, W + left + right
    cell = max(CONV_MIN_CELL, min(CONV_MAX_CELL, CONV_MAP_PX // max(rows, cols, 1)))
    lo, hi = colormap.color_range(float(mins[c]), float(maxs[c]), signed)
    yy, xx = np.mgrid[0:rows * cell, 0:cols * cell]
    out = np.where((((xx % cell) + (yy % cell)) % 6 < 3)[..., None], np.uint8(0xD9), np.uint8(0xF4)).repeat(3, axis=2)
    colours = colormap.apply(values[c], lo, hi, cmap).repeat(cell, axis=0).repeat(cell, axis=1)
    out[top * cell:(top + H) * cell, left * cell:(left + W) * cell] = colours
    return np.concatenate([out, np.full(out.shape[:2] + (1,), 255, np.uint8)], axis=2), cell


def _conv_outline(canvas: np.ndarray, cell: int, cells: Sequence[tuple[int, int]]) -> None:
    """conv_explainer.js outline: accent frames on the cells (one frame around them all when cells are tiny)."""
    if cell >= 5:
        for r, q in cells:
            _frame(canvas, q * cell, r * cell, (q + 1) * cell, (r + 1) * cell, 2, ACCENT)
            if cell >= 9:
                _frame(canvas, q * cell + 3, r * cell + 3, (q + 1) * cell - 3, (r + 1) * cell - 3, 1, (255, 255, 255))
        return
    r0, r1 = min(r for r, _ in cells), max(r for r, _ in cells) + 1
    q0, q1 = min(q for _, q in cells), max(q for _, q in cells) + 1
    _frame(canvas, q0 * cell - 2, r0 * cell - 2, q1 * cell + 2, r1 * cell + 2, 2, ACCENT)


def conv_explainer_image(widget: Any) -> np.ndarray:
    """ConvExplainer: the input channel (padding hatched, the cells the kernel reads outlined) and the
    output channel with the chosen position outlined, side by side."""
    m = widget._maps
    g = m["geometry"]
    y, x = (int(v) for v in widget.position)
    out, out_cell = _conv_map(m["output"], int(widget.channel), (0, 0, 0, 0), "RdBu_r", True)
    _conv_outline(out, out_cell, [(y, x)])
    inp, in_cell = _conv_map(m["input"], int(widget.input_channel), g["padding"], "viridis", False)
    (kh, kw), (sy, sx), (dy, dx) = g["kernel"], g["stride"], g["dilation"]
    rows = [y * sy + i * dy for i in range(kh)]  # padded coordinates: + top - top
    cols = [x * sx + j * dx for j in range(kw)]
    _conv_outline(inp, in_cell, [(r, q) for r in rows for q in cols])
    return compose([[inp, out]])


# model_summary.js: the strip's geometry and the colours of the layer families (first match wins)
STRIP_ARC_H, STRIP_GAP, STRIP_MIN_H, STRIP_MAX_H = 46, 5, 10, 100
STRIP_COLOURS: tuple[tuple[str, str], ...] = (
    (r"Conv", "#0072B2"), (r"Norm", "#E69F00"),
    (r"ReLU|ELU|GELU|SiLU|Sigmoid|Tanh|Softmax|Softmin|Hardswish|Mish|Softplus|Softsign|Threshold|GLU|Swish", "#009E73"),
    (r"Pool|Upsample|PixelShuffle", "#CC79A7"), (r"Linear", "#D55E00"), (r"Dropout", "#999999"),
    (r"Flatten|Identity|Reshape|Permute", "#56B4E9"), (r"", "#8C6D31"),
)
STRIP_INPUT = "#BDBDBD"


def _block_size(shape: Sequence[int] | None) -> tuple[int, int]:
    """model_summary.js blockSize: width from log2 of the channels, height from log2 of the spatial side."""
    if not shape or len(shape) < 2:
        return 8, STRIP_MIN_H
    spatial = float(np.prod(shape[2:])) if len(shape) > 2 else 1.0
    w = int(np.floor(min(42, max(6, 4 + 3 * np.log2(shape[1] + 1))) + 0.5))
    side = np.sqrt(max(1.0, spatial))
    h = int(np.floor(min(STRIP_MAX_H, max(STRIP_MIN_H, STRIP_MIN_H + 11 * np.log2(side))) + 0.5))
    return w, h


def model_summary_image(widget: Any) -> np.ndarray:
    """ModelSummary: the architecture strip (every block, not only those scrolled into view), blocks
    coloured by layer family, residual joins as arcs, the selected layer outlined."""
    data = widget._summary
    shapes = [data["input"]] + [b["shape"] for b in data["blocks"]]
    sizes = [_block_size(s) for s in shapes]
    xs, at = [], STRIP_GAP
    for w, _ in sizes:
        xs.append(at)
        at += w + STRIP_GAP
    tallest = max([STRIP_MIN_H] + [h for _, h in sizes])
    width, height = at, STRIP_ARC_H + tallest + 6
    top = [STRIP_ARC_H + (height - STRIP_ARC_H - 6 - h) / 2 for _, h in sizes]
    picture = Image.new("RGB", (int(width), int(height)), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    sel = widget.selected
    within = lambda name: sel is not None and (name == sel or sel == "" or name.startswith(f"{sel}."))  # noqa: E731
    nodes = data["nodes"]
    for a, b in data["joins"]:  # cubic arcs from the top centre of slot a + 1 to that of slot b + 1
        s0, s1 = a + 1, b + 1
        x0, x1 = xs[s0] + sizes[s0][0] / 2, xs[s1] + sizes[s1][0] / 2
        y0, y1 = top[s0], top[s1]
        lift = min(STRIP_ARC_H - 6, 12 + 2 * np.sqrt(abs(x1 - x0)))
        c = max(2, min(y0, y1) - lift * 4 / 3)
        t = np.linspace(0, 1, 48)[:, None]
        p = ((1 - t) ** 3 * [x0, y0] + 3 * (1 - t) ** 2 * t * [x0, c] + 3 * (1 - t) * t ** 2 * [x1, c] + t ** 3 * [x1, y1])
        hot = (a >= 0 and within(nodes[data["blocks"][a]["node"]]["name"])) or within(nodes[data["blocks"][b]["node"]]["name"])
        draw.line([tuple(q) for q in p], fill=ACCENT if hot else (0x66, 0x66, 0x66), width=2)
    mid = STRIP_ARC_H + (height - STRIP_ARC_H - 6) / 2
    for s, ((w, h), x, y) in enumerate(zip(sizes, xs, top)):
        if s > 0 and data["blocks"][s - 1].get("chained"):
            draw.line([(xs[s - 1] + sizes[s - 1][0], mid), (x, mid)], fill=(0x99, 0x99, 0x99), width=1)
        if s == 0:
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=STRIP_INPUT)
            continue
        node = nodes[data["blocks"][s - 1]["node"]]
        colour = next(c for pattern, c in STRIP_COLOURS if re.search(pattern, node["type"]))
        hot = within(node["name"])
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour, outline=ACCENT if hot else BACKGROUND,
                       width=2 if hot else 1)
    return compose([[np.asarray(picture)]])


# -- the dataset and training views ----------------------------------------------------------------------

def _opaque(rgb: np.ndarray) -> np.ndarray:
    """An RGB canvas as RGBA with every pixel opaque."""
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)


TRAINING_GRID_WIDTH, TRAINING_FILTER_CELL, TRAINING_ACTIVATION_CELL = 420, 48, 64  # training_monitor.js


def training_monitor_image(widget: Any, snapshot: int = -1, layer: str | None = None, image: int = 0) -> np.ndarray:
    """TrainingMonitor: the filters of ``layer`` (default the first monitored) at kept snapshot
    ``snapshot`` (default the newest: what the view shows until its slider moves), the probe image's
    activations there and the probe image, side by side as training_monitor.js paints them."""
    stored = widget._stored[snapshot]
    layer = widget._layer_names[0] if layer is None else layer
    found = {(p["what"], p["layer"], p["image"]): {**{k: v for k, v in p.items() if k not in ("what", "layer", "image")},
                                                   "data": buf} for p, buf in zip(stored.parts, stored.buffers)}
    w_msg, a_msg = found[("filters", layer, -1)], found[("activations", layer, image)]
    weights = wire.decode(w_msg).astype(np.float32)
    O, _, kh, kw = weights.shape
    values, rgb = filter_tiles(weights, -1, int(widget._convs[layer].groups))
    lo, hi = colormap.tile_ranges("channel", *_slice_range(values, O), not rgb and colormap.is_diverging("RdBu_r"))
    L = layout_grid(O, kh, kw, max_width=TRAINING_GRID_WIDTH, max_cell=TRAINING_FILTER_CELL, scale=widget.font_scale)
    filters = blit_tiles(L, filter_colours(values, rgb, lo, hi, (kh, kw), "RdBu_r"), range(O))
    acts = wire.decode(a_msg).astype(np.float32)
    C, ah, aw = acts.shape
    mins, maxs = wire.extrema(a_msg)
    lo, hi = colormap.tile_ranges("channel", mins, maxs, False)
    tiles = colormap.apply(acts.reshape(C, -1), lo[:, None], hi[:, None], "viridis").reshape(C, ah, aw, 3)
    grid = blit_tiles(layout_grid(C, ah, aw, max_width=TRAINING_GRID_WIDTH, max_cell=TRAINING_ACTIVATION_CELL,
                                  scale=widget.font_scale),
                      tiles, range(C))
    return compose([[filters, grid, wire.decode(widget._canvas._probe[image])]])


PATCH_OPACITY = 0.5  # top_activations.js: the heat slider's start
PAD_COLORS = ((200, 200, 200), (160, 160, 160))  # dataset_views.js padding checkerboard


def pad_outside(rgb: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """dataset_views.js padOutside: pixels outside ``box`` [top, left, bottom, right) become a 4-pixel
    checkerboard."""
    out = np.array(rgb, np.uint8)
    h, w = out.shape[:2]
    top, left, bottom, right = (int(v) for v in box)
    yy, xx = np.mgrid[0:h, 0:w]
    outside = ~((yy >= top) & (yy < bottom) & (xx >= left) & (xx < right))
    checker = np.array(PAD_COLORS, np.uint8)[((yy >> 2) + (xx >> 2)) & 1]
    out[outside] = checker[outside]
    return out


def top_activations_image(widget: Any) -> np.ndarray:
    """TopActivations: the current channel's top patches with its activation over each (padding
    checkered), then its filter when the layer is a conv, in one row as top_activations.js paints them."""
    p = widget._patches
    c = int(widget.channel)
    if not p.get("images") or p.get("layer") != widget.layer or not 0 <= c < int(p["channels"]):
        raise ExportError("this view has nothing to draw yet (no channel shown)")
    k, side = int(p["k"]), int(p["side"])
    images = wire.decode(p["images"]).reshape(-1, side, side, 3)
    heat = wire.decode(p["heat"]).astype(np.float32).reshape(-1, side, side)
    hi = float(wire.extrema(p["heat"])[1][c])
    table = colormap.lut("inferno")
    row = []
    for j in range(k):
        slot = c * k + j
        blended = colormap.blend_overlay(images[slot], heat[slot], sign="positive", lo=0.0, hi=hi, table=table,
                                         opacity=PATCH_OPACITY)
        row.append(pad_outside(blended, p["boxes"][c][j]))
    f = widget._filters
    if f.get("tensor"):
        weights = wire.decode(f["tensor"]).astype(np.float32)
        O, _, kh, kw = weights.shape
        if c < O:
            values, rgb = filter_tiles(weights, -1, int(f["groups"]))
            lo, hi_ = colormap.tile_ranges("channel", *_slice_range(values, O), not rgb and colormap.is_diverging("RdBu_r"))
            row.append(filter_colours(values[c:c + 1], rgb, lo[c:c + 1], hi_[c:c + 1], (kh, kw), "RdBu_r")[0])
    return compose([row])


THUMB_OPACITY, THUMB_CLIP = 0.5, 99.0  # class_heatmaps.js


def class_heatmaps_image(widget: Any) -> np.ndarray:
    """ClassHeatmaps: the grid of mean maps (a row per class, correct then incorrect; an empty cell
    blank) on the range all cells share, and the listed cell's thumbnails with their own maps below, as
    class_heatmaps.js paints them."""
    g = widget._grid
    if not g.get("maps"):
        raise ExportError("this view has nothing to draw yet (the averages are computing)")
    maps = wire.decode(g["maps"]).astype(np.float32)
    mh, mw = maps.shape[-2:]
    hi = max(0.0, float(np.nanmax(maps))) if maps.size and not np.isnan(maps).all() else 0.0
    rows = []
    for r in range(len(g["classes"])):
        line = []
        for c in range(2):
            if g["counts"][r][c]:
                line.append(_opaque(colormap.apply(maps[2 * r + c], 0.0, hi if hi > 0 else 1.0, "inferno")))
            else:
                line.append(np.zeros((mh, mw, 4), np.uint8))
        rows.append(line)
    cell = widget._cell
    if cell.get("images") and widget.selected_class >= 0:
        images, heat = wire.decode(cell["images"]), wire.decode(cell["maps"]).astype(np.float32)
        rows.append([overlay_pixels(images[i], heat[i], sign="positive", colormap_name="inferno",
                                    clip_percentile=THUMB_CLIP, opacity=THUMB_OPACITY) for i in range(len(images))])
    return compose(rows)


IMPORTANCE_BAR, IMPORTANCE_SELECTED, IMPORTANCE_DOT = (0x5B, 0x8D, 0xB8), (0xE8, 0x59, 0x0C), (0x2F, 0x2F, 0x2F)


def importance_image(widget: Any) -> np.ndarray:
    """ChannelImportance: its bqplot chart redrawn simply (the browser has no canvas of it): one bar
    per channel in the chart's order (permutation importance, the selected channel orange), ± std as
    a vertical line, zeroing importance as a dot, the zero line, channel numbers under the bars."""
    r = widget.importance
    if r is None:
        raise ExportError("this view has nothing to draw yet (the importance is computing)")
    order = widget.order()
    n = len(order)
    perm = np.asarray(r.permutation, np.float64)[order]
    std = np.nan_to_num(np.asarray(r.std, np.float64)[order])
    zero = np.asarray(r.zeroing, np.float64)[order]
    bar = int(min(24, max(4, 640 // max(n, 1))))
    left, right, top, bottom, height = 60, 20, 16, 32, 260
    width = left + right + bar * n
    finite = [v for v in np.concatenate([perm - std, perm + std, zero, [0.0]]) if np.isfinite(v)]
    lo, hi = min(finite), max(finite)
    if not hi > lo:
        hi = lo + 1.0
    y = lambda v: top + (hi - v) / (hi - lo) * height  # noqa: E731
    picture = Image.new("RGB", (width, top + height + bottom), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    draw.line([(left, y(0.0)), (left + bar * n, y(0.0))], fill=(0x99, 0x99, 0x99))
    draw.line([(left - 1, top), (left - 1, top + height)], fill=(0x99, 0x99, 0x99))
    for label, v in ((f"{hi:.3g}", hi), (f"{lo:.3g}", lo)):
        draw.text((4, y(v) - 6), label, fill=(0x33, 0x33, 0x33))
    step = max(1, -(-n // 24))
    for i, c in enumerate(order):
        x0, x1 = left + i * bar + max(1, bar // 5), left + (i + 1) * bar - max(1, bar // 5)
        mid = (x0 + x1) / 2
        if np.isfinite(perm[i]):
            a, b = sorted((y(0.0), y(perm[i])))
            draw.rectangle([x0, a, x1 - 1, max(a, b)], fill=IMPORTANCE_SELECTED if c == widget.channel else IMPORTANCE_BAR)
            draw.line([(mid, y(perm[i] - std[i])), (mid, y(perm[i] + std[i]))], fill=IMPORTANCE_DOT, width=1)
        if np.isfinite(zero[i]):
            draw.ellipse([mid - 2, y(zero[i]) - 2, mid + 2, y(zero[i]) + 2], fill=IMPORTANCE_DOT)
        if i % step == 0:
            draw.text((left + i * bar, top + height + 6), str(c), fill=(0x33, 0x33, 0x33))
    return compose([[np.asarray(picture)]])


# -- boxes of views (Explorer and other layouts of Panels) ------------------------------------------------


def parts(widget: Any) -> list[Any]:
    """The views inside a box widget, in layout order: every descendant that is a cnn_widgets view (one
    with ``to_png``), not looking inside those."""
    found: list[Any] = []

    def walk(node: Any) -> None:
        for child in getattr(node, "children", ()):
            if hasattr(child, "_export_image") and hasattr(child, "to_png"):
                found.append(child)
            else:
                walk(child)

    walk(widget)
    return found


def _exportable(widget: Any, method: str) -> list[tuple[Any, Any]]:
    out = []
    for part in parts(widget):
        try:
            out.append((part, getattr(part, method)()))
        except ExportError:
            continue
    if not out:
        raise ExportError(f"{type(widget).__name__} has no {'PNG' if method == '_export_image' else 'HTML'} export")
    return out


def parts_image(widget: Any) -> np.ndarray:
    """A box of views: each view's picture on its own row, in layout order (views without one left out)."""
    return compose([[picture] for _, picture in _exportable(widget, "_export_image")])


def parts_html(widget: Any) -> list[dict[str, Any]]:
    """A box of views: the HTML parts of each view, in layout order."""
    return [p for _, part_list in _exportable(widget, "_export_html") for p in part_list]


def parts_record(widget: Any) -> dict[str, Any]:
    """A box of views: the first view's fields (model, image, …) and every view's own under ``parts``."""
    records = [(type(p).__name__, p._export_record()) for p in parts(widget)]
    if not records:
        return {}
    return {**records[0][1], "parts": [{"widget": name, **fields} for name, fields in records]}
