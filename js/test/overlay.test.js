import { test } from "node:test";
import assert from "node:assert/strict";
import { lut } from "../src/colormap.js";
import {
  SIGNS, SIGNED_COLORMAP, blendOverlay, detailSize, mergeSorted, overlayColormap, overlayRange, percentile, rgbToRgba,
  signValue, sortedMagnitudes,
} from "../src/overlay.js";

test("RGB bytes become opaque RGBA", () => {
  const out = rgbToRgba(new Uint8Array([1, 2, 3, 4, 5, 6]), 1, 2);
  assert.deepEqual(Array.from(out), [1, 2, 3, 255, 4, 5, 6, 255]);
  assert.throws(() => rgbToRgba(new Uint8Array(5), 1, 2), /expected 6/);
});

test("detail size keeps the image's aspect ratio", () => {
  assert.deepEqual(detailSize(224, 224, 320), [320, 320]);
  assert.deepEqual(detailSize(64, 128, 320), [320, 160]);
  assert.deepEqual(detailSize(100, 50, 320), [160, 320]);
});

/** A grey LUT (index i → (i, i, i)), so expected colours are easy to state. */
const GREY = new Uint8Array(768).map((_, k) => Math.floor(k / 3));

test("sign modes keep the requested part of a signed map and leave NaN alone", () => {
  const v = [-2, -0.5, 0, 0.5, 2];
  assert.deepEqual(v.map((x) => signValue(x, "positive")), [0, 0, 0, 0.5, 2]);
  assert.deepEqual(v.map((x) => signValue(x, "negative")), [2, 0.5, 0, 0, 0]);
  assert.deepEqual(v.map((x) => signValue(x, "absolute")), [2, 0.5, 0, 0.5, 2]);
  assert.deepEqual(v.map((x) => signValue(x, "all")), v);
  for (const s of SIGNS) assert.ok(Number.isNaN(signValue(NaN, s)));
  assert.throws(() => signValue(1, /** @type {any} */ ("both")), /unknown sign "both"/);
});

test("percentile interpolates like numpy.percentile", () => {
  const s = Float32Array.from([0, 1, 2, 3, 4]);
  assert.equal(percentile(s, 0), 0);
  assert.equal(percentile(s, 100), 4);
  assert.equal(percentile(s, 50), 2);
  assert.ok(Math.abs(percentile(s, 90) - 3.6) < 1e-6);
  assert.ok(Number.isNaN(percentile(new Float32Array(0), 50)));
});

test("sorted magnitudes drop NaN and follow the sign", () => {
  const v = Float32Array.from([3, NaN, -1, 0.5, -4]);
  assert.deepEqual(Array.from(sortedMagnitudes(v, "positive")), [0, 0, 0.5, 3]);
  assert.deepEqual(Array.from(sortedMagnitudes(v, "negative")), [0, 0, 1, 4]);
  assert.deepEqual(Array.from(sortedMagnitudes(v, "all")), [0.5, 1, 3, 4]);
  assert.deepEqual(Array.from(mergeSorted([Float32Array.from([1, 5]), Float32Array.from([2, 3])])), [1, 2, 3, 5]);
});

test("percentile clipping: the range ends at the percentile, so one outlier does not wash out the map", () => {
  const v = new Float32Array(101);
  for (let i = 0; i < 100; i++) v[i] = i / 100; // 0 … 0.99
  v[100] = 1000; // one extreme pixel
  const clipped = overlayRange(sortedMagnitudes(v, "positive"), 99, false);
  assert.equal(clipped.lo, 0);
  assert.ok(clipped.hi > 0.98 && clipped.hi < 1.0, `hi ${clipped.hi}`);
  const full = overlayRange(sortedMagnitudes(v, "positive"), 100, false);
  assert.equal(full.hi, 1000);
  // a sparse map (99% zeros) falls back to its peak instead of an empty range
  const sparse = new Float32Array(1000);
  sparse[7] = 2;
  assert.deepEqual(overlayRange(sortedMagnitudes(sparse, "positive"), 99, false), { lo: 0, hi: 2, empty: false });
  // nothing of that sign: empty
  assert.equal(overlayRange(sortedMagnitudes(Float32Array.from([1, 2]), "negative"), 99, false).empty, true);
  assert.equal(overlayRange(new Float32Array(0), 99, false).empty, true);
});

