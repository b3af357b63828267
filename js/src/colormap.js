// The one colormap implementation: 256-entry RGB lookup tables and the value → colour-index
// normalisation every view uses. The tables are cnn_widgets/colormaps.json (generated from matplotlib by
// js/scripts/make_colormaps.py), the same file cnn_widgets/colormap.py reads for Python-side PNG exports.

import COLORMAP_DATA from "../../cnn_widgets/colormaps.json" with { type: "json" };

/** @type {Record<string, string>} base64 of 768 bytes per colormap */
const LUT_BASE64 = COLORMAP_DATA.luts;
/** @type {string[]} */
const DIVERGING = COLORMAP_DATA.diverging;

/** Names of the available colormaps, in the order the menus show them. */
export const COLORMAPS = Object.keys(LUT_BASE64);

/** @type {Map<string, Uint8Array>} */
const cache = new Map();

/**
 * The 256×RGB lookup table of a colormap (768 bytes, R,G,B per entry).
 * @param {string} name
 * @returns {Uint8Array}
 */
export function lut(name) {
  let table = cache.get(name);
  if (table) return table;
  const b64 = LUT_BASE64[name];
  if (!b64) throw new Error(`unknown colormap ${JSON.stringify(name)}; available: ${COLORMAPS.join(", ")}`);
  const bin = atob(b64);
  table = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) table[i] = bin.charCodeAt(i);
  cache.set(name, table);
  return table;
}

/**
 * Whether a colormap is diverging (centred on zero).
 * @param {string} name
 */
export function isDiverging(name) {
  return DIVERGING.includes(name);
}

/**
 * The colour range for data spanning [lo, hi]: symmetric about zero for diverging maps, and never
 * empty (a constant tile maps to the middle of the map instead of dividing by zero).
 * @param {number} lo
 * @param {number} hi
 * @param {boolean} diverging
 * @returns {[number, number]}
 */
export function colorRange(lo, hi, diverging) {
  if (diverging) {
    const m = Math.max(Math.abs(lo), Math.abs(hi));
    return m > 0 ? [-m, m] : [-1, 1];
  }
  if (!(hi > lo)) return [lo - 1, lo + 1];
  return [lo, hi];
}

/**
 * @typedef {"channel" | "layer" | "global"} ScaleMode
 */

/**
 * Per-tile colour ranges for a normalisation mode.
 * - "channel": each tile on its own min/max (structure inside every channel is visible);
 * - "layer": one range over all tiles of the layer (channels compare by brightness);
 * - "global": one range over every layer (`global` = [min, max] across layers).
 * @param {ScaleMode} mode
 * @param {number[]} min per-tile minimum
 * @param {number[]} max per-tile maximum
 * @param {boolean} diverging
 * @param {[number, number]} [global]
 * @returns {{lo: Float64Array, hi: Float64Array}}
 */
export function tileRanges(mode, min, max, diverging, global) {
  const n = min.length;
  const lo = new Float64Array(n);
  const hi = new Float64Array(n);
  let shared = null;
  if (mode === "layer") {
    let a = Infinity;
    let b = -Infinity;
    for (let c = 0; c < n; c++) {
      if (min[c] < a) a = min[c];
      if (max[c] > b) b = max[c];
    }
    shared = colorRange(n ? a : 0, n ? b : 0, diverging);
  } else if (mode === "global") {
    if (!global) throw new Error("global scale needs the [min, max] over all layers");
    shared = colorRange(global[0], global[1], diverging);
  } else if (mode !== "channel") {
    throw new Error(`unknown scale ${JSON.stringify(mode)}; expected channel, layer or global`);
  }
  for (let c = 0; c < n; c++) {
    const [a, b] = shared ?? colorRange(min[c], max[c], diverging);
    lo[c] = a;
    hi[c] = b;
  }
  return { lo, hi };
}

/**
 * The LUT index (0‥255) of value v in the range [lo, hi]; outside values clamp to the ends.
 * @param {number} v
 * @param {number} lo
 * @param {number} hi
 */
export function colorIndex(v, lo, hi) {
  const t = ((v - lo) / (hi - lo)) * 255;
  if (!(t > 0)) return 0; // also catches NaN
  return t >= 255 ? 255 : Math.round(t);
}
