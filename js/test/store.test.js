import { test } from "node:test";
import assert from "node:assert/strict";
import { LayerStore } from "../src/store.js";

/** A stand-in for the anywidget model: get/set, on/off (per callback), send. */
function fakeModel(state) {
  const handlers = new Map();
  const sent = [];
  return {
    sent,
    handlers,
    get: (k) => state[k],
    set(k, v) {
      state[k] = v;
      for (const fn of handlers.get(`change:${k}`) ?? []) fn();
    },
    on(ev, fn) {
      if (!handlers.has(ev)) handlers.set(ev, new Set());
      handlers.get(ev).add(fn);
    },
    off(ev, fn) {
      handlers.get(ev)?.delete(fn);
    },
    send(content, callbacks, buffers) {
      sent.push({ content, buffers });
    },
    emit(ev, ...args) {
      for (const fn of handlers.get(ev) ?? []) fn(...args);
    },
  };
}

/** A wire message for a layer of `count` 2×2 tiles whose values are tile index + q/255. */
function wire(count) {
  const q = new Uint8Array(count * 4).map((_, i) => (i % 4) * 85);
  return {
    shape: [count, 2, 2],
    dtype: "uint8",
    data: new DataView(q.buffer),
    scale: Array(count).fill(1 / 255),
    offset: Array.from({ length: count }, (_, c) => c),
    min: Array.from({ length: count }, (_, c) => c),
    max: Array.from({ length: count }, (_, c) => c + 1),
  };
}

function meta(names, count = 3) {
  return {
    version: 1,
    global: [0, count],
    layers: names.map((name) => ({ name, kind: "grid", shape: [count, 2, 2], source_shape: [count, 2, 2], min: 0, max: count, nbytes: 4 * count })),
  };
}

test("eager: layers decode from _data on first use and never ask the kernel", () => {
  const names = ["a", "b", "c"];
  const m = fakeModel({ _meta: meta(names), _data: { a: wire(3), b: wire(3), c: wire(3) }, _mode: "eager", budget_mb: 32 });
  const s = new LayerStore(m);
  const a = s.get("a");
  assert.ok(a);
  assert.equal(a.values.length, 12);
  assert.deepEqual(Array.from(a.mean, (v) => Math.round(v * 1e6) / 1e6), [0.5, 1.5, 2.5]);
  s.request("b");
  assert.equal(m.sent.length, 0);
  assert.equal(s.get("a"), a); // cached
});

test("lazy: one fetch for the layer and its neighbours; replies are decoded and announced", () => {
  const names = ["a", "b", "c", "d"];
  const m = fakeModel({ _meta: meta(names), _data: {}, _mode: "lazy", budget_mb: 32 });
  const s = new LayerStore(m);
  const heard = [];
  const unsubscribe = s.subscribe((n) => heard.push(n));
  assert.equal(s.get("b"), null);
  s.request("b");
  assert.equal(m.sent.length, 1);
  assert.deepEqual(m.sent[0].content, { type: "fetch", layers: ["b", "c", "a"], version: 1 });
  s.request("b"); // already pending: nothing new
  assert.equal(m.sent.length, 1);
  s.request("d"); // while b, c, a are in flight only the layer on screen is asked for
  assert.deepEqual(m.sent[1].content.layers, ["d"]);
  m.sent.pop();
  s.pending.delete("d");
  const { data, ...header } = wire(3);
  m.emit("msg:custom", { type: "layer", name: "b", version: 1, ...header }, [data]);
  assert.deepEqual(heard, ["b"]);
  assert.equal(s.get("b").values[4], 1);
  // stale replies (an older version) are ignored
  m.emit("msg:custom", { type: "layer", name: "c", version: 0, ...header }, [data]);
  assert.equal(s.get("c"), null);
  s.request("c"); // c is still pending, and with layers in flight d is not prefetched yet
  assert.equal(m.sent.length, 1);
  m.emit("msg:custom", { type: "layer", name: "a", version: 1, ...header }, [data]);
  m.emit("msg:custom", { type: "layer", name: "c", version: 1, ...header }, [data]);
  s.request("c"); // nothing in flight: the missing neighbour d is prefetched
  assert.deepEqual(m.sent[1].content.layers, ["d"]);
  unsubscribe();
  m.emit("msg:custom", { type: "layer", name: "d", version: 1, ...header }, [data]);
  assert.deepEqual(heard, ["b", "a", "c"]);
});

test("lazy cache is bounded (LRU) and keeps pinned layers", () => {
  const names = ["a", "b", "c", "d"];
  // each decoded layer: 3 tiles × 4 values × 4 bytes = 48 bytes; budget allows 2.5 layers
  const m = fakeModel({ _meta: meta(names), _data: {}, _mode: "lazy", budget_mb: (2.5 * 48) / (4 * 1024 * 1024) });
  const s = new LayerStore(m);
  const { data, ...header } = wire(3);
  s.pin(["a"]);
  for (const name of names) m.emit("msg:custom", { type: "layer", name, version: 1, ...header }, [data]);
  assert.deepEqual([...s.cache.keys()].sort(), ["a", "d"]);
  assert.ok(s.cache.has("a"), "pinned layer kept");
  assert.ok(s.cache.has("d"), "newest layer kept");
  assert.ok(!s.cache.has("b"), "least recently used evicted");
  let total = 0;
  for (const l of s.cache.values()) total += l.bytes;
  assert.ok(total <= 2.5 * 48);
});

test("errors from the kernel are kept for the status line; new _meta resets everything", () => {
  const m = fakeModel({ _meta: meta(["a"]), _data: {}, _mode: "lazy", budget_mb: 32 });
  const s = new LayerStore(m);
  s.request("a");
  m.emit("msg:custom", { type: "error", version: 1, layers: ["a"], message: "boom" }, []);
  assert.equal(s.error, "boom");
  assert.equal(s.pending.size, 0);
  const heard = [];
  s.subscribe((n) => heard.push(n));
  m.set("_meta", { ...meta(["x", "y"]), version: 2 });
  assert.deepEqual(heard, [""]);
  assert.equal(s.error, "");
  assert.deepEqual(s.names(), ["x", "y"]);
});

test("vectors (one quantisation slice) get per-value ranges", () => {
  const q = new Uint8Array([0, 255, 51]);
  const m = fakeModel({
    _meta: { version: 1, global: [0, 5], layers: [{ name: "fc", kind: "vector", shape: [3, 1, 1], source_shape: [3], min: 0, max: 5, nbytes: 3 }] },
    _data: { fc: { shape: [1, 3], dtype: "uint8", data: new DataView(q.buffer), scale: [5 / 255], offset: [0], min: [0], max: [5] } },
    _mode: "eager",
    budget_mb: 32,
  });
  const fc = new LayerStore(m).get("fc");
  assert.deepEqual(fc.min.map((v) => Math.round(v)), [0, 5, 1]);
  assert.deepEqual(fc.max.map((v) => Math.round(v)), [0, 5, 1]);
});

test("dispose removes exactly the store's model listeners", () => {
  const m = fakeModel({ _meta: meta(["a"]), _data: {}, _mode: "lazy", budget_mb: 32 });
  const other = () => {};
  m.on("msg:custom", other);
  const s = new LayerStore(m);
  s.dispose();
  for (const [ev, set] of m.handlers) {
    assert.equal(set.size, ev === "msg:custom" ? 1 : 0, ev);
  }
});
