import { test } from "node:test";
import assert from "node:assert/strict";
import { lut } from "../src/colormap.js";
import {
  cellColor, cellSize, describePadding, extent, groupChannels, num, short, span, stepPosition, taps,
} from "../src/widgets/conv_explainer.js";

/** Geometry as the kernel sends it; padding is [top, bottom, left, right]. */
const geo = (over = {}) => ({
  kernel: [3, 3], stride: [1, 1], dilation: [1, 1], groups: 1, padding: [1, 1, 1, 1], padding_mode: "zeros",
  in_channels: 8, out_channels: 16, bias: true, ...over,
});

/** The input rows an output row reads, by the definition of a convolution: y·s − p + i·d. */
const reference = (y, k, s, d, p) => Array.from({ length: k }, (_, i) => y * s - p + i * d);

test("taps: stride, padding and dilation as torch applies them", () => {
  for (const [k, s, d, p] of [[3, 1, 1, 1], [3, 2, 1, 1], [3, 1, 2, 2], [5, 2, 2, 0], [1, 1, 1, 0], [7, 2, 1, 3]]) {
    const g = geo({ kernel: [k, k], stride: [s, s], dilation: [d, d], padding: [p, p, p, p] });
    for (const y of [0, 1, 4]) {
      const { rows, cols } = taps(g, y, y + 1);
      assert.deepEqual(rows, reference(y, k, s, d, p), `k${k} s${s} d${d} p${p} y${y}`);
      assert.deepEqual(cols, reference(y + 1, k, s, d, p));
    }
  }
  // position (0, 0) of a padded conv reads the padding first; non-square kernels and asymmetric padding
  const g = geo({ kernel: [3, 5], stride: [2, 1], padding: [0, 1, 2, 2] });
  assert.deepEqual(taps(g, 0, 0), { rows: [0, 1, 2], cols: [-2, -1, 0, 1, 2] });
  assert.deepEqual(taps(g, 3, 4), { rows: [6, 7, 8], cols: [2, 3, 4, 5, 6] });
});

test("group channels: each output channel reads its group's slice of the input", () => {
  const g = geo({ groups: 2, in_channels: 8, out_channels: 6 });
  assert.deepEqual([0, 1, 2].map((c) => groupChannels(g, c)), [[0, 4], [0, 4], [0, 4]]);
  assert.deepEqual([3, 4, 5].map((c) => groupChannels(g, c)), [[4, 8], [4, 8], [4, 8]]);
  const dw = geo({ groups: 8, in_channels: 8, out_channels: 16 });
  assert.deepEqual(groupChannels(dw, 5), [2, 3]);
  assert.deepEqual(groupChannels(geo(), 15), [0, 8]);
});

test("position keys move by one cell inside the map; Home and End jump to the corners", () => {
  assert.deepEqual(stepPosition([2, 3], 5, 6, "ArrowUp"), [1, 3]);
  assert.deepEqual(stepPosition([2, 3], 5, 6, "ArrowDown"), [3, 3]);
  assert.deepEqual(stepPosition([2, 3], 5, 6, "ArrowLeft"), [2, 2]);
  assert.deepEqual(stepPosition([2, 3], 5, 6, "ArrowRight"), [2, 4]);
  assert.deepEqual(stepPosition([0, 0], 5, 6, "ArrowUp"), [0, 0]);
  assert.deepEqual(stepPosition([4, 5], 5, 6, "ArrowRight"), [4, 5]);
  assert.deepEqual(stepPosition([4, 5], 5, 6, "ArrowDown"), [4, 5]);
  assert.deepEqual(stepPosition([2, 3], 5, 6, "Home"), [0, 0]);
  assert.deepEqual(stepPosition([2, 3], 5, 6, "End"), [4, 5]);
  assert.equal(stepPosition([2, 3], 5, 6, "Enter"), null);
});

test("cells are whole pixels, never below 2 or above 32, and a map fits the target size when it can", () => {
  assert.equal(cellSize(3, 3), 32);
  assert.equal(cellSize(16, 16), 18);
  assert.equal(cellSize(224, 224), 2);
  assert.ok(cellSize(34, 34) * 34 <= 288);
  assert.equal(cellSize(0, 0), 32);
});

test("numbers: 7 significant digits in the equation, 3 in grid cells, exponents for tiny values", () => {
  assert.equal(num(-0.27499422430992126), "-0.2749942");
  assert.equal(num(0), "0");
  assert.equal(num(12345.678901), "12345.68");
  assert.equal(num(1.5e-6), "1.5e-6");
  assert.equal(num(null), "—");
  assert.ok(Math.abs(Number(num(0.123456789)) - 0.123456789) < 1e-7);
  assert.equal(short(0.123456), "0.123");
  assert.equal(short(-12.345), "-12.3");
  assert.equal(short(0.0001234), "1.2e-4");
  assert.equal(short(null), "");
});

test("cell colours: the colormap's ends at the range's ends, readable text on each", () => {
  const table = lut("RdBu_r");
  const low = cellColor(table, -1, -1, 1);
  const high = cellColor(table, 1, -1, 1);
  const mid = cellColor(table, 0, -1, 1);
  assert.equal(low.bg, `rgb(${table[0]},${table[1]},${table[2]})`);
  assert.equal(high.bg, `rgb(${table[765]},${table[766]},${table[767]})`);
  assert.equal(mid.fg, "#000", "the pale middle of RdBu_r takes black text");
  assert.equal(cellColor(lut("viridis"), 0, 0, 1).fg, "#fff", "viridis' dark low end takes white text");
});

test("extent skips padding (null) and non-finite values", () => {
  assert.deepEqual(extent([[1, null, -2], [3, Number.NaN, 0]]), [-2, 3]);
  assert.deepEqual(extent([null, null]), [0, 0]);
  assert.deepEqual(extent([0.5]), [0.5, 0.5]);
});

test("padding is described as applied: none, symmetric, per side, and its mode", () => {
  assert.equal(describePadding(geo({ padding: [0, 0, 0, 0] })), "no padding");
  assert.equal(describePadding(geo({ padding: [1, 1, 2, 2] })), "padding 1×2");
  assert.equal(describePadding(geo({ padding: [1, 2, 1, 2] })), "padding top 1 bottom 2 left 1 right 2");
  assert.equal(describePadding(geo({ padding: [1, 1, 1, 1], padding_mode: "reflect" })), "padding 1×1 (reflect)");
  assert.equal(span([-1, 0, 1]), "-1‥1");
  assert.equal(span([4]), "4‥4");
});
