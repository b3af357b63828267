// ActivationBrowser view: layer slider, channel grid of the layer, enlarged channel over the image.
// Layers already in the browser paint synchronously inside the slider's input handler; the kernel only
// hears which layer is shown (and, in lazy mode, is asked for layers the browser lacks).

import { decodeImage } from "../codec.js";
import { COLORMAPS, isDiverging, lut, tileRanges } from "../colormap.js";
import { ACTIVATION_SCALES } from "../constants_data.js";
import {
  Scope, accentColor, bindControl, colorLegend, fmt, gridPointer, h, labelledSelect, markPainted, mountRoot,
  outlineSlot, publishLayout, tooltipBox,
} from "../dom.js";
import { blitTiles, colorizeScalar, layoutGrid, packLut, sortOrder } from "../grid.js";
import { detailSize, paintColorbar, paintDetail, pixelsCanvas, rgbToRgba } from "../overlay.js";
import { LayerStore } from "../store.js";
import { bindScale, scaleOf } from "../scale.js";

const VECTOR_COLS = 32;
/** Menu text of the scale modes (the modes themselves: ACTIVATION_SCALES). @type {Record<string, string>} */
const SCALE_TEXT = { channel: "per channel", layer: "per layer", global: "all layers" };
const DETAIL_SIDE = 320;

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @param {LayerStore} store
 * @returns {() => void} cleanup
 */
