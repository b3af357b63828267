import { test } from "node:test";
import assert from "node:assert/strict";
import { PAD_COLORS, channelOrder, padOutside, patchPixels } from "../src/dataset_views.js";
import { importanceOrder } from "../src/widgets/channel_importance.js";

test("channel order: index, or descending by mean / importance with ties to the lower index", () => {
  const means = [0.5, 2, 0.5, -1];
  assert.deepEqual(Array.from(channelOrder("channel", means, null, 4)), [0, 1, 2, 3]);
  assert.deepEqual(Array.from(channelOrder("mean", means, null, 4)), [1, 0, 2, 3]);
  assert.deepEqual(Array.from(channelOrder("importance", means, [0.1, null, 0.3, 0.1], 4)), [2, 0, 3, 1]);
  // importance not computed yet: index order
  assert.deepEqual(Array.from(channelOrder("importance", means, null, 4)), [0, 1, 2, 3]);
  assert.throws(() => channelOrder("max", means, null, 4), /unknown sort/);
});

test("padding: every pixel outside the box is checkered, inside untouched", () => {
  const side = 8;
  const rgba = new Uint8ClampedArray(4 * side * side).fill(7);
  padOutside(rgba, side, [2, 1, 6, 8]);
  const at = (y, x) => Array.from(rgba.subarray(4 * (y * side + x), 4 * (y * side + x) + 3));
  assert.deepEqual(at(2, 1), [7, 7, 7]);
  assert.deepEqual(at(5, 7), [7, 7, 7]);
  assert.deepEqual(at(0, 0), PAD_COLORS[0]);
  assert.deepEqual(at(0, 4), PAD_COLORS[1]);
  assert.deepEqual(at(6, 3), PAD_COLORS[1]);
  assert.deepEqual(at(3, 0), PAD_COLORS[0]);
});

test("a patch blends the heat over the image inside the box only", () => {
  const side = 2;
  const rgb = new Uint8Array(12).fill(100);
  const table = new Uint8Array(768);
  for (let i = 0; i < 256; i++) table.set([i, 0, 255 - i], 3 * i);
  const heat = [1, 0, 1, 1];
  const rgba = patchPixels(rgb, heat, [0, 0, 1, 2], side, { lo: 0, hi: 1, table, opacity: 0.5 });
  assert.deepEqual(Array.from(rgba.subarray(0, 4)), [178, 50, 50, 255]); // (100 + 255) / 2, 50, 50
  assert.deepEqual(Array.from(rgba.subarray(4, 8)), [50, 50, 178, 255]); // value 0: the map's low end
  assert.deepEqual(Array.from(rgba.subarray(8, 11)), PAD_COLORS[0]);
});

test("importance order matches the chart's: descending, ties by index, NaN last", () => {
  const rows = { permutation: [0.1, NaN, 0.3, 0.1], zeroing: [0, 1, 0, 2] };
  assert.deepEqual(importanceOrder("permutation", rows), [2, 0, 3, 1]);
  assert.deepEqual(importanceOrder("zeroing", rows), [3, 1, 0, 2]);
  assert.deepEqual(importanceOrder("channel", rows), [0, 1, 2, 3]);
});
