// Per-model store of ActivationBrowser layers. Eager mode: every layer's wire message is in the
// `_data` trait and is decoded on first use. Lazy mode: layers arrive as custom messages
// ({type: "layer", name, version, ...header} + one buffer) on request ({type: "fetch", layers}). At most
// one fetch is in flight; what is asked for meanwhile only replaces the one layer wanted next, so
// holding an arrow key asks for the layer on screen whenever the kernel is free, never for every layer
// passed. Once the wanted layer is here its neighbours are prefetched. Decoded layers live in a bounded
// LRU cache. A widget may start lazy and turn eager when the kernel has pushed every layer in `_data`.
// Wired once per model in `initialize`; views subscribe to hear about arrivals.

import { decode, sliceRange } from "./codec.js";
import { tileMeans } from "./grid.js";

/**
 * @typedef {Object} LayerMeta
 * @property {string} name
 * @property {number[]} shape display shape [tiles, tileH, tileW]
 * @property {"grid" | "vector"} kind
 * @property {number[]} source_shape the activation's shape without the batch dimension
 * @property {number} min
 * @property {number} max
 * @property {number} nbytes encoded payload bytes
 */

/**
 * @typedef {Object} Meta
 * @property {number} version bumped whenever the activations change
 * @property {LayerMeta[]} layers
 * @property {[number, number]} global min and max over every layer
 */

/**
 * @typedef {Object} Layer
 * @property {string} name
 * @property {LayerMeta} meta
 * @property {Float32Array} values tiles×tileH×tileW, dequantised
 * @property {number[]} min per-tile minimum (exact)
 * @property {number[]} max per-tile maximum (exact)
 * @property {Float64Array} mean per-tile mean
 * @property {number} bytes decoded size
 */

/**
 * @typedef {Object} ModelLike
 * @property {(key: string) => any} get
 * @property {(event: string, fn: Function) => void} on
 * @property {(event: string, fn: Function) => void} off
 * @property {(content: any, callbacks?: any, buffers?: any[]) => void} send
 */

/** Decoded bytes the lazy cache may hold per MB of `budget_mb` (float32 is 4× the uint8 wire size). */
const DECODED_PER_ENCODED = 4;
const MB = 1024 * 1024;

export class LayerStore {
  /** @param {ModelLike} model */
  constructor(model) {
    this.model = model;
    /** @type {Map<string, Layer>} insertion order = recency (oldest first) */
    this.cache = new Map();
    /** Names of the one fetch in flight (empty: none). @type {Set<string>} */
    this.inflight = new Set();
    /** The layer to ask for when the fetch in flight is answered. @type {string | null} */
    this.wanted = null;
    /** Layers the kernel said it does not know (never asked again until reset). @type {Set<string>} */
    this.failed = new Set();
    /** @type {Set<(name: string) => void>} */
    this.listeners = new Set();
    /** @type {Set<string>} names never to evict (what views show now) */
    this.pinned = new Set();
    this.error = "";
    this.meta = /** @type {Meta} */ (model.get("_meta"));
    this.onMeta = () => this.reset();
    this.onData = () => this.dataChanged();
    this.onMsg = (/** @type {any} */ content, /** @type {any[]} */ buffers) => this.receive(content, buffers);
    model.on("change:_meta", this.onMeta);
    model.on("change:_data", this.onData);
    model.on("change:budget_mb", this.onData);
    model.on("msg:custom", this.onMsg);
  }

  /** Forget everything (the activations changed). */
  reset() {
    this.meta = this.model.get("_meta");
    this.cache.clear();
    this.inflight.clear();
    this.wanted = null;
    this.failed.clear();
    this.error = "";
    for (const fn of this.listeners) fn("");
  }

  /** @returns {string[]} layer names in slider order */
  names() {
    return this.meta.layers.map((l) => l.name);
  }

  /** @param {string} name */
  metaOf(name) {
    return this.meta.layers.find((l) => l.name === name);
  }

  /** Whether layers come over custom messages. */
  lazy() {
    return this.model.get("_mode") === "lazy";
  }

  /** Most bytes of decoded layers kept (lazy mode); never less than what is pinned. */
  maxBytes() {
    return DECODED_PER_ENCODED * MB * Number(this.model.get("budget_mb"));
  }

  /**
   * A decoded layer if the browser has its data (decoding eager data on first use), else null.
   * Never waits for the kernel.
   * @param {string} name
   * @returns {Layer | null}
   */
  get(name) {
    let layer = this.cache.get(name);
    if (layer) {
      this.cache.delete(name);
      this.cache.set(name, layer);
      return layer;
    }
    const msg = this.model.get("_data")?.[name];
    if (!msg) return null;
    layer = this.insert(name, msg);
    return layer;
  }