function renderBrowser(model, el, store) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-activation-browser");
  bindScale(model, root, scope, () => paint()); // tiles grow with the text

  const slider = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-layer-slider",
    attrs: { type: "range", min: "0", step: "1", "aria-label": "layer" },
  }));
  const layerName = h("span", { className: "cnnw-layer-name" });
  const caption = h("span", { className: "cnnw-caption" });
  const scale = labelledSelect("scale", "cnnw-scale", ACTIVATION_SCALES.map((m) => [m, SCALE_TEXT[m] ?? m]));
  const sort = labelledSelect("sort", "cnnw-sort", [["index", "index"], ["mean", "mean ↓"], ["max", "max ↓"]]);
  const cmap = labelledSelect("colormap", "cnnw-colormap", COLORMAPS.map((n) => [n, n]));
  const opacity = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-opacity",
    attrs: { type: "range", min: "0", max: "1", step: "0.05", "aria-label": "overlay opacity" },
  }));
  const grid = /** @type {HTMLCanvasElement} */ (h("canvas", {
    className: "cnnw-grid", attrs: { "aria-label": "channels: arrow keys choose one, Enter clears or restores it" },
  }));
  const detail = /** @type {HTMLCanvasElement} */ (h("canvas", { className: "cnnw-detail", attrs: { "aria-label": "selected channel over the input image" } }));
  const detailCaption = h("div", { className: "cnnw-caption cnnw-detail-caption" });
  const { legend, bar, lo: barLo, hi: barHi } = colorLegend();
  const tooltip = tooltipBox();
  const status = h("div", { className: "cnnw-status", attrs: { role: "status" } });

  root.append(
    h("div", { className: "cnnw-toolbar" }, [
      h("label", { className: "cnnw-control" }, [h("span", { text: "layer" }), slider]),
      layerName,
      caption,
    ]),
    h("div", { className: "cnnw-toolbar" }, [
      scale.wrap, sort.wrap, cmap.wrap,
      h("label", { className: "cnnw-control" }, [h("span", { text: "overlay" }), opacity]),
    ]),
    status,
    h("div", { className: "cnnw-main" }, [
      h("div", { className: "cnnw-grid-wrap" }, [grid]),
      h("div", { className: "cnnw-side" }, [
        detail,
        legend,
        detailCaption,
      ]),
    ]),
    tooltip,
  );

  const ctx = /** @type {CanvasRenderingContext2D} */ (grid.getContext("2d"));

  /** View state: what is on screen. */
  let current = String(model.get("layer"));
  /** True while this view sets traits itself, so its own change listeners do not repaint twice. */
  let muted = false;
  /** @type {{layer: import("../store.js").Layer, L: import("../grid.js").Layout, order: Int32Array,
   *   tiles: Uint32Array, lo: Float64Array, hi: Float64Array, mode: string} | null} */
  let shown = null;
  /** @type {HTMLCanvasElement | null} */
  let imageCanvas = null;
  /** @type {Map<string, Uint32Array>} */
  const packed = new Map();
  /** Reused pixel buffer of the grid canvas. @type {ImageData | null} */
  let img = null;
  let img32 = new Uint32Array(0);
  const idle = typeof window.requestIdleCallback === "function" ? window.requestIdleCallback.bind(window) : null;
  let warmId = 0;

  function colors() {
    const name = model.get("colormap");
    let p = packed.get(name);
    if (!p) packed.set(name, (p = packLut(lut(name))));
    return p;
  }

  function loadImage() {
    const image = decodeImage(model.get("_image"));
    if (!image) {
      imageCanvas = null;
      return;
    }
    imageCanvas = pixelsCanvas(rgbToRgba(image.rgb, image.h, image.w), image.w, image.h);
    const [cw, ch] = detailSize(image.h, image.w, DETAIL_SIDE);
    detail.width = cw;
    detail.height = ch;
    detail.style.width = `${cw}px`;
    detail.style.height = `${ch}px`;
  }

  function syncControls() {
    const names = store.names();
    slider.max = String(Math.max(0, names.length - 1));
    slider.value = String(Math.max(0, names.indexOf(current)));
    slider.setAttribute("aria-valuetext", current);
    layerName.textContent = current || "(whole model)";
    scale.select.value = model.get("scale");
    sort.select.value = model.get("sort");
    cmap.select.value = model.get("colormap");
    opacity.value = String(model.get("opacity"));
  }

  /** Paint the grid of the current layer from browser data; ask the kernel if it is missing. */
  function paint() {
    const layer = store.get(current);
    const names = store.names();
    const i = names.indexOf(current);
    store.pin([names[i - 1], current, names[i + 1]].filter(Boolean));
    store.request(current);
    if (!layer) {
      status.textContent = store.error || `loading ${current}…`;
      return;
    }
    status.textContent = store.error;
    const { meta, values } = layer;
    const [count, tileH, tileW] = meta.shape;
    const vector = meta.kind === "vector";
    const mode = vector && model.get("scale") === "channel" ? "layer" : model.get("scale");
    const { lo, hi } = tileRanges(mode, layer.min, layer.max, isDiverging(model.get("colormap")), store.meta.global);
    const tiles = colorizeScalar(values, count, lo, hi, colors(), shown?.tiles);
    const L = layoutGrid({
      count, tileH, tileW, cols: vector ? Math.min(count, VECTOR_COLS) : undefined, scale: scaleOf(model.get("font_scale")),
    });
    const order = sortOrder(model.get("sort"), layer, count);
    publishLayout(grid, L, order);
    if (img?.width !== L.width || img.height !== L.height) {
      img = ctx.createImageData(L.width, L.height);
      img32 = new Uint32Array(img.data.buffer);
    }
    blitTiles(img32, L, tiles, order);
    ctx.putImageData(img, 0, 0);
    const at = performance.now();
    shown = { layer, L, order, tiles, lo, hi, mode };
    const ch = model.get("channel");
    if (ch >= 0 && ch < count) outlineSlot(ctx, L, order.indexOf(ch), accentColor(root));
    caption.textContent = `${i + 1}/${names.length} · ${meta.source_shape.join("×") || "scalar"}`
      + (vector ? " · values" : ` · ${count} channels`);
    markPainted(root, current, at);
    paintSide();
    warmNeighbours(i);
  }

  /** Decode the slider's neighbours while the page is idle, so the next move finds them ready. */
  function warmNeighbours(/** @type {number} */ i) {
    cancelWarm();
    const names = store.names();
    const run = () => {
      warmId = 0;
      for (const n of [names[i + 1], names[i - 1]]) if (n !== undefined) store.get(n);
    };
    warmId = idle ? idle(run, { timeout: 200 }) : window.setTimeout(run, 16);
  }

  function cancelWarm() {
    if (!warmId) return;
    if (idle) window.cancelIdleCallback(warmId);
    else window.clearTimeout(warmId);
    warmId = 0;
  }

  /** The enlarged view and legend for the selected channel (or the plain image). */
  function paintSide() {
    const ch = model.get("channel");
    const table = lut(model.get("colormap"));
    paintColorbar(bar, table);
    if (!shown || ch < 0 || ch >= shown.layer.meta.shape[0]) {
      paintDetail(detail, imageCanvas, null, 0);
      const shared = shown && (shown.mode !== "channel" || shown.layer.meta.shape[0] === 1);
      barLo.textContent = shared ? fmt(shown.lo[0]) : "low";
      barHi.textContent = shared ? fmt(shown.hi[0]) : "high (each channel)";
      detailCaption.textContent = shown ? "click a tile to overlay that channel on the image" : "";
      return;
    }
    const { layer, tiles, lo, hi } = shown;
    const [, tileH, tileW] = layer.meta.shape;
    const size = tileH * tileW;
    barLo.textContent = fmt(lo[ch]);
    barHi.textContent = fmt(hi[ch]);
    if (layer.meta.kind === "vector") {
      paintDetail(detail, imageCanvas, null, 0);
      detailCaption.textContent = `${layer.name} · value ${ch} = ${fmt(layer.values[ch])}`;
      return;
    }
    const rgba = new Uint8ClampedArray(tiles.buffer.slice(ch * size * 4, (ch + 1) * size * 4));
    paintDetail(detail, imageCanvas, pixelsCanvas(rgba, tileW, tileH), Number(model.get("opacity")));
    detailCaption.textContent =
      `${layer.name} · channel ${ch} · ${tileH}×${tileW} · min ${fmt(layer.min[ch])} · max ${fmt(layer.max[ch])} · mean ${fmt(layer.mean[ch])}`;
  }

  /** @param {number} index slider position */
  function showIndex(index) {
    const name = store.names()[index];
    if (name === undefined || name === current) return;
    current = name;
    slider.setAttribute("aria-valuetext", name);
    layerName.textContent = name || "(whole model)";
    muted = true;
    model.set("layer", name);
    if (model.get("channel") !== -1) model.set("channel", -1);
    muted = false;
    paint();
    model.save_changes();
  }

  scope.listen(slider, "input", () => showIndex(Number(slider.value)));
  /** What the grid shows, if it is the current layer (not a stale one while a lazy layer loads). */
  const live = () => (shown?.layer.name === current ? shown : null);

  gridPointer(scope, root, grid, tooltip, {
    live,
    describe({ layer, order }, hit) {
      const [, tileH, tileW] = layer.meta.shape;
      const ch = order[hit.slot];
      const v = layer.values[ch * tileH * tileW + hit.row * tileW + hit.col];
      return layer.meta.kind === "vector"
        ? `value ${ch}\n${fmt(v)}`
        : `channel ${ch} · (${hit.row}, ${hit.col})\n${fmt(v)}`;
    },
    selected({ order }) {
      const ch = model.get("channel");
      return ch < 0 ? -1 : order.indexOf(ch);
    },
    select({ order }, slot) {
      model.set("channel", slot < 0 ? -1 : order[slot]);
      model.save_changes();
    },
  });
  bindControl(scope, model, scale.select, "scale");
  bindControl(scope, model, sort.select, "sort");
  bindControl(scope, model, cmap.select, "colormap");
  bindControl(scope, model, opacity, "opacity", { event: "input", parse: Number });

  scope.onModel(model, "change:layer", () => {
    const name = String(model.get("layer"));
    if (muted || name === current) return;
    current = name;
    syncControls();
    paint();
  });
  for (const key of ["channel", "scale", "sort", "colormap"]) {
    scope.onModel(model, `change:${key}`, () => {
      if (muted) return;
      syncControls();
      paint();
    });
  }
  scope.onModel(model, "change:opacity", () => {
    opacity.value = String(model.get("opacity"));
    paintSide();
  });
  scope.onModel(model, "change:_image", () => {
    loadImage();
    paintSide();
  });
  scope.add(store.subscribe((name) => {
    if (name === "") {
      current = String(model.get("layer"));
      shown = null;
      syncControls();
      paint();
    } else if (name === current && (!shown || shown.layer.name !== current)) {
      paint();
    }
  }));

  scope.add(cancelWarm);

  loadImage();
  syncControls();
  paint();
  return () => scope.dispose();
}

export default () => {
  /** @type {LayerStore | null} */
  let store = null;
  return {
    /** @param {{model: any}} props */
    initialize({ model }) {
      store = new LayerStore(model);
      return () => {
        store?.dispose();
        store = null;
      };
    },
    /** @param {{model: any, el: HTMLElement}} props */
    render({ model, el }) {
      if (!store) throw new Error("cnn_widgets: render before initialize");
      return renderBrowser(model, el, store);
    },
  };
};
