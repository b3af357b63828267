// ModelSummary view: an architecture strip (one block per layer call, residual joins as arcs) above the
// layer table folded into a tree by dotted names, totals below. Only the rows and blocks in view are in
// the DOM, so models with thousands of layers stay responsive. Clicking a row or a block, or the keys
// on the focused strip or table, set `selected`.

import { Scope, accentColor, h, markPainted, mountRoot, showTooltip, suppressShortcuts, tooltipBox } from "../dom.js";
import { bindScale, scaleOf } from "../scale.js";

/** Table row height (px) at font_scale 1; rows are absolutely placed at index × row height, which
 * grows with the view's font_scale so scaled text fits its row. */
export const ROW_H = 26;
/** Rows the table shows before it scrolls. */
const VIEW_ROWS = 16;
/** Rows and pixels rendered beyond the visible ones, so a short scroll shows no gap. */
const OVERSCAN_ROWS = 6;
const OVERSCAN_PX = 200;
/** Strip: the band above the blocks where arcs run, the gap between blocks, the tallest block (px). */
const ARC_H = 46;
const GAP = 5;
const MAX_H = 100;
const MIN_H = 10;
const SVG = "http://www.w3.org/2000/svg";

/** Layer-type families, their colours (Okabe–Ito, readable for colour-blind eyes) and legend text. */
export const CATEGORIES = [
  { key: "conv", text: "convolution", color: "#0072B2", test: /Conv/ },
  { key: "norm", text: "normalisation", color: "#E69F00", test: /Norm/ },
  { key: "act", text: "activation", color: "#009E73",
    test: /ReLU|ELU|GELU|SiLU|Sigmoid|Tanh|Softmax|Softmin|Hardswish|Mish|Softplus|Softsign|Threshold|GLU|Swish/ },
  { key: "pool", text: "pooling / resampling", color: "#CC79A7", test: /Pool|Upsample|PixelShuffle/ },
  { key: "linear", text: "linear", color: "#D55E00", test: /Linear/ },
  { key: "dropout", text: "dropout", color: "#999999", test: /Dropout/ },
  { key: "shape", text: "reshape / identity", color: "#56B4E9", test: /Flatten|Identity|Reshape|Permute/ },
  { key: "other", text: "other", color: "#8C6D31", test: /(?:)/ },
];
const INPUT_COLOR = "#BDBDBD";

/**
 * @typedef {{name: string, label: string, type: string, depth: number, group: boolean, end: number,
 *   shape: number[] | null, calls: number, params: number, trainable: number, buffers: number}} Node
 * @typedef {{node: number, repeat: number, shape: number[] | null, chained: boolean}} Block
 * @typedef {{model: string, input: number[], nodes: Node[], blocks: Block[], joins: number[][],
 *   totals: {params: number, trainable: number, buffers: number, layers: number, calls: number}}} Summary
 * @typedef {{x: Float64Array, w: Float64Array, h: Float64Array, width: number, height: number}} StripLayout
 */

/**
 * The family of a layer type (one of CATEGORIES).
 * @param {string} type module class name
 */
export function category(type) {
  return /** @type {typeof CATEGORIES[number]} */ (CATEGORIES.find((c) => c.test.test(type)));
}

/**
 * Indices of the nodes shown when the groups named in `collapsed` are folded (depth-first order; a
 * node's subtree is nodes[i + 1 .. end)).
 * @param {Node[]} nodes
 * @param {Set<string>} collapsed
 * @returns {number[]}
 */
export function visibleNodes(nodes, collapsed) {
  const out = [];
  for (let i = 0; i < nodes.length;) {
    out.push(i);
    i = nodes[i].group && collapsed.has(nodes[i].name) ? nodes[i].end : i + 1;
  }
  return out;
}

/**
 * The node indices of the groups that contain node `i` (outermost first).
 * @param {Node[]} nodes
 * @param {number} i
 */
