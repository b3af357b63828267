// ConvExplainer view: the output map of one conv channel (click or arrow keys pick a position), the
// conv's input with the kernel's taps and the padding drawn, and the arithmetic of that one number: patch
// × weights = products, sums per input channel, + bias = the map's value, then BatchNorm, ReLU and
// pooling when they follow. Maps come once per layer (wire tensors); the numbers of one position come
// from the kernel (`_explain`, float64) and the taps are drawn here at once.

import { decode } from "../codec.js";
import { colorIndex, colorRange, lut } from "../colormap.js";
import {
  Scope, accentColor, bindControl, h, labelledSelect, markPainted, mountRoot, setOptions, showTooltip,
  suppressShortcuts, tooltipBox,
} from "../dom.js";
import { bindScale } from "../scale.js";

/** Side (px) the maps aim at; cells are whole pixels between MIN_CELL and MAX_CELL. */
const MAP_PX = 288;
const MIN_CELL = 2;
const MAX_CELL = 32;
/** Kernel grids with more cells than this show colours without numbers (hover shows the number). */
const MAX_NUMBERED = 49;
const SIGNED = "RdBu_r";
const UNSIGNED = "viridis";

/**
 * @typedef {{kernel: number[], stride: number[], dilation: number[], groups: number,
 *   padding: number[], padding_mode: string, in_channels: number, out_channels: number, bias: boolean}} Geometry
 */

/**
 * Rows and columns of the conv's input (unpadded coordinates; negative or ≥ size means padding) that the
 * kernel reads for output position (y, x).
 * @param {Geometry} g
 * @param {number} y
 * @param {number} x
 * @returns {{rows: number[], cols: number[]}}
 */
export function taps(g, y, x) {
  const [kh, kw] = g.kernel;
  const [sy, sx] = g.stride;
  const [dy, dx] = g.dilation;
  const [top, , left] = g.padding;
  return {
    rows: Array.from({ length: kh }, (_, i) => y * sy + i * dy - top),
    cols: Array.from({ length: kw }, (_, j) => x * sx + j * dx - left),
  };
}

/**
 * The input channels output channel `c` reads: [first, first + in_channels / groups).
 * @param {Geometry} g
 * @param {number} c
 * @returns {[number, number]}
 */
export function groupChannels(g, c) {
  const perIn = g.in_channels / g.groups;
  const perOut = g.out_channels / g.groups;
  const first = Math.floor(c / perOut) * perIn;
  return [first, first + perIn];
}

/**
 * Whole-pixel cell size for a map of rows × cols cells.
 * @param {number} rows
 * @param {number} cols
 */
export function cellSize(rows, cols) {
  return Math.max(MIN_CELL, Math.min(MAX_CELL, Math.floor(MAP_PX / Math.max(rows, cols, 1))));
}

/**
 * The position a key moves to on an h × w map, or null for a key the map does not use.
 * @param {[number, number]} pos (y, x)
 * @param {number} hgt
 * @param {number} wid
 * @param {string} key
 * @returns {[number, number] | null}
 */
export function stepPosition([y, x], hgt, wid, key) {
  switch (key) {
    case "ArrowUp": return [Math.max(0, y - 1), x];
    case "ArrowDown": return [Math.min(hgt - 1, y + 1), x];
    case "ArrowLeft": return [y, Math.max(0, x - 1)];
    case "ArrowRight": return [y, Math.min(wid - 1, x + 1)];
    case "Home": return [0, 0];
    case "End": return [hgt - 1, wid - 1];
    default: return null;
  }
}

/**
 * A number with 7 significant digits (what float32 carries), exponent when tiny or huge.
 * @param {number | null | undefined} v
 */
export function num(v) {
  if (v === null || v === undefined) return "—";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-4 || a >= 1e7) return v.toExponential(6).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(7)));
}

/**
 * The padding as the caption states it: "no padding", "padding 1×2" (rows × columns, both sides) or
 * each side when they differ, and the mode when it is not zeros.
 * @param {Geometry} g
 */
export function describePadding(g) {
  const [t, b, l, r] = g.padding;
  if (!(t || b || l || r)) return "no padding";
  const sides = t === b && l === r ? `${t}×${l}` : `top ${t} bottom ${b} left ${l} right ${r}`;
  return `padding ${sides}${g.padding_mode === "zeros" ? "" : ` (${g.padding_mode})`}`;
}

