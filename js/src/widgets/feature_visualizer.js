// FeatureVisualizer view: the image a channel "wants to see" as the kernel optimises it (exact RGB bytes
// every few steps through the one codec), a progress bar with the step count and a cancel button, the
// controls (layer, objective, channel, steps, seed, single/grid, run), and a grid mode with one tile per
// channel that fills in as the tiles are computed; a click (or Enter on the focused grid) opens a tile.

import { decode, decodeImage } from "../codec.js";
import {
  Scope, accentColor, h, labelledSelect, markPainted, mountRoot, onCommit, outlineSlot, publishLayout, setOptions,
  showTooltip, suppressShortcuts, tooltipBox,
} from "../dom.js";
import { blitTiles, hitTest, layoutGrid, packRGB, stepSlot } from "../grid.js";
import { fitCanvas, rgbToRgba } from "../overlay.js";
import { bindScale, scaleOf } from "../scale.js";

const DISPLAY_SIDE = 256;
const GRID_WIDTH = 640;
const GRID_CELL = 72;
const OBJECTIVE_TEXT = { channel: "channel (mean)", neuron: "neuron (centre)", class: "class logit" };
const MODE_TEXT = { single: "single image", grid: "channel grid" };

const VIEW_CSS = `
.cnnw-feature-visualizer .cnnw-busy {
  display: flex;
  align-items: center;
  gap: 8px;
}
.cnnw-feature-visualizer progress {
  width: 200px;
  accent-color: var(--jp-brand-color1, #1976d2);
}
.cnnw-feature-visualizer .cnnw-channel-slider {
  width: min(200px, 40vw);
}
.cnnw-feature-visualizer input[type="number"] {
  width: 6em;
}
.cnnw-feature-visualizer .cnnw-feature {
  display: block;
  border: 1px solid var(--jp-border-color2, #ccc);
}
.cnnw-feature-visualizer .cnnw-error {
  color: var(--jp-error-color1, #c62828);
}
.cnnw-feature-visualizer .cnnw-error:empty,
.cnnw-feature-visualizer .cnnw-notice:empty {
  display: none;
}
`;

/**
 * Tile pixels for the grid: tile c is `tiles.get(c)` (H×W×3 RGB bytes) or a flat placeholder colour.
 * @param {Map<number, {rgb: Uint8Array}>} tiles
 * @param {number} count
 * @param {number} th
 * @param {number} tw
 * @param {number} placeholder packed colour of tiles not computed yet
 * @returns {Uint32Array} count×th×tw packed pixels
 */
