import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { CODEC, asDataView, decode, halfToFloat, sliceRange } from "../src/codec.js";

const fixtures = new URL("./fixtures/", import.meta.url);

/**
 * A wire message written by hand: float32 side values (little-endian), then the payload bytes, placed
 * `at` bytes into a larger buffer whose other bytes are 0x63.
 * @param {Object} o
 * @param {number[]} o.shape
 * @param {"quantized" | "exact" | "scaled" | "raw"} o.kind
 * @param {number[]} [o.side]
 * @param {(view: DataView, offset: number) => void} o.payload writes the payload at `offset`
 * @param {number} o.payloadBytes
 * @param {number} [o.at]
 */
function message({ shape, kind, side = [], payload, payloadBytes, at = 0 }) {
  const bytes = 4 * side.length + payloadBytes;
  const backing = new Uint8Array(at + bytes + 5).fill(0x63);
  const view = new DataView(backing.buffer, at, bytes);
  side.forEach((v, i) => view.setFloat32(4 * i, v, true));
  payload(view, 4 * side.length);
  const dtype = { quantized: "uint8", exact: "uint8", scaled: "float16", raw: "float32" }[kind];
  return { shape, dtype, kind, codec: CODEC, data: view };
}

/** @param {number[]} q */
const bytesAt = (q) => (/** @type {DataView} */ view, /** @type {number} */ o) => q.forEach((v, i) => view.setUint8(o + i, v));

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

test("quantized: min/max side part, scale = fround((max - min) / 255), constant slice exact", () => {
  // slice 0: min -10, max 117.5 → step 0.5 exactly; slice 1: constant 3; slice 2: step 0.1 rounded to float32
  const msg = message({
    shape: [3, 3], kind: "quantized", side: [-10, 3, 0, 117.5, 3, 25.5],
    payload: bytesAt([0, 255, 128, 7, 7, 7, 0, 1, 255]), payloadBytes: 9,
  });
  const t = decode(msg);
  assert.ok(t.data instanceof Float32Array);
  const step = Math.fround(25.5 / 255);
  assert.notEqual(step, 0.1); // the float32 step, as the encoder used it
  assert.deepEqual(Array.from(t.data), [-10, 117.5, 54, 3, 3, 3, 0, Math.fround(step), Math.fround(255 * step)]);
  assert.deepEqual(t.min, [-10, 3, 0]);
  assert.deepEqual(t.max, [117.5, 3, 25.5]);
});

test("a DataView with a non-zero, unaligned byteOffset into a larger buffer is honoured, every kind", () => {
  const q = decode(message({ shape: [1, 3], kind: "quantized", side: [0, 255], payload: bytesAt([0, 255, 10]), payloadBytes: 3, at: 37 }));
  assert.deepEqual(Array.from(q.data), [0, 255, 10]);
  const raw = decode(message({
    shape: [2], kind: "raw", at: 5, payloadBytes: 8,
    payload: (v, o) => { v.setFloat32(o, 1.5, true); v.setFloat32(o + 4, -2.25, true); },
  }));
  assert.deepEqual(Array.from(raw.data), [1.5, -2.25]);
  // scaled float16 at an odd offset: scale 2**-30 times a subnormal, infinity and -1
  const h = decode(message({
    shape: [1, 3], kind: "scaled", side: [2 ** -30], at: 3, payloadBytes: 6,
    payload: (v, o) => [0x0001, 0x7c00, 0xbc00].forEach((b, i) => v.setUint16(o + 2 * i, b, true)),
  }));
  assert.deepEqual(Array.from(h.data), [2 ** -54, Infinity, -(2 ** -30)]);
  const exact = decode(message({ shape: [2, 2], kind: "exact", payload: bytesAt([4, 3, 2, 1]), payloadBytes: 4, at: 11 }));
  assert.deepEqual(Array.from(exact.data), [4, 3, 2, 1]);
});

test("scaled: one power-of-two scale per slice brings tiny and huge values back", () => {
  // 1.5 · 2**-40 (a tiny gradient) and -1.25 · 2**100 from the halves 1.5·2**10 and -1.25·2**14
  const t = decode(message({
    shape: [2, 2], kind: "scaled", side: [2 ** -50, 2 ** 86], payloadBytes: 8,
    payload: (v, o) => [0x6600, 0x0000, 0xf500, 0x3c00].forEach((b, i) => v.setUint16(o + 2 * i, b, true)),
  }));
  assert.deepEqual(Array.from(t.data), [1.5 * 2 ** -40, 0, -1.25 * 2 ** 100, 2 ** 86]);
  assert.deepEqual(t.min, [0, -1.25 * 2 ** 100]);
  assert.deepEqual(t.max, [1.5 * 2 ** -40, 2 ** 86]);
});