export function ancestorsOf(nodes, i) {
  const out = [];
  for (let j = 0; j < i; j++) {
    if (nodes[j].group && nodes[j].end > i) out.push(j);
  }
  return out;
}

/**
 * The range [start, end) of items of `size` px to render for a scroll offset and view length.
 * @param {number} count
 * @param {number} size
 * @param {number} offset scrollTop or scrollLeft
 * @param {number} view clientHeight or clientWidth
 * @param {number} overscan items beyond each end
 * @returns {[number, number]}
 */
export function windowRange(count, size, offset, view, overscan) {
  const start = Math.max(0, Math.floor(offset / size) - overscan);
  const end = Math.min(count, Math.ceil((offset + view) / size) + overscan);
  return [Math.min(start, end), end];
}

/**
 * Block size for an output shape (N, C, …spatial): width grows with log2 of the channels, height with
 * log2 of the spatial side (√ of the spatial size); a non-tensor output gets the smallest block.
 * @param {number[] | null} shape
 * @returns {{w: number, h: number}}
 */
export function blockSize(shape) {
  if (!shape || shape.length < 2) return { w: 8, h: MIN_H };
  const channels = shape[1];
  const spatial = shape.slice(2).reduce((a, b) => a * b, 1);
  const w = Math.round(Math.min(42, Math.max(6, 4 + 3 * Math.log2(channels + 1))));
  const side = Math.sqrt(Math.max(1, spatial));
  const hgt = Math.round(Math.min(MAX_H, Math.max(MIN_H, MIN_H + 11 * Math.log2(side))));
  return { w, h: hgt };
}

/**
 * Positions of the strip's slots (slot 0 the input, slot i + 1 block i), left to right with GAP between.
 * @param {Array<number[] | null>} shapes one per slot
 * @returns {StripLayout}
 */
export function stripLayout(shapes) {
  const n = shapes.length;
  const x = new Float64Array(n);
  const w = new Float64Array(n);
  const hs = new Float64Array(n);
  let at = GAP;
  let tallest = MIN_H;
  for (let i = 0; i < n; i++) {
    const s = blockSize(shapes[i]);
    x[i] = at;
    w[i] = s.w;
    hs[i] = s.h;
    at += s.w + GAP;
    tallest = Math.max(tallest, s.h);
  }
  return { x, w, h: hs, width: at, height: ARC_H + tallest + 6 };
}

/**
 * The slots [start, end) that overlap the pixel range [left, right] (binary search: x is increasing).
 * @param {StripLayout} L
 * @param {number} left
 * @param {number} right
 * @returns {[number, number]}
 */
export function slotRange(L, left, right) {
  let lo = 0;
  let hi = L.x.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (L.x[mid] + L.w[mid] < left) lo = mid + 1;
    else hi = mid;
  }
  let end = lo;
  while (end < L.x.length && L.x[end] <= right) end++;
  return [lo, end];
}

/**
 * Top edge (px) of slot i's block: blocks are centred in the band below the arcs.
 * @param {StripLayout} L
 * @param {number} i
 */
export function blockTop(L, i) {
  return ARC_H + (L.height - ARC_H - 6 - L.h[i]) / 2;
}

/**
 * SVG path of the arc from the top centre of slot `a` to the top centre of slot `b`, rising higher the
 * farther it goes (never above the strip).
 * @param {StripLayout} L
 * @param {number} a
 * @param {number} b
 */
export function arcPath(L, a, b) {
  const x0 = L.x[a] + L.w[a] / 2;
  const x1 = L.x[b] + L.w[b] / 2;
  const y0 = blockTop(L, a);
  const y1 = blockTop(L, b);
  const lift = Math.min(ARC_H - 6, 12 + 2 * Math.sqrt(Math.abs(x1 - x0)));
  const c = Math.max(2, Math.min(y0, y1) - (lift * 4) / 3);
  const [a0, b0, a1, b1, top] = [x0, y0, x1, y1, c].map((v) => v.toFixed(1));
  return `M${a0} ${b0}C${a0} ${top} ${a1} ${top} ${a1} ${b1}`;
}

