// Tile grids: layout (square cells, DOM contract: slot i is centred at ((i%cols+.5)·cell,
// (⌊i/cols⌋+.5)·cell)), keyboard steps between slots, display order, colouring tiles through a LUT
// and nearest-neighbour blitting into one RGBA pixel buffer. Pure functions over typed arrays, so
// node --test covers them.

import { colorIndex } from "./colormap.js";

/**
 * @typedef {Object} Layout
 * @property {number} count number of tiles
 * @property {number} cols
 * @property {number} rows
 * @property {number} cell CSS px per cell, gap included
 * @property {number} gap
 * @property {number} tileH source rows per tile
 * @property {number} tileW source columns per tile
 * @property {number} drawH displayed rows per tile (px)
 * @property {number} drawW displayed columns per tile (px)
 * @property {number} width canvas width (px)
 * @property {number} height canvas height (px)
 */

/**
 * Lay out `count` tiles of tileH×tileW source pixels in square cells.
 * Tiles are magnified by a whole factor when they fit (crisp nearest-neighbour pixels), otherwise
 * shrunk to the cell; cells are at most `maxCell` and the grid aims at `maxWidth`, both (and `minCell`)
 * times `scale`: the view's font_scale, so tiles grow with the text on a projector.
 * @param {{count: number, tileH: number, tileW: number, cols?: number, maxWidth?: number,
 *   maxCell?: number, minCell?: number, scale?: number}} opts
 * @returns {Layout}
 */
export function layoutGrid({ count, tileH, tileW, cols, maxWidth = 640, maxCell = 96, minCell = 8, scale = 1 }) {
  const n = Math.max(0, count | 0);
  const c = Math.max(1, Math.min(n || 1, cols ?? Math.ceil(Math.sqrt(n))));
  const rows = Math.ceil(n / c);
  const k = Number.isFinite(scale) && scale > 0 ? scale : 1;
  const [width, most, least] = [maxWidth, maxCell, minCell].map((v) => Math.floor(v * k));
  const budget = Math.max(least, Math.min(most, Math.floor(width / c)));
  const gap = budget >= 16 ? 2 : 1;
  const inner = budget - gap;
  const big = Math.max(tileH, tileW, 1);
  let drawH;
  let drawW;
  if (big <= inner) {
    const f = Math.floor(inner / big);
    drawH = tileH * f;
    drawW = tileW * f;
  } else {
    drawH = Math.max(1, Math.round((inner * tileH) / big));
    drawW = Math.max(1, Math.round((inner * tileW) / big));
  }
  const cell = Math.max(drawH, drawW) + gap;
  return { count: n, cols: c, rows, cell, gap, tileH, tileW, drawH, drawW, width: c * cell, height: rows * cell };
}

/**
 * Top-left corner (px) of the tile drawn in display slot i (centred in its cell).
 * @param {Layout} L
 * @param {number} slot
 * @returns {[number, number]} [x, y]
 */
export function tileOrigin(L, slot) {
  const col = slot % L.cols;
  const row = Math.floor(slot / L.cols);
  return [col * L.cell + ((L.cell - L.drawW) >> 1), row * L.cell + ((L.cell - L.drawH) >> 1)];
}

/**
 * Centre (px) of display slot i, as the DOM contract states it.
 * @param {Layout} L
 * @param {number} slot
 * @returns {[number, number]}
 */
export function slotCenter(L, slot) {
  return [((slot % L.cols) + 0.5) * L.cell, (Math.floor(slot / L.cols) + 0.5) * L.cell];
}

/**
 * The display slot under canvas position (x, y) in CSS px and the source pixel of the tile there.
 * @param {Layout} L
 * @param {number} x
 * @param {number} y
 * @returns {{slot: number, row: number, col: number} | null} null outside every cell
 */
export function hitTest(L, x, y) {
  if (x < 0 || y < 0) return null;
  const col = Math.floor(x / L.cell);
  const row = Math.floor(y / L.cell);
  if (col >= L.cols || row >= L.rows) return null;
  const slot = row * L.cols + col;
  if (slot >= L.count) return null;
  const [x0, y0] = tileOrigin(L, slot);
  const clamp = (v, n) => Math.min(n - 1, Math.max(0, v));
  return {
    slot,
    row: clamp(Math.floor(((y - y0) * L.tileH) / L.drawH), L.tileH),
    col: clamp(Math.floor(((x - x0) * L.tileW) / L.drawW), L.tileW),
  };
}

/**
 * The display slot a key moves a grid selection to: ArrowLeft/ArrowRight one slot back/on,
 * ArrowUp/ArrowDown one row (staying put where there is no row), Home/End the first/last slot; from no
 * selection (slot < 0) every one of those keys goes to slot 0, End to the last. Ends do not wrap.
 * @param {Layout} L
 * @param {number} slot the selected slot, or -1
 * @param {string} key KeyboardEvent.key
 * @returns {number | null} the new slot (possibly the same), or null for a key the grid does not use
 */
export function stepSlot(L, slot, key) {
  const n = L.count;
  if (!n || !STEP_KEYS.has(key)) return null;
  if (key === "End") return n - 1;
  if (slot < 0 || slot >= n || key === "Home") return 0;
  if (key === "ArrowLeft") return Math.max(0, slot - 1);
  if (key === "ArrowRight") return Math.min(n - 1, slot + 1);
  if (key === "ArrowUp") return slot - L.cols >= 0 ? slot - L.cols : slot;
  return slot + L.cols < n ? slot + L.cols : slot; // ArrowDown
}

