import { test } from "node:test";
import assert from "node:assert/strict";
import { filterTiles } from "../src/filters.js";

// 2 filters × 2 input channels × 1×2 kernel
const w = new Float32Array([1, 2, 3, 6, /* filter 1 */ -1, 0, -3, 4]);
const shape = [2, 2, 1, 2];

test("mean over input channels", () => {
  const t = filterTiles(w, shape, -1);
  assert.equal(t.rgb, false);
  assert.deepEqual(Array.from(t.values), [2, 4, -2, 2]);
  assert.deepEqual(t.min, [2, -2]);
  assert.deepEqual(t.max, [4, 2]);
});

test("one input channel of every filter", () => {
  assert.deepEqual(Array.from(filterTiles(w, shape, 1).values), [3, 6, -3, 4]);
  assert.throws(() => filterTiles(w, shape, 2), /out of range/);
});

test("3 input channels per filter with -1 is true colour; a chosen channel is not", () => {
  const w3 = new Float32Array(2 * 3 * 4).map((_, i) => i);
  const rgb = filterTiles(w3, [2, 3, 2, 2], -1);
  assert.equal(rgb.rgb, true);
  assert.equal(rgb.values.length, 24);
  assert.deepEqual(rgb.min, [0, 12]);
  assert.deepEqual(rgb.max, [11, 23]);
  assert.equal(filterTiles(w3, [2, 3, 2, 2], 0).rgb, false);
  // grouped conv with 3 channels per group: not colours, so the mean
  const grouped = filterTiles(w3, [2, 3, 2, 2], -1, 4);
  assert.equal(grouped.rgb, false);
  assert.deepEqual(Array.from(grouped.values.subarray(0, 4)), [4, 5, 6, 7]);
});

test("depthwise (1 input channel per filter) and 1×1 kernels", () => {
  const dw = filterTiles(new Float32Array([5, -5, 7]), [3, 1, 1, 1], -1);
  assert.deepEqual(Array.from(dw.values), [5, -5, 7]);
  assert.deepEqual(dw.min, [5, -5, 7]);
});
