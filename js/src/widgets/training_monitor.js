// TrainingMonitor view (the canvas half; the loss chart is a bqplot Figure beside it): a snapshot
// slider over every kept snapshot, the filters of the chosen layer and the probe image's activations
// there. Snapshots arrive once each as custom messages ({type: "snapshot", id, parts} + one buffer per
// part); the `_kept` trait lists which are kept, in order. Moving the slider, the layer or the probe
// image paints from what the browser holds and sends nothing to the kernel.

import { decode, decodeImage } from "../codec.js";
import { isDiverging, lut, tileRanges } from "../colormap.js";
import { Scope, fmt, h, labelledSelect, markPainted, mountRoot, publishLayout, setOptions } from "../dom.js";
import { filterTiles } from "../filters.js";
import { blitTiles, colorizeRgb, colorizeScalar, layoutGrid, packLut } from "../grid.js";
import { fitCanvas, pixelsCanvas, rgbToRgba } from "../overlay.js";
import { bindScale, scaleOf } from "../scale.js";

const FILTER_COLORMAP = "RdBu_r";
const ACTIVATION_COLORMAP = "viridis";
const GRID_WIDTH = 420;
const PROBE_SIDE = 128;

/**
 * @typedef {{id: number, epoch: number, step: number, metrics: Record<string, number | string>}} KeptMeta
 * @typedef {{what: "filters" | "activations", layer: string, image: number, shape: number[], dtype: string,
 *   kind: string, codec: number}} PartHeader
 */

/**
 * The caption of a snapshot: epoch, step, then its metrics (loss first; a non-finite value comes as
 * the text "nan", "inf" or "-inf").
 * @param {KeptMeta} meta
 * @returns {string}
 */
export function snapshotText(meta) {
  const names = Object.keys(meta.metrics ?? {}).sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : a < b ? -1 : a > b ? 1 : 0));
  return [`epoch ${meta.epoch}`, `step ${meta.step}`, ...names.map((n) => `${n} ${typeof meta.metrics[n] === "number" ? fmt(meta.metrics[n]) : meta.metrics[n]}`)].join(" · ");
}

/**
 * Which snapshot to show once the kept list changed: the newest when the view was following it (showing
 * the last one, or nothing yet), else the one shown if it is still kept, else the kept one nearest in
 * steps to it (the earlier on a tie).
 * @param {KeptMeta[]} kept
 * @param {KeptMeta | null} shown
 * @param {boolean} follow
 * @returns {number} an index into kept, -1 when it is empty
 */
export function nextIndex(kept, shown, follow) {
  if (!kept.length) return -1;
  if (follow || !shown) return kept.length - 1;
  const same = kept.findIndex((k) => k.id === shown.id);
  if (same >= 0) return same;
  let best = 0;
  for (let i = 1; i < kept.length; i++) {
    if (Math.abs(kept[i].step - shown.step) < Math.abs(kept[best].step - shown.step)) best = i;
  }
  return best;
}

/** The snapshots' wire parts the browser holds, by snapshot id. */
export class SnapshotStore {
  constructor() {
    /** @type {Map<number, Map<string, any>>} */
    this.parts = new Map();
  }

  /**
   * @param {string} what
   * @param {string} layer
   * @param {number} image
   */
  static key(what, layer, image) {
    return `${what}\u0000${layer}\u0000${image}`;
  }

  /**
   * File a snapshot message; anything else is ignored.
   * @param {any} content
   * @param {any[]} buffers one per part, in order
   * @returns {boolean} whether it was a snapshot
   */
  receive(content, buffers) {
    if (content?.type !== "snapshot" || !Array.isArray(content.parts)) return false;
    /** @type {Map<string, any>} */
    const byKey = new Map();
    content.parts.forEach((/** @type {PartHeader} */ p, /** @type {number} */ i) => {
      byKey.set(SnapshotStore.key(p.what, p.layer, p.image), { ...p, data: buffers[i] });
    });
    this.parts.set(content.id, byKey);
    return true;
  }

  /** Forget every snapshot whose id is not in `ids`. @param {number[]} ids */
  keepOnly(ids) {
    const keep = new Set(ids);
    for (const id of [...this.parts.keys()]) if (!keep.has(id)) this.parts.delete(id);
  }

