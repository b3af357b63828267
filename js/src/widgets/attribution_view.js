// AttributionView canvas: the input image with the attribution map over it, the method picker and
// the option controls built from the method's schema, progress and cancel while the kernel works.
// The signed map arrives once per result (scaled float16); opacity, colormap, sign and
// percentile clipping re-composite it here without asking the kernel.

import { decode, decodeImage } from "../codec.js";
import { isDiverging, lut } from "../colormap.js";
import {
  Scope, bindControl, colorLegend, fmt, h, labelledSelect, markPainted, mountRoot, onCommit, setOptions, showTooltip,
  textLines, tooltipBox,
} from "../dom.js";
import { heatmapControls } from "../heatmap_controls.js";
import { bindScale } from "../scale.js";
import {
  OVERLAY_CSS, blendOverlay, fitCanvas, overlayColormap, overlayRange, paintColorbar, rgbToRgba, sortedMagnitudes,
} from "../overlay.js";

const DISPLAY_SIDE = 320;

// The view stays narrow enough (its toolbars wrap) for the prediction chart to sit beside it in a
// notebook or on a 1366 px screen; the chart goes below only when the row is narrower still.
const VIEW_CSS = `
.cnnw-root.cnnw-attribution-view {
  max-width: calc(560px * var(--cnnw-scale, 1));
}
.cnnw-attribution-view .cnnw-options:empty {
  display: none;
}
.cnnw-attribution-view .cnnw-busy {
  display: flex;
  align-items: center;
  gap: 8px;
}
.cnnw-attribution-view progress {
  width: 200px;
  accent-color: var(--jp-brand-color1, #1976d2);
}
.cnnw-attribution-view .cnnw-description {
  max-width: 640px;
  font-family: inherit;
}
.cnnw-attribution-view .cnnw-clip {
  width: 120px;
}
`;

/**
 * @typedef {Object} OptionSchema
 * @property {string} name Captum's argument name (shown in the tooltip)
 * @property {string} [label] what the control says, e.g. "noise level"
 * @property {"int" | "float" | "bool" | "choice" | "tensor"} type
 * @property {any} default
 * @property {number | null} min
 * @property {number | null} max
 * @property {string[] | null} choices
 * @property {string} doc
 */

/**
 * @typedef {Object} MethodSchema
 * @property {string} name
 * @property {string} description
 * @property {boolean} needs_layer
 * @property {boolean} slow
 * @property {OptionSchema[]} options
 */

/**
 * A control for one option, or null for options only Python can set (tensors).
 * @param {OptionSchema} opt
 * @param {any} value the current value (undefined: the default)
 * @param {(value: any) => void} onChange called with the new value (undefined: back to the default)
 * @param {Scope} scope
 * @returns {HTMLElement | null}
 */