/**
 * "a‥b": the first and last of a list of indices.
 * @param {number[]} list
 */
export function span(list) {
  return `${list[0]}‥${list[list.length - 1]}`;
}

/**
 * Short number for grid cells (3 significant digits).
 * @param {number | null | undefined} v
 */
export function short(v) {
  if (v === null || v === undefined) return "";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

/**
 * CSS colour of value v on a colormap over [lo, hi], and a text colour readable on it.
 * @param {Uint8Array} table 256×RGB
 * @param {number} v
 * @param {number} lo
 * @param {number} hi
 * @returns {{bg: string, fg: string}}
 */
export function cellColor(table, v, lo, hi) {
  const k = 3 * colorIndex(v, lo, hi);
  const [r, g, b] = [table[k], table[k + 1], table[k + 2]];
  const light = 0.299 * r + 0.587 * g + 0.114 * b > 140;
  return { bg: `rgb(${r},${g},${b})`, fg: light ? "#000" : "#fff" };
}

/**
 * Extent of the finite values in a list of rows (nulls skipped).
 * @param {Array<Array<number | null>> | Array<number | null>} values
 * @returns {[number, number]}
 */
export function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values.flat()) {
    if (v === null || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : [0, 0];
}

const CSS = `
.cnnw-conv-explainer .cnnw-panel { display: flex; flex-direction: column; gap: 4px; }
.cnnw-conv-explainer .cnnw-panel-title {
  font-size: var(--cnnw-small-font-size); color: var(--jp-ui-font-color2, #555); overflow-wrap: anywhere; max-width: 340px;
}
.cnnw-conv-explainer canvas { display: block; image-rendering: pixelated; }
.cnnw-conv-explainer .cnnw-output-map { cursor: crosshair; }
.cnnw-conv-explainer .cnnw-output-map:focus-visible { outline: 2px solid var(--cnnw-accent); outline-offset: 1px; }
.cnnw-conv-explainer .cnnw-conv-explain { display: flex; flex-direction: column; gap: 8px; }
.cnnw-conv-explainer .cnnw-conv-explain.cnnw-stale { opacity: 0.45; }
.cnnw-conv-explainer .cnnw-conv-grids { display: flex; flex-wrap: wrap; align-items: center; gap: 10px; }
.cnnw-conv-explainer .cnnw-op { font-size: calc(20px * var(--cnnw-scale, 1)); font-weight: 600; }
.cnnw-conv-explainer .cnnw-kgrid {
  display: inline-grid; gap: 1px; background: var(--jp-border-color2, #ccc); border: 1px solid var(--jp-border-color2, #ccc);
}
.cnnw-conv-explainer .cnnw-kcell {
  min-width: 44px; height: 24px; padding: 0 2px; box-sizing: border-box;
  display: flex; align-items: center; justify-content: center;
  font-family: var(--jp-code-font-family, monospace); font-size: var(--cnnw-small-font-size);
}
.cnnw-conv-explainer .cnnw-kgrid.cnnw-dense .cnnw-kcell { min-width: 14px; height: 14px; }
.cnnw-conv-explainer .cnnw-kcell.cnnw-pad {
  background: repeating-linear-gradient(45deg, #d9d9d9 0 3px, #f4f4f4 3px 7px) !important;
  color: #444 !important;
}
.cnnw-conv-explainer .cnnw-kcell.cnnw-here { outline: 3px solid var(--cnnw-accent); outline-offset: -3px; }
.cnnw-conv-explainer .cnnw-sums { display: flex; flex-wrap: wrap; gap: 1px; max-width: 640px; }
.cnnw-conv-explainer .cnnw-sums .cnnw-kcell { cursor: pointer; }
.cnnw-conv-explainer .cnnw-sums .cnnw-kcell.cnnw-here { outline: 3px solid var(--cnnw-accent); }
.cnnw-conv-explainer .cnnw-conv-result, .cnnw-conv-explainer .cnnw-channel-sum, .cnnw-conv-explainer .cnnw-step {
  font-family: var(--jp-code-font-family, monospace);
  overflow-wrap: anywhere;
}
.cnnw-conv-explainer .cnnw-conv-result, .cnnw-conv-explainer .cnnw-channel-sum { font-size: calc(15px * var(--cnnw-scale, 1)); }
.cnnw-conv-explainer .cnnw-step { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; }
.cnnw-conv-explainer .cnnw-ok { color: var(--jp-success-color1, #2e7d32); }
.cnnw-conv-explainer .cnnw-bad { color: var(--jp-error-color1, #c62828); }
.cnnw-conv-explainer figure { margin: 0; display: flex; flex-direction: column; gap: 2px; }
.cnnw-conv-explainer figcaption { font-size: var(--cnnw-small-font-size); color: var(--jp-ui-font-color2, #555); }
`;

/**
 * A grid of kernel cells with numbers (text, never HTML) on their colours.
 * @param {Array<Array<number | null>>} values
 * @param {{table: Uint8Array, lo: number, hi: number, pad?: boolean[][] | null, here?: [number, number] | null,
 *   className?: string}} opts `pad`: cells drawn as padding; `here`: a cell to outline
 */
export function kernelGrid(values, { table, lo, hi, pad = null, here = null, className = "" }) {
  const rows = values.length;
  const cols = rows ? values[0].length : 0;
  const dense = rows * cols > MAX_NUMBERED;
  const grid = h("div", {
    className: `cnnw-kgrid${dense ? " cnnw-dense" : ""} ${className}`.trim(),
    attrs: { style: `grid-template-columns:repeat(${cols},auto)`, "data-rows": String(rows), "data-cols": String(cols) },
  });
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = values[i][j];
      const isPad = Boolean(pad?.[i]?.[j]) || v === null;
      const title = isPad ? `padding${v === null ? "" : ` (${num(v)})`}` : num(v);
      const cell = h("span", { className: "cnnw-kcell", attrs: { title } });
      if (!dense) cell.textContent = v === null ? "pad" : short(v);
      if (isPad) cell.classList.add("cnnw-pad");
      else {
        const { bg, fg } = cellColor(table, /** @type {number} */ (v), lo, hi);
        cell.style.background = bg;
        cell.style.color = fg;
      }
      if (here && here[0] === i && here[1] === j) cell.classList.add("cnnw-here");
      grid.appendChild(cell);
    }
  }
  return grid;
}

