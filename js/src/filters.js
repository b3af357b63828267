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
 * Whether k = -1 shows true colour: the layer reads exactly 3 channels (an RGB image), ungrouped.
 * A grouped conv with 3 channels per group is not looking at colours, so it gets the mean instead.
 * @param {number[]} shape [O, I, kh, kw]
 * @param {number} groups
 */
export function isRgbLayer(shape, groups) {
  return shape[1] === 3 && groups === 1;
}

/**
 * One tile per output filter: input channel `k` of every filter, or with k = -1 the mean over input
 * channels — or, for an RGB layer (see isRgbLayer), the 3 input channels as R, G, B.
 * @param {Float32Array} w weights, row-major O×I×kh×kw
 * @param {number[]} shape [O, I, kh, kw]
 * @param {number} k input channel, -1 for mean / RGB
 * @param {number} [groups] the conv's groups (1 unless grouped)
 * @returns {FilterTiles}
 */
export function filterTiles(w, shape, k, groups = 1) {
  const [O, I, kh, kw] = shape;
  const size = kh * kw;
  const rgb = k === -1 && isRgbLayer(shape, groups);
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