  /** @param {number} id */
  has(id) {
    return this.parts.has(id);
  }

  /** The ids held. */
  ids() {
    return [...this.parts.keys()];
  }

  /**
   * One wire message of a snapshot, or undefined.
   * @param {number} id
   * @param {string} what
   * @param {string} layer
   * @param {number} image
   */
  part(id, what, layer, image) {
    return this.parts.get(id)?.get(SnapshotStore.key(what, layer, image));
  }
}

/**
 * Paint coloured tiles into a grid canvas.
 * @param {HTMLCanvasElement} canvas
 * @param {import("../grid.js").Layout} L
 * @param {Uint32Array} pixels
 */
function blit(canvas, L, pixels) {
  const order = Int32Array.from({ length: L.count }, (_, i) => i);
  publishLayout(canvas, L, order);
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  const img = ctx.createImageData(L.width, L.height);
  blitTiles(new Uint32Array(img.data.buffer), L, pixels, order);
  ctx.putImageData(img, 0, 0);
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderMonitor(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-training-monitor");
  bindScale(model, root, scope, () => paint()); // tiles grow with the text
  const store = new SnapshotStore();

  const slider = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-snapshot-slider cnnw-layer-slider",
    attrs: { type: "range", min: "0", max: "0", step: "1", "aria-label": "snapshot (epoch)" },
  }));
  const snapCaption = h("span", { className: "cnnw-caption cnnw-snapshot-caption" });
  const layerSel = labelledSelect("layer", "cnnw-layer-select", []);
  const imageSel = labelledSelect("probe image", "cnnw-probe-select", []);
  const status = h("div", { className: "cnnw-status", attrs: { role: "status" } });
  const filters = /** @type {HTMLCanvasElement} */ (h("canvas", { className: "cnnw-grid cnnw-tm-filters", attrs: { "aria-label": "filters of the layer at this snapshot" } }));
  const acts = /** @type {HTMLCanvasElement} */ (h("canvas", { className: "cnnw-grid cnnw-tm-activations", attrs: { "aria-label": "activations of the probe image at this snapshot" } }));
  const probe = /** @type {HTMLCanvasElement} */ (h("canvas", { className: "cnnw-detail cnnw-tm-probe", attrs: { "aria-label": "probe image" } }));
  const filtersCaption = h("div", { className: "cnnw-caption" });
  const actsCaption = h("div", { className: "cnnw-caption" });

  root.append(
    h("div", { className: "cnnw-toolbar" }, [
      h("label", { className: "cnnw-control" }, [h("span", { text: "snapshot" }), slider]),
      snapCaption,
    ]),
    h("div", { className: "cnnw-toolbar" }, [layerSel.wrap, imageSel.wrap]),
    status,
    h("div", { className: "cnnw-main" }, [
      h("div", { className: "cnnw-side" }, [h("div", { className: "cnnw-caption", text: "filters" }), h("div", { className: "cnnw-grid-wrap" }, [filters]), filtersCaption]),
      h("div", { className: "cnnw-side" }, [h("div", { className: "cnnw-caption", text: "activations" }), h("div", { className: "cnnw-grid-wrap" }, [acts]), actsCaption]),
      h("div", { className: "cnnw-side" }, [h("div", { className: "cnnw-caption", text: "probe image" }), probe]),
    ]),
  );

  /** @type {KeptMeta | null} what the slider points at */
  let shown = null;
  const filterColors = packLut(lut(FILTER_COLORMAP));
  const actColors = packLut(lut(ACTIVATION_COLORMAP));

  /** @returns {KeptMeta[]} */
  const kept = () => model.get("_kept") ?? [];
  /** @returns {{name: string, info: any}[]} */
  const layers = () => model.get("_layers") ?? [];

  function syncLists() {
    const names = layers().map((l) => l.name);
    if ([...layerSel.select.options].map((o) => o.value).join("\u0000") !== names.join("\u0000")) {
      setOptions(layerSel.select, names.map((n) => [n, n || "(whole model)"]));
    }
    const images = model.get("_probe") ?? [];
    if (imageSel.select.options.length !== images.length) {
      setOptions(imageSel.select, images.map((/** @type {any} */ _, /** @type {number} */ i) => [String(i), String(i)]));
    }
    imageSel.wrap.hidden = images.length <= 1;
  }

  function paintProbe() {
    const images = model.get("_probe") ?? [];
    const image = decodeImage(images[Number(imageSel.select.value) || 0]);
    if (!image) return;
    fitCanvas(probe, image.h, image.w, PROBE_SIDE);
    const ctx = /** @type {CanvasRenderingContext2D} */ (probe.getContext("2d"));
    ctx.drawImage(pixelsCanvas(rgbToRgba(image.rgb, image.h, image.w), image.w, image.h), 0, 0);
  }

  /** Point the slider at the snapshot to show after `_kept` changed. */
  function syncSlider() {
    const list = kept();
    const follow = !shown || Number(slider.value) >= Number(slider.max);
    const i = nextIndex(list, shown, follow);
    slider.max = String(Math.max(0, list.length - 1));
    slider.value = String(Math.max(0, i));
    shown = i >= 0 ? list[i] : null;
  }

  function paint() {
    const list = kept();
    const i = Number(slider.value);
    shown = list[i] ?? null;
    root.dataset.snapshots = String(list.length);
    if (!shown) return;
    const text = snapshotText(shown);
    snapCaption.textContent = `${text} (${i + 1}/${list.length})`;
    slider.setAttribute("aria-valuetext", text);
    const layer = layerSel.select.value;
    const info = layers().find((l) => l.name === layer)?.info;
    const image = Number(imageSel.select.value) || 0;
    const w = store.part(shown.id, "filters", layer, -1);
    const a = store.part(shown.id, "activations", layer, image);
    if (!w || !a || !info) {
      status.textContent = `loading snapshot ${i + 1}…`;
      return;
    }
    status.textContent = "";
    const wt = decode(w);
    const tiles = filterTiles(/** @type {Float32Array} */ (wt.data), wt.shape, -1, info.groups);
    const fr = tileRanges("channel", tiles.min, tiles.max, !tiles.rgb && isDiverging(FILTER_COLORMAP));
    const fpx = tiles.rgb ? colorizeRgb(tiles.values, tiles.count, fr.lo, fr.hi) : colorizeScalar(tiles.values, tiles.count, fr.lo, fr.hi, filterColors);
    const [, I, kh, kw] = wt.shape;
    const scale = scaleOf(model.get("font_scale"));
    blit(filters, layoutGrid({ count: tiles.count, tileH: kh, tileW: kw, maxWidth: GRID_WIDTH, maxCell: 48, scale }), fpx);
    filtersCaption.textContent = `${tiles.count} filters × ${I} input channel${I === 1 ? "" : "s"} × ${kh}×${kw}`
      + (tiles.rgb ? " · RGB" : " · mean over inputs") + " · each on its own range";
    const av = decode(a);
    const [C, ah, aw] = av.shape;
    const ar = tileRanges("channel", av.min, av.max, false);
    blit(acts, layoutGrid({ count: C, tileH: ah, tileW: aw, maxWidth: GRID_WIDTH, maxCell: 64, scale }), colorizeScalar(av.data, C, ar.lo, ar.hi, actColors));
    actsCaption.textContent = `${C} channels · ${ah}×${aw} · each on its own range`;
    root.dataset.shownId = String(shown.id);
    root.dataset.shownEpoch = String(shown.epoch);
    markPainted(root, layer, performance.now());
  }

  function keptChanged() {
    store.keepOnly(kept().map((k) => k.id));
    syncSlider();
    paint();
  }

  scope.onModel(model, "msg:custom", (/** @type {any} */ content, /** @type {any[]} */ buffers) => {
    if (store.receive(content, buffers) && content.id === shown?.id) paint();
  });
  scope.onModel(model, "change:_kept", keptChanged);
  scope.onModel(model, "change:_layers", () => {
    syncLists();
    paint();
  });
  scope.onModel(model, "change:_probe", () => {
    syncLists();
    paintProbe();
    paint();
  });
  scope.listen(slider, "input", paint);
  scope.listen(layerSel.select, "change", paint);
  scope.listen(imageSel.select, "change", () => {
    paintProbe();
    paint();
  });

  syncLists();
  paintProbe();
  syncSlider();
  paint();
  model.send({ type: "fetch", have: store.ids() });
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderMonitor(model, el);
  },
};