/**
 * An integer with thousands separators (1,234,567), as Keras' summary prints counts.
 * @param {number} n
 */
export function formatCount(n) {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/**
 * A shape as Python prints a tuple: (1, 64, 56, 56); "(1,)" for one dimension; "—" for none.
 * @param {number[] | null} shape
 */
export function formatShape(shape) {
  if (!shape) return "—";
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
}

/**
 * Where a key moves the table's selection among the visible nodes (positions in `visible`).
 * @param {number} pos the selected node's position in the visible list, or -1
 * @param {number} count visible nodes
 * @param {string} key KeyboardEvent.key
 * @param {number} page rows per page
 * @returns {number | null} the new position, or null for a key this does not handle
 */
export function stepRow(pos, count, key, page) {
  if (!count) return null;
  switch (key) {
    case "ArrowDown": return pos < 0 ? 0 : Math.min(count - 1, pos + 1);
    case "ArrowUp": return pos < 0 ? 0 : Math.max(0, pos - 1);
    case "PageDown": return Math.min(count - 1, Math.max(0, pos) + page);
    case "PageUp": return Math.max(0, pos - page);
    case "Home": return 0;
    case "End": return count - 1;
    default: return null;
  }
}

/**
 * Whether node `name` is `selected` or inside it (a selected container highlights its layers).
 * @param {string} name
 * @param {string | null} selected
 */
export function within(name, selected) {
  if (selected === null || selected === undefined) return false;
  return name === selected || selected === "" || name.startsWith(`${selected}.`);
}

const CSS = `
.cnnw-model-summary .cnnw-strip-wrap {
  overflow-x: auto;
  overflow-y: hidden;
  max-width: 100%;
  border: 1px solid var(--jp-border-color2, #ddd);
}
.cnnw-model-summary .cnnw-strip { display: block; }
.cnnw-model-summary .cnnw-block { stroke: var(--jp-layout-color1, #fff); stroke-width: 1; cursor: pointer; }
.cnnw-model-summary .cnnw-block.cnnw-selected { stroke: var(--cnnw-accent); stroke-width: 3; }
.cnnw-model-summary .cnnw-strip-wrap:focus .cnnw-block.cnnw-cursor {
  stroke-dasharray: 3 2; stroke: var(--jp-ui-font-color1, #1a1a1a); stroke-width: 2;
}
.cnnw-model-summary .cnnw-arc { fill: none; stroke: var(--jp-ui-font-color2, #666); stroke-width: 1.5; }
.cnnw-model-summary .cnnw-arc.cnnw-selected { stroke: var(--cnnw-accent); stroke-width: 2.5; }
.cnnw-model-summary .cnnw-link { stroke: var(--jp-ui-font-color3, #999); stroke-width: 1.5; }
.cnnw-model-summary .cnnw-types { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: var(--cnnw-small-font-size); }
.cnnw-model-summary .cnnw-type-key { display: inline-flex; align-items: center; gap: 4px; }
.cnnw-model-summary .cnnw-swatch { width: 12px; height: 12px; border-radius: 2px; display: inline-block; }
.cnnw-model-summary .cnnw-summary-cols {
  display: grid;
  grid-template-columns: minmax(180px, 2.4fr) minmax(90px, 1.2fr) minmax(120px, 1.4fr)
    minmax(80px, 1fr) minmax(80px, 1fr) 52px minmax(64px, 0.8fr);
  column-gap: 10px;
  align-items: center;
}
.cnnw-model-summary .cnnw-summary-table { overflow-x: auto; }
.cnnw-model-summary .cnnw-summary-head,
.cnnw-model-summary .cnnw-summary-scroll { min-width: 760px; }
.cnnw-model-summary .cnnw-summary-head {
  font-weight: 600;
  border-bottom: 2px solid var(--jp-border-color1, #bdbdbd);
  padding: 2px 4px;
}
.cnnw-model-summary .cnnw-summary-scroll {
  position: relative;
  overflow-y: auto;
  overflow-x: hidden;
  max-height: calc(${VIEW_ROWS * ROW_H}px * var(--cnnw-scale, 1));
}
.cnnw-model-summary .cnnw-summary-scroll:focus-visible,
.cnnw-model-summary .cnnw-strip-wrap:focus-visible {
  outline: 2px solid var(--cnnw-accent);
  outline-offset: 1px;
}
.cnnw-model-summary .cnnw-summary-spacer { position: relative; }
.cnnw-model-summary .cnnw-row {
  position: absolute;
  left: 0;
  right: 0;
  height: calc(${ROW_H}px * var(--cnnw-scale, 1));
  padding: 0 4px;
  box-sizing: border-box;
  border-bottom: 1px solid var(--jp-border-color3, #eee);
  cursor: pointer;
  white-space: nowrap;
}
.cnnw-model-summary .cnnw-row > span { overflow: hidden; text-overflow: ellipsis; }
.cnnw-model-summary .cnnw-row:hover { background: var(--jp-layout-color2, #f3f3f3); }
.cnnw-model-summary .cnnw-row.cnnw-selected {
  background: var(--jp-brand-color3, #bbdefb);
  box-shadow: inset 3px 0 0 var(--cnnw-accent);
}
.cnnw-model-summary .cnnw-row.cnnw-group { font-weight: 600; }
.cnnw-model-summary .cnnw-row.cnnw-unrun { color: var(--jp-ui-font-color3, #888); }
.cnnw-model-summary .cnnw-num { text-align: right; font-variant-numeric: tabular-nums; }
.cnnw-model-summary .cnnw-name { display: flex; align-items: center; gap: 4px; }
.cnnw-model-summary .cnnw-twisty { display: inline-block; width: 14px; text-align: center; flex: none; }
.cnnw-model-summary .cnnw-shape { font-family: var(--jp-code-font-family, monospace); font-size: var(--cnnw-small-font-size); }
.cnnw-model-summary .cnnw-summary-totals {
  border-top: 2px solid var(--jp-border-color1, #bdbdbd);
  padding: 4px;
  font-variant-numeric: tabular-nums;
}
`;

/**
 * @param {string} tag
 * @param {Record<string, string>} attrs
 * @returns {SVGElement}
 */
function svg(tag, attrs) {
  const node = /** @type {SVGElement} */ (document.createElementNS(SVG, tag));
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderSummary(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-model-summary");
  /** Row height (px) at the view's font_scale. */
  let rowH = ROW_H * scaleOf(model.get("font_scale"));
  bindScale(model, root, scope, () => {
    rowH = ROW_H * scaleOf(model.get("font_scale"));
    paintRows();
  });
  root.style.setProperty("--cnnw-accent", accentColor(root));

  const caption = h("div", { className: "cnnw-caption cnnw-summary-caption" });
  const strip = svg("svg", { class: "cnnw-strip" });
  const stripWrap = h("div", {
    className: "cnnw-strip-wrap",
    attrs: {
      tabindex: "0", role: "listbox",
      "aria-label": "architecture: ← → move between layer calls, Enter or Space selects, Escape clears",
    },
  }, [strip]);
  suppressShortcuts(stripWrap);
  const types = h("div", { className: "cnnw-types" });
  const expandAll = h("button", { className: "cnnw-expand-all", text: "expand all", attrs: { type: "button" } });
  const collapseAll = h("button", { className: "cnnw-collapse-all", text: "collapse all", attrs: { type: "button" } });
  const head = h("div", { className: "cnnw-summary-cols cnnw-summary-head", attrs: { role: "row" } },
    ["layer", "type", "output shape", "params", "trainable", "calls", "buffers"].map((text, i) =>
      h("span", { className: i >= 3 ? "cnnw-num" : "", text, attrs: { role: "columnheader" } })));
  const spacer = h("div", { className: "cnnw-summary-spacer" });
  const scroller = h("div", {
    className: "cnnw-summary-scroll",
    attrs: {
      tabindex: "0", role: "treegrid",
      "aria-label": "layers: ↑ ↓ move, → ← expand or collapse, Enter or Space selects or folds, Escape clears",
    },
  }, [spacer]);
  suppressShortcuts(scroller);
  const totals = h("div", { className: "cnnw-summary-totals" });
  const detail = h("div", { className: "cnnw-caption cnnw-summary-selected", attrs: { role: "status" } });
  const tooltip = tooltipBox();
  root.append(
    h("style", { text: CSS }),
    caption, stripWrap, types,
    h("div", { className: "cnnw-toolbar" }, [expandAll, collapseAll]),
    h("div", { className: "cnnw-summary-table" }, [head, scroller, totals]),
    detail, tooltip,
  );

  /** @type {Summary | null} */
  let data = null;
  /** @type {StripLayout | null} */
  let layout = null;
  /** @type {Map<string, number>} node index by name */
  let index = new Map();
  /** @type {number[]} visible node indices */
  let visible = [];
  /** @type {Set<string>} folded groups */
  const collapsed = new Set();
  /** The block the strip's keys move from (its call, not only its layer name). */
  let cursor = -1;
  let frame = 0;
  /** Whether the selection still has to be scrolled into view (the view had no size yet). */
  let pendingReveal = false;

  const selected = () => /** @type {string | null} */ (model.get("selected") ?? null);

  /** @param {string | null} name */
  function select(name) {
    model.set("selected", name);
    model.save_changes();
  }

  function load() {
    const s = model.get("_summary");
    if (!s?.nodes) return false;
    if (s !== data) {
      data = /** @type {Summary} */ (s);
      index = new Map(data.nodes.map((n, i) => [n.name, i]));
      layout = stripLayout([data.input, ...data.blocks.map((b) => b.shape)]);
      collapsed.clear();
      cursor = -1;
      describeModel();
    }
    return true;
  }

  function describeModel() {
    if (!data) return;
    const t = data.totals;
    caption.textContent = `${data.model} · input ${formatShape(data.input)} · ${t.layers} layers, ${t.calls} calls`;
    totals.textContent = `Total: ${formatCount(t.params)} parameters (${formatCount(t.trainable)} trainable, `
      + `${formatCount(t.params - t.trainable)} frozen) · ${formatCount(t.buffers)} buffer elements`;
    const present = new Set(data.blocks.map((b) => category(data?.nodes[b.node].type ?? "").key));
    types.replaceChildren(...CATEGORIES.filter((c) => present.has(c.key)).map((c) =>
      h("span", { className: "cnnw-type-key" }, [
        h("span", { className: "cnnw-swatch", attrs: { style: `background:${c.color}` } }),
        h("span", { text: c.text }),
      ])));
    strip.setAttribute("width", String(layout?.width ?? 0));
    strip.setAttribute("height", String(layout?.height ?? 0));
  }

  /** The block indices of a layer (or of the layers inside a container). */
  function blocksOf(/** @type {string | null} */ name) {
    if (!data || name === null) return [];
    const out = [];
    for (let i = 0; i < data.blocks.length; i++) {
      if (within(data.nodes[data.blocks[i].node].name, name)) out.push(i);
    }
    return out;
  }

  // -- the strip -------------------------------------------------------------------------------------
  function paintStrip() {
    if (!data || !layout) return;
    const L = layout;
    const left = stripWrap.scrollLeft - OVERSCAN_PX;
    const right = stripWrap.scrollLeft + (stripWrap.clientWidth || 1200) + OVERSCAN_PX;
    const [a, b] = slotRange(L, left, right);
    const sel = selected();
    const children = [];
    for (const [from, to] of data.joins) {
      const s0 = from + 1;
      const s1 = to + 1;
      const x0 = L.x[s0];
      const x1 = L.x[s1];
      if (Math.min(x0, x1) > right || Math.max(x0, x1) + L.w[s1] < left) continue;
      const hot = (from >= 0 && within(data.nodes[data.blocks[from].node].name, sel))
        || within(data.nodes[data.blocks[to].node].name, sel);
      children.push(svg("path", { class: hot ? "cnnw-arc cnnw-selected" : "cnnw-arc", d: arcPath(L, s0, s1) }));
    }
    for (let s = a; s < b; s++) {
      const top = blockTop(L, s);
      if (s > 0 && data.blocks[s - 1].chained) {
        const y = ARC_H + (L.height - ARC_H - 6) / 2;
        children.push(svg("line", {
          class: "cnnw-link", x1: String(L.x[s - 1] + L.w[s - 1]), x2: String(L.x[s]), y1: String(y), y2: String(y),
        }));
      }
      if (s === 0) {
        children.push(svg("rect", {
          class: "cnnw-input-block", x: String(L.x[0]), y: String(top), width: String(L.w[0]),
          height: String(L.h[0]), fill: INPUT_COLOR, "data-index": "-1",
        }));
        continue;
      }
      const i = s - 1;
      const node = data.nodes[data.blocks[i].node];
      const classes = ["cnnw-block"];
      if (within(node.name, sel)) classes.push("cnnw-selected");
      if (i === cursor) classes.push("cnnw-cursor");
      children.push(svg("rect", {
        class: classes.join(" "), x: String(L.x[s]), y: String(top), width: String(L.w[s]), height: String(L.h[s]),
        fill: category(node.type).color, "data-layer": node.name, "data-index": String(i),
        role: "option", "aria-selected": String(within(node.name, sel)),
      }));
    }
    strip.replaceChildren(...children);
  }

  /** @param {number} i block index */
  function revealBlock(i) {
    if (!layout || i < 0) return;
    const x = layout.x[i + 1];
    const w = layout.w[i + 1];
    const view = stripWrap.clientWidth;
    if (!view) return;
    if (x - GAP < stripWrap.scrollLeft) stripWrap.scrollLeft = x - GAP;
    else if (x + w + GAP > stripWrap.scrollLeft + view) stripWrap.scrollLeft = x + w + GAP - view;
  }

  /** @param {number} i block index */
  function describeBlock(i) {
    if (!data) return "";
    const block = data.blocks[i];
    const node = data.nodes[block.node];
    const name = (/** @type {number} */ f) => (f < 0 ? "the input" : data?.nodes[data.blocks[f].node].name);
    const from = data.joins.filter(([, to]) => to === i).map(([f]) => name(f));
    const lines = [
      node.calls > 1 ? `${node.name || "(model)"} (call ${block.repeat + 1} of ${node.calls})` : node.name || "(model)",
      `${node.type} · output ${formatShape(block.shape)}`,
    ];
    if (from.length) lines.push(`also reads: ${from.join(", ")}`);
    if (!block.chained) lines.push("does not read the layer before it");
    return lines.join("\n");
  }

  // -- the table -------------------------------------------------------------------------------------
  function paintRows() {
    if (!data) return;
    visible = visibleNodes(data.nodes, collapsed);
    spacer.style.height = `${visible.length * rowH}px`;
    scroller.dataset.rows = String(visible.length);
    const view = scroller.clientHeight || VIEW_ROWS * rowH;
    const [a, b] = windowRange(visible.length, rowH, scroller.scrollTop, view, OVERSCAN_ROWS);
    const sel = selected();
    const rows = [];
    for (let p = a; p < b; p++) {
      const i = visible[p];
      const n = data.nodes[i];
      const classes = ["cnnw-summary-cols", "cnnw-row"];
      if (n.group) classes.push("cnnw-group");
      if (!n.calls) classes.push("cnnw-unrun");
      if (sel !== null && n.name === sel) classes.push("cnnw-selected");
      const attrs = {
        role: "row", "data-layer": n.name, "data-node": String(i), "aria-level": String(n.depth + 1),
        "aria-selected": String(sel !== null && n.name === sel), title: n.name || "(model)", style: `top:${p * rowH}px`,
      };
      if (n.group) attrs["aria-expanded"] = String(!collapsed.has(n.name));
      const twisty = h("span", { className: "cnnw-twisty", text: n.group ? (collapsed.has(n.name) ? "▸" : "▾") : "" });
      rows.push(h("div", { className: classes.join(" "), attrs }, [
        h("span", { className: "cnnw-name", attrs: { style: `padding-left:${n.depth * 16}px` } }, [
          twisty, h("span", { className: "cnnw-label", text: n.label }),
        ]),
        h("span", { className: "cnnw-type", text: n.type }),
        h("span", { className: "cnnw-shape", text: n.calls ? formatShape(n.shape) : "not run" }),
        h("span", { className: "cnnw-num", text: formatCount(n.params) }),
        h("span", { className: "cnnw-num", text: formatCount(n.trainable) }),
        h("span", { className: "cnnw-num", text: String(n.calls) }),
        h("span", { className: "cnnw-num", text: formatCount(n.buffers) }),
      ]));
    }
    spacer.replaceChildren(...rows);
  }

  /** Scroll the table so that visible position `p` is in view. */
  function revealRow(/** @type {number} */ p) {
    const view = scroller.clientHeight;
    if (p < 0 || !view) return;
    const top = p * rowH;
    if (top < scroller.scrollTop) scroller.scrollTop = top;
    else if (top + rowH > scroller.scrollTop + view) scroller.scrollTop = top + rowH - view;
  }

  function describeSelected() {
    const sel = selected();
    const i = sel === null ? undefined : index.get(sel);
    if (!data || i === undefined) {
      detail.textContent = "click a row or a block to select a layer (arrow keys move, Enter or Space selects)";
      return;
    }
    const n = data.nodes[i];
    const parts = [`selected: ${n.name || "(model)"}`, n.type];
    if (n.group) parts.push(`${blocksOf(n.name).length} layer calls inside`);
    parts.push(n.calls ? `called ${n.calls}×` : "never ran", `output ${formatShape(n.shape)}`);
    parts.push(`${formatCount(n.params)} params`);
    detail.textContent = parts.join(" · ");
  }

  function paint() {
    if (!load()) {
      caption.textContent = "loading the summary…";
      return;
    }
    paintStrip();
    paintRows();
    describeSelected();
    markPainted(root, selected() ?? "", performance.now());
  }

  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      paintStrip();
      paintRows();
    });
  }
  scope.add(() => cancelAnimationFrame(frame));

  /** After `selected` changed: unfold its ancestors, bring its row and a block of it into view (once
   * the view has a size: until then the reveal waits for the resize observer). */
  function onSelected() {
    if (!load() || !data) return;
    const sel = selected();
    const i = sel === null ? undefined : index.get(sel);
    if (i !== undefined) {
      for (const a of ancestorsOf(data.nodes, i)) collapsed.delete(data.nodes[a].name);
      const own = blocksOf(sel);
      if (own.length && !own.includes(cursor)) cursor = own[0];
    }
    paint();
    pendingReveal = i !== undefined;
    reveal();
  }

  function reveal() {
    const sel = selected();
    const i = sel === null ? undefined : index.get(sel);
    if (!pendingReveal || i === undefined || !scroller.clientHeight) return;
    pendingReveal = false;
    revealRow(visible.indexOf(i));
    revealBlock(cursor);
    paintStrip();
    paintRows();
  }

  const resized = new ResizeObserver(() => {
    reveal();
    schedule();
  });
  resized.observe(scroller);
  resized.observe(stripWrap);
  scope.add(() => resized.disconnect());

  // -- pointer ---------------------------------------------------------------------------------------
  scope.listen(strip, "click", (/** @type {MouseEvent} */ e) => {
    const target = /** @type {Element} */ (e.target).closest("[data-layer]");
    if (!target || !data) return;
    cursor = Number(target.getAttribute("data-index"));
    select(target.getAttribute("data-layer"));
  });
  scope.listen(strip, "mousemove", (/** @type {MouseEvent} */ e) => {
    const target = /** @type {Element} */ (e.target).closest("[data-index]");
    if (!target || !data) {
      tooltip.hidden = true;
      return;
    }
    const i = Number(target.getAttribute("data-index"));
    const text = i < 0 ? `input ${formatShape(data.input)}` : describeBlock(i);
    showTooltip(tooltip, text, e, root);
  });
  scope.listen(strip, "mouseleave", () => {
    tooltip.hidden = true;
  });
  scope.listen(spacer, "click", (/** @type {MouseEvent} */ e) => {
    const row = /** @type {Element} */ (e.target).closest("[data-node]");
    if (!row || !data) return;
    const n = data.nodes[Number(row.getAttribute("data-node"))];
    if (n.group && /** @type {Element} */ (e.target).closest(".cnnw-twisty")) {
      toggle(n.name);
      return;
    }
    select(n.name);
  });
  scope.listen(stripWrap, "scroll", schedule, { passive: true });
  scope.listen(scroller, "scroll", schedule, { passive: true });

  /** @param {string} name a group */
  function toggle(name) {
    if (collapsed.has(name)) collapsed.delete(name);
    else collapsed.add(name);
    paintRows();
  }

  scope.listen(expandAll, "click", () => {
    collapsed.clear();
    paintRows();
  });
  scope.listen(collapseAll, "click", () => {
    if (!data) return;
    for (const n of data.nodes) if (n.group) collapsed.add(n.name);
    onSelected(); // the selected row's ancestors stay open
  });

  // -- keyboard --------------------------------------------------------------------------------------
  scope.listen(stripWrap, "keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || !data || !data.blocks.length) return;
    const n = data.blocks.length;
    const from = cursor >= 0 ? cursor : -1;
    /** @type {number | null} */
    let next = null;
    if (e.key === "ArrowRight") next = from < 0 ? 0 : Math.min(n - 1, from + 1);
    else if (e.key === "ArrowLeft") next = from < 0 ? 0 : Math.max(0, from - 1);
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = n - 1;
    else if (e.key === "Enter" || e.key === " ") next = Math.max(0, from);
    else if (e.key === "Escape") {
      e.preventDefault();
      select(null);
      return;
    } else return;
    e.preventDefault(); // the page and the strip's scroll box stay put; the selection moves instead
    tooltip.hidden = true;
    cursor = next;
    const name = data.nodes[data.blocks[next].node].name;
    revealBlock(next);
    if (name === selected()) paintStrip();
    else select(name);
  });

  scope.listen(scroller, "keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || !data || !visible.length) return;
    const sel = selected();
    const i = sel === null ? -1 : index.get(sel) ?? -1;
    const pos = i < 0 ? -1 : visible.indexOf(i);
    const node = i >= 0 ? data.nodes[i] : null;
    if (e.key === "Escape") {
      e.preventDefault();
      select(null);
      return;
    }
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      if (!node) select(data.nodes[visible[0]].name);
      else if (node.group) toggle(node.name);
      return;
    }
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      if (!node) return;
      if (node.group && (e.key === "ArrowRight") === collapsed.has(node.name)) toggle(node.name);
      else if (e.key === "ArrowRight" && node.group) select(data.nodes[i + 1].name);
      else if (e.key === "ArrowLeft") {
        const up = ancestorsOf(data.nodes, i).pop();
        if (up !== undefined) select(data.nodes[up].name);
      }
      return;
    }
    const page = Math.max(1, Math.floor((scroller.clientHeight || VIEW_ROWS * rowH) / rowH) - 1);
    const next = stepRow(pos, visible.length, e.key, page);
    if (next === null) return;
    e.preventDefault();
    revealRow(next);
    const name = data.nodes[visible[next]].name;
    if (name !== sel) select(name);
  });

  scope.onModel(model, "change:_summary", paint);
  scope.onModel(model, "change:selected", onSelected);
  onSelected();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderSummary(model, el);
  },
};
