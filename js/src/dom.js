// Small DOM helpers shared by the widgets: element creation (text only, never HTML), a scope that
// removes every listener it added, the labelled controls of the toolbars and the pointer and keyboard
// on a tile grid.

import { hitTest, stepSlot } from "./grid.js";
import { CSS } from "./style.js";

/** Elements that take the focus and use keys a notebook also binds (arrows, Home/End, Enter, Space). */
const CONTROL_TAGS = new Set(["input", "select", "button", "textarea"]);

/**
 * Keep JupyterLab's and Notebook 7's keyboard shortcuts away from `node`: Lumino skips every binding for
 * a key event whose target is, or sits inside, an element with `data-lm-suppress-shortcuts`. The
 * attribute has to be on the focused control itself, not only on an ancestor: Lumino tests the binding's
 * selector (for the notebook's arrow keys `.jp-Notebook.jp-mod-commandMode … :focus`) on the target
 * first and only then walks up, so the focused control matches before the walk reaches the ancestor.
 * Every control made with `h`, every tile grid and every view's root carry it.
 * @param {Element} node
 */
export function suppressShortcuts(node) {
  node.setAttribute("data-lm-suppress-shortcuts", "true");
}

/**
 * Create an element. Text goes in through textContent; attributes through setAttribute. Controls
 * (input, select, button, textarea) get `data-lm-suppress-shortcuts` (see suppressShortcuts).
 * @param {string} tag
 * @param {{className?: string, text?: string, attrs?: Record<string, string>}} [props]
 * @param {Node[]} [children]
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (CONTROL_TAGS.has(tag)) suppressShortcuts(node);
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
 *
 * The root carries Lumino's `data-lm-suppress-shortcuts`, as do the controls inside it (see
 * suppressShortcuts): in JupyterLab and Notebook 7 an arrow key on a control of the view (slider,
 * select, number input, tile grid) would otherwise also move the active cell or collapse a heading.
 * @param {HTMLElement} el the element anywidget gives render()
 * @param {string} kind extra class, e.g. "cnnw-filter-grid"
 * @param {{picture?: () => Promise<Blob>}} [options] `picture`: what "save PNG" downloads when the view
 *   has no canvas of its own (its chart is a bqplot widget beside it): see kernelPicture
 * @returns {HTMLElement}
 */
export function mountRoot(el, kind, { picture } = {}) {
  const root = h("div", { className: `cnnw-root ${kind}` });
  suppressShortcuts(root);
  const style = h("style", { text: CSS + SAVE_CSS });
  el.replaceChildren(style, root);
  // after render() has built the view (synchronously), so the button comes last in the tab order
  queueMicrotask(() => addSaveButton(root, kind, picture));
  return root;
}

// -- "save PNG": the pixels on screen as one picture (cnn_widgets/export.py writes the same from Python)

/** Gap (px) between composed canvases: export.py GAP. */
export const EXPORT_GAP = 8;

const SAVE_CSS = `
.cnnw-save-row {
  display: flex;
  align-items: center;
  gap: 8px;
}
.cnnw-save-status {
  color: var(--jp-ui-font-color2, #555);
  font-size: var(--cnnw-small-font-size, 12px);
}
`;

/**
 * What a PNG export shows: every rendered canvas (and svg) of the view of at least 2×2 pixels (so a
 * 256×1 colour bar is left out), grouped into rows by their `data-row` attribute (one row without it), in
 * document order.
 * @param {HTMLElement} root
 * @returns {Array<Array<HTMLCanvasElement | SVGSVGElement>>}
 */
export function exportSources(root) {
  /** @type {Map<string, Array<HTMLCanvasElement | SVGSVGElement>>} */
  const rows = new Map();
  for (const node of root.querySelectorAll("canvas, svg")) {
    if (node.parentElement?.closest("svg")) continue; // an svg inside an svg is drawn with it
    if (!node.getClientRects().length) continue; // hidden
    const [w, h] = sourceSize(/** @type {any} */ (node));
    if (w < 2 || h < 2) continue;
    const key = /** @type {HTMLElement} */ (node).dataset?.row ?? "";
    if (!rows.has(key)) rows.set(key, []);
    rows.get(key)?.push(/** @type {any} */ (node));
  }
  return [...rows.values()];
}

