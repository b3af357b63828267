// Metrics view: can these heatmaps be trusted? The selected method's map over the selected image, the
// cascading randomisation slider (the map after each step and its Spearman rank correlation with the
// original), and the table of metrics per method (averaged over the images). The kernel sends each
// method's N×H×W maps once, and its cascade maps ((sample images) × (steps + 1) × H × W) once, as float16
// custom messages; a view asks for those already sent when it renders. Selecting a method (select, table
// row, or a curve in the bqplot figures beside this view) sets the `method` trait; everything here is
// text (textContent), never HTML: method names and class labels are the user's strings.

import { decode } from "../codec.js";
import { isDiverging, lut } from "../colormap.js";
import { Scope, bindControl, colorLegend, fmt, h, labelledSelect, markPainted, mountRoot, setOptions } from "../dom.js";
import { heatmapControls } from "../heatmap_controls.js";
import { bindScale } from "../scale.js";
import { OVERLAY_CSS, blendOverlay, fitCanvas, overlayColormap, overlayRange, paintColorbar, sortedMagnitudes } from "../overlay.js";

const SIDE = 256;

const METRICS_CSS = `
.cnnw-metrics .cnnw-metrics-main {
  display: flex;
  flex-wrap: wrap;
  gap: 12px;
  align-items: flex-start;
}
.cnnw-metrics .cnnw-metrics-map {
  display: flex;
  flex-direction: column;
  gap: 4px;
}
.cnnw-metrics table {
  border-collapse: collapse;
  font-variant-numeric: tabular-nums;
}
.cnnw-metrics th,
.cnnw-metrics td {
  padding: 3px 8px;
  text-align: right;
  border-bottom: 1px solid var(--jp-border-color2, #ddd);
}
.cnnw-metrics th:first-child,
.cnnw-metrics td:first-child {
  text-align: left;
  overflow-wrap: anywhere;
  max-width: 220px;
}
.cnnw-metrics tbody tr {
  cursor: pointer;
}
.cnnw-metrics tbody tr:hover {
  background: var(--jp-layout-color2, #eee);
}
.cnnw-metrics tbody tr[aria-selected="true"] {
  background: var(--jp-brand-color3, #bbdefb);
  font-weight: 600;
}
.cnnw-metrics .cnnw-swatch {
  display: inline-block;
  width: 10px;
  height: 10px;
  margin-right: 6px;
  border-radius: 2px;
}
.cnnw-metrics .cnnw-flag {
  color: var(--jp-error-color1, #c62828);
  font-weight: 600;
}
.cnnw-metrics .cnnw-step {
  width: 220px;
}
.cnnw-metrics .cnnw-busy {
  display: flex;
  align-items: center;
  gap: 8px;
}
.cnnw-metrics progress {
  width: 200px;
  accent-color: var(--jp-brand-color1, #1976d2);
}
`;

/** @typedef {{key: string, title: string, better: string}} Column */
/** @typedef {{layers: string[], rho: number[], per_image: number[][], flagged: boolean}} Cascade */

/**
 * A table cell's text: numbers with 3 decimals (the pointing game as a share of hits), "…" while
 * computing, "—" where the metric does not apply.
 * @param {string} key the column
 * @param {any} row a summary row from the kernel
 * @param {boolean} settled whether the work is over (missing then means "not available")
 * @returns {string}
 */
export function cellText(key, row, settled) {
  const value = key === "randomization" ? row.randomization_min : row[key];
  if (value === null || value === undefined || Number.isNaN(value)) return settled || row.error ? "—" : "…";
  if (key === "pointing_game") return `${Math.round(100 * value)}%`;
  return Math.abs(value) >= 1e-3 || value === 0 ? value.toFixed(3) : value.toExponential(2);
}

/**
 * The caption under the map at randomisation step `step` (0 = the intact model).
 * @param {Cascade | undefined} cascade
 * @param {number} step
 * @param {number} image the shown image's index
 * @returns {string}
 */
