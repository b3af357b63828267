// compare() view: a grid of heatmaps over images, methods (rows) × images (columns), one canvas per
// panel. The images arrive with the widget; each method's row arrives once, when the kernel has computed
// it, as a custom message holding one float16 N×H×W tensor (scaled per panel) — a view asks for the rows
// already done when it renders. Until then the row says "queued", "computing… n%", "cancelled" or why
// it failed; a progress bar and a cancel button follow the work. The colour scale (shared, per method,
// per panel), sign, colormap, clipping and opacity are applied here.

import { decode } from "../codec.js";
import { isDiverging, lut } from "../colormap.js";
import { COMPARE_SCALES } from "../constants_data.js";
import { Scope, bindControl, colorLegend, fmt, h, labelledSelect, markPainted, mountRoot, textLines } from "../dom.js";
import { heatmapControls } from "../heatmap_controls.js";
import { bindScale } from "../scale.js";
import {
  OVERLAY_CSS, blendOverlay, fitCanvas, mergeSorted, overlayColormap, overlayRange, paintColorbar, sortedMagnitudes,
} from "../overlay.js";

const PANEL_SIDE = 180;
/** Menu text of the scale modes (the modes themselves: COMPARE_SCALES). @type {Record<string, string>} */
const SCALE_TEXT = { shared: "shared by all panels", "per-method": "per method (row)", "per-panel": "per panel" };

const COMPARE_CSS = `
.cnnw-compare-grid {
  display: grid;
  justify-content: start;
  gap: 6px 8px;
  align-items: start;
  overflow-x: auto;
  max-width: 100%;
}
.cnnw-compare .cnnw-col-label,
.cnnw-compare .cnnw-row-label {
  font-weight: 600;
  color: var(--jp-ui-font-color0, #000);
  overflow-wrap: anywhere;
}
.cnnw-compare .cnnw-col-label {
  align-self: end;
  text-align: center;
}
.cnnw-compare .cnnw-row-head {
  align-self: center;
  display: flex;
  flex-direction: column;
  gap: 4px;
  max-width: 220px;
}
.cnnw-compare .cnnw-row-label {
  font-family: var(--jp-code-font-family, monospace);
}
.cnnw-compare .cnnw-row-status {
  align-self: center;
  color: var(--jp-ui-font-color2, #555);
}
.cnnw-compare .cnnw-panel {
  display: flex;
  flex-direction: column;
  align-items: center;
  gap: 2px;
}
.cnnw-compare .cnnw-busy {
  display: flex;
  align-items: center;
  gap: 8px;
}
.cnnw-compare progress {
  width: 200px;
  accent-color: var(--jp-brand-color1, #1976d2);
}
`;

/** @typedef {"shared" | "per-panel" | "per-method"} ScaleMode */
/** @typedef {{values: Float32Array, sorted: Map<string, Float32Array[]>}} Row a method's N×H×W maps */

/**
 * Text of a row that has no maps (yet): its status, with the running row's share of `progress`.
 * @param {string} status one of the Python STATUSES
 * @param {number} fraction how much of the running row is done, 0–1
 */
