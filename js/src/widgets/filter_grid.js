// FilterGrid view: one tile per output filter of a conv layer. Input channel, normalisation and
// colormap are applied here from the one weights tensor the kernel sent; a new layer brings new weights.

import { decode } from "../codec.js";
import { COLORMAPS, colorRange, isDiverging, lut, tileRanges } from "../colormap.js";
import { FILTER_NORMALIZE } from "../constants_data.js";
import {
  Scope, accentColor, bindControl, colorLegend, fmt, gridPointer, h, labelledSelect, markPainted, mountRoot,
  outlineSlot, publishLayout, setOptions, tooltipBox,
} from "../dom.js";
import { filterTiles, isRgbLayer } from "../filters.js";
import { blitTiles, colorizeRgb, colorizeScalar, layoutGrid, packLut } from "../grid.js";
import { paintColorbar } from "../overlay.js";
import { bindScale, scaleOf } from "../scale.js";

const GRID_WIDTH = 560;
const GRID_CELL = 64;
const DETAIL_WIDTH = 240;
/** Menu text of the colour scale modes (trait `scale`; the modes: FILTER_NORMALIZE). @type {Record<string, string>} */
const SCALE_TEXT = { filter: "per filter", layer: "per layer" };

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderFilterGrid(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-filter-grid");
  bindScale(model, root, scope, () => paint()); // tiles grow with the text

  const layerSel = labelledSelect("layer", "cnnw-layer-select", []);
  const inputSel = labelledSelect("input channel", "cnnw-input-channel", []);
  // cnnw-normalize: the select's old class, still used by tests/browser/test_keyboard.py
  const scaleSel = labelledSelect("scale", "cnnw-scale cnnw-normalize", FILTER_NORMALIZE.map((m) => [m, SCALE_TEXT[m] ?? m]));
  const cmapSel = labelledSelect("colormap", "cnnw-colormap", COLORMAPS.map((n) => [n, n]));
  const caption = h("div", { className: "cnnw-caption" });
  const grid = /** @type {HTMLCanvasElement} */ (h("canvas", {
    className: "cnnw-grid", attrs: { "aria-label": "filters: arrow keys choose one, Enter clears or restores it" },
  }));
  const detail = /** @type {HTMLCanvasElement} */ (h("canvas", { className: "cnnw-filter-detail", attrs: { "aria-label": "input channels of the selected filter" } }));
  const detailCaption = h("div", { className: "cnnw-caption cnnw-detail-caption" });
  const { legend, bar, lo: barLo, hi: barHi } = colorLegend();
  const tooltip = tooltipBox();

  root.append(
    h("div", { className: "cnnw-toolbar" }, [layerSel.wrap, inputSel.wrap, scaleSel.wrap, cmapSel.wrap]),
    caption,
    h("div", { className: "cnnw-main" }, [
      h("div", { className: "cnnw-grid-wrap" }, [grid]),
      h("div", { className: "cnnw-side" }, [legend, detail, detailCaption]),
    ]),
    tooltip,
  );
  const ctx = /** @type {CanvasRenderingContext2D} */ (grid.getContext("2d"));

  /** @type {{source: any, layer: string, shape: number[], values: Float32Array, info: any} | null} */
  let weights = null;
  /** @type {{L: import("../grid.js").Layout, tiles: import("../filters.js").FilterTiles,
   *   lo: Float64Array, hi: Float64Array} | null} */
  let shown = null;

  /** Decode `_weights` once per message (a new layer). */
  function loadWeights() {
    const w = model.get("_weights");
    if (!w?.tensor) return null;
    if (weights?.source !== w) {
      const t = decode(w.tensor);
      weights = { source: w, layer: w.layer, shape: t.shape, values: /** @type {Float32Array} */ (t.data), info: w.info };
    }
    return weights;
  }

  function syncControls() {
    const layers = model.get("layers") ?? [];
    if (layerSel.select.options.length !== layers.length) setOptions(layerSel.select, layers.map((n) => [n, n || "(whole model)"]));
    layerSel.select.value = model.get("layer");
    scaleSel.select.value = model.get("scale");
    cmapSel.select.value = model.get("colormap");
    const w = weights;
    const I = w ? w.shape[1] : 0;
    const first = w && isRgbLayer(w.shape, w.info.groups) ? "RGB" : "mean";
    if (inputSel.select.dataset.count !== String(I) || inputSel.select.options[0]?.textContent !== first) {
      setOptions(inputSel.select, [["-1", first], ...Array.from({ length: I > 1 ? I : 0 }, (_, i) => [String(i), String(i)])]);
      inputSel.select.dataset.count = String(I);
    }
    inputSel.select.value = String(model.get("input_channel"));
  }

  function describe() {
    if (!weights) return "";
    const { info, shape } = weights;
    const [O, I, kh, kw] = shape;
    const parts = [
      `${O} filters × ${I} input channel${I === 1 ? "" : "s"} × ${kh}×${kw}`,
      `stride ${info.stride.join("×")}`,
      `padding ${Array.isArray(info.padding) ? info.padding.join("×") : info.padding}`,
    ];
    if (info.dilation.some((d) => d !== 1)) parts.push(`dilation ${info.dilation.join("×")}`);
    if (info.groups !== 1) parts.push(info.groups === info.in_channels ? `depthwise (groups ${info.groups})` : `groups ${info.groups}`);
    return parts.join(" · ");
  }

  function paint() {
    const w = loadWeights();
    if (!w || w.layer !== model.get("layer")) {
      caption.textContent = `loading ${model.get("layer")}…`; // the layer's weights are on their way
      return;
    }
    syncControls();
    const [, , kh, kw] = w.shape;
    const k = Number(model.get("input_channel"));
    const tiles = filterTiles(w.values, w.shape, k < w.shape[1] ? k : -1, w.info.groups);
    const cmap = model.get("colormap");
    const mode = model.get("scale") === "layer" ? "layer" : "channel";
    const { lo, hi } = tileRanges(mode, tiles.min, tiles.max, !tiles.rgb && isDiverging(cmap));
    const pixels = tiles.rgb
      ? colorizeRgb(tiles.values, tiles.count, lo, hi)
      : colorizeScalar(tiles.values, tiles.count, lo, hi, packLut(lut(cmap)));
    const L = layoutGrid({
      count: tiles.count, tileH: kh, tileW: kw, maxWidth: GRID_WIDTH, maxCell: GRID_CELL, scale: scaleOf(model.get("font_scale")),
    });
    const order = Int32Array.from({ length: tiles.count }, (_, i) => i);
    publishLayout(grid, L, order);
    const img = ctx.createImageData(L.width, L.height);
    blitTiles(new Uint32Array(img.data.buffer), L, pixels, order);
    ctx.putImageData(img, 0, 0);
    const at = performance.now();
    const sel = Number(model.get("selected"));
    if (sel >= 0 && sel < tiles.count) outlineSlot(ctx, L, sel, accentColor(root));
    shown = { L, tiles, lo, hi };
    caption.textContent = describe();
    markPainted(root, w.layer, at);
    paintSelected();
  }

  /** The selected filter's input channels, enlarged on that filter's colour range, and the legend. */
  function paintSelected() {
    const sel = Number(model.get("selected"));
    const w = weights;
    const cmap = model.get("colormap");
    const table = lut(cmap);
    const rgb = !shown || shown.tiles.rgb;
    legend.hidden = rgb && sel < 0;
    paintColorbar(bar, table);
    if (!w || !shown || sel < 0 || sel >= w.shape[0]) {
      detail.hidden = true;
      const layerWide = shown && model.get("scale") === "layer";
      barLo.textContent = layerWide ? fmt(shown.lo[0]) : "low";
      barHi.textContent = layerWide ? fmt(shown.hi[0]) : "high (each filter)";
      detailCaption.textContent = shown ? "click a filter to see all its input channels" : "";
      return;
    }
    const [, I, kh, kw] = w.shape;
    const size = kh * kw;
    const values = w.values.subarray(sel * I * size, (sel + 1) * I * size);
    let a = Infinity;
    let b = -Infinity;
    for (const v of values) {
      if (v < a) a = v;
      if (v > b) b = v;
    }
    const [lo, hi] = colorRange(a, b, isDiverging(cmap));
    barLo.textContent = fmt(lo);
    barHi.textContent = fmt(hi);
    const L = layoutGrid({
      count: I, tileH: kh, tileW: kw, cols: I <= 4 ? I : undefined, maxWidth: DETAIL_WIDTH, maxCell: 96, scale: scaleOf(model.get("font_scale")),
    });
    const pixels = colorizeScalar(values, I, new Float64Array(I).fill(lo), new Float64Array(I).fill(hi), packLut(table));
    detail.width = L.width;
    detail.height = L.height;
    detail.style.width = `${L.width}px`;
    detail.style.height = `${L.height}px`;
    const dctx = /** @type {CanvasRenderingContext2D} */ (detail.getContext("2d"));
    const img = dctx.createImageData(L.width, L.height);
    blitTiles(new Uint32Array(img.data.buffer), L, pixels, Int32Array.from({ length: I }, (_, i) => i));
    dctx.putImageData(img, 0, 0);
    detail.hidden = false;
    detailCaption.textContent = `filter ${sel}: its ${I} input channel${I === 1 ? "" : "s"} · min ${fmt(a)} · max ${fmt(b)}`;
  }

  /** What the grid shows, if it is the current layer (not the previous one while weights load). */
  const live = () => (shown && weights?.layer === model.get("layer") ? shown : null);

  gridPointer(scope, root, grid, tooltip, {
    live,
    describe({ tiles, L }, hit) {
      const size = L.tileH * L.tileW;
      const p = hit.row * L.tileW + hit.col;
      const o = hit.slot;
      const value = tiles.rgb
        ? ["R", "G", "B"].map((c, j) => `${c} ${fmt(tiles.values[(3 * o + j) * size + p])}`).join("  ")
        : fmt(tiles.values[o * size + p]);
      return `filter ${o} · (${hit.row}, ${hit.col})\n${value}`;
    },
    selected: () => Number(model.get("selected")),
    select(_, slot) {
      model.set("selected", slot);
      model.save_changes();
    },
  });
  bindControl(scope, model, layerSel.select, "layer");
  bindControl(scope, model, inputSel.select, "input_channel", { parse: Number });
  bindControl(scope, model, scaleSel.select, "scale");
  bindControl(scope, model, cmapSel.select, "colormap");
  for (const key of ["_weights", "layer", "input_channel", "scale", "colormap", "layers"]) {
    scope.onModel(model, `change:${key}`, paint);
  }
  scope.onModel(model, "change:selected", paint);

  paint();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderFilterGrid(model, el);
  },
};
