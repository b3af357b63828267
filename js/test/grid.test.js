import { test } from "node:test";
import assert from "node:assert/strict";
import {
  blitTiles, colorizeRgb, colorizeScalar, hitTest, layoutGrid, packLut, packRGB, slotCenter, sortOrder, stepSlot,
  tileMeans, tileOrigin,
} from "../src/grid.js";

test("layout: columns and rows for various channel counts", () => {
  const cases = [[1, 1, 1], [3, 2, 2], [16, 4, 4], [64, 8, 8], [65, 9, 8], [512, 23, 23], [2048, 46, 45]];
  for (const [count, cols, rows] of cases) {
    const L = layoutGrid({ count, tileH: 7, tileW: 7 });
    assert.equal(L.cols, cols, `cols for ${count}`);
    assert.equal(L.rows, rows, `rows for ${count}`);
    assert.ok(L.cols * L.rows >= count);
    assert.equal(L.width, L.cols * L.cell);
    assert.equal(L.height, L.rows * L.cell);
  }
  const strip = layoutGrid({ count: 10, tileH: 1, tileW: 1, cols: 32 });
  assert.equal(strip.cols, 10);
  assert.equal(strip.rows, 1);
  const vec = layoutGrid({ count: 1000, tileH: 1, tileW: 1, cols: 32 });
  assert.deepEqual([vec.cols, vec.rows], [32, 32]);
});

test("layout: small tiles are magnified by a whole factor, big ones shrunk to the cell", () => {
  const small = layoutGrid({ count: 64, tileH: 7, tileW: 7, maxWidth: 640 });
  assert.equal(small.drawW % 7, 0);
  assert.ok(small.drawW >= 7 && small.cell <= 80);
  const big = layoutGrid({ count: 64, tileH: 112, tileW: 112, maxWidth: 640 });
  assert.ok(big.drawW < 112 && big.cell <= 80);
  assert.ok(big.width <= 640);
  const wide = layoutGrid({ count: 4, tileH: 1, tileW: 20 });
  assert.ok(wide.drawW > wide.drawH);
  assert.equal(wide.cell, wide.drawW + wide.gap);
  const capped = layoutGrid({ count: 2, tileH: 3, tileW: 3, maxCell: 40 });
  assert.ok(capped.cell <= 40);
});

test("layout: a projector scale grows the cells and the grid with it; a bad scale counts as 1", () => {
  const filters = { count: 16, tileH: 3, tileW: 3, maxWidth: 560, maxCell: 64 };
  const base = layoutGrid(filters);
  assert.deepEqual([base.drawW, base.cell], [60, 62]); // a 64 px budget: 3 px × 20, plus the gap
  const big = layoutGrid({ ...filters, scale: 1.5 });
  assert.deepEqual([big.drawW, big.cell, big.cols], [93, 95, 4]); // 96 px: 3 px × 31
  assert.ok(big.drawW / base.drawW >= 1.5 - 3 / base.drawW, "whole-factor tiles grow as much as they can");
  const channels = { count: 64, tileH: 16, tileW: 16 };
  assert.deepEqual([layoutGrid(channels).drawW, layoutGrid({ ...channels, scale: 1.5 }).drawW], [64, 112]);
  for (const bad of [NaN, -1, 0, Infinity]) assert.deepEqual(layoutGrid({ ...filters, scale: bad }), base, String(bad));
});

test("slot centres (DOM contract) hit the slot they belong to; gaps outside the grid miss", () => {
  const L = layoutGrid({ count: 10, tileH: 5, tileW: 5 });
  for (let slot = 0; slot < 10; slot++) {
    const [x, y] = slotCenter(L, slot);
    assert.equal(x, ((slot % L.cols) + 0.5) * L.cell);
    assert.equal(y, (Math.floor(slot / L.cols) + 0.5) * L.cell);
    const hit = hitTest(L, x, y);
    assert.equal(hit?.slot, slot);
    assert.equal(hit?.row, 2); // centre pixel of a 5×5 tile
    assert.equal(hit?.col, 2);
  }
  assert.equal(hitTest(L, -1, 3), null);
  assert.equal(hitTest(L, L.width + 1, 3), null);
  // slot 10, 11 exist in the last row but hold no tile
  const [x, y] = slotCenter(L, 11);
  assert.equal(hitTest(L, x, y), null);
  const [x0, y0] = tileOrigin(L, 0);
  assert.deepEqual(hitTest(L, x0, y0), { slot: 0, row: 0, col: 0 });
  assert.deepEqual(hitTest(L, x0 + L.drawW - 1, y0 + L.drawH - 1), { slot: 0, row: 4, col: 4 });
});

test("sort order: index, mean and max descending, ties in index order", () => {
  const stats = { mean: [0.1, 0.5, 0.5, -1], max: [3, 1, 2, 9] };
  assert.deepEqual(Array.from(sortOrder("index", stats, 4)), [0, 1, 2, 3]);
  assert.deepEqual(Array.from(sortOrder("mean", stats, 4)), [1, 2, 0, 3]);
  assert.deepEqual(Array.from(sortOrder("max", stats, 4)), [3, 0, 2, 1]);
  assert.throws(() => sortOrder(/** @type {any} */ ("median"), stats, 4), /unknown sort/);
});