test("typed arrays and ArrayBuffers are accepted as data", () => {
  const backing = new Uint8Array([9, 9, 1, 2, 3, 4]);
  const view = asDataView(backing.subarray(2));
  assert.equal(view.byteOffset, 2);
  assert.equal(view.byteLength, 4);
  assert.equal(asDataView(backing.buffer).byteLength, 6);
  assert.throws(() => asDataView(/** @type {any} */ ("nope")), TypeError);
  const t = decode({ shape: [4], dtype: "uint8", kind: "exact", codec: CODEC, data: backing.subarray(2) });
  assert.deepEqual(Array.from(t.data), [1, 2, 3, 4]);
});

test("exact uint8 is the raw bytes, without a copy", () => {
  const backing = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const t = decode({ shape: [1, 2, 3], dtype: "uint8", kind: "exact", codec: CODEC, data: new DataView(backing.buffer, 2, 6) });
  assert.ok(t.data instanceof Uint8Array);
  assert.equal(t.data.buffer, backing.buffer);
  assert.deepEqual(Array.from(t.data), [3, 4, 5, 6, 7, 8]);
  assert.deepEqual(t.min, [3]);
  assert.deepEqual(t.max, [8]);
});

test("wrong byte counts, unknown or mismatched kinds and other codec versions are errors", () => {
  const dv = new DataView(new ArrayBuffer(5));
  const base = { dtype: "uint8", kind: "quantized", codec: CODEC, data: dv };
  assert.throws(() => decode({ ...base, shape: [2, 3] }), /wire data has 5 bytes but shape \[2,3\] of quantized uint8 needs 22/);
  assert.equal(decode({ ...base, shape: [5], kind: "exact" }).data.length, 5);
  assert.throws(() => decode({ ...base, shape: [1], dtype: "float16" }), /unknown wire kind\/dtype "quantized"\/"float16"/);
  assert.throws(() => decode({ ...base, shape: [1], kind: "toString" }), /unknown wire kind/);
  assert.throws(() => decode({ ...base, shape: [1], codec: 1 }), /codec 1 but this decoder reads codec 2/);
  assert.throws(() => decode({ shape: [1], dtype: "uint8", data: dv }), /codec undefined/);
});

test("sliceRange gives per-slice extrema", () => {
  assert.deepEqual(sliceRange(new Float32Array([1, -2, 3, 4, 5, 0]), 2), { min: [-2, 0], max: [3, 5] });
});

test("Python wire.encode fixture decodes within the codec's error bound", () => {
  const { entries } = JSON.parse(readFileSync(new URL("wire.json", fixtures), "utf8"));
  const blob = readFileSync(new URL("wire.bin", fixtures));
  // one ArrayBuffer holding everything: every DataView below has a non-zero byteOffset
  const buffer = blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength);
  const kinds = new Set(entries.map((/** @type {any} */ e) => e.header.kind));
  assert.deepEqual([...kinds].sort(), ["exact", "quantized", "raw", "scaled"]);
  for (const e of entries) {
    const [at, len] = e.data;
    assert.ok(at > 0);
    const t = decode({ ...e.header, data: new DataView(buffer, at, len) });
    const [oat, n] = e.expected;
    const expected = new DataView(buffer, oat, 4 * n);
    assert.equal(t.data.length, n, e.name);
    const size = n / e.atol.length;
    for (let i = 0; i < n; i++) {
      const want = expected.getFloat32(4 * i, true);
      const bound = e.atol[Math.floor(i / size)] + e.rtol * Math.abs(want);
      assert.ok(Math.abs(t.data[i] - want) <= bound, `${e.name}[${i}]: got ${t.data[i]}, want ${want} ± ${bound}`);
    }
    if (e.min) {
      assert.deepEqual(t.min, e.min, e.name);
      assert.deepEqual(t.max, e.max, e.name);
    }
  }
  const tiny = entries.find((/** @type {any} */ e) => e.name === "float16_tiny_gradients");
  assert.ok(tiny.rtol <= 2 ** -11 && Math.max(...tiny.atol) < 1e-18, "tiny gradients are held to a relative bound");
  const nonfinite = entries.find((/** @type {any} */ e) => e.name === "uint8_nonfinite");
  assert.equal(nonfinite.header.nonfinite, 2);
});
