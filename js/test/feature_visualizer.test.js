import { test } from "node:test";
import assert from "node:assert/strict";
import { packRGB } from "../src/grid.js";
import { parseIntIn, tilePixels } from "../src/widgets/feature_visualizer.js";

test("tilePixels: received tiles in true colour, the others in the placeholder colour", () => {
  const th = 2;
  const tw = 3;
  const rgb = Uint8Array.from({ length: th * tw * 3 }, (_, i) => (i * 11) % 256);
  const tiles = new Map([[1, { rgb }], [2, { rgb: new Uint8Array(5) }]]); // tile 2 has the wrong size
  const grey = packRGB(128, 128, 128);
  const out = tilePixels(tiles, 3, th, tw, grey);
  assert.equal(out.length, 3 * th * tw);
  for (let i = 0; i < th * tw; i++) {
    assert.equal(out[i], grey, "tile 0 was never received");
    assert.equal(out[th * tw + i], packRGB(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]));
    assert.equal(out[2 * th * tw + i], grey, "a tile of the wrong size is not drawn");
  }
});

test("parseIntIn: whole numbers in range only", () => {
  assert.equal(parseIntIn("12", 0, 63), 12);
  assert.equal(parseIntIn(" 0 ", 0, 63), 0);
  assert.equal(parseIntIn("64", 0, 63), null);
  assert.equal(parseIntIn("0", 1, Infinity), null);
  assert.equal(parseIntIn("100000", 1, Infinity), 100000);
  for (const bad of ["", "-1", "1.5", "1e3", "abc", "99999999999999999999"]) assert.equal(parseIntIn(bad, 0, Infinity), null, bad);
});