  /**
   * Want `name` on screen (lazy mode; no-op when eager): ask the kernel for it if the browser lacks it,
   * else for its missing neighbours. While a fetch is in flight this only records `name` as the layer
   * wanted next (replacing any earlier wish); it is asked for when the fetch in flight is answered.
   * @param {string} name
   */
  request(name) {
    if (!this.lazy() || !this.metaOf(name)) return;
    this.wanted = name;
    if (!this.inflight.size) this.sendWanted();
  }

  /** @param {string | undefined} name */
  missing(name) {
    if (name === undefined || this.cache.has(name) || this.failed.has(name)) return false;
    return !this.model.get("_data")?.[name];
  }

  /**
   * Send one fetch for the wanted layer, or for its neighbours if it is here already.
   * @param {string} [arriving] a layer received but not decoded yet (counts as here)
   */
  sendWanted(arriving) {
    const name = this.wanted;
    this.wanted = null;
    if (name === null || !this.lazy()) return;
    const names = this.names();
    const i = names.indexOf(name);
    const here = (/** @type {string | undefined} */ n) => n === undefined || n === arriving || !this.missing(n);
    const want = (here(name) ? [names[i + 1], names[i - 1]] : [name]).filter((n) => !here(n));
    if (!want.length) return;
    this.inflight = new Set(want);
    this.model.send({ type: "fetch", layers: want, version: this.meta.version });
  }

  /**
   * Keep `names` (the layers on screen) out of eviction.
   * @param {Iterable<string>} names
   */
  pin(names) {
    this.pinned = new Set(names);
  }

  /**
   * Handle a custom message from the kernel. Replies of an older `version` (asked before the
   * activations changed) are ignored. When the fetch in flight is complete, the wanted layer is asked
   * for before the arrival is decoded (the kernel works while the browser decodes and paints).
   * @param {any} content
   * @param {any[]} buffers
   */
  receive(content, buffers) {
    if (!content || content.version !== this.meta.version) return;
    if (content.type === "error") {
      this.error = String(content.message);
      for (const n of content.layers ?? []) {
        this.inflight.delete(n);
        this.failed.add(n);
      }
      if (!this.inflight.size) this.sendWanted();
      for (const fn of this.listeners) fn("");
      return;
    }
    if (content.type !== "layer") return;
    const { type, name, version, ...header } = content;
    this.inflight.delete(name);
    if (!this.inflight.size) this.sendWanted(name);
    this.insert(name, { ...header, data: buffers[0] });
    this.trim();
    for (const fn of this.listeners) fn(name);
  }

  /**
   * @param {string} name
   * @param {any} msg wire message
   * @returns {Layer}
   */
  insert(name, msg) {
    const meta = this.metaOf(name);
    if (!meta) throw new Error(`layer ${JSON.stringify(name)} is not one of this widget's layers`);
    const t = decode(msg);
    const values = /** @type {Float32Array} */ (t.data);
    const count = meta.shape[0];
    // vectors travel as one quantisation slice; their tiles are the single values
    const range = t.min.length === count ? t : sliceRange(values, count);
    const layer = {
      name,
      meta,
      values,
      min: range.min,
      max: range.max,
      mean: tileMeans(values, meta.shape[0]),
      bytes: values.byteLength,
    };
    this.cache.set(name, layer);
    return layer;
  }

  /** `_data` (or the budget) changed: trim the cache and announce the layers `_data` holds (a view
   * waiting for one of them paints it). */
  dataChanged() {
    this.trim();
    for (const name of Object.keys(this.model.get("_data") ?? {})) {
      for (const fn of this.listeners) fn(name);
    }
  }

  /** Evict least recently used unpinned layers beyond the byte budget. */
  trim() {
    let total = 0;
    for (const l of this.cache.values()) total += l.bytes;
    const limit = this.maxBytes();
    for (const [name, l] of this.cache) {
      if (total <= limit) break;
      if (this.pinned.has(name)) continue;
      this.cache.delete(name);
      total -= l.bytes;
    }
  }

  /**
   * Hear about layers arriving ("" = everything changed). Returns the unsubscribe function.
   * @param {(name: string) => void} fn
   */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  dispose() {
    this.model.off("change:_meta", this.onMeta);
    this.model.off("change:_data", this.onData);
    this.model.off("change:budget_mb", this.onData);
    this.model.off("msg:custom", this.onMsg);
    this.listeners.clear();
    this.cache.clear();
  }
}
