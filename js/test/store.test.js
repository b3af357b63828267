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

/**
 * A quantised wire message: per-slice float32 min and max (little-endian), then the bytes q.
 * @param {number[]} shape @param {number[]} min @param {number[]} max @param {Uint8Array} q
 */
function quantized(shape, min, max, q) {
  const view = new DataView(new ArrayBuffer(8 * min.length + q.length));
  min.forEach((v, c) => view.setFloat32(4 * c, v, true));
  max.forEach((v, c) => view.setFloat32(4 * (min.length + c), v, true));
  new Uint8Array(view.buffer, 8 * min.length).set(q);
  return { shape, dtype: "uint8", kind: "quantized", codec: 2, data: view };
}

/** A wire message for a layer of `count` 2×2 tiles whose values are tile index + q/255. */
function wire(count) {
  const q = new Uint8Array(count * 4).map((_, i) => (i % 4) * 85);
  return quantized([count, 2, 2], Array.from({ length: count }, (_, c) => c), Array.from({ length: count }, (_, c) => c + 1), q);
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

/** Deliver the kernel's reply for layer `name` (wire(3) data) at `version`. */
function reply(m, name, version = 1) {
  const { data, ...header } = wire(3);
  m.emit("msg:custom", { type: "layer", name, version, ...header }, [data]);
}

test("lazy: the wanted layer first, its neighbours once it is here; replies decoded and announced", () => {
  const names = ["a", "b", "c", "d"];
  const m = fakeModel({ _meta: meta(names), _data: {}, _mode: "lazy", budget_mb: 32 });
  const s = new LayerStore(m);
  const heard = [];
  const unsubscribe = s.subscribe((n) => heard.push(n));
  assert.equal(s.get("b"), null);
  s.request("b");
  assert.deepEqual(m.sent.map((x) => x.content), [{ type: "fetch", layers: ["b"], version: 1 }]);
  s.request("b"); // in flight: nothing new
  assert.equal(m.sent.length, 1);
  reply(m, "c", 0); // a stale reply (older version) is ignored, and does not end the fetch in flight
  assert.equal(s.get("c"), null);
  assert.equal(m.sent.length, 1);
  reply(m, "b");
  assert.deepEqual(heard, ["b"]);
  assert.equal(s.get("b").values[4], 1);
  // b was wanted again while in flight; now that it is here its neighbours come, in one fetch
  assert.deepEqual(m.sent[1].content.layers, ["c", "a"]);
  s.request("d"); // wanted next, not sent while c and a are in flight
  assert.equal(m.sent.length, 2);
  reply(m, "c");
  assert.equal(m.sent.length, 2);
  reply(m, "a");
  assert.deepEqual(m.sent[2].content.layers, ["d"]);
  unsubscribe();
  reply(m, "d");
  assert.deepEqual(heard, ["b", "c", "a"]);
  s.request("d"); // d and its neighbour c are here: nothing to ask
  assert.equal(m.sent.length, 3);
});

test("lazy: a held key asks for at most one layer in flight plus the latest wanted", () => {
  const names = Array.from({ length: 40 }, (_, i) => `L${i}`);
  const m = fakeModel({ _meta: meta(names), _data: {}, _mode: "lazy", budget_mb: 32 });
  const s = new LayerStore(m);
  s.request("L0");
  for (const name of names.slice(1, 30)) s.request(name); // the kernel has not answered yet
  assert.deepEqual(m.sent.map((x) => x.content.layers), [["L0"]]);
  reply(m, "L0"); // answered: only the layer on screen now is asked for
  assert.deepEqual(m.sent.map((x) => x.content.layers), [["L0"], ["L29"]]);
  for (const name of names.slice(30, 39)) s.request(name);
  reply(m, "L29");
  assert.deepEqual(m.sent[2].content.layers, ["L38"]);
  reply(m, "L38");
  assert.equal(m.sent.length, 3, "nothing wanted: nothing asked");
  assert.ok(s.get("L38"));
  s.request("L38"); // on screen and here: prefetch its neighbours
  assert.deepEqual(m.sent[3].content.layers, ["L39", "L37"]);
  const fetched = m.sent.flatMap((x) => x.content.layers);
  assert.equal(fetched.length, 5, "39 layers passed, 5 fetched");
  m.set("_meta", { ...meta(names), version: 2 }); // new activations: nothing in flight any more
  assert.equal(s.inflight.size, 0);
  s.request("L5");
  assert.deepEqual(m.sent[4].content, { type: "fetch", layers: ["L5"], version: 2 });
  reply(m, "L39"); // the answer to a fetch of the old version changes nothing
  assert.equal(s.get("L39"), null);
  assert.equal(m.sent.length, 5);
});

test("lazy until the kernel pushes every layer: _data arrivals are announced, then nothing is fetched", () => {
  const names = ["a", "b", "c"];
  const m = fakeModel({ _meta: meta(names), _data: {}, _mode: "lazy", budget_mb: 32 });
  const s = new LayerStore(m);
  const heard = [];
  s.subscribe((n) => heard.push(n));
  s.request("b");
  assert.equal(m.sent.length, 1);
  m.set("_data", { a: wire(3), b: wire(3), c: wire(3) });
  m.set("_mode", "eager");
  assert.deepEqual(heard, ["a", "b", "c"]);
  assert.ok(s.get("b"));
  reply(m, "b"); // the fetch in flight is still answered; nothing more is asked
  s.request("c");
  assert.equal(m.sent.length, 1);
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
  assert.equal(s.inflight.size, 0);
  s.request("a"); // the kernel does not know it: not asked again
  assert.equal(m.sent.length, 1);
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
    _data: { fc: quantized([1, 3], [0], [5], q) },
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