/**
 * @param {string} caption
 * @param {HTMLElement} body
 */
function figure(caption, body) {
  return h("figure", {}, [h("figcaption", { text: caption }), body]);
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderExplainer(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-conv-explainer");
  bindScale(model, root, scope);
  const accent = accentColor(root);
  root.style.setProperty("--cnnw-accent", accent);

  const layerSel = labelledSelect("layer", "cnnw-layer-select", []);
  const numberAttrs = { type: "number", min: "0", step: "1" };
  const channelIn = /** @type {HTMLInputElement} */ (h("input", { className: "cnnw-channel", attrs: numberAttrs }));
  const inputIn = /** @type {HTMLInputElement} */ (h("input", { className: "cnnw-input-channel", attrs: numberAttrs }));
  const positionText = h("span", { className: "cnnw-position cnnw-layer-name" });
  const caption = h("div", { className: "cnnw-caption cnnw-conv-caption" });
  const inputTitle = h("div", { className: "cnnw-panel-title" });
  const outputTitle = h("div", { className: "cnnw-panel-title" });
  const inputMap = /** @type {HTMLCanvasElement} */ (h("canvas", {
    className: "cnnw-input-map", attrs: { "aria-label": "the conv's input channel with the cells the kernel reads" },
  }));
  const outputMap = /** @type {HTMLCanvasElement} */ (h("canvas", {
    className: "cnnw-output-map",
    attrs: { tabindex: "0", "aria-label": "output map: click a cell or use the arrow keys to pick a position" },
  }));
  suppressShortcuts(outputMap);
  const grids = h("div", { className: "cnnw-conv-grids" });
  const sumsTitle = h("div", { className: "cnnw-caption cnnw-sums-title" });
  const sums = h("div", { className: "cnnw-sums" });
  const result = h("div", { className: "cnnw-conv-result", attrs: { role: "status" } });
  const steps = h("div", { className: "cnnw-conv-steps" });
  const explain = h("div", { className: "cnnw-conv-explain" }, [grids, sumsTitle, sums, result, steps]);
  const tooltip = tooltipBox();

  root.append(
    h("style", { text: CSS }),
    h("div", { className: "cnnw-toolbar" }, [
      layerSel.wrap,
      h("label", { className: "cnnw-control" }, [h("span", { text: "output channel" }), channelIn]),
      h("label", { className: "cnnw-control" }, [h("span", { text: "input channel" }), inputIn]),
      positionText,
    ]),
    caption,
    h("div", { className: "cnnw-main" }, [
      h("div", { className: "cnnw-panel" }, [inputTitle, inputMap]),
      h("div", { className: "cnnw-panel" }, [outputTitle, outputMap]),
    ]),
    explain,
    tooltip,
  );

  /** @type {{source: any, layer: string, geometry: Geometry, input: import("../codec.js").Tensor,
   *   output: import("../codec.js").Tensor, steps: Array<{name: string, type: string}>, calls: number} | null} */
  let maps = null;
  /** @type {{cell: number, h: number, w: number} | null} */
  let outGeom = null;

  function loadMaps() {
    const m = model.get("_maps");
    if (!m?.input) return null;
    if (maps?.source !== m) {
      maps = {
        source: m, layer: m.layer, geometry: m.geometry, input: decode(m.input), output: decode(m.output),
        steps: m.steps, calls: m.calls,
      };
    }
    return maps;
  }

  /** @returns {[number, number]} */
  const position = () => {
    const p = model.get("position");
    return [Number(p[0]), Number(p[1])];
  };

  function syncControls() {
    const layers = model.get("layers") ?? [];
    if (layerSel.select.options.length !== layers.length) {
      setOptions(layerSel.select, layers.map((n) => [n, n || "(whole model)"]));
    }
    layerSel.select.value = model.get("layer");
    if (!maps) return;
    const g = maps.geometry;
    const c = Number(model.get("channel"));
    const [a, b] = groupChannels(g, c);
    channelIn.max = String(g.out_channels - 1);
    channelIn.value = String(c);
    inputIn.min = String(a);
    inputIn.max = String(b - 1);
    inputIn.value = String(model.get("input_channel"));
    inputIn.disabled = b - a === 1;
    const [y, x] = position();
    positionText.textContent = `position (y, x) = (${y}, ${x})`;
  }

  function describe() {
    if (!maps) return "";
    const g = maps.geometry;
    const [ci, hi, wi] = maps.input.shape;
    const [co, ho, wo] = maps.output.shape;
    const parts = [
      `${g.in_channels}→${g.out_channels} channels`, `kernel ${g.kernel.join("×")}`, `stride ${g.stride.join("×")}`,
      describePadding(g), `dilation ${g.dilation.join("×")}`,
    ];
    if (g.groups !== 1) parts.push(`groups ${g.groups} (each output channel reads ${g.in_channels / g.groups} input channels)`);
    parts.push(g.bias ? "bias" : "no bias", `input ${ci}×${hi}×${wi} → output ${co}×${ho}×${wo}`);
    if (maps.calls > 1) parts.push(`called ${maps.calls}× per forward pass: the first call is shown`);
    return parts.join(" · ");
  }

  /**
   * Paint one channel of a (C, H, W) tensor into a canvas, cells of `cell` px, with `pad` blank cells
   * around it ([top, bottom, left, right]) drawn as padding.
   * @param {HTMLCanvasElement} canvas
   * @param {import("../codec.js").Tensor} t
   * @param {number} c
   * @param {number} cell
   * @param {number[]} pad
   * @param {string} cmap
   * @param {boolean} signed
   */
  function paintMap(canvas, t, c, cell, pad, cmap, signed) {
    const [, H, W] = t.shape;
    const [top, bottom, left, right] = pad;
    const rows = H + top + bottom;
    const cols = W + left + right;
    canvas.width = cols * cell;
    canvas.height = rows * cell;
    canvas.style.width = `${canvas.width}px`;
    canvas.style.height = `${canvas.height}px`;
    const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
    const img = ctx.createImageData(canvas.width, canvas.height);
    const px = new Uint32Array(img.data.buffer);
    const table = lut(cmap);
    const [lo, hi] = colorRange(t.min[c], t.max[c], signed);
    const data = t.data;
    const base = c * H * W;
    const padA = 0xffd9d9d9;
    const padB = 0xfff4f4f4;
    for (let r = 0; r < rows; r++) {
      for (let q = 0; q < cols; q++) {
        const y = r - top;
        const x = q - left;
        const inside = y >= 0 && y < H && x >= 0 && x < W;
        let color = 0;
        if (inside) {
          const k = 3 * colorIndex(data[base + y * W + x], lo, hi);
          color = 0xff000000 | (table[k + 2] << 16) | (table[k + 1] << 8) | table[k];
        }
        for (let dy = 0; dy < cell; dy++) {
          const row = (r * cell + dy) * canvas.width + q * cell;
          for (let dx = 0; dx < cell; dx++) {
            px[row + dx] = inside ? color : ((dx + dy) % 6 < 3 ? padA : padB); // hatched padding
          }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    return ctx;
  }

  /**
   * Outline cells (canvas cell coordinates) on a map; cells too small to outline one by one get a
   * frame around them all and a dot in each.
   * @param {CanvasRenderingContext2D} ctx
   * @param {number} cell
   * @param {Array<[number, number]>} cells (row, col)
   */
  function outline(ctx, cell, cells) {
    ctx.strokeStyle = accent;
    if (cell >= 5) {
      ctx.lineWidth = 2;
      for (const [r, q] of cells) ctx.strokeRect(q * cell + 1, r * cell + 1, cell - 2, cell - 2);
      if (cell >= 9) {
        ctx.lineWidth = 1;
        ctx.strokeStyle = "#ffffff";
        for (const [r, q] of cells) ctx.strokeRect(q * cell + 3.5, r * cell + 3.5, cell - 7, cell - 7);
      }
      return;
    }
    const rows = cells.map(([r]) => r);
    const cols = cells.map(([, q]) => q);
    const [r0, r1, q0, q1] = [Math.min(...rows), Math.max(...rows) + 1, Math.min(...cols), Math.max(...cols) + 1];
    ctx.lineWidth = 2;
    ctx.strokeRect(q0 * cell - 1, r0 * cell - 1, (q1 - q0) * cell + 2, (r1 - r0) * cell + 2);
    if (cells.length > 1) {
      ctx.fillStyle = accent;
      for (const [r, q] of cells) ctx.fillRect(q * cell + (cell >> 1), r * cell + (cell >> 1), 1, 1);
    }
  }

  function paintMaps() {
    const m = loadMaps();
    if (!m || m.layer !== model.get("layer")) {
      caption.textContent = `loading ${model.get("layer")}…`;
      return;
    }
    syncControls();
    caption.textContent = describe();
    const g = m.geometry;
    const c = Number(model.get("channel"));
    const ci = Number(model.get("input_channel"));
    const [y, x] = position();
    const [, ho, wo] = m.output.shape;
    const outCell = cellSize(ho, wo);
    const octx = paintMap(outputMap, m.output, c, outCell, [0, 0, 0, 0], SIGNED, true);
    outline(octx, outCell, [[y, x]]);
    outGeom = { cell: outCell, h: ho, w: wo };
    Object.assign(outputMap.dataset, { cell: String(outCell), rows: String(ho), cols: String(wo) });
    const [, hi, wi] = m.input.shape;
    const [top, bottom, left, right] = g.padding;
    const inCell = cellSize(hi + top + bottom, wi + left + right);
    const ictx = paintMap(inputMap, m.input, ci, inCell, g.padding, UNSIGNED, false);
    const { rows, cols } = taps(g, y, x);
    outline(ictx, inCell, rows.flatMap((r) => cols.map((q) => /** @type {[number, number]} */ ([r + top, q + left]))));
    inputTitle.textContent = `input of ${m.layer} · channel ${ci} · padding hatched · `
      + `the ${g.kernel.join("×")} cells the kernel reads outlined`;
    outputTitle.textContent = `output · channel ${c} · click a cell or use the arrow keys`;
    markPainted(root, m.layer, performance.now());
    paintExplanation();
  }

  /** Whether the kernel's explanation is for what the controls show. */
  function current(/** @type {any} */ e) {
    const [y, x] = position();
    return e?.layer === model.get("layer") && e.channel === Number(model.get("channel"))
      && e.position?.[0] === y && e.position?.[1] === x && e.input_channel === Number(model.get("input_channel"));
  }

  function paintExplanation() {
    const e = model.get("_explain");
    if (!e?.patch) return;
    explain.classList.toggle("cnnw-stale", !current(e));
    const signed = lut(SIGNED);
    const [plo, phi] = maps && maps.layer === e.layer
      ? colorRange(maps.input.min[e.input_channel], maps.input.max[e.input_channel], false)
      : extent(e.patch);
    const [wlo, whi] = colorRange(...extent(e.weights), true);
    const [xlo, xhi] = colorRange(...extent(e.products), true);
    const here = e.rows.length * e.cols.length;
    grids.replaceChildren(
      figure(`input patch · channel ${e.input_channel} · rows ${span(e.rows)}, columns ${span(e.cols)}`,
        kernelGrid(e.patch, { table: lut(UNSIGNED), lo: plo, hi: phi, pad: e.pad, className: "cnnw-patch" })),
      h("span", { className: "cnnw-op", text: "×" }),
      figure(`weights of filter ${e.channel} · input channel ${e.input_channel}`,
        kernelGrid(e.weights, { table: signed, lo: wlo, hi: whi, className: "cnnw-weights" })),
      h("span", { className: "cnnw-op", text: "=" }),
      figure(`${here} products`,
        kernelGrid(e.products, { table: signed, lo: xlo, hi: xhi, pad: e.pad, className: "cnnw-products" })),
      h("span", { className: "cnnw-op", text: "→" }),
      h("span", { className: "cnnw-channel-sum", text: `Σ = ${num(e.channel_sum)}` }),
    );
    const [a, b] = e.group_channels;
    const group = e.groups > 1 ? ` (group ${e.group} of ${e.groups})` : "";
    sumsTitle.textContent = b - a > 1
      ? `sum of the products for each of the ${b - a} input channels ${a}‥${b - 1}${group} · click one to see its patch`
      : `one input channel: ${a}${group}`;
    const [slo, shi] = colorRange(...extent(e.channel_sums), true);
    const row = kernelGrid([e.channel_sums], {
      table: signed, lo: slo, hi: shi, here: [0, e.input_channel - a], className: "cnnw-sum-cells",
    });
    row.querySelectorAll(".cnnw-kcell").forEach((cell, k) => cell.setAttribute("data-channel", String(a + k)));
    sums.replaceChildren(row);
    const bias = e.bias === null ? "(no bias)" : `+ bias ${num(e.bias)}`;
    const verdict = e.match
      ? h("span", { className: "cnnw-ok", text: `✓ the map holds ${num(e.captured)}` })
      : h("span", {
        className: "cnnw-bad", text: `✗ the map holds ${num(e.captured)}: this layer's forward is not a plain convolution`,
      });
    result.replaceChildren(
      h("div", { text: `Σ over ${b - a} input channel${b - a === 1 ? "" : "s"} = ${num(e.sum)}   ${bias}   = ${num(e.value)}` }),
      verdict,
    );
    Object.assign(result.dataset, {
      sum: String(e.sum), bias: String(e.bias ?? 0), value: String(e.value), captured: String(e.captured),
      position: e.position.join(","), channel: String(e.channel), layer: e.layer,
    });
    steps.replaceChildren(...e.steps.map(stepView));
    root.dataset.explained = `${e.layer}|${e.channel}|${e.position.join(",")}|${e.input_channel}`;
  }

  /** One step after the conv: BatchNorm, ReLU or pooling, with its numbers. */
  function stepView(/** @type {any} */ s) {
    const head = `${s.name} (${s.type})`;
    const held = `map: ${num(s.captured)}`;
    if (s.kind === "norm") {
      const formula = `(${num(s.input)} − ${num(s.mean)}) / √(${num(s.var)} + ${num(s.eps)}) × ${num(s.weight)} + ${num(s.bias)}`;
      return h("div", { className: "cnnw-step", text: `${head}: ${formula} = ${num(s.value)} · ${held}` });
    }
    if (s.kind === "relu") {
      return h("div", { className: "cnnw-step", text: `${head}: max(0, ${num(s.input)}) = ${num(s.value)} · ${held}` });
    }
    const geo = s.geometry.kernel
      ? `${s.geometry.kernel.join("×")}, stride ${s.geometry.stride.join("×")}, padding ${s.geometry.padding.join("×")}`
      : `adaptive to ${s.geometry.output_size.join("×")}`;
    if (!s.position) {
      const text = `${head} ${geo}: no pooling window reads this position (the pool drops the last rows or columns)`;
      return h("div", { className: "cnnw-step", text });
    }
    const [lo, hi] = colorRange(...extent(s.values), s.reduce !== "max");
    const reduce = s.reduce === "max" ? "max" : `sum / ${s.divisor}`;
    return h("div", { className: "cnnw-step" }, [
      h("span", { text: `${head} ${geo}: window at rows ${span(s.rows)}, columns ${span(s.cols)} (this position outlined)` }),
      kernelGrid(s.values, {
        table: lut(s.reduce === "max" ? UNSIGNED : SIGNED), lo, hi, here: s.at, className: "cnnw-pool-window",
      }),
      h("span", { text: `${reduce} = ${num(s.value)} → pooled map (${s.position.join(", ")}) · ${held}` }),
    ]);
  }

  /** @param {[number, number]} pos */
  function setPosition(pos) {
    const [y, x] = position();
    if (pos[0] === y && pos[1] === x) return;
    model.set("position", pos);
    model.save_changes();
  }

  /** @param {MouseEvent} e */
  function cellAt(e) {
    if (!outGeom) return null;
    const r = outputMap.getBoundingClientRect();
    const x = Math.floor((e.clientX - r.left) / outGeom.cell);
    const y = Math.floor((e.clientY - r.top) / outGeom.cell);
    return y >= 0 && y < outGeom.h && x >= 0 && x < outGeom.w ? /** @type {[number, number]} */ ([y, x]) : null;
  }

  scope.listen(outputMap, "click", (/** @type {MouseEvent} */ e) => {
    const pos = cellAt(e);
    if (pos) setPosition(pos);
  });
  scope.listen(outputMap, "mousemove", (/** @type {MouseEvent} */ e) => {
    const pos = cellAt(e);
    if (!pos || !maps) {
      tooltip.hidden = true;
      return;
    }
    const [, H, W] = maps.output.shape;
    const c = Number(model.get("channel"));
    showTooltip(tooltip, `(${pos[0]}, ${pos[1]}) ≈ ${short(maps.output.data[c * H * W + pos[0] * W + pos[1]])}`, e, root);
  });
  scope.listen(outputMap, "mouseleave", () => {
    tooltip.hidden = true;
  });
  scope.listen(outputMap, "keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || !outGeom) return;
    const next = stepPosition(position(), outGeom.h, outGeom.w, e.key);
    if (!next) return;
    e.preventDefault(); // the page stays put; the position moves instead
    tooltip.hidden = true;
    setPosition(next);
  });
  scope.listen(sums, "click", (/** @type {MouseEvent} */ e) => {
    const cell = /** @type {Element} */ (e.target).closest("[data-channel]");
    if (!cell) return;
    model.set("input_channel", Number(cell.getAttribute("data-channel")));
    model.save_changes();
  });
  /** A number input's value as an int inside its min‥max (the kernel refuses others). */
  const clamped = (/** @type {HTMLInputElement} */ input) => (/** @type {string} */ v) =>
    Math.min(Number(input.max), Math.max(Number(input.min), Math.round(Number(v) || 0)));
  bindControl(scope, model, layerSel.select, "layer");
  bindControl(scope, model, channelIn, "channel", { parse: clamped(channelIn) });
  bindControl(scope, model, inputIn, "input_channel", { parse: clamped(inputIn) });

  for (const key of ["_maps", "layer", "layers", "channel", "position", "input_channel"]) {
    scope.onModel(model, `change:${key}`, paintMaps);
  }
  scope.onModel(model, "change:_explain", paintExplanation);
  paintMaps();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderExplainer(model, el);
  },
};