test("sign 'all' uses a diverging colormap with a range symmetric about zero", () => {
  assert.equal(overlayColormap("viridis", "all"), SIGNED_COLORMAP);
  assert.equal(overlayColormap("coolwarm", "all"), "coolwarm");
  assert.equal(overlayColormap("viridis", "positive"), "viridis");
  const v = Float32Array.from([-3, -1, 0, 1, 2]);
  const r = overlayRange(sortedMagnitudes(v, "all"), 100, true);
  assert.deepEqual(r, { lo: -3, hi: 3, empty: false });
  // zero sits in the middle of the diverging map: its colour is the map's centre entry
  const table = lut(SIGNED_COLORMAP);
  const rgb = new Uint8Array(3 * 3);
  const out = blendOverlay(rgb, Float32Array.from([-3, 0, 3]), { sign: "all", lo: r.lo, hi: r.hi, table, opacity: 1 });
  assert.deepEqual(Array.from(out.subarray(0, 3)), Array.from(table.subarray(0, 3)));
  assert.deepEqual(Array.from(out.subarray(4, 7)), Array.from(table.subarray(3 * 128, 3 * 128 + 3)));
  assert.deepEqual(Array.from(out.subarray(8, 11)), Array.from(table.subarray(765, 768)));
});

test("opacity blends image and colour linearly; 0 is the image, 1 the colour", () => {
  const rgb = Uint8Array.from([200, 100, 0, 200, 100, 0]);
  const values = Float32Array.from([0, 1]);
  const opts = { sign: /** @type {const} */ ("positive"), lo: 0, hi: 1, table: GREY };
  assert.deepEqual(Array.from(blendOverlay(rgb, values, { ...opts, opacity: 0 })), [200, 100, 0, 255, 200, 100, 0, 255]);
  assert.deepEqual(Array.from(blendOverlay(rgb, values, { ...opts, opacity: 1 })), [0, 0, 0, 255, 255, 255, 255, 255]);
  assert.deepEqual(Array.from(blendOverlay(rgb, values, { ...opts, opacity: 0.5 })), [100, 50, 0, 255, 228, 178, 128, 255]);
  // values beyond the range clamp to its ends
  const far = blendOverlay(rgb, Float32Array.from([-5, 5]), { ...opts, opacity: 1 });
  assert.deepEqual(Array.from(far), [0, 0, 0, 255, 255, 255, 255, 255]);
  // the output buffer is reused when it fits
  const buf = new Uint8ClampedArray(8);
  assert.equal(blendOverlay(rgb, values, { ...opts, opacity: 1 }, buf), buf);
  assert.throws(() => blendOverlay(rgb, Float32Array.from([1]), { ...opts, opacity: 1 }), /expected 3 RGB bytes/);
});

test("NaN pixels and empty ranges show the image unchanged", () => {
  const rgb = Uint8Array.from([10, 20, 30, 40, 50, 60]);
  const out = blendOverlay(rgb, Float32Array.from([NaN, 1]), { sign: "all", lo: -1, hi: 1, table: GREY, opacity: 1 });
  assert.deepEqual(Array.from(out.subarray(0, 4)), [10, 20, 30, 255]);
  assert.deepEqual(Array.from(out.subarray(4, 8)), [255, 255, 255, 255]);
  const empty = blendOverlay(rgb, Float32Array.from([0, 0]), { sign: "positive", lo: 0, hi: 0, table: GREY, opacity: 1 });
  assert.deepEqual(Array.from(empty), [10, 20, 30, 255, 40, 50, 60, 255]);
});
