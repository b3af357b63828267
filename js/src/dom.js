// Small DOM helpers shared by the widgets: element creation (text only, never HTML), a scope that
// removes every listener it added, the labelled controls of the toolbars and the pointer on a tile grid.

import { hitTest } from "./grid.js";
import { CSS } from "./style.js";

/**
 * Create an element. Text goes in through textContent; attributes through setAttribute.
 * @param {string} tag
 * @param {{className?: string, text?: string, attrs?: Record<string, string>}} [props]
 * @param {Node[]} [children]
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  for (const [k, v] of Object.entries(props.attrs ?? {})) node.setAttribute(k, v);
  for (const child of children) node.appendChild(child);
  return node;
}

/**
 * @typedef {{on: (event: string, fn: Function) => void, off: (event: string, fn: Function) => void}} Emitter
 */

/** Collects DOM and model listeners (and other teardown) so one call removes them all. */
export class Scope {
  constructor() {
    /** @type {Array<() => void>} */
    this.cleanups = [];
  }

  /**
   * addEventListener that is undone by dispose().
   * @param {EventTarget} target
   * @param {string} type
   * @param {EventListener} fn
   * @param {AddEventListenerOptions} [opts]
   */
  listen(target, type, fn, opts) {
    target.addEventListener(type, fn, opts);
    this.cleanups.push(() => target.removeEventListener(type, fn, opts));
  }

  /**
   * model.on that is undone by dispose() (exactly this callback, not every listener of the event).
   * @param {Emitter} model
   * @param {string} event
   * @param {Function} fn
   */
  onModel(model, event, fn) {
    model.on(event, fn);
    this.cleanups.push(() => model.off(event, fn));
  }

  /** @param {() => void} fn teardown to run on dispose */
  add(fn) {
    this.cleanups.push(fn);
  }

  dispose() {
    for (const fn of this.cleanups.splice(0).reverse()) fn();
  }
}

/**
 * The root element of a widget view, with its stylesheet.
 * @param {HTMLElement} el the element anywidget gives render()
 * @param {string} kind extra class, e.g. "cnnw-filter-grid"
 * @returns {HTMLElement}
 */
export function mountRoot(el, kind) {
  const root = h("div", { className: `cnnw-root ${kind}` });
  const style = h("style", { text: CSS });
  el.replaceChildren(style, root);
  return root;
}

/**
 * A labelled <select>.
 * @param {string} label
 * @param {string} className
 * @param {Array<[string, string]>} options [value, text] pairs
 * @returns {{wrap: HTMLElement, select: HTMLSelectElement}}
 */
export function labelledSelect(label, className, options) {
  const select = /** @type {HTMLSelectElement} */ (h("select", { className }));
  setOptions(select, options);
  const wrap = h("label", { className: "cnnw-control" }, [h("span", { text: label }), select]);
  return { wrap, select };
}

/**
 * Replace the options of a <select> (text via textContent).
 * @param {HTMLSelectElement} select
 * @param {Array<[string, string]>} options
 */
export function setOptions(select, options) {
  select.replaceChildren(...options.map(([value, text]) => {
    const o = /** @type {HTMLOptionElement} */ (h("option", { text }));
    o.value = value;
    return o;
  }));
}

/**
 * Set trait `key` from a control on each `event` on it, then save.
 * @param {Scope} scope
 * @param {any} model
 * @param {HTMLInputElement | HTMLSelectElement} control
 * @param {string} key
 * @param {{event?: string, parse?: (value: string) => any, save?: () => void}} [opts] the event ("change"
 *   by default; "input" for sliders), how the control's value becomes the trait's (as it is by default),
 *   and how to save (model.save_changes by default)
 */
export function bindControl(scope, model, control, key, opts = {}) {
  const { event = "change", parse = (/** @type {string} */ v) => v, save = () => model.save_changes() } = opts;
  scope.listen(control, event, () => {
    model.set(key, parse(control.value));
    save();
  });
}

/**
 * Format a number for tooltips and legends (4 significant digits, exponent when tiny or huge).
 * @param {number} v
 */
export function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

/**
 * A colour-bar legend: the low end's text, the bar (a canvas for overlay.paintColorbar), the high end's
 * text and any `extra` elements after it.
 * @param {...HTMLElement} extra
 * @returns {{legend: HTMLElement, bar: HTMLCanvasElement, lo: HTMLElement, hi: HTMLElement}}
 */
export function colorLegend(...extra) {
  const bar = /** @type {HTMLCanvasElement} */ (h("canvas"));
  const lo = h("span");
  const hi = h("span");
  return { legend: h("div", { className: "cnnw-legend" }, [lo, bar, hi, ...extra]), bar, lo, hi };
}

