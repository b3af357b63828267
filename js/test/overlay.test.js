import { test } from "node:test";
import assert from "node:assert/strict";
import { detailSize, rgbToRgba } from "../src/overlay.js";

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
