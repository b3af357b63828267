// Conv weights (O × I × kh × kw, I = input channels per filter) → the tiles FilterGrid shows.

import { sliceRange } from "./codec.js";

/**
 * @typedef {Object} FilterTiles
 * @property {Float32Array} values count×kh×kw scalar tiles, or count×3×kh×kw when rgb
 * @property {number} count number of filters
 * @property {boolean} rgb true colour: each tile is the filter's 3 input channels as R, G, B
 * @property {number[]} min per-tile minimum
 * @property {number[]} max per-tile maximum
 */

/**
 * One tile per output filter: input channel `k` of every filter, or with k = -1 the mean over input
 * channels — except when every filter has exactly 3 input channels, which are kept as RGB.
 * @param {Float32Array} w weights, row-major O×I×kh×kw
 * @param {number[]} shape [O, I, kh, kw]
 * @param {number} k input channel, -1 for mean / RGB
 * @returns {FilterTiles}
 */
export function filterTiles(w, shape, k) {
  const [O, I, kh, kw] = shape;
  const size = kh * kw;
  const rgb = k === -1 && I === 3;
  if (k < -1 || k >= I) throw new Error(`input channel ${k} is out of range: filters have ${I} input channels`);
  let values;
  if (rgb) {
    values = w;
  } else if (k >= 0) {
    values = new Float32Array(O * size);
    for (let o = 0; o < O; o++) values.set(w.subarray((o * I + k) * size, (o * I + k + 1) * size), o * size);
  } else {
    values = new Float32Array(O * size);
    for (let o = 0; o < O; o++) {
      for (let i = 0; i < I; i++) {
        const base = (o * I + i) * size;
        for (let p = 0; p < size; p++) values[o * size + p] += w[base + p];
      }
      for (let p = 0; p < size; p++) values[o * size + p] /= I;
    }
  }
  const { min, max } = sliceRange(values, O);
  return { values, count: O, rgb, min, max };
}