/**
 * Pixel size of a source: a canvas's own pixels, an svg's width/height attributes (else its box).
 * @param {HTMLCanvasElement | SVGSVGElement} node
 * @returns {[number, number]}
 */
function sourceSize(node) {
  if (node instanceof HTMLCanvasElement) return [node.width, node.height];
  const w = Number(node.getAttribute("width")) || node.getBoundingClientRect().width;
  const h = Number(node.getAttribute("height")) || node.getBoundingClientRect().height;
  return [Math.round(w), Math.round(h)];
}

/**
 * An svg as an image: a copy with each element's computed paint inlined (the view's stylesheet does not
 * travel with it).
 * @param {SVGSVGElement} svg
 * @returns {Promise<HTMLImageElement>}
 */
function svgImage(svg) {
  const copy = /** @type {SVGSVGElement} */ (svg.cloneNode(true));
  const from = [svg, ...svg.querySelectorAll("*")];
  const to = [copy, ...copy.querySelectorAll("*")];
  const keys = ["fill", "fill-opacity", "stroke", "stroke-width", "stroke-opacity", "stroke-dasharray", "opacity",
    "font-family", "font-size", "font-weight", "visibility"];
  from.forEach((node, i) => {
    const cs = getComputedStyle(node);
    const target = /** @type {SVGElement} */ (to[i]);
    for (const k of keys) target.style.setProperty(k, cs.getPropertyValue(k));
  });
  const [w, h] = sourceSize(svg);
  copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  copy.setAttribute("width", String(w));
  copy.setAttribute("height", String(h));
  const text = new XMLSerializer().serializeToString(copy);
  const img = new Image();
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the diagram could not be drawn as an image"));
    img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text)}`;
  });
}

/**
 * One canvas of the sources: rows top to bottom, each row's sources left to right, EXPORT_GAP px apart,
 * top-aligned, on white; every source at its own pixel size.
 * @param {Array<Array<HTMLCanvasElement | SVGSVGElement>>} rows
 * @returns {Promise<HTMLCanvasElement>}
 */
export async function composeCanvases(rows) {
  const drawn = [];
  for (const row of rows) {
    const items = [];
    for (const node of row) {
      const [w, h] = sourceSize(node);
      items.push({ w, h, image: node instanceof HTMLCanvasElement ? node : await svgImage(node) });
    }
    if (items.length) drawn.push(items);
  }
  const widths = drawn.map((row) => row.reduce((a, it) => a + it.w, 0) + EXPORT_GAP * (row.length - 1));
  const heights = drawn.map((row) => Math.max(...row.map((it) => it.h)));
  const out = document.createElement("canvas");
  out.width = Math.max(1, ...widths);
  out.height = Math.max(1, heights.reduce((a, b) => a + b, 0) + EXPORT_GAP * (drawn.length - 1));
  const ctx = /** @type {CanvasRenderingContext2D} */ (out.getContext("2d"));
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.imageSmoothingEnabled = false;
  let y = 0;
  drawn.forEach((row, r) => {
    let x = 0;
    for (const it of row) {
      ctx.drawImage(it.image, x, y, it.w, it.h);
      x += it.w + EXPORT_GAP;
    }
    y += heights[r] + EXPORT_GAP;
  });
  return out;
}

/**
 * Add the "save PNG" button to a view (mountRoot does, once the view is built): it downloads what the
 * view's canvases show now as `<kind>.png` (composeCanvases), the picture `widget.to_png` writes.
 * @param {HTMLElement} root
 * @param {string} kind the view's class, e.g. "cnnw-filter-grid"
 * @param {() => Promise<Blob>} [picture] what to download when the view has no canvas (mountRoot's option)
 * @returns {HTMLButtonElement | null} null when the view has one already
 */
export function addSaveButton(root, kind, picture) {
  if (root.querySelector && root.querySelector(".cnnw-save-png")) return null;
  const button = /** @type {HTMLButtonElement} */ (h("button", {
    className: "cnnw-save-png", text: "save PNG",
    attrs: { type: "button", title: "download what this view shows as a PNG image" },
  }));
  const status = h("span", { className: "cnnw-save-status", attrs: { role: "status" } });
  const name = `${kind.split(" ")[0].replace(/^cnnw-/, "") || "view"}.png`;
  button.addEventListener("click", async () => {
    status.textContent = "";
    try {
      const rows = exportSources(root);
      if (!rows.length && !picture) {
        status.textContent = "nothing to save yet";
        return;
      }
      const canvas = rows.length ? await composeCanvases(rows) : null;
      const blob = canvas ? await new Promise((resolve) => canvas.toBlob(resolve, "image/png")) : await picture?.();
      if (!blob) throw new Error("the browser could not encode the PNG");
      const url = URL.createObjectURL(blob);
      const a = h("a", { attrs: { href: url, download: name } });
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      status.textContent = `saved ${name}`;
    } catch (err) {
      status.textContent = `could not save: ${err instanceof Error ? err.message : err}`;
    }
  });
  root.appendChild(h("div", { className: "cnnw-save-row" }, [button, status]));
  return button;
}

/**
 * The picture `widget.to_png` writes, asked of the kernel: the "save PNG" source of a view whose picture
 * is not on a canvas of its own. The Python view answers `{type: "png"}` with the PNG file's bytes, or
 * with `{type: "png", error}`.
 * @param {any} model the view's widget model
 * @returns {Promise<Blob>}
 */
export function kernelPicture(model) {
  return new Promise((resolve, reject) => {
    /** @param {any} msg @param {DataView[]} buffers */
    const answer = (msg, buffers) => {
      if (msg?.type !== "png") return;
      model.off("msg:custom", answer);
      if (msg.error || !buffers?.length) reject(new Error(msg.error || "no picture"));
      else resolve(new Blob([buffers[0]], { type: "image/png" }));
    };
    model.on("msg:custom", answer);
    model.send({ type: "png" });
  });
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
 * Call `commit` when the user commits a value typed into `control`: on "change", and on Enter in a text
 * or number input, because a notebook cell keeps Enter from committing one (JupyterLab fires no "change"
 * for it). A typed value is committed once: the "change" that follows an Enter when the input loses the
 * focus, or a second Enter, commits nothing until the user types again.
 * @param {Scope} scope
 * @param {HTMLInputElement | HTMLSelectElement} control
 * @param {() => void} commit
 */
export function onCommit(scope, control, commit) {
  const typed = control.tagName === "INPUT" && ["text", "number"].includes(/** @type {HTMLInputElement} */ (control).type);
  if (!typed) {
    scope.listen(control, "change", commit);
    return;
  }
  /** @type {string | null} the value last committed, until the user types again */
  let committed = null;
  const fire = () => {
    if (control.value === committed) return;
    committed = control.value;
    commit();
  };
  scope.listen(control, "change", fire);
  scope.listen(control, "input", () => { committed = null; });
  scope.listen(control, "keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.key === "Enter") fire();
  });
}

/**
 * Set trait `key` from a control on each `event` on it, then save.
 * @param {Scope} scope
 * @param {any} model
 * @param {HTMLInputElement | HTMLSelectElement} control
 * @param {string} key
 * @param {{event?: string, parse?: (value: string) => any, save?: () => void}} [opts] the event ("change"
 *   by default, with Enter in a typed input: see onCommit; "input" for sliders), how the control's value
 *   becomes the trait's (as it is by default), and how to save (model.save_changes by default)
 */
export function bindControl(scope, model, control, key, opts = {}) {
  const { event = "change", parse = (/** @type {string} */ v) => v, save = () => model.save_changes() } = opts;
  const set = () => {
    model.set(key, parse(control.value));
    save();
  };
  if (event === "change") onCommit(scope, control, set);
  else scope.listen(control, event, set);
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

/**
 * Replace the children of `box` with one line of text per string (textContent, never HTML); an empty
 * list leaves `box` empty (style it with `:empty { display: none }`).
 * @param {HTMLElement} box
 * @param {unknown} lines a list of strings; anything else counts as empty
 * @param {string} [className] class of each line
 */
export function textLines(box, lines, className = "cnnw-line") {
  const list = Array.isArray(lines) ? lines.filter((x) => typeof x === "string" && x !== "") : [];
  box.replaceChildren(...list.map((text) => h("div", { className, text })));
}

/** @typedef {{slot: number, row: number, col: number}} Hit a display slot and a pixel of its tile */

/**
 * Scroll the grid's wrapper (when it scrolls) so that display slot `slot` is visible.
 * @param {HTMLCanvasElement} grid
 * @param {import("./grid.js").Layout} L
 * @param {number} slot
 */
function revealSlot(grid, L, slot) {
  const wrap = grid.parentElement;
  if (!wrap || slot < 0) return;
  const x = (slot % L.cols) * L.cell + grid.offsetLeft - wrap.offsetLeft;
  const y = Math.floor(slot / L.cols) * L.cell + grid.offsetTop - wrap.offsetTop;
  if (y < wrap.scrollTop) wrap.scrollTop = y;
  else if (y + L.cell > wrap.scrollTop + wrap.clientHeight) wrap.scrollTop = y + L.cell - wrap.clientHeight;
  if (x < wrap.scrollLeft) wrap.scrollLeft = x;
  else if (x + L.cell > wrap.scrollLeft + wrap.clientWidth) wrap.scrollLeft = x + L.cell - wrap.clientWidth;
}

/**
 * The pointer and the keyboard on a tile grid canvas. Hovering a tile shows `describe`'s text in the
 * tooltip (hidden off the tiles); clicking a tile selects it, clicking the selected one clears the
 * selection. The canvas is focusable (tabindex 0): arrow keys move the selection by one tile (up and
 * down by a row), Home and End go to the first and last tile, Enter and Space clear the selection or
 * select the tile last chosen. `select(s, -1)` clears. While `live()` is null (nothing, or a stale
 * layer, on screen) the grid does nothing.
 * @template {{L: import("./grid.js").Layout}} S
 * @param {Scope} scope
 * @param {HTMLElement} root the view's root
 * @param {HTMLCanvasElement} grid
 * @param {HTMLElement} tooltip
 * @param {{live: () => S | null, describe: (s: S, hit: Hit) => string, selected: (s: S) => number,
 *   select: (s: S, slot: number) => void}} handlers `selected`: the selected display slot or -1
 */
export function gridPointer(scope, root, grid, tooltip, { live, describe, selected, select }) {
  grid.tabIndex = 0;
  suppressShortcuts(grid);
  /** The slot Enter/Space selects when nothing is: the last one selected (or 0). */
  let cursor = 0;
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
    if (!hit) return;
    cursor = hit.slot;
    select(s, selected(s) === hit.slot ? -1 : hit.slot);
  });
  scope.listen(grid, "keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const s = live();
    if (!s || !s.L.count) return;
    const current = selected(s);
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      if (current >= 0) cursor = current;
      cursor = Math.min(cursor, s.L.count - 1);
      select(s, current >= 0 ? -1 : cursor);
      if (current < 0) revealSlot(grid, s.L, cursor);
      return;
    }
    const next = stepSlot(s.L, current, e.key);
    if (next === null) return;
    e.preventDefault(); // the page and the grid's scroll box stay put; the selection moves instead
    tooltip.hidden = true;
    cursor = next;
    if (next !== current) select(s, next);
    revealSlot(grid, s.L, next);
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