/** A view's tooltip, hidden until showTooltip. */
export function tooltipBox() {
  const tip = h("div", { className: "cnnw-tooltip", attrs: { role: "tooltip" } });
  tip.hidden = true;
  return tip;
}

/**
 * Show the tooltip next to the pointer.
 * @param {HTMLElement} tip
 * @param {string} text
 * @param {MouseEvent} e
 * @param {HTMLElement} root the tooltip's positioned parent (the view's root)
 */
export function showTooltip(tip, text, e, root) {
  const r = root.getBoundingClientRect();
  tip.textContent = text;
  tip.style.left = `${Math.round(e.clientX - r.left + 12)}px`;
  tip.style.top = `${Math.round(e.clientY - r.top + 12)}px`;
  tip.hidden = false;
}

/** @typedef {{slot: number, row: number, col: number}} Hit a display slot and a pixel of its tile */

/**
 * The pointer on a tile grid canvas: hovering a tile shows `describe`'s text in the tooltip (hidden
 * off the tiles), clicking one calls `pick`. While `live()` is null (nothing, or a stale layer, on
 * screen) the pointer does nothing.
 * @template {{L: import("./grid.js").Layout}} S
 * @param {Scope} scope
 * @param {HTMLElement} root the view's root
 * @param {HTMLCanvasElement} grid
 * @param {HTMLElement} tooltip
 * @param {{live: () => S | null, describe: (s: S, hit: Hit) => string, pick: (s: S, hit: Hit) => void}} handlers
 */
export function gridPointer(scope, root, grid, tooltip, { live, describe, pick }) {
  /** @param {S} s @param {MouseEvent} e */
  const hitAt = (s, e) => {
    const r = grid.getBoundingClientRect();
    return hitTest(s.L, e.clientX - r.left, e.clientY - r.top);
  };
  scope.listen(grid, "mousemove", (/** @type {MouseEvent} */ e) => {
    const s = live();
    if (!s) return;
    const hit = hitAt(s, e);
    if (hit) showTooltip(tooltip, describe(s, hit), e, root);
    else tooltip.hidden = true;
  });
  scope.listen(grid, "mouseleave", () => {
    tooltip.hidden = true;
  });
  scope.listen(grid, "click", (/** @type {MouseEvent} */ e) => {
    const s = live();
    if (!s) return;
    const hit = hitAt(s, e);
    if (hit) pick(s, hit);
  });
}

/**
 * Record a finished grid paint on the root (DOM contract: paintCount, paintedLayer, paintedAt).
 * @param {HTMLElement} root
 * @param {string} layer
 * @param {number} at performance.now() right after the pixels were put on the canvas
 */
export function markPainted(root, layer, at) {
  root.dataset.paintCount = String(Number(root.dataset.paintCount ?? 0) + 1);
  root.dataset.paintedLayer = layer;
  root.dataset.paintedAt = String(at);
}

/**
 * Size a grid canvas for a layout and publish the layout on it (DOM contract: cols, rows, cell, order).
 * @param {HTMLCanvasElement} canvas
 * @param {import("./grid.js").Layout} L
 * @param {ArrayLike<number>} order
 */
export function publishLayout(canvas, L, order) {
  if (canvas.width !== L.width) canvas.width = L.width;
  if (canvas.height !== L.height) canvas.height = L.height;
  canvas.style.width = `${L.width}px`;
  canvas.style.height = `${L.height}px`;
  canvas.dataset.cols = String(L.cols);
  canvas.dataset.rows = String(L.rows);
  canvas.dataset.cell = String(L.cell);
  canvas.dataset.order = Array.from(order).join(",");
}

/**
 * Outline one display slot on the grid canvas (the selected channel or filter): a thick accent ring
 * with a thin light inner ring, visible on any colormap.
 * @param {CanvasRenderingContext2D} ctx
 * @param {import("./grid.js").Layout} L
 * @param {number} slot
 * @param {string} color
 */
export function outlineSlot(ctx, L, slot, color) {
  if (slot < 0) return;
  const x = (slot % L.cols) * L.cell;
  const y = Math.floor(slot / L.cols) * L.cell;
  ctx.lineWidth = 3;
  ctx.strokeStyle = color;
  ctx.strokeRect(x + 1.5, y + 1.5, L.cell - 3, L.cell - 3);
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#ffffff";
  ctx.strokeRect(x + 3.5, y + 3.5, L.cell - 7, L.cell - 7);
}

/**
 * The accent colour from the page theme (JupyterLab's brand colour, with a fallback).
 * @param {HTMLElement} node
 */
export function accentColor(node) {
  const v = getComputedStyle(node).getPropertyValue("--jp-brand-color1").trim();
  return v || "#1976d2";
}
