// Small DOM helpers shared by the widgets: element creation (text only, never HTML), a scope that
// removes every listener it added, and the labelled controls of the toolbars.

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
 * Show the tooltip near (x, y) inside its positioned parent.
 * @param {HTMLElement} tip
 * @param {string} text
 * @param {number} x
 * @param {number} y
 */
export function showTooltip(tip, text, x, y) {
  tip.textContent = text;
  tip.style.left = `${Math.round(x + 12)}px`;
  tip.style.top = `${Math.round(y + 12)}px`;
  tip.hidden = false;
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
