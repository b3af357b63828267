import { test } from "node:test";
import assert from "node:assert/strict";
import { COLORMAPS, colorIndex, colorRange, isDiverging, lut, tileRanges } from "../src/colormap.js";

test("every required colormap has a 256×RGB table", () => {
  for (const name of ["viridis", "magma", "inferno", "plasma", "cividis", "gray", "RdBu_r", "coolwarm"]) {
    assert.ok(COLORMAPS.includes(name), name);
    const t = lut(name);
    assert.ok(t instanceof Uint8Array);
    assert.equal(t.length, 768);
  }
  assert.throws(() => lut("virdis"), /unknown colormap/);
});

test("tables match matplotlib at the ends", () => {
  assert.deepEqual(Array.from(lut("viridis").subarray(0, 3)), [68, 1, 84]);
  assert.deepEqual(Array.from(lut("viridis").subarray(765)), [253, 231, 37]);
  assert.deepEqual(Array.from(lut("gray").subarray(0, 3)), [0, 0, 0]);
  assert.deepEqual(Array.from(lut("gray").subarray(765)), [255, 255, 255]);
  // RdBu_r: blue at the low end, red at the high end, near-white in the middle
  const rdbu = lut("RdBu_r");
  assert.ok(rdbu[2] > rdbu[0]);
  assert.ok(rdbu[765] > rdbu[767]);
  assert.ok(Math.min(rdbu[3 * 128], rdbu[3 * 128 + 1], rdbu[3 * 128 + 2]) > 230);
  assert.ok(isDiverging("RdBu_r") && isDiverging("coolwarm") && !isDiverging("viridis"));
});

test("colorIndex maps a range onto 0‥255 and clamps outside it", () => {
  assert.equal(colorIndex(0, 0, 1), 0);
  assert.equal(colorIndex(1, 0, 1), 255);
  assert.equal(colorIndex(0.5, 0, 1), 128);
  assert.equal(colorIndex(-3, 0, 1), 0);
  assert.equal(colorIndex(7, 0, 1), 255);
  assert.equal(colorIndex(NaN, 0, 1), 0);
});

test("colorRange: symmetric for diverging maps, never empty", () => {
  assert.deepEqual(colorRange(-1, 3, true), [-3, 3]);
  assert.deepEqual(colorRange(2, 5, false), [2, 5]);
  assert.deepEqual(colorRange(4, 4, false), [3, 5]);
  assert.deepEqual(colorRange(0, 0, true), [-1, 1]);
  // a constant tile lands in the middle of the map
  const [lo, hi] = colorRange(4, 4, false);
  assert.equal(colorIndex(4, lo, hi), 128);
});

test("tileRanges: channel, layer and global normalisation", () => {
  const min = [0, -2, 1];
  const max = [1, 2, 5];
  const ch = tileRanges("channel", min, max, false);
  assert.deepEqual(Array.from(ch.lo), [0, -2, 1]);
  assert.deepEqual(Array.from(ch.hi), [1, 2, 5]);
  const layer = tileRanges("layer", min, max, false);
  assert.deepEqual(Array.from(layer.lo), [-2, -2, -2]);
  assert.deepEqual(Array.from(layer.hi), [5, 5, 5]);
  const global = tileRanges("global", min, max, false, [-10, 20]);
  assert.deepEqual(Array.from(global.lo), [-10, -10, -10]);
  assert.deepEqual(Array.from(global.hi), [20, 20, 20]);
  const div = tileRanges("channel", min, max, true);
  assert.deepEqual(Array.from(div.lo), [-1, -2, -5]);
  assert.deepEqual(Array.from(div.hi), [1, 2, 5]);
  assert.throws(() => tileRanges("global", min, max, false), /global/);
  assert.throws(() => tileRanges(/** @type {any} */ ("bogus"), min, max, false), /unknown scale/);
});

test("the tables are cnn_widgets/colormaps.json, the file Python's PNG export reads", async () => {
  const { readFile } = await import("node:fs/promises");
  const data = JSON.parse(await readFile(new URL("../../cnn_widgets/colormaps.json", import.meta.url), "utf8"));
  assert.deepEqual(COLORMAPS, Object.keys(data.luts));
  for (const name of COLORMAPS) {
    assert.deepEqual(Array.from(lut(name)), Array.from(Buffer.from(data.luts[name], "base64")), name);
    assert.equal(isDiverging(name), data.diverging.includes(name), name);
  }
});