export function tilePixels(tiles, count, th, tw, placeholder) {
  const size = th * tw;
  const out = new Uint32Array(count * size);
  for (let c = 0; c < count; c++) {
    const t = tiles.get(c);
    if (!t || t.rgb.length !== 3 * size) {
      out.fill(placeholder, c * size, (c + 1) * size);
      continue;
    }
    const { rgb } = t;
    for (let i = 0; i < size; i++) out[c * size + i] = packRGB(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
  }
  return out;
}

/**
 * An integer from a text field within [lo, hi] (hi may be Infinity), or null.
 * @param {string} text
 * @param {number} lo
 * @param {number} hi
 * @returns {number | null}
 */
export function parseIntIn(text, lo, hi) {
  const s = text.trim();
  if (!/^[0-9]+$/.test(s)) return null;
  const v = Number(s);
  return Number.isSafeInteger(v) && v >= lo && v <= hi ? v : null;
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderView(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-feature-visualizer");
  el.insertBefore(h("style", { text: VIEW_CSS }), root);
  bindScale(model, root, scope, () => paintGrid()); // tiles grow with the text

  const layerSel = labelledSelect("layer", "cnnw-layer", []);
  const objectiveSel = labelledSelect("objective", "cnnw-objective",
    Object.entries(OBJECTIVE_TEXT).map(([v, t]) => [v, t]));
  const modeSel = labelledSelect("view", "cnnw-mode", Object.entries(MODE_TEXT).map(([v, t]) => [v, t]));
  const channelNum = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-channel", attrs: { type: "number", min: "0", step: "1", "aria-label": "channel" },
  }));
  const channelSlider = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-channel-slider", attrs: { type: "range", min: "0", step: "1", "aria-label": "channel slider" },
  }));
  const channelLabel = h("span", { text: "channel" });
  const channelWrap = h("label", { className: "cnnw-control" }, [channelLabel, channelNum, channelSlider]);
  const stepsNum = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-steps", attrs: { type: "number", min: "1", step: "1" },
  }));
  const seedNum = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-seed", attrs: { type: "number", min: "0", step: "1" },
  }));
  const run = h("button", { className: "cnnw-run", text: "run", attrs: { type: "button" } });
  const progress = /** @type {HTMLProgressElement} */ (h("progress", { className: "cnnw-progress", attrs: { max: "1", value: "0" } }));
  const progressText = h("span", { className: "cnnw-value cnnw-step-text" });
  const cancel = h("button", { className: "cnnw-cancel", text: "cancel", attrs: { type: "button" } });
  const busyRow = h("div", { className: "cnnw-busy", attrs: { role: "status" } }, [progress, progressText, cancel]);
  const notice = h("div", { className: "cnnw-caption cnnw-notice", attrs: { role: "status" } });
  const error = h("div", { className: "cnnw-error", attrs: { role: "alert" } });
  const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", {
    className: "cnnw-feature", attrs: { role: "img", "aria-label": "the optimised image" },
  }));
  const caption = h("div", { className: "cnnw-caption cnnw-feature-caption" });
  const grid = /** @type {HTMLCanvasElement} */ (h("canvas", {
    className: "cnnw-grid", attrs: { "aria-label": "one image per channel: arrow keys move, Enter opens a channel" },
  }));
  const gridWrap = h("div", { className: "cnnw-grid-wrap" }, [grid]);
  const gridCaption = h("div", { className: "cnnw-caption cnnw-grid-caption" });
  const tooltip = tooltipBox();

  root.append(
    h("div", { className: "cnnw-toolbar" }, [layerSel.wrap, objectiveSel.wrap, channelWrap]),
    h("div", { className: "cnnw-toolbar" }, [
      h("label", { className: "cnnw-control" }, [h("span", { text: "steps" }), stepsNum]),
      h("label", { className: "cnnw-control" }, [h("span", { text: "seed" }), seedNum]),
      modeSel.wrap, run,
    ]),
    busyRow,
    notice,
    error,
    canvas,
    caption,
    gridWrap,
    gridCaption,
    tooltip,
  );
  const gctx = /** @type {CanvasRenderingContext2D} */ (grid.getContext("2d"));
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));

  /** The grid on screen: its id from `_grid`, and the tiles received (final or in progress). */
  /** @type {{id: number, count: number, h: number, w: number, tiles: Map<number, {rgb: Uint8Array, final: boolean}>,
   *   L: import("../grid.js").Layout | null}} */
  let gridState = { id: -1, count: 0, h: 0, w: 0, tiles: new Map(), L: null };
  /** The grid slot the keyboard is on. */
  let cursor = -1;

  const single = () => model.get("mode") !== "grid";
  const save = () => model.save_changes();

  // -- controls ------------------------------------------------------------------------------------

  function syncControls() {
    const layers = model.get("layers") ?? [];
    if (layerSel.select.options.length !== layers.length) setOptions(layerSel.select, layers.map((n) => [n, n]));
    layerSel.select.value = model.get("layer");
    layerSel.wrap.hidden = model.get("objective") === "class";
    objectiveSel.select.value = model.get("objective");
    modeSel.select.value = model.get("mode");
    const count = Number(model.get("channels"));
    const max = String(Math.max(0, count - 1));
    channelLabel.textContent = model.get("objective") === "class" ? "class" : "channel";
    channelNum.max = max;
    channelSlider.max = max;
    if (document.activeElement !== channelNum) channelNum.value = String(model.get("channel"));
    channelSlider.value = String(model.get("channel"));
    channelSlider.setAttribute("aria-valuetext", `${model.get("channel")} of ${count}`);
    if (document.activeElement !== stepsNum) stepsNum.value = String(model.get("steps"));
    if (document.activeElement !== seedNum) seedNum.value = String(model.get("seed"));
  }

  /** Send an integer trait from a field when it is valid, else put the trait's value back. */
  function sendInt(/** @type {HTMLInputElement} */ input, /** @type {string} */ key, /** @type {number} */ lo, /** @type {number} */ hi) {
    const v = parseIntIn(input.value, lo, hi);
    if (v === null) {
      input.value = String(model.get(key));
      return;
    }
    if (v !== model.get(key)) {
      model.set(key, v);
      save();
    }
  }

  scope.listen(layerSel.select, "change", () => {
    model.set("layer", layerSel.select.value);
    save();
  });
  scope.listen(objectiveSel.select, "change", () => {
    model.set("objective", objectiveSel.select.value);
    save();
  });
  scope.listen(modeSel.select, "change", () => {
    model.set("mode", modeSel.select.value);
    save();
  });
  const channelMax = () => Math.max(0, Number(model.get("channels")) - 1);
  onCommit(scope, channelNum, () => sendInt(channelNum, "channel", 0, channelMax()));
  scope.listen(channelSlider, "change", () => sendInt(channelSlider, "channel", 0, channelMax()));
  scope.listen(channelSlider, "input", () => {
    channelNum.value = channelSlider.value; // the number follows while dragging; the kernel hears the release
  });
  onCommit(scope, stepsNum, () => sendInt(stepsNum, "steps", 1, Infinity));
  onCommit(scope, seedNum, () => sendInt(seedNum, "seed", 0, Number.MAX_SAFE_INTEGER));
  scope.listen(run, "click", () => model.send({ type: "run" }));
  scope.listen(cancel, "click", () => model.send({ type: "cancel" }));

  // -- status ----------------------------------------------------------------------------------------

  /** Set when cancel or run hid itself while it had the keyboard focus. */
  let statusFocus = false;

  function syncStatus() {
    const focused = document.activeElement;
    const busy = Boolean(model.get("busy"));
    const p = Number(model.get("progress")) || 0;
    busyRow.hidden = !busy;
    run.hidden = busy;
    progress.value = p;
    const step = `step ${model.get("step")} / ${model.get("steps")}`;
    progressText.textContent = single() ? step : `tile ${model.get("done")} / ${model.get("channels")} · ${step}`;
    notice.textContent = busy ? "" : model.get("_notice");
    error.textContent = model.get("error");
    root.dataset.busy = String(busy);
    // cancel and run replace each other: the focus moves from the one that goes to the one that comes
    if ((focused === cancel && !busy) || (focused === run && busy)) statusFocus = true;
    if (statusFocus) {
      const now = document.activeElement;
      if (now && now !== document.body && now !== cancel && now !== run) statusFocus = false;
      else {
        (busy ? cancel : run).focus();
        statusFocus = false;
      }
    }
  }

  // -- single image ----------------------------------------------------------------------------------

  function paintImage() {
    const msg = model.get("_image");
    const image = decodeImage(msg?.tensor);
    canvas.hidden = !single() || !image;
    caption.hidden = canvas.hidden;
    if (!image || !single()) return;
    if (canvas.width !== image.w || canvas.height !== image.h) fitCanvas(canvas, image.h, image.w, DISPLAY_SIDE);
    canvas.style.imageRendering = "auto";
    ctx.putImageData(new ImageData(rgbToRgba(image.rgb, image.h, image.w), image.w, image.h), 0, 0);
    const what = msg.objective === "class" ? `class ${msg.channel}` : `${msg.layer} · channel ${msg.channel}`;
    const how = msg.objective === "neuron" ? " (centre neuron)" : "";
    caption.textContent = `${what}${how} · step ${msg.step} / ${msg.steps}${msg.final ? "" : " (optimising…)"}`;
    root.dataset.imageStep = String(msg.step);
    root.dataset.imageFinal = String(Boolean(msg.final));
    markPainted(root, String(msg.layer ?? ""), performance.now());
  }

  // -- grid ------------------------------------------------------------------------------------------

  function loadGrid() {
    const g = model.get("_grid") ?? {};
    if (g.id !== gridState.id) {
      gridState = { id: g.id ?? -1, count: g.count ?? 0, h: g.h ?? 0, w: g.w ?? 0, tiles: new Map(), L: null };
      cursor = -1;
    }
  }

  function paintGrid() {
    const show = !single() && gridState.count > 0;
    gridWrap.hidden = !show;
    gridCaption.hidden = !show;
    if (!show) return;
    const { count, h: th, w: tw, tiles } = gridState;
    const L = layoutGrid({ count, tileH: th, tileW: tw, maxWidth: GRID_WIDTH, maxCell: GRID_CELL, scale: scaleOf(model.get("font_scale")) });
    const order = Int32Array.from({ length: count }, (_, i) => i);
    publishLayout(grid, L, order);
    const img = gctx.createImageData(L.width, L.height);
    blitTiles(new Uint32Array(img.data.buffer), L, tilePixels(tiles, count, th, tw, packRGB(128, 128, 128)), order);
    gctx.putImageData(img, 0, 0);
    const chosen = Number(model.get("channel"));
    if (chosen >= 0 && chosen < count) outlineSlot(gctx, L, chosen, accentColor(root));
    if (cursor >= 0 && cursor !== chosen && cursor < count) outlineSlot(gctx, L, cursor, "#888888");
    gridState.L = L;
    let finals = 0;
    for (const t of tiles.values()) if (t.final) finals++;
    root.dataset.tilesDone = String(finals);
    root.dataset.gridId = String(gridState.id);
    const noun = model.get("objective") === "class" ? "classes" : "channels";
    gridCaption.textContent = `${finals} of ${count} ${noun} · click a tile (or arrows + Enter) to open it`;
    markPainted(root, String(model.get("layer")), performance.now());
  }

  /** Custom message from the kernel: `{type: "tiles", grid, channels, final, ...wire header}` + buffer. */
  function receive(/** @type {any} */ msg, /** @type {DataView[]} */ buffers) {
    if (msg?.type !== "tiles") return;
    loadGrid();
    if (msg.grid !== gridState.id) return;
    const t = decode({ ...msg, data: buffers[0] });
    const [k, th, tw] = t.shape;
    const size = th * tw * 3;
    const bytes = /** @type {Uint8Array} */ (t.data);
    msg.channels.forEach((/** @type {number} */ c, /** @type {number} */ i) => {
      const prev = gridState.tiles.get(c);
      if (prev?.final && !msg.final) return;
      gridState.tiles.set(c, { rgb: bytes.slice(i * size, (i + 1) * size), final: Boolean(msg.final) });
    });
    if (k) paintGrid();
  }

  function open(/** @type {number} */ c) {
    model.set("channel", c);
    model.set("mode", "single");
    save();
  }

  grid.tabIndex = 0;
  suppressShortcuts(grid);
  scope.listen(grid, "click", (/** @type {MouseEvent} */ e) => {
    const L = gridState.L;
    if (!L) return;
    const r = grid.getBoundingClientRect();
    const hit = hitTest(L, e.clientX - r.left, e.clientY - r.top);
    if (hit) open(hit.slot);
  });
  scope.listen(grid, "keydown", (/** @type {KeyboardEvent} */ e) => {
    const L = gridState.L;
    if (!L || !L.count || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      open(cursor >= 0 ? cursor : Number(model.get("channel")));
      return;
    }
    const next = stepSlot(L, cursor >= 0 ? cursor : Number(model.get("channel")), e.key);
    if (next === null) return;
    e.preventDefault();
    cursor = next;
    root.dataset.cursor = String(cursor);
    paintGrid();
  });
  scope.listen(grid, "mousemove", (/** @type {MouseEvent} */ e) => {
    const L = gridState.L;
    if (!L) return;
    const r = grid.getBoundingClientRect();
    const hit = hitTest(L, e.clientX - r.left, e.clientY - r.top);
    if (!hit) {
      tooltip.hidden = true;
      return;
    }
    const t = gridState.tiles.get(hit.slot);
    const state = t?.final ? "done" : t ? "optimising…" : "waiting";
    showTooltip(tooltip, `${model.get("objective") === "class" ? "class" : "channel"} ${hit.slot} · ${state}`, e, root);
  });
  scope.listen(grid, "mouseleave", () => {
    tooltip.hidden = true;
  });

  // -- wiring ----------------------------------------------------------------------------------------

  function syncAll() {
    syncControls();
    syncStatus();
    loadGrid();
    paintImage();
    paintGrid();
  }

  for (const key of ["layer", "layers", "objective", "channels", "steps", "seed"]) {
    scope.onModel(model, `change:${key}`, syncControls);
  }
  scope.onModel(model, "change:channel", () => {
    syncControls();
    if (!single()) paintGrid();
  });
  scope.onModel(model, "change:mode", syncAll);
  for (const key of ["busy", "progress", "step", "done", "error", "_notice"]) {
    scope.onModel(model, `change:${key}`, syncStatus);
  }
  scope.onModel(model, "change:_image", paintImage);
  scope.onModel(model, "change:_grid", () => {
    loadGrid();
    paintGrid();
  });
  scope.onModel(model, "msg:custom", receive);

  syncAll();
  model.send({ type: "fetch" });
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderView(model, el);
  },
};
