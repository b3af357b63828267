// compare() view: a grid of heatmaps over images, methods (rows) × images (columns), one canvas per
// panel. All maps arrive once as one stacked float16 tensor (each panel divided by its peak); the
// colour scale (shared, per method, per panel), sign, colormap, clipping and opacity are applied here.

import { decode } from "../codec.js";
import { isDiverging, lut } from "../colormap.js";
import { COMPARE_SCALES } from "../constants_data.js";
import { Scope, bindControl, colorLegend, fmt, h, labelledSelect, markPainted, mountRoot } from "../dom.js";
import { heatmapControls } from "../heatmap_controls.js";
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
.cnnw-compare .cnnw-row-label {
  align-self: center;
  font-family: var(--jp-code-font-family, monospace);
  max-width: 160px;
}
.cnnw-compare .cnnw-panel {
  display: flex;
  flex-direction: column;
  align-items: center;
  gap: 2px;
}
`;

/** @typedef {"shared" | "per-panel" | "per-method"} ScaleMode */

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderCompare(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-compare");
  el.insertBefore(h("style", { text: OVERLAY_CSS + COMPARE_CSS }), root);

  const scale = labelledSelect("scale", "cnnw-scale", COMPARE_SCALES.map((m) => [m, SCALE_TEXT[m] ?? m]));
  const display = heatmapControls(model, scope, paint);
  const legendNote = h("span");
  const { legend, bar, lo: barLo, hi: barHi } = colorLegend(legendNote);
  const grid = h("div", { className: "cnnw-compare-grid" });

  root.append(
    h("div", { className: "cnnw-toolbar" }, [scale.wrap, ...display.controls]),
    legend,
    grid,
  );

  /** @type {{rgb: Uint8Array, n: number, h: number, w: number} | null} */
  let images = null;
  /** @type {{values: Float32Array, m: number, n: number, sorted: Map<string, Float32Array[]>} | null} */
  let maps = null;
  /** @type {Array<Array<{canvas: HTMLCanvasElement, caption: HTMLElement} | null>>} */
  let panels = [];

  /** Decode images and the stacked maps (each panel times its peak). */
  function load() {
    const im = model.get("_images");
    const mp = model.get("_maps");
    images = null;
    maps = null;
    if (!im?.shape || !mp?.shape) return;
    const [n, hh, ww] = im.shape;
    images = { rgb: /** @type {Uint8Array} */ (decode(im).data), n, h: hh, w: ww };
    const t = decode(mp);
    const values = /** @type {Float32Array} */ (t.data);
    const [m, n2, mh, mw] = t.shape;
    if (n2 !== n || mh !== hh || mw !== ww) throw new Error(`compare: maps ${t.shape} do not fit images ${im.shape}`);
    const peaks = model.get("_peaks") ?? [];
    const size = hh * ww;
    for (let r = 0; r < m; r++) {
      for (let c = 0; c < n; c++) {
        const p = Number(peaks[r]?.[c]) || 1;
        const base = (r * n + c) * size;
        for (let i = base; i < base + size; i++) values[i] *= p;
      }
    }
    maps = { values, m, n, sorted: new Map() };
  }

  /** @param {number} r @param {number} c */
  function panelValues(r, c) {
    if (!maps || !images) return new Float32Array(0);
    const size = images.h * images.w;
    const base = (r * maps.n + c) * size;
    return maps.values.subarray(base, base + size);
  }

  /** Per-panel ascending magnitudes for a sign (computed once per sign). @param {string} s */
  function sortedPanels(s) {
    if (!maps) return [];
    let all = maps.sorted.get(s);
    if (!all) {
      all = [];
      for (let r = 0; r < maps.m; r++) for (let c = 0; c < maps.n; c++) all.push(sortedMagnitudes(panelValues(r, c), s));
      maps.sorted.set(s, all);
    }
    return all;
  }

  /** Grid of labels and one canvas per panel; a failed method gets its message across its row. */
  function build() {
    const rows = model.get("row_labels") ?? [];
    const cols = model.get("column_labels") ?? [];
    const errors = model.get("errors") ?? [];
    grid.style.gridTemplateColumns = `max-content repeat(${cols.length}, max-content)`;
    const cells = [h("div")];
    for (const label of cols) cells.push(h("div", { className: "cnnw-col-label", text: label }));
    panels = [];
    rows.forEach((/** @type {string} */ label, /** @type {number} */ r) => {
      cells.push(h("div", { className: "cnnw-row-label", text: label }));
      if (errors[r]) {
        const err = h("div", { className: "cnnw-error", text: errors[r] });
        err.style.gridColumn = `span ${Math.max(cols.length, 1)}`;
        cells.push(err);
        panels.push(cols.map(() => null));
        return;
      }
      const row = [];
      for (let c = 0; c < cols.length; c++) {
        const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", {
          className: "cnnw-overlay", attrs: { "aria-label": `${label}, ${cols[c]}` },
        }));
        if (images) fitCanvas(canvas, images.h, images.w, PANEL_SIDE);
        const caption = h("div", { className: "cnnw-caption" });
        cells.push(h("div", { className: "cnnw-panel" }, [canvas, caption]));
        row.push({ canvas, caption });
      }
      panels.push(row);
    });
    grid.replaceChildren(...cells);
  }

  /** Ranges per panel for the current scale mode. @returns {Array<Array<import("../overlay.js").OverlayRange>>} */
  function ranges(/** @type {string} */ s, /** @type {boolean} */ diverging) {
    if (!maps) return [];
    const errors = model.get("errors") ?? [];
    const clipAt = Number(model.get("clip_percentile"));
    const sortedAll = sortedPanels(s);
    const at = (/** @type {number} */ r, /** @type {number} */ c) => sortedAll[r * maps.n + c];
    const mode = /** @type {ScaleMode} */ (model.get("scale"));
    const out = [];
    const ok = [];
    for (let r = 0; r < maps.m; r++) if (!errors[r]) ok.push(r);
    const shared = mode === "shared"
      ? overlayRange(mergeSorted(ok.flatMap((r) => Array.from({ length: maps.n }, (_, c) => at(r, c)))), clipAt, diverging)
      : null;
    for (let r = 0; r < maps.m; r++) {
      const perRow = mode === "per-method"
        ? overlayRange(mergeSorted(Array.from({ length: maps.n }, (_, c) => at(r, c))), clipAt, diverging)
        : null;
      const row = [];
      for (let c = 0; c < maps.n; c++) row.push(shared ?? perRow ?? overlayRange(at(r, c), clipAt, diverging));
      out.push(row);
    }
    return out;
  }

  /** Composite every panel with the current scale mode, sign, colormap, clipping and opacity. */
  function paint() {
    if (!maps || !images) return;
    const s = model.get("sign");
    const name = overlayColormap(model.get("colormap"), s);
    const table = lut(name);
    const rs = ranges(s, isDiverging(name));
    const opacityValue = Number(model.get("opacity"));
    const mode = model.get("scale");
    const size = images.h * images.w;
    for (let r = 0; r < maps.m; r++) {
      for (let c = 0; c < maps.n; c++) {
        const panel = panels[r]?.[c];
        if (!panel) continue;
        const range = rs[r][c];
        const rgb = images.rgb.subarray(3 * c * size, 3 * (c + 1) * size);
        const px = blendOverlay(rgb, panelValues(r, c), { sign: s, lo: range.lo, hi: range.hi, table, opacity: opacityValue });
        /** @type {CanvasRenderingContext2D} */ (panel.canvas.getContext("2d")).putImageData(new ImageData(px, images.w, images.h), 0, 0);
        panel.caption.textContent = range.empty ? `no ${s} values` : mode === "shared" ? "" : `${fmt(range.lo)} … ${fmt(range.hi)}`;
      }
    }
    paintColorbar(bar, table);
    const first = rs.flat().find((x) => !x.empty);
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

  bindControl(scope, model, scale.select, "scale", { save: display.save });
  scope.onModel(model, "change:scale", () => {
    scale.select.value = model.get("scale");
    paint();
  });
  for (const key of ["_maps", "_images", "_peaks", "row_labels", "column_labels", "errors"]) {
    scope.onModel(model, `change:${key}`, () => {
      load();
      build();
      paint();
    });
  }

  scale.select.value = model.get("scale");
  load();
  build();
  paint();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderCompare(model, el);
  },
};
