import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { asDataView, decode, halfToFloat, sliceRange } from "../src/codec.js";

const fixtures = new URL("./fixtures/", import.meta.url);

test("halfToFloat: normals, subnormals, zeros, infinities, NaN", () => {
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc100), -2.5);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x0400), 2 ** -14); // smallest normal
  assert.equal(halfToFloat(0x0001), 2 ** -24); // smallest subnormal
  assert.equal(halfToFloat(0x03ff), 1023 * 2 ** -24); // largest subnormal
  assert.equal(halfToFloat(0x8001), -(2 ** -24));
  assert.ok(Object.is(halfToFloat(0x0000), 0));
  assert.ok(Object.is(halfToFloat(0x8000), -0));
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.equal(halfToFloat(0xfc00), -Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
});

test("uint8: per-channel scale/offset, constant channel with scale 0", () => {
  const q = new Uint8Array([0, 255, 128, 7, 7, 7]);
  const t = decode({ shape: [2, 3], dtype: "uint8", data: new DataView(q.buffer), scale: [0.5, 0], offset: [-10, 3], min: [-10, 3], max: [117.5, 3] });
  assert.deepEqual(Array.from(t.data), [-10, 117.5, 54, 3, 3, 3]);
  assert.deepEqual(t.min, [-10, 3]);
  assert.ok(t.data instanceof Float32Array);
});

test("a DataView with a non-zero byteOffset into a larger buffer is honoured", () => {
  const big = new Uint8Array(64).fill(99);
  big.set([0, 255, 10], 37);
  const view = new DataView(big.buffer, 37, 3);
  const t = decode({ shape: [1, 3], dtype: "uint8", data: view, scale: [1], offset: [0] });
  assert.deepEqual(Array.from(t.data), [0, 255, 10]);
  // float32 at an unaligned offset
  const buf = new ArrayBuffer(23);
  const dv = new DataView(buf, 5, 8);
  dv.setFloat32(0, 1.5, true);
  dv.setFloat32(4, -2.25, true);
  assert.deepEqual(Array.from(decode({ shape: [2], dtype: "float32", data: dv }).data), [1.5, -2.25]);
  // float16 at an odd offset, including a subnormal and infinity
  const hb = new DataView(new ArrayBuffer(11), 3, 6);
  hb.setUint16(0, 0x0001, true);
  hb.setUint16(2, 0x7c00, true);
  hb.setUint16(4, 0xbc00, true);
  const h = decode({ shape: [3], dtype: "float16", data: hb });
  assert.deepEqual(Array.from(h.data), [2 ** -24, Infinity, -1]);
});

test("typed arrays and ArrayBuffers are accepted as data", () => {
  const backing = new Uint8Array([9, 9, 1, 2, 3, 4]);
  const view = asDataView(backing.subarray(2));
  assert.equal(view.byteOffset, 2);
  assert.equal(view.byteLength, 4);
  assert.equal(asDataView(backing.buffer).byteLength, 6);
  assert.throws(() => asDataView(/** @type {any} */ ("nope")), TypeError);
});

test("exact uint8 is the raw bytes, without a copy", () => {
  const backing = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const t = decode({ shape: [1, 2, 3], dtype: "uint8", data: new DataView(backing.buffer, 2, 6) });
  assert.ok(t.data instanceof Uint8Array);
  assert.equal(t.data.buffer, backing.buffer);
  assert.deepEqual(Array.from(t.data), [3, 4, 5, 6, 7, 8]);
  assert.deepEqual(t.min, [3]);
  assert.deepEqual(t.max, [8]);
});

test("a byte count that does not match the shape is an error, as is an unknown dtype", () => {
  const dv = new DataView(new ArrayBuffer(5));
  assert.throws(() => decode({ shape: [2, 3], dtype: "uint8", data: dv, scale: [1, 1], offset: [0, 0] }), /5 bytes/);
  assert.throws(() => decode({ shape: [1], dtype: /** @type {any} */ ("int64"), data: dv }), /unknown wire dtype/);
});

test("sliceRange gives per-slice extrema", () => {
  assert.deepEqual(sliceRange(new Float32Array([1, -2, 3, 4, 5, 0]), 2), { min: [-2, 0], max: [3, 5] });
});

test("Python wire.encode fixture decodes within the codec's error bound", () => {
  const { entries } = JSON.parse(readFileSync(new URL("wire.json", fixtures), "utf8"));
  const blob = readFileSync(new URL("wire.bin", fixtures));
  // one ArrayBuffer holding everything: every DataView below has a non-zero byteOffset
  const buffer = blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength);
  assert.ok(entries.length >= 6);
  for (const e of entries) {
    const [at, len] = e.data;
    assert.ok(at > 0);
    const t = decode({ ...e.header, data: new DataView(buffer, at, len) });
    const [oat, n] = e.expected;
    const expected = new DataView(buffer, oat, 4 * n);
    assert.equal(t.data.length, n, e.name);
    for (let i = 0; i < n; i++) {
      const want = expected.getFloat32(4 * i, true);
      const err = Math.abs(t.data[i] - want);
      assert.ok(err <= e.bound + 1e-6 * Math.abs(want) + 1e-7, `${e.name}[${i}]: got ${t.data[i]}, want ${want} ± ${e.bound}`);
    }
    if (e.header.min) {
      for (let c = 0; c < t.min.length; c++) assert.equal(t.min[c], e.header.min[c]);
    }
  }
  const nonfinite = entries.find((e) => e.name === "uint8_nonfinite");
  assert.equal(nonfinite.header.nonfinite, 2);
});
