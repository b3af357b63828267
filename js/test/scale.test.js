import { test } from "node:test";
import assert from "node:assert/strict";

import { SCALE_PROPERTY, bindScale, canvasFont, scaleOf } from "../src/scale.js";
import { Scope } from "../src/dom.js";

/** A model with get/on/off/set like anywidget's, enough for bindScale. */
function fakeModel(values) {
  const handlers = new Map();
  return {
    get: (k) => values[k],
    on: (e, fn) => handlers.set(e, [...(handlers.get(e) ?? []), fn]),
    off: (e, fn) => handlers.set(e, (handlers.get(e) ?? []).filter((f) => f !== fn)),
    set(k, v) {
      values[k] = v;
      for (const fn of handlers.get(`change:${k}`) ?? []) fn();
    },
    listeners: (e) => (handlers.get(e) ?? []).length,
  };
}

/** An element whose inline custom properties getComputedStyle reads back (inherited scale). */
function fakeRoot() {
  const props = new Map();
  return { style: { setProperty: (k, v) => props.set(k, v), getPropertyValue: (k) => props.get(k) ?? "" }, props };
}

test("scaleOf keeps positive finite numbers and falls back to 1", () => {
  assert.equal(scaleOf(1.5), 1.5);
  assert.equal(scaleOf("2"), 2);
  for (const bad of [undefined, null, NaN, 0, -1, Infinity, "big"]) assert.equal(scaleOf(bad), 1, String(bad));
});

test("bindScale puts font_scale on the root now and on every change, and lets go on dispose", () => {
  const model = fakeModel({ font_scale: 1.5 });
  const root = fakeRoot();
  const scope = new Scope();
  let repaints = 0;
  bindScale(model, /** @type {any} */ (root), scope, () => repaints++);
  assert.equal(root.props.get(SCALE_PROPERTY), "1.5");
  model.set("font_scale", 2);
  assert.equal(root.props.get(SCALE_PROPERTY), "2");
  assert.equal(repaints, 1);
  scope.dispose();
  assert.equal(model.listeners("change:font_scale"), 0);
  model.set("font_scale", 3);
  assert.equal(root.props.get(SCALE_PROPERTY), "2");
});

test("bindScale without a font_scale trait leaves the text at scale 1", () => {
  const root = fakeRoot();
  bindScale(fakeModel({}), /** @type {any} */ (root), new Scope());
  assert.equal(root.props.get(SCALE_PROPERTY), "1");
});

test("canvasFont scales a pixel size by the element's --cnnw-scale", () => {
  const root = fakeRoot();
  globalThis.getComputedStyle = (el) => el.style;
  try {
    assert.equal(canvasFont(/** @type {any} */ (root), 12), "12px sans-serif");
    root.style.setProperty(SCALE_PROPERTY, "1.5");
    assert.equal(canvasFont(/** @type {any} */ (root), 12, "monospace"), "18px monospace");
  } finally {
    delete globalThis.getComputedStyle;
  }
});
