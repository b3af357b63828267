// Pieces the dataset views (TopActivations, ClassHeatmaps, ChannelImportance's controls) share: channel
// ordering, patch compositing with the out-of-image part drawn as padding, and the busy row (progress and
// cancel) of a view whose kernel side computes in the background. Pure functions are unit-tested in node.

import { h } from "./dom.js";
import { blendOverlay } from "./overlay.js";

/** @typedef {"channel" | "mean" | "importance"} ChannelSort */

/**
 * Display order of `count` channels: by index, or descending by `means` or `importance` (ties and
 * missing numbers keep index order; channels without a number go last).
 * @param {ChannelSort} mode
 * @param {ArrayLike<number | null> | null} means
 * @param {ArrayLike<number | null> | null} importance
 * @param {number} count
 * @returns {Int32Array}
 */
export function channelOrder(mode, means, importance, count) {
  const order = Int32Array.from({ length: count }, (_, i) => i);
  const key = mode === "mean" ? means : mode === "importance" ? importance : null;
  if (mode !== "channel" && mode !== "mean" && mode !== "importance") {
    throw new Error(`unknown sort ${JSON.stringify(mode)}; expected channel, mean or importance`);
  }
  if (!key) return order;
  /** @param {number} c */
  const value = (c) => {
    const v = key[c];
    return typeof v === "number" && Number.isFinite(v) ? v : -Infinity;
  };
  return order.sort((a, b) => value(b) - value(a) || a - b);
}

/** The two greys of the padding checkerboard. */
export const PAD_COLORS = [[200, 200, 200], [160, 160, 160]];

/**
 * Paint the padding of a side×side RGBA patch: every pixel outside `box` ([top, left, bottom, right),
 * the part of the image inside the receptive field) becomes a 4-pixel checkerboard.
 * @param {Uint8ClampedArray} rgba
 * @param {number} side
 * @param {number[]} box
 * @returns {Uint8ClampedArray} rgba
 */
export function padOutside(rgba, side, box) {
  const [top, left, bottom, right] = box;
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      if (y >= top && y < bottom && x >= left && x < right) continue;
      const c = PAD_COLORS[((y >> 2) + (x >> 2)) & 1];
      const i = 4 * (y * side + x);
      rgba[i] = c[0];
      rgba[i + 1] = c[1];
      rgba[i + 2] = c[2];
      rgba[i + 3] = 255;
    }
  }
  return rgba;
}

/**
 * One patch as RGBA: the image with the heat map blended over it (colour range [lo, hi]), padding
 * outside `box`.
 * @param {Uint8Array} rgb side×side×3
 * @param {ArrayLike<number>} heat side×side
 * @param {number[]} box [top, left, bottom, right)
 * @param {number} side
 * @param {{lo: number, hi: number, table: Uint8Array, opacity: number}} colour
 * @returns {Uint8ClampedArray}
 */
export function patchPixels(rgb, heat, box, side, { lo, hi, table, opacity }) {
  const rgba = blendOverlay(rgb, heat, { sign: "positive", lo, hi, table, opacity });
  return padOutside(rgba, side, box);
}

/**
 * The busy row: a progress bar, its percentage, the task's name and a cancel button (which sends
 * {type: "cancel"}); `sync()` shows it from the traits `busy`, `progress`, `status` and `error`.
 * @param {any} model
 * @param {import("./dom.js").Scope} scope
 * @returns {{row: HTMLElement, error: HTMLElement, sync: () => void}}
 */
export function busyRow(model, scope) {
  const bar = /** @type {HTMLProgressElement} */ (h("progress", { className: "cnnw-progress", attrs: { max: "1", value: "0" } }));
  const percent = h("span", { className: "cnnw-value" });
  const what = h("span", { className: "cnnw-caption cnnw-task" });
  const cancel = h("button", { className: "cnnw-cancel", text: "cancel", attrs: { type: "button" } });
  const row = h("div", { className: "cnnw-busy", attrs: { role: "status" } }, [what, bar, percent, cancel]);
  const error = h("div", { className: "cnnw-error", attrs: { role: "alert" } });
  scope.listen(cancel, "click", () => model.send({ type: "cancel" }));
  const sync = () => {
    const busy = Boolean(model.get("busy"));
    const p = Number(model.get("progress")) || 0;
    row.hidden = !busy;
    bar.value = p;
    percent.textContent = `${Math.round(100 * p)}%`;
    what.textContent = String(model.get("status") ?? "");
    error.textContent = String(model.get("error") ?? "");
  };
  for (const key of ["busy", "progress", "status", "error"]) scope.onModel(model, `change:${key}`, sync);
  sync();
  return { row, error, sync };
}

/** Styles of the dataset views (added after the shared stylesheet). */
export const DATASET_CSS = `
.cnnw-patches {
  display: flex;
  flex-wrap: wrap;
  gap: 8px;
  align-items: flex-start;
}
.cnnw-patch {
  display: flex;
  flex-direction: column;
  align-items: center;
  gap: 2px;
  margin: 0;
}
.cnnw-patch canvas {
  display: block;
  image-rendering: pixelated;
  border: 1px solid var(--jp-border-color2, #ccc);
}
.cnnw-patch figcaption,
.cnnw-task,
.cnnw-count {
  font-size: var(--cnnw-small-font-size, 12px);
  color: var(--jp-ui-font-color2, #555);
}
.cnnw-filter-tile {
  display: block;
  image-rendering: pixelated;
  border: 1px solid var(--jp-border-color2, #ccc);
}
.cnnw-busy[hidden],
.cnnw-error:empty {
  display: none;
}
.cnnw-error {
  color: var(--jp-error-color1, #d32f2f);
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  max-width: 640px;
}
.cnnw-cells {
  display: grid;
  justify-content: start;
  gap: 4px 8px;
  align-items: center;
}
.cnnw-cell {
  padding: 2px;
  border: 2px solid transparent;
  background: none;
  cursor: pointer;
  display: flex;
  flex-direction: column;
  align-items: center;
  color: inherit;
}
.cnnw-cell[aria-pressed="true"] {
  border-color: var(--jp-brand-color1, #1976d2);
}
.cnnw-cell:disabled {
  cursor: default;
  opacity: 0.5;
}
.cnnw-cell canvas {
  display: block;
  image-rendering: auto;
}
.cnnw-row-label {
  overflow-wrap: anywhere;
  max-width: 12em;
}
`;