const STEP_KEYS = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"]);

/**
 * @typedef {"index" | "mean" | "max"} SortMode
 */

/**
 * Display order (slot → channel): index order, or descending by per-channel mean / max (ties keep
 * index order).
 * @param {SortMode} mode
 * @param {{mean: ArrayLike<number>, max: ArrayLike<number>}} stats
 * @param {number} count
 * @returns {Int32Array}
 */
export function sortOrder(mode, stats, count) {
  const order = Int32Array.from({ length: count }, (_, i) => i);
  if (mode === "index") return order;
  const key = mode === "mean" ? stats.mean : mode === "max" ? stats.max : null;
  if (!key) throw new Error(`unknown sort ${JSON.stringify(mode)}; expected index, mean or max`);
  return order.sort((a, b) => key[b] - key[a] || a - b);
}

/**
 * Per-tile mean of `count` consecutive tiles of `size` values.
 * @param {ArrayLike<number>} values
 * @param {number} count
 * @returns {Float64Array}
 */
export function tileMeans(values, count) {
  const size = count ? values.length / count : 0;
  const out = new Float64Array(count);
  for (let c = 0; c < count; c++) {
    let s = 0;
    for (let i = c * size, end = i + size; i < end; i++) s += values[i];
    out[c] = size ? s / size : 0;
  }
  return out;
}

const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * An opaque RGBA pixel packed as a Uint32 for a Uint32Array view of ImageData bytes.
 * @param {number} r
 * @param {number} g
 * @param {number} b
 */
export function packRGB(r, g, b) {
  return LITTLE ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
}

/**
 * The 256 packed colours of a LUT.
 * @param {Uint8Array} table 768 bytes
 * @returns {Uint32Array}
 */
export function packLut(table) {
  const out = new Uint32Array(256);
  for (let i = 0; i < 256; i++) out[i] = packRGB(table[3 * i], table[3 * i + 1], table[3 * i + 2]);
  return out;
}

/**
 * Colour `count` scalar tiles (consecutive blocks of `size` values) through a packed LUT, tile c over
 * its range [lo[c], hi[c]].
 * @param {ArrayLike<number>} values
 * @param {number} count
 * @param {ArrayLike<number>} lo
 * @param {ArrayLike<number>} hi
 * @param {Uint32Array} colors packed LUT (see packLut)
 * @param {Uint32Array} [reuse] written into when it has the right length (saves garbage on repaints)
 * @returns {Uint32Array} packed pixels, same layout as values
 */
export function colorizeScalar(values, count, lo, hi, colors, reuse) {
  const out = reuse?.length === values.length ? reuse : new Uint32Array(values.length);
  const size = count ? values.length / count : 0;
  for (let c = 0; c < count; c++) {
    const a = lo[c];
    const b = hi[c];
    for (let i = c * size, end = i + size; i < end; i++) out[i] = colors[colorIndex(values[i], a, b)];
  }
  return out;
}

/**
 * Colour `count` RGB tiles (each 3 consecutive planes of `size` values: R, G, B) as true colour, tile
 * c mapped from [lo[c], hi[c]] to 0‥255 on all three planes alike.
 * @param {ArrayLike<number>} values count×3×size
 * @param {number} count
 * @param {ArrayLike<number>} lo
 * @param {ArrayLike<number>} hi
 * @returns {Uint32Array} count×size packed pixels
 */
export function colorizeRgb(values, count, lo, hi) {
  const size = count ? values.length / (3 * count) : 0;
  const out = new Uint32Array(count * size);
  for (let c = 0; c < count; c++) {
    const a = lo[c];
    const b = hi[c];
    const base = 3 * c * size;
    for (let i = 0; i < size; i++) {
      out[c * size + i] = packRGB(
        colorIndex(values[base + i], a, b),
        colorIndex(values[base + size + i], a, b),
        colorIndex(values[base + 2 * size + i], a, b),
      );
    }
  }
  return out;
}

/**
 * Copy coloured tiles into a canvas-sized pixel buffer, slot i showing tile order[i], magnified or
 * shrunk by nearest neighbour. Gaps and empty slots stay transparent (the page background shows).
 * @param {Uint32Array} dst width×height packed pixels (a Uint32Array over ImageData.data.buffer)
 * @param {Layout} L
 * @param {Uint32Array} tiles count×tileH×tileW packed pixels
 * @param {ArrayLike<number>} order
 */
export function blitTiles(dst, L, tiles, order) {
  dst.fill(0);
  const { tileH, tileW, drawH, drawW, width } = L;
  const xs = new Int32Array(drawW);
  for (let x = 0; x < drawW; x++) xs[x] = Math.floor((x * tileW) / drawW);
  const size = tileH * tileW;
  for (let slot = 0; slot < L.count; slot++) {
    const base = order[slot] * size;
    const [x0, y0] = tileOrigin(L, slot);
    for (let y = 0; y < drawH; y++) {
      const src = base + Math.floor((y * tileH) / drawH) * tileW;
      const row = (y0 + y) * width + x0;
      for (let x = 0; x < drawW; x++) dst[row + x] = tiles[src + xs[x]];
    }
  }
}