test("slot ↔ channel mapping under a sort order", () => {
  const L = layoutGrid({ count: 4, tileH: 2, tileW: 2 });
  const order = sortOrder("max", { mean: [0, 0, 0, 0], max: [3, 1, 2, 9] }, 4);
  const [x, y] = slotCenter(L, 0);
  assert.equal(order[/** @type {any} */ (hitTest(L, x, y)).slot], 3); // the channel with the largest max comes first
  assert.equal(Array.from(order).indexOf(1), 3); // and channel 1 is shown last
});

test("tileMeans", () => {
  assert.deepEqual(Array.from(tileMeans(new Float32Array([1, 3, 5, 7, 0, 0]), 3)), [2, 6, 0]);
});

test("colouring: LUT lookup per tile range, RGB true colour", () => {
  const table = new Uint8Array(768);
  for (let i = 0; i < 256; i++) table.set([i, 255 - i, 7], 3 * i);
  const colors = packLut(table);
  const px = colorizeScalar(new Float32Array([0, 10, 5, 5]), 2, [0, 4], [10, 6], colors);
  const bytes = new Uint8Array(px.buffer);
  assert.deepEqual(Array.from(bytes.subarray(0, 4)), [0, 255, 7, 255]);
  assert.deepEqual(Array.from(bytes.subarray(4, 8)), [255, 0, 7, 255]);
  assert.deepEqual(Array.from(bytes.subarray(8, 12)), [128, 127, 7, 255]);
  const rgb = colorizeRgb(new Float32Array([0, 1, 0.5, 0, 1, 1]), 1, [0], [1]);
  // planes R = [0, 1], G = [0.5, 0], B = [1, 1]
  assert.deepEqual(Array.from(new Uint8Array(rgb.buffer)), [0, 128, 255, 255, 255, 0, 255, 255]);
  assert.deepEqual(Array.from(new Uint8Array(new Uint32Array([packRGB(1, 2, 3)]).buffer)), [1, 2, 3, 255]);
});

test("blit: nearest-neighbour magnification into slots, in display order, gaps transparent", () => {
  const L = layoutGrid({ count: 2, tileH: 1, tileW: 2, cols: 2, maxWidth: 12, maxCell: 6, minCell: 6 });
  // cell 6 → gap 1, inner 5, factor 2 → each tile drawn 4×2 px
  assert.deepEqual([L.cell, L.drawW, L.drawH], [5, 4, 2]);
  const tiles = new Uint32Array([1, 2, 3, 4]);
  const dst = new Uint32Array(L.width * L.height);
  blitTiles(dst, L, tiles, [1, 0]);
  const [x0, y0] = tileOrigin(L, 0);
  const row = Array.from(dst.subarray((y0) * L.width, (y0 + 1) * L.width));
  assert.deepEqual(row.slice(x0, x0 + 4), [3, 3, 4, 4]); // slot 0 shows tile 1
  const [x1] = tileOrigin(L, 1);
  assert.deepEqual(row.slice(x1, x1 + 4), [1, 1, 2, 2]);
  assert.equal(dst[0], 0);
});

test("keyboard steps: arrows move by a slot or a row, stop at the ends, Home/End jump", () => {
  const L = layoutGrid({ count: 10, tileH: 3, tileW: 3, cols: 4 }); // rows: 0-3, 4-7, 8-9
  assert.equal(L.cols, 4);
  const step = (/** @type {number} */ slot, /** @type {string} */ key) => stepSlot(L, slot, key);
  assert.equal(step(5, "ArrowRight"), 6);
  assert.equal(step(5, "ArrowLeft"), 4);
  assert.equal(step(5, "ArrowUp"), 1);
  assert.equal(step(5, "ArrowDown"), 9);
  assert.equal(step(6, "ArrowDown"), 6, "no tile below: stay");
  assert.equal(step(2, "ArrowUp"), 2, "first row: stay");
  assert.equal(step(0, "ArrowLeft"), 0);
  assert.equal(step(9, "ArrowRight"), 9);
  assert.equal(step(3, "ArrowRight"), 4, "reading order continues on the next row");
  assert.equal(step(5, "Home"), 0);
  assert.equal(step(5, "End"), 9);
  for (const key of ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home"]) {
    assert.equal(step(-1, key), 0, `${key} from no selection`);
  }
  assert.equal(step(-1, "End"), 9);
  assert.equal(step(12, "ArrowLeft"), 0, "a stale slot starts over");
  for (const key of ["Enter", " ", "a", "Tab", "PageDown"]) assert.equal(step(5, key), null, key);
  assert.equal(stepSlot(layoutGrid({ count: 0, tileH: 1, tileW: 1 }), -1, "ArrowRight"), null, "empty grid");
});