function statusText(status, fraction) {
  if (status === "running") return `computing… ${Math.round(100 * fraction)}%`;
  if (status === "done") return "receiving…";
  return status;
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderCompare(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-compare");
  bindScale(model, root, scope);
  el.insertBefore(h("style", { text: OVERLAY_CSS + COMPARE_CSS }), root);

  const scale = labelledSelect("scale", "cnnw-scale", COMPARE_SCALES.map((m) => [m, SCALE_TEXT[m] ?? m]));
  const display = heatmapControls(model, scope, paint);
  const legendNote = h("span");
  const { legend, bar, lo: barLo, hi: barHi } = colorLegend(legendNote);
  const progress = /** @type {HTMLProgressElement} */ (h("progress", { className: "cnnw-progress", attrs: { max: "1", value: "0" } }));
  const progressText = h("span", { className: "cnnw-value" });
  const cancel = h("button", { className: "cnnw-cancel", text: "cancel", attrs: { type: "button" } });
  const busyRow = h("div", { className: "cnnw-busy", attrs: { role: "status" } }, [progress, progressText, cancel]);
  const runAgain = h("button", { className: "cnnw-run", text: "compute the cancelled rows", attrs: { type: "button" } });
  const grid = h("div", { className: "cnnw-compare-grid" });

  root.append(
    h("div", { className: "cnnw-toolbar" }, [scale.wrap, ...display.controls]),
    h("div", { className: "cnnw-toolbar" }, [busyRow, runAgain]),
    legend,
    grid,
  );

  /** @type {{rgb: Uint8Array, n: number, h: number, w: number} | null} */
  let images = null;
  /** The rows received, by row index. @type {Map<number, Row>} */
  const rows = new Map();
  /** @type {Array<Array<{canvas: HTMLCanvasElement, caption: HTMLElement}> | null>} */
  let panels = [];
  /** The cells of rows without maps, by row index (their text follows the progress). @type {Map<number, HTMLElement>} */
  let statusCells = new Map();

  /** Decode the images (exact RGB bytes, N×H×W×3). */
  function loadImages() {
    const im = model.get("_images");
    images = null;
    if (!im?.shape) return;
    const [n, hh, ww] = im.shape;
    images = { rgb: /** @type {Uint8Array} */ (decode(im).data), n, h: hh, w: ww };
  }

  /**
   * A custom message from the kernel: `{type: "row", row, ...wire header}` with the data buffer.
   * @param {any} content
   * @param {any[]} buffers
   */
  function receive(content, buffers) {
    if (content?.type !== "row" || rows.has(content.row)) return;
    const { type, row, ...header } = content;
    const t = decode({ ...header, data: buffers[0] });
    if (images && (t.shape[0] !== images.n || t.shape[1] !== images.h || t.shape[2] !== images.w)) {
      throw new Error(`compare: row ${row} maps [${t.shape}] do not fit the images [${images.n}, ${images.h}, ${images.w}]`);
    }
    rows.set(row, { values: /** @type {Float32Array} */ (t.data), sorted: new Map() });
    root.dataset.rowCount = String(rows.size);
    build();
    paint();
  }

  /** @param {Row} row @param {number} c */
  function panelValues(row, c) {
    const size = images ? images.h * images.w : 0;
    return row.values.subarray(c * size, (c + 1) * size);
  }

  /** A row's per-panel ascending magnitudes for a sign (computed once per sign). @param {Row} row @param {string} s */
  function sortedPanels(row, s) {
    let all = row.sorted.get(s);
    if (!all) {
      all = Array.from({ length: images?.n ?? 0 }, (_, c) => sortedMagnitudes(panelValues(row, c), s));
      row.sorted.set(s, all);
    }
    return all;
  }

  /** Fraction of the running row done, from the whole grid's `progress` and the rows settled. */
  function runningFraction() {
    const status = model.get("status") ?? [];
    const settled = status.filter((/** @type {string} */ s) => s === "done" || s === "failed").length;
    return Math.min(1, Math.max(0, Number(model.get("progress")) * status.length - settled));
  }

  /**
   * Grid of labels (each row's notes under its label) and one canvas per panel of the rows received;
   * a row without maps gets its status, or its error, across the row.
   */
  function build() {
    const labels = model.get("row_labels") ?? [];
    const cols = model.get("column_labels") ?? [];
    const errors = model.get("errors") ?? [];
    const status = model.get("status") ?? [];
    const notes = model.get("notes") ?? [];
    grid.style.gridTemplateColumns = `max-content repeat(${cols.length}, max-content)`;
    const cells = [h("div")];
    for (const label of cols) cells.push(h("div", { className: "cnnw-col-label", text: label }));
    panels = [];
    statusCells = new Map();
    labels.forEach((/** @type {string} */ label, /** @type {number} */ r) => {
      const notesBox = h("div", { className: "cnnw-notes", attrs: { role: "note" } });
      textLines(notesBox, notes[r], "cnnw-note");
      cells.push(h("div", { className: "cnnw-row-head" }, [h("div", { className: "cnnw-row-label", text: label }), notesBox]));
      const row = rows.get(r);
      if (errors[r] || !row || !images) {
        const cell = errors[r]
          ? h("div", { className: "cnnw-error", text: errors[r] })
          : h("div", { className: "cnnw-row-status", text: statusText(status[r], runningFraction()) });
        cell.dataset.row = String(r);
        cell.dataset.status = status[r] ?? "";
        cell.style.gridColumn = `span ${Math.max(cols.length, 1)}`;
        cells.push(cell);
        if (!errors[r]) statusCells.set(r, cell);
        panels.push(null);
        return;
      }
      const canvases = [];
      for (let c = 0; c < cols.length; c++) {
        const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", {
          className: "cnnw-overlay", attrs: { "aria-label": `${label}, ${cols[c]}` },
        }));
        canvas.dataset.row = String(r);
        fitCanvas(canvas, images.h, images.w, PANEL_SIDE);
        const caption = h("div", { className: "cnnw-caption" });
        cells.push(h("div", { className: "cnnw-panel" }, [canvas, caption]));
        canvases.push({ canvas, caption });
      }
      panels.push(canvases);
    });
    grid.replaceChildren(...cells);
  }

  /**
   * Ranges per panel of the painted rows for the current scale mode.
   * @param {string} s @param {boolean} diverging
   * @returns {Map<number, Array<import("../overlay.js").OverlayRange>>}
   */
  function ranges(s, diverging) {
    const clipAt = Number(model.get("clip_percentile"));
    const mode = /** @type {ScaleMode} */ (model.get("scale"));
    /** @type {Map<number, Float32Array[]>} */
    const sorted = new Map();
    panels.forEach((p, r) => {
      const row = rows.get(r);
      if (p && row) sorted.set(r, sortedPanels(row, s));
    });
    const shared = mode === "shared" ? overlayRange(mergeSorted([...sorted.values()].flat()), clipAt, diverging) : null;
    const out = new Map();
    for (const [r, all] of sorted) {
      const perRow = mode === "per-method" ? overlayRange(mergeSorted(all), clipAt, diverging) : null;
      out.set(r, all.map((one) => shared ?? perRow ?? overlayRange(one, clipAt, diverging)));
    }
    return out;
  }

  /** Composite every panel received with the current scale mode, sign, colormap, clipping and opacity. */
  function paint() {
    if (!images) return;
    const s = model.get("sign");
    const name = overlayColormap(model.get("colormap"), s);
    const table = lut(name);
    const rs = ranges(s, isDiverging(name));
    if (!rs.size) return;
    const opacityValue = Number(model.get("opacity"));
    const mode = model.get("scale");
    const size = images.h * images.w;
    for (const [r, rowRanges] of rs) {
      const row = /** @type {Row} */ (rows.get(r));
      rowRanges.forEach((range, c) => {
        const panel = panels[r]?.[c];
        if (!panel || !images) return;
        const rgb = images.rgb.subarray(3 * c * size, 3 * (c + 1) * size);
        const px = blendOverlay(rgb, panelValues(row, c), { sign: s, lo: range.lo, hi: range.hi, table, opacity: opacityValue });
        /** @type {CanvasRenderingContext2D} */ (panel.canvas.getContext("2d")).putImageData(new ImageData(px, images.w, images.h), 0, 0);
        panel.caption.textContent = range.empty ? `no ${s} values` : mode === "shared" ? "" : `${fmt(range.lo)} … ${fmt(range.hi)}`;
      });
    }
    paintColorbar(bar, table);
    const first = [...rs.values()].flat().find((x) => !x.empty);
    if (mode === "shared" && first) {
      barLo.textContent = fmt(first.lo);
      barHi.textContent = fmt(first.hi);
      legendNote.textContent = "one range for every panel";
    } else {
      barLo.textContent = "low";
      barHi.textContent = "high";
      legendNote.textContent = mode === "shared" ? "" : `range ${mode === "per-method" ? "per row" : "per panel"} under each panel`;
    }
    if (name !== model.get("colormap")) legendNote.textContent += ` · ${name} for signed values`;
    markPainted(root, mode, performance.now());
  }

  /** Progress bar, cancel and "compute" buttons, and the text of the rows still waiting. */
  function syncStatus() {
    const busy = Boolean(model.get("busy"));
    const status = model.get("status") ?? [];
    const p = Number(model.get("progress"));
    const settled = status.filter((/** @type {string} */ s) => s === "done" || s === "failed").length;
    busyRow.hidden = !busy;
    progress.value = p;
    progressText.textContent = `${settled} of ${status.length} methods · ${Math.round(100 * p)}%`;
    runAgain.hidden = busy || !status.includes("cancelled");
    for (const [r, cell] of statusCells) cell.textContent = statusText(status[r], runningFraction());
  }

  bindControl(scope, model, scale.select, "scale", { save: display.save });
  scope.onModel(model, "change:scale", () => {
    scale.select.value = model.get("scale");
    paint();
  });
  scope.onModel(model, "change:_images", () => {
    loadImages();
    build();
    paint();
  });
  for (const key of ["row_labels", "column_labels", "errors", "notes", "status"]) {
    scope.onModel(model, `change:${key}`, () => {
      build();
      paint();
      syncStatus();
    });
  }
  for (const key of ["progress", "busy"]) scope.onModel(model, `change:${key}`, syncStatus);
  scope.onModel(model, "msg:custom", receive);
  scope.listen(cancel, "click", () => model.send({ type: "cancel" }));
  scope.listen(runAgain, "click", () => model.send({ type: "run" }));

  scale.select.value = model.get("scale");
  loadImages();
  build();
  syncStatus();
  model.send({ type: "fetch" });
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderCompare(model, el);
  },
};
