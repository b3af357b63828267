import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CATEGORIES, ROW_H, ancestorsOf, arcPath, blockSize, blockTop, category, formatCount, formatShape, slotRange,
  stepRow, stripLayout, visibleNodes, windowRange, within,
} from "../src/widgets/model_summary.js";

/** A depth-first node list from [name, depth, group] triples, with each subtree's end computed here. */
function tree(spec) {
  const nodes = spec.map(([name, depth, group]) => ({ name, depth, group, label: name, type: "X", end: 0 }));
  for (let i = 0; i < nodes.length; i++) {
    let j = i + 1;
    while (j < nodes.length && nodes[j].depth > nodes[i].depth) j++;
    nodes[i].end = j;
  }
  return nodes;
}

// ResNet-like: stem, layer1 (two blocks), fc
const NODES = tree([
  ["conv1", 0, false],
  ["layer1", 0, true],
  ["layer1.0", 1, true],
  ["layer1.0.conv1", 2, false],
  ["layer1.0.relu", 2, false],
  ["layer1.1", 1, true],
  ["layer1.1.conv1", 2, false],
  ["fc", 0, false],
]);

test("visible nodes: everything when nothing is folded; a folded group hides exactly its subtree", () => {
  assert.deepEqual(visibleNodes(NODES, new Set()), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(visibleNodes(NODES, new Set(["layer1.0"])), [0, 1, 2, 5, 6, 7]);
  assert.deepEqual(visibleNodes(NODES, new Set(["layer1"])), [0, 1, 7]);
  // folding inside a folded group changes nothing more; a leaf's name in the set is ignored
  assert.deepEqual(visibleNodes(NODES, new Set(["layer1", "layer1.1", "conv1"])), [0, 1, 7]);
});

test("ancestors are the groups whose subtree holds the node, outermost first", () => {
  assert.deepEqual(ancestorsOf(NODES, 4), [1, 2]);
  assert.deepEqual(ancestorsOf(NODES, 6), [1, 5]);
  assert.deepEqual(ancestorsOf(NODES, 7), []);
  assert.deepEqual(ancestorsOf(NODES, 1), []);
});

test("window range: only the rows in view plus overscan, clamped to the list", () => {
  assert.deepEqual(windowRange(600, ROW_H, 0, 16 * ROW_H, 6), [0, 22]);
  assert.deepEqual(windowRange(600, ROW_H, 100 * ROW_H, 16 * ROW_H, 6), [94, 122]);
  assert.deepEqual(windowRange(600, ROW_H, 599 * ROW_H, 16 * ROW_H, 6), [593, 600]);
  assert.deepEqual(windowRange(5, ROW_H, 0, 16 * ROW_H, 6), [0, 5]);
  assert.deepEqual(windowRange(0, ROW_H, 0, 100, 6), [0, 0]);
  const [a, b] = windowRange(5000, ROW_H, 2500 * ROW_H + 7, 400, 6);
  assert.ok(b - a < 40 && a <= 2500 && b >= 2500 + 400 / ROW_H);
});

test("block size: wider with more channels, taller with larger maps, bounded", () => {
  const a = blockSize([1, 3, 224, 224]);
  const b = blockSize([1, 64, 112, 112]);
  const c = blockSize([1, 512, 7, 7]);
  const fc = blockSize([1, 1000]);
  assert.ok(a.w < b.w && b.w < c.w, "width grows with channels");
  assert.ok(a.h > b.h && b.h > c.h && c.h > fc.h, "height grows with the spatial size");
  assert.equal(fc.h, 10);
  for (const s of [a, b, c, fc, blockSize([1, 1 << 20, 4096, 4096]), blockSize(null), blockSize([7])]) {
    assert.ok(s.w >= 6 && s.w <= 42 && s.h >= 10 && s.h <= 100, JSON.stringify(s));
  }
  // a 1-D sequence (N, C, L) counts its length as the spatial size
  assert.equal(blockSize([1, 16, 64]).h, blockSize([1, 16, 8, 8]).h);
});

test("strip layout: slots left to right without overlap; slot range finds exactly the slots in a pixel span", () => {
  const shapes = [[1, 3, 32, 32], ...Array.from({ length: 600 }, (_, i) => [1, 8 + (i % 5), 16, 16])];
  const L = stripLayout(shapes);
  for (let i = 1; i < shapes.length; i++) assert.ok(L.x[i] >= L.x[i - 1] + L.w[i - 1] + 1, `slot ${i}`);
  assert.ok(L.width > L.x[600] + L.w[600]);
  for (const [left, right] of [[0, 300], [5000, 5400], [L.width - 50, L.width + 100], [-100, -1]]) {
    const [a, b] = slotRange(L, left, right);
    const brute = [];
    for (let i = 0; i < shapes.length; i++) if (L.x[i] + L.w[i] >= left && L.x[i] <= right) brute.push(i);
    assert.deepEqual(brute.length ? [brute[0], brute[brute.length - 1] + 1] : [a, a], [a, b], `${left}..${right}`);
  }
});

test("arcs start and end on the top centres of their blocks and stay inside the strip", () => {
  const L = stripLayout([[1, 3, 64, 64], [1, 64, 32, 32], [1, 64, 32, 32], [1, 64, 32, 32], [1, 10]]);
  for (const [a, b] of [[0, 3], [1, 4], [2, 3]]) {
    const nums = arcPath(L, a, b).match(/-?\d+(\.\d+)?/g).map(Number);
    assert.deepEqual([nums[0], nums[1]], [Number((L.x[a] + L.w[a] / 2).toFixed(1)), Number(blockTop(L, a).toFixed(1))]);
    assert.deepEqual(nums.slice(-2), [Number((L.x[b] + L.w[b] / 2).toFixed(1)), Number(blockTop(L, b).toFixed(1))]);
    const peak = Math.min(nums[3], nums[5]);
    assert.ok(peak >= 2 && peak < Math.min(blockTop(L, a), blockTop(L, b)), `arc ${a}→${b} rises above its blocks`);
  }
  for (let i = 0; i < 5; i++) assert.ok(blockTop(L, i) + L.h[i] <= L.height);
});

test("layer types map to families; every family has its own colour", () => {
  const cases = {
    Conv2d: "conv", ConvTranspose2d: "conv", BatchNorm2d: "norm", LayerNorm: "norm", ReLU: "act", GELU: "act",
    LeakyReLU: "act", Softmax: "act", MaxPool2d: "pool", AdaptiveAvgPool2d: "pool", Upsample: "pool",
    Linear: "linear", Dropout: "dropout", Flatten: "shape", Identity: "shape", MultiheadAttention: "other",
    "<img src=x onerror=pwned=1>": "other",
  };
  for (const [type, key] of Object.entries(cases)) assert.equal(category(type).key, key, type);
  assert.equal(new Set(CATEGORIES.map((c) => c.color)).size, CATEGORIES.length);
});

test("counts and shapes print as Keras and Python print them", () => {
  assert.equal(formatCount(0), "0");
  assert.equal(formatCount(999), "999");
  assert.equal(formatCount(1000), "1,000");
  assert.equal(formatCount(11689512), "11,689,512");
  assert.equal(formatShape([1, 64, 56, 56]), "(1, 64, 56, 56)");
  assert.equal(formatShape([5]), "(5,)");
  assert.equal(formatShape(null), "—");
});

test("row keys: down/up by one, pages, ends; from no selection everything starts at the top", () => {
  assert.equal(stepRow(-1, 10, "ArrowDown", 5), 0);
  assert.equal(stepRow(-1, 10, "ArrowUp", 5), 0);
  assert.equal(stepRow(3, 10, "ArrowDown", 5), 4);
  assert.equal(stepRow(9, 10, "ArrowDown", 5), 9);
  assert.equal(stepRow(0, 10, "ArrowUp", 5), 0);
  assert.equal(stepRow(3, 10, "PageDown", 5), 8);
  assert.equal(stepRow(8, 10, "PageDown", 5), 9);
  assert.equal(stepRow(3, 10, "PageUp", 5), 0);
  assert.equal(stepRow(3, 10, "End", 5), 9);
  assert.equal(stepRow(3, 10, "Home", 5), 0);
  assert.equal(stepRow(3, 10, "Tab", 5), null);
  assert.equal(stepRow(3, 0, "ArrowDown", 5), null);
});

test("a selected container holds its layers, not layers that merely share a prefix", () => {
  assert.ok(within("layer1.0.conv1", "layer1"));
  assert.ok(within("layer1", "layer1"));
  assert.ok(!within("layer10.conv", "layer1"));
  assert.ok(!within("layer1", null));
  assert.ok(within("anything", ""), "the root holds everything");
});