function optionControl(opt, value, onChange, scope) {
  const current = value === undefined ? opt.default : value;
  /** @type {HTMLElement} */
  let input;
  if (opt.type === "bool") {
    const box = /** @type {HTMLInputElement} */ (h("input", { attrs: { type: "checkbox" } }));
    box.checked = Boolean(current);
    scope.listen(box, "change", () => onChange(box.checked));
    input = box;
  } else if (opt.type === "choice") {
    const select = /** @type {HTMLSelectElement} */ (h("select"));
    setOptions(select, (opt.choices ?? []).map((c) => [c, c]));
    select.value = String(current);
    scope.listen(select, "change", () => onChange(select.value));
    input = select;
  } else if (opt.type === "int" || opt.type === "float") {
    const num = /** @type {HTMLInputElement} */ (h("input"));
    if (Array.isArray(current)) {
      num.type = "text";
      num.readOnly = true;
      num.value = current.join("×");
    } else {
      num.type = "number";
      num.step = opt.type === "int" ? "1" : "any";
      if (opt.min !== null) num.min = String(opt.min);
      if (opt.max !== null) num.max = String(opt.max);
      num.placeholder = opt.default === null ? "auto" : String(opt.default);
      num.value = current === null || current === undefined ? "" : String(current);
      onCommit(scope, num, () => {
        const raw = num.value.trim();
        onChange(raw === "" ? undefined : Number(raw));
      });
    }
    input = num;
  } else {
    return null;
  }
  input.classList.add("cnnw-option");
  input.dataset.option = opt.name;
  const wrap = h("label", { className: "cnnw-control", attrs: { title: `${opt.name}: ${opt.doc}` } }, [
    h("span", { className: "cnnw-option-label", text: opt.label || opt.name }),
    input,
  ]);
  return wrap;
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderView(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-attribution-view");
  bindScale(model, root, scope);
  el.insertBefore(h("style", { text: OVERLAY_CSS + VIEW_CSS }), root);

  const method = labelledSelect("method", "cnnw-method", []);
  const layer = labelledSelect("layer", "cnnw-layer", []);
  /** The class explained, from the keyboard too (the prediction bars beside take clicks only). */
  const explain = labelledSelect("explain", "cnnw-target", []);
  const optionsBox = h("div", { className: "cnnw-toolbar cnnw-options" });
  const description = h("div", { className: "cnnw-caption cnnw-description" });
  const display = heatmapControls(model, scope, paint);
  const progress = /** @type {HTMLProgressElement} */ (h("progress", { className: "cnnw-progress", attrs: { max: "1", value: "0" } }));
  const progressText = h("span", { className: "cnnw-value" });
  const cancel = h("button", { className: "cnnw-cancel", text: "cancel", attrs: { type: "button" } });
  const busyRow = h("div", { className: "cnnw-busy", attrs: { role: "status" } }, [progress, progressText, cancel]);
  const notice = h("span", { className: "cnnw-notice" });
  const runAgain = h("button", { className: "cnnw-run", text: "compute", attrs: { type: "button" } });
  const error = h("div", { className: "cnnw-error", attrs: { role: "alert" } });
  const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", {
    className: "cnnw-overlay", attrs: { "aria-label": "attribution heatmap over the input image" },
  }));
  const { legend, bar, lo: barLo, hi: barHi } = colorLegend();
  const caption = h("div", { className: "cnnw-caption cnnw-result-caption" });
  /** Caveats about the result on screen (`_result.notes`), one line each. */
  const notes = h("div", { className: "cnnw-notes", attrs: { role: "note" } });
  const tooltip = tooltipBox();

  root.append(
    h("div", { className: "cnnw-toolbar" }, [method.wrap, explain.wrap, layer.wrap]),
    description,
    optionsBox,
    h("div", { className: "cnnw-toolbar" }, display.controls),
    busyRow,
    h("div", { className: "cnnw-toolbar" }, [notice, runAgain]),
    error,
    canvas,
    legend,
    caption,
    notes,
    tooltip,
  );

  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  /** @type {{rgb: Uint8Array, h: number, w: number} | null} */
  let image = null;
  /** @type {{values: Float32Array, h: number, w: number, meta: any, sorted: Map<string, Float32Array>} | null} */
  let result = null;
  /** @type {Uint8ClampedArray | undefined} */
  let pixels;
  /** Method whose option controls are built (rebuilt only when it changes). */
  let builtFor = "";

  /** @returns {MethodSchema | undefined} */
  function schema() {
    return (model.get("_methods") ?? []).find((/** @type {MethodSchema} */ m) => m.name === model.get("method"));
  }

  /** Decode the input image (exact RGB bytes) and size the canvas: longer side DISPLAY_SIDE px. */
  function loadImage() {
    image = decodeImage(model.get("_image"));
    if (image) fitCanvas(canvas, image.h, image.w, DISPLAY_SIDE);
  }

  /** Decode the latest result: the map in the method's own units. */
  function loadResult() {
    const r = model.get("_result");
    textLines(notes, r?.map ? r.notes : [], "cnnw-note");
    if (!r?.map) {
      result = null;
      return;
    }
    const t = decode(r.map);
    const values = /** @type {Float32Array} */ (t.data);
    const [, hh, ww] = t.shape; // (1, H, W)
    result = { values, h: hh, w: ww, meta: r, sorted: new Map() };
    root.dataset.resultCount = String(Number(root.dataset.resultCount ?? 0) + 1);
  }

  /** Ascending magnitudes of the result under sign s (cached per sign). @param {string} s */
  function sorted(s) {
    if (!result) return new Float32Array(0);
    let a = result.sorted.get(s);
    if (!a) result.sorted.set(s, (a = sortedMagnitudes(result.values, s)));
    return a;
  }

  /** Composite the current result over the image with the current display settings. */
  function paint() {
    if (!image) return;
    const ok = result && !model.get("error") && result.h === image.h && result.w === image.w;
    notes.hidden = !ok;
    if (!ok || !result) {
      ctx.putImageData(new ImageData(rgbToRgba(image.rgb, image.h, image.w), image.w, image.h), 0, 0);
      legend.hidden = true;
      caption.textContent = model.get("busy") ? "computing…" : "";
      return;
    }
    const s = model.get("sign");
    const name = overlayColormap(model.get("colormap"), s);
    const table = lut(name);
    const range = overlayRange(sorted(s), Number(model.get("clip_percentile")), isDiverging(name));
    pixels = blendOverlay(image.rgb, result.values, {
      sign: s, lo: range.lo, hi: range.hi, table, opacity: Number(model.get("opacity")),
    }, pixels);
    ctx.putImageData(new ImageData(pixels, image.w, image.h), 0, 0);
    const m = result.meta;
    markPainted(root, m.layer ?? m.method, performance.now());
    legend.hidden = range.empty;
    paintColorbar(bar, table);
    barLo.textContent = fmt(range.lo);
    barHi.textContent = fmt(range.hi);
    const parts = [
      m.method,
      `${m.target_label} (class ${m.target}, p = ${(100 * m.probability).toFixed(1)}%${m.top_prediction ? ", top prediction" : ""})`,
    ];
    if (m.layer) parts.push(`layer ${m.layer}`);
    if (range.empty) parts.push(`no ${s} values in this map`);
    else if (name !== model.get("colormap")) parts.push(`${name} for signed values`);
    caption.textContent = parts.join(" · ");
  }

  /** Progress bar, cancel button, notice and error text from the traits. */
  function syncStatus() {
    const focused = document.activeElement;
    const busy = Boolean(model.get("busy"));
    const p = Number(model.get("progress"));
    busyRow.hidden = !busy;
    progress.value = p;
    progressText.textContent = `${Math.round(100 * p)}%`;
    notice.textContent = busy ? "" : model.get("_notice");
    runAgain.hidden = busy || !model.get("_notice");
    error.textContent = model.get("error");
    moveStatusFocus(focused);
  }

  /** Set when cancel or compute hid itself while it had the keyboard focus. */
  let statusFocus = false;
  /**
   * Cancel and compute replace each other; when the one with the focus goes, the focus goes to the one
   * that comes (possibly a trait change later), so the keyboard is not dropped back to the page.
   * @param {Element | null} focused the focused element before the status changed
   */
  function moveStatusFocus(focused) {
    const gone = (focused === cancel && busyRow.hidden) || (focused === runAgain && runAgain.hidden);
    if (gone) statusFocus = true;
    if (!statusFocus) return;
    const now = document.activeElement;
    if (now && now !== document.body && now !== cancel && now !== runAgain) {
      statusFocus = false; // the user went elsewhere meanwhile
      return;
    }
    const next = !busyRow.hidden ? cancel : !runAgain.hidden ? runAgain : null;
    if (next) {
      next.focus();
      statusFocus = false;
    }
  }

  /** Method picker, description, layer picker visibility and the option controls. */
  function syncMethod() {
    const methods = model.get("_methods") ?? [];
    if (method.select.options.length !== methods.length) {
      setOptions(method.select, methods.map((/** @type {MethodSchema} */ m) => [m.name, m.slow ? `${m.name} (slow)` : m.name]));
    }
    method.select.value = model.get("method");
    const info = schema();
    description.textContent = info ? info.description : "";
    layer.wrap.hidden = !info?.needs_layer;
    syncLayer();
    syncOptions();
  }

  /** Layer picker: "auto" (the suggested layer), the conv layers and the chosen one. */
  function syncLayer() {
    const auto = model.get("_auto_layer");
    /** @type {Array<[string, string]>} */
    const choices = [["", auto ? `auto (${auto})` : "auto"]];
    for (const name of model.get("_layers") ?? []) choices.push([name, name]);
    const chosen = model.get("layer");
    if (chosen && !choices.some(([v]) => v === chosen)) choices.push([chosen, chosen]);
    setOptions(layer.select, choices);
    layer.select.value = chosen ?? "";
  }

  /** Class picker: "top prediction" (target None) and the top-k classes with their probabilities. */
  function syncTarget() {
    /** @type {Array<[string, string]>} */
    const choices = [["", "top prediction"]];
    for (const p of model.get("_predictions") ?? []) {
      choices.push([String(p.index), `${p.label} (${(100 * p.probability).toFixed(1)}%)`]);
    }
    const chosen = model.get("target");
    if (chosen !== null && chosen !== undefined && !choices.some(([v]) => v === String(chosen))) {
      choices.push([String(chosen), `class ${chosen}`]);
    }
    setOptions(explain.select, choices);
    explain.select.value = chosen === null || chosen === undefined ? "" : String(chosen);
  }

  /** @type {Scope} listeners of the option controls, replaced with them */
  let optionScope = new Scope();
  scope.add(() => optionScope.dispose());

  /** Option controls from the method's schema: rebuilt when the method changes, else updated in place. */
  function syncOptions() {
    const info = schema();
    const values = model.get("options") ?? {};
    if (info && builtFor === info.name) {
      for (const input of optionsBox.querySelectorAll(".cnnw-option")) {
        const el = /** @type {HTMLInputElement} */ (input);
        const opt = info.options.find((o) => o.name === el.dataset.option);
        if (!opt) continue;
        const v = values[opt.name] === undefined ? opt.default : values[opt.name];
        if (el.type === "checkbox") el.checked = Boolean(v);
        else if (el.type === "number" || el.tagName === "SELECT") el.value = v === null || v === undefined ? "" : String(v);
      }
      return;
    }
    optionScope.dispose();
    optionScope = new Scope();
    builtFor = info?.name ?? "";
    const controls = [];
    for (const opt of info?.options ?? []) {
      const control = optionControl(opt, values[opt.name], (v) => {
        const next = { ...(model.get("options") ?? {}) };
        if (v === undefined) delete next[opt.name];
        else next[opt.name] = v;
        model.set("options", next);
        model.save_changes();
      }, optionScope);
      if (control) controls.push(control);
    }
    optionsBox.replaceChildren(...controls);
  }

  bindControl(scope, model, method.select, "method");
  bindControl(scope, model, layer.select, "layer", { parse: (v) => (v === "" ? null : v) });
  bindControl(scope, model, explain.select, "target", { parse: (v) => (v === "" ? null : Number(v)) });
  scope.listen(cancel, "click", () => model.send({ type: "cancel" }));
  scope.listen(runAgain, "click", () => model.send({ type: "run" }));
  scope.listen(canvas, "mousemove", (/** @type {MouseEvent} */ e) => {
    if (!result || !image) return;
    const r = canvas.getBoundingClientRect();
    const col = Math.floor(((e.clientX - r.left) / r.width) * image.w);
    const row = Math.floor(((e.clientY - r.top) / r.height) * image.h);
    if (row < 0 || col < 0 || row >= result.h || col >= result.w) {
      tooltip.hidden = true;
      return;
    }
    showTooltip(tooltip, `(${row}, ${col})\n${fmt(result.values[row * result.w + col])}`, e, root);
  });
  scope.listen(canvas, "mouseleave", () => {
    tooltip.hidden = true;
  });

  scope.onModel(model, "change:_image", () => {
    loadImage();
    paint();
  });
  scope.onModel(model, "change:_result", () => {
    loadResult();
    paint();
  });
  scope.onModel(model, "change:error", () => {
    syncStatus();
    paint();
  });
  scope.onModel(model, "change:busy", () => {
    syncStatus();
    if (!result) paint();
  });
  for (const key of ["progress", "_notice"]) scope.onModel(model, `change:${key}`, syncStatus);
  for (const key of ["method", "_methods"]) scope.onModel(model, `change:${key}`, syncMethod);
  scope.onModel(model, "change:options", syncOptions);
  for (const key of ["layer", "_layers", "_auto_layer"]) scope.onModel(model, `change:${key}`, syncLayer);
  for (const key of ["target", "_predictions"]) scope.onModel(model, `change:${key}`, syncTarget);

  syncMethod();
  syncTarget();
  syncStatus();
  loadImage();
  loadResult();
  paint();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderView(model, el);
  },
};