export function stepText(cascade, step, image) {
  if (!cascade || !cascade.layers) return "randomisation test: not computed yet";
  if (step <= 0) return "intact model (ρ = 1 with itself)";
  const k = Math.min(step, cascade.layers.length) - 1;
  const own = cascade.per_image?.[image]?.[k];
  const rho = own ?? cascade.rho[k];
  const which = own === undefined ? "mean over the tested images" : "this image";
  return `randomised from the top down to ${cascade.layers[k]} · Spearman ρ = ${rho.toFixed(3)} (${which})`;
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderMetrics(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-metrics");
  bindScale(model, root, scope);
  el.insertBefore(h("style", { text: OVERLAY_CSS + METRICS_CSS }), root);

  const methodSel = labelledSelect("method", "cnnw-method", []);
  const imageSel = labelledSelect("image", "cnnw-image", []);
  const display = heatmapControls(model, scope, paint);
  const step = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-step", attrs: { type: "range", min: "0", max: "0", step: "1", "aria-label": "randomisation step" },
  }));
  const stepValue = h("span", { className: "cnnw-value cnnw-step-value" });
  const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", { className: "cnnw-overlay", attrs: { role: "img" } }));
  const caption = h("div", { className: "cnnw-caption cnnw-map-caption", attrs: { "aria-live": "polite" } });
  const rhoText = h("div", { className: "cnnw-caption cnnw-rho", attrs: { "aria-live": "polite" } });
  const { legend, bar, lo: barLo, hi: barHi } = colorLegend();
  const progress = /** @type {HTMLProgressElement} */ (h("progress", { attrs: { max: "1", value: "0" } }));
  const progressText = h("span", { className: "cnnw-value cnnw-phase" });
  const cancel = h("button", { className: "cnnw-cancel", text: "cancel", attrs: { type: "button" } });
  const busyRow = h("div", { className: "cnnw-busy", attrs: { role: "status" } }, [progress, progressText, cancel]);
  const runAgain = h("button", { className: "cnnw-run", text: "compute the rest", attrs: { type: "button" } });
  const error = h("div", { className: "cnnw-error", attrs: { role: "alert" } });
  const thead = h("thead");
  const tbody = h("tbody");
  const table = h("table", { className: "cnnw-metrics-table" }, [thead, tbody]);
  const tableNote = h("div", { className: "cnnw-caption cnnw-table-note" });

  root.append(
    h("div", { className: "cnnw-toolbar" }, [methodSel.wrap, imageSel.wrap, ...display.controls]),
    h("div", { className: "cnnw-toolbar" }, [busyRow, runAgain]),
    error,
    h("div", { className: "cnnw-metrics-main" }, [
      h("div", { className: "cnnw-metrics-map" }, [
        canvas, caption, legend,
        h("label", { className: "cnnw-control" }, [h("span", { text: "randomise layers" }), step, stepValue]),
        rhoText,
      ]),
      h("div", {}, [table, tableNote]),
    ]),
  );

  /** @type {{rgb: Uint8Array, n: number, h: number, w: number} | null} */
  let images = null;
  /** method → N×H×W maps. @type {Map<string, Float32Array>} */
  const maps = new Map();
  /** method → {values: S×(steps+1)×H×W, shape}. @type {Map<string, {values: Float32Array, shape: number[]}>} */
  const cascades = new Map();

  function loadImages() {
    const im = model.get("_images");
    images = null;
    if (!im?.shape) return;
    const [n, hh, ww] = im.shape;
    images = { rgb: /** @type {Uint8Array} */ (decode(im).data), n, h: hh, w: ww };
    fitCanvas(canvas, hh, ww, SIDE);
  }

  /**
   * A custom message from the kernel: `{type: "maps" | "cascade", method, ...wire header}` + buffer.
   * @param {any} content
   * @param {any[]} buffers
   */
  function receive(content, buffers) {
    if (content?.type !== "maps" && content?.type !== "cascade") return;
    const { type, method, ...header } = content;
    const t = decode({ ...header, data: buffers[0] });
    if (type === "maps") maps.set(method, /** @type {Float32Array} */ (t.data));
    else cascades.set(method, { values: /** @type {Float32Array} */ (t.data), shape: t.shape });
    root.dataset.maps = String(maps.size);
    root.dataset.cascades = String(cascades.size);
    syncStep();
    paint();
  }

  /** The methods' rows as the kernel describes them: [{name, color, error}]. */
  function methodRows() {
    return /** @type {Array<{name: string, color: string, error: string}>} */ (model.get("_methods") ?? []);
  }

  /** The cascade summary of the shown method, if computed. @returns {Cascade | undefined} */
  function currentCascade() {
    const idx = methodRows().findIndex((r) => r.name === model.get("method"));
    const c = (model.get("_cascade") ?? [])[idx];
    return c && c.layers ? c : undefined;
  }

  /** The values on screen: the method's map, or its map after `step` randomisation steps. */
  function shownValues() {
    if (!images) return null;
    const size = images.h * images.w;
    const name = model.get("method");
    const i = Number(model.get("image"));
    const s = Number(model.get("step"));
    if (s > 0) {
      const c = cascades.get(name);
      if (!c || i >= c.shape[0]) return null;
      const k = Math.min(s, c.shape[1] - 1);
      return c.values.subarray((i * c.shape[1] + k) * size, (i * c.shape[1] + k + 1) * size);
    }
    const m = maps.get(name);
    return m ? m.subarray(i * size, (i + 1) * size) : null;
  }

  function paint() {
    if (!images) return;
    const i = Math.min(Number(model.get("image")), images.n - 1);
    const size = images.h * images.w;
    const rgb = images.rgb.subarray(3 * i * size, 3 * (i + 1) * size);
    const values = shownValues();
    const s = model.get("sign");
    const name = overlayColormap(model.get("colormap"), s);
    const table = lut(name);
    const method = String(model.get("method"));
    const labels = model.get("_image_labels") ?? [];
    const stepNow = Number(model.get("step"));
    let px;
    if (values) {
      const range = overlayRange(sortedMagnitudes(values, s), Number(model.get("clip_percentile")), isDiverging(name));
      px = blendOverlay(rgb, values, { sign: s, lo: range.lo, hi: range.hi, table, opacity: Number(model.get("opacity")) });
      barLo.textContent = fmt(range.lo);
      barHi.textContent = fmt(range.hi);
      caption.textContent = `${method} · ${labels[i] ?? `image ${i}`}`;
    } else {
      px = blendOverlay(rgb, new Float32Array(size), { sign: s, lo: 0, hi: 0, table, opacity: 0 });
      const err = methodRows().find((r) => r.name === method)?.error;
      const sample = cascades.get(method)?.shape[0];
      caption.textContent = err || (stepNow > 0 && sample !== undefined && i >= sample
        ? `the randomisation test ran on the first ${sample} image(s) only`
        : `${method}: computing…`);
    }
    /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d")).putImageData(new ImageData(px, images.w, images.h), 0, 0);
    canvas.setAttribute("aria-label", caption.textContent ?? "");
    canvas.dataset.method = method;
    canvas.dataset.image = String(i);
    canvas.dataset.step = String(stepNow);
    canvas.dataset.hasMap = values ? "true" : "false";
    paintColorbar(bar, table);
    rhoText.textContent = stepText(currentCascade(), stepNow, i);
    markPainted(root, `${method}/${i}/${stepNow}`, performance.now());
  }

  /** The slider's range follows the shown method's cascade. */
  function syncStep() {
    const c = currentCascade();
    const steps = c ? c.layers.length : 0;
    step.max = String(steps);
    step.disabled = steps === 0;
    step.value = String(Math.min(Number(model.get("step")), steps));
    stepValue.textContent = steps ? `${step.value} of ${steps}` : "not computed yet";
  }

  function buildSelects() {
    setOptions(methodSel.select, methodRows().map((r) => [r.name, r.name]));
    methodSel.select.value = model.get("method");
    const labels = model.get("_image_labels") ?? [];
    setOptions(imageSel.select, labels.map((/** @type {string} */ t, /** @type {number} */ i) => [String(i), t]));
    imageSel.select.value = String(model.get("image"));
  }

  function buildTable() {
    /** @type {Column[]} */
    const columns = model.get("_columns") ?? [];
    const summary = model.get("_summary") ?? [];
    const rows = methodRows();
    const settled = !model.get("busy");
    const threshold = Number(model.get("_threshold"));
    thead.replaceChildren(h("tr", {}, [
      h("th", { text: "method", attrs: { scope: "col" } }),
      ...columns.map((c) => h("th", {
        text: `${c.title} ${c.better === "lower" ? "↓" : "↑"}`,
        attrs: { scope: "col", title: `${c.better} is better` },
      })),
      h("th", { text: "sanity", attrs: { scope: "col" } }),
    ]));
    const current = model.get("method");
    tbody.replaceChildren(...summary.map((/** @type {any} */ row, /** @type {number} */ r) => {
      const swatch = h("span", { className: "cnnw-swatch" });
      swatch.style.background = rows[r]?.color ?? "#888";
      const flag = row.flagged
        ? h("span", { className: "cnnw-flag", text: "⚠ flagged: map ignores the model" })
        : h("span", { text: row.randomization_min === null || row.randomization_min === undefined ? "" : "ok" });
      if (row.flagged) flag.title = `rank correlation stays above ${threshold} while the weights are randomised`;
      const tr = h("tr", { attrs: { "aria-selected": String(row.method === current), title: row.error || "" } }, [
        h("td", {}, [swatch, h("span", { className: "cnnw-method-name", text: row.method })]),
        ...columns.map((c) => h("td", { text: cellText(c.key, row, settled) })),
        h("td", { className: "cnnw-sanity" }, [flag]),
      ]);
      tr.dataset.method = row.method;
      tr.dataset.flagged = String(Boolean(row.flagged));
      return tr;
    }));
    const sample = (model.get("_cascade") ?? []).find((/** @type {any} */ c) => c && c.layers)?.per_image?.length;
    tableNote.textContent = `averaged over ${(model.get("_image_labels") ?? []).length} images`
      + (sample ? `; infidelity, sensitivity and randomisation over the first ${sample}` : "")
      + ` · flagged: ρ stays above ${threshold} at every randomisation step`;
  }

  function syncStatus() {
    const busy = Boolean(model.get("busy"));
    busyRow.hidden = !busy;
    progress.value = Number(model.get("progress"));
    progressText.textContent = `${model.get("phase") || "starting"} · ${Math.round(100 * Number(model.get("progress")))}%`;
    runAgain.hidden = busy || !model.get("cancelled");
    error.textContent = model.get("error") ?? "";
    root.dataset.busy = String(busy);
  }

  bindControl(scope, model, methodSel.select, "method", {
    save: () => {
      model.set("step", 0);
      model.save_changes();
    },
  });
  bindControl(scope, model, imageSel.select, "image", { parse: Number });
  bindControl(scope, model, step, "step", { event: "input", parse: Number });
  scope.listen(tbody, "click", (e) => {
    const tr = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (e.target).closest?.("tr"));
    if (!tr?.dataset.method) return;
    model.set("method", tr.dataset.method);
    model.set("step", 0);
    model.save_changes();
  });
  scope.listen(cancel, "click", () => model.send({ type: "cancel" }));
  scope.listen(runAgain, "click", () => model.send({ type: "run" }));
  scope.onModel(model, "change:method", () => {
    methodSel.select.value = model.get("method");
    buildTable();
    syncStep();
    paint();
  });
  scope.onModel(model, "change:image", () => {
    imageSel.select.value = String(model.get("image"));
    paint();
  });
  scope.onModel(model, "change:step", () => {
    syncStep();
    paint();
  });
  scope.onModel(model, "change:_images", () => {
    loadImages();
    paint();
  });
  for (const key of ["_methods", "_image_labels"]) {
    scope.onModel(model, `change:${key}`, () => {
      buildSelects();
      buildTable();
      paint();
    });
  }
  for (const key of ["_summary", "_columns", "busy"]) scope.onModel(model, `change:${key}`, buildTable);
  scope.onModel(model, "change:_cascade", () => {
    buildTable();
    syncStep();
    paint();
  });
  for (const key of ["progress", "busy", "phase", "error", "cancelled"]) scope.onModel(model, `change:${key}`, syncStatus);
  scope.onModel(model, "msg:custom", receive);

  loadImages();
  buildSelects();
  buildTable();
  syncStep();
  syncStatus();
  paint();
  model.send({ type: "fetch" });
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderMetrics(model, el);
  },
};
