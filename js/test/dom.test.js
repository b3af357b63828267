import { test } from "node:test";
import assert from "node:assert/strict";

// A minimal DOM for node --test: enough of document.createElement and elements for dom.js's helpers
// (text through textContent only, attributes, children, events through the built-in EventTarget).

class FakeElement extends EventTarget {
  /** @param {string} tag */
  constructor(tag) {
    super();
    this.tagName = tag.toUpperCase();
    this.className = "";
    /** @type {FakeElement[]} */
    this.children = [];
    /** @type {FakeElement | null} */
    this.parentElement = null;
    /** @type {Map<string, string>} */
    this.attributes = new Map();
    /** @type {Record<string, string>} */
    this.dataset = {};
    this.hidden = false;
    this.tabIndex = -1;
    this.style = {};
    this._text = "";
  }

  get textContent() {
    return this._text + this.children.map((c) => c.textContent).join("");
  }

  set textContent(value) {
    this.replaceChildren();
    this._text = String(value);
  }

  /** @param {string} k @param {string} v */
  setAttribute(k, v) {
    this.attributes.set(k, String(v));
  }

  /** @param {string} k */
  getAttribute(k) {
    return this.attributes.get(k) ?? null;
  }

  /** @param {string} k */
  hasAttribute(k) {
    return this.attributes.has(k);
  }

  /** @param {FakeElement} child */
  appendChild(child) {
    child.parentElement = this;
    this.children.push(child);
    return child;
  }

  /** @param {...FakeElement} nodes */
  append(...nodes) {
    for (const n of nodes) this.appendChild(n);
  }

  /** @param {...FakeElement} nodes */
  replaceChildren(...nodes) {
    for (const c of this.children) c.parentElement = null;
    this.children = [];
    this._text = "";
    this.append(...nodes);
  }

  getBoundingClientRect() {
    return { left: 0, top: 0, width: 0, height: 0 };
  }
}

/** Install the stub as globalThis.document (once). */
function installDocument() {
  if (!globalThis.document) {
    // @ts-ignore a stub, not a Document
    globalThis.document = { createElement: (/** @type {string} */ tag) => new FakeElement(tag) };
  }
}

/**
 * A keydown event as a browser would send it.
 * @param {string} key
 * @param {{ctrlKey?: boolean, altKey?: boolean, metaKey?: boolean, shiftKey?: boolean}} [mods]
 */
function keydown(key, mods = {}) {
  const e = new Event("keydown", { bubbles: true, cancelable: true });
  return Object.assign(e, { key, ctrlKey: false, altKey: false, metaKey: false, shiftKey: false, ...mods });
}

/**
 * A click at client position (x, y).
 * @param {number} x
 * @param {number} y
 */
function click(x, y) {
  return Object.assign(new Event("click", { bubbles: true, cancelable: true }), { clientX: x, clientY: y });
}

installDocument();
const { Scope, bindControl, gridPointer, h, labelledSelect, mountRoot, onCommit, textLines } = await import("../src/dom.js");
const { layoutGrid, slotCenter } = await import("../src/grid.js");
const constants = await import("../src/constants_data.js");
const { SIGNS: OVERLAY_SIGNS } = await import("../src/overlay.js");

test("a view's root suppresses notebook shortcuts for everything inside it", () => {
  const el = new FakeElement("div");
  const root = /** @type {any} */ (mountRoot(/** @type {any} */ (el), "cnnw-test"));
  assert.equal(root.getAttribute("data-lm-suppress-shortcuts"), "true");
  assert.equal(root.className, "cnnw-root cnnw-test");
  assert.deepEqual(el.children.map((c) => c.tagName), ["STYLE", "DIV"]);
  assert.match(el.children[0].textContent, /\.cnnw-root \[hidden\]/);
});

test("a view gets a keyboard-reachable save PNG button after its own controls", async () => {
  const el = new FakeElement("div");
  const root = /** @type {any} */ (mountRoot(/** @type {any} */ (el), "cnnw-test extra"));
  root.appendChild(new FakeElement("canvas")); // what render() builds, synchronously
  await Promise.resolve(); // the button is added once render has returned
  const row = root.children[root.children.length - 1];
  assert.equal(row.className, "cnnw-save-row");
  const [button, status] = row.children;
  assert.equal(button.tagName, "BUTTON");
  assert.equal(button.textContent, "save PNG");
  assert.equal(button.getAttribute("type"), "button");
  assert.equal(button.getAttribute("data-lm-suppress-shortcuts"), "true");
  assert.equal(status.getAttribute("role"), "status");
  assert.match(el.children[0].textContent, /\.cnnw-save-row/);
});

test("every control made with h suppresses notebook shortcuts itself (Lumino matches :focus on it first)", () => {
  for (const tag of ["input", "select", "button", "textarea"]) {
    assert.equal(/** @type {any} */ (h(tag)).getAttribute("data-lm-suppress-shortcuts"), "true", tag);
  }
  for (const tag of ["div", "span", "label", "canvas", "option"]) {
    assert.equal(/** @type {any} */ (h(tag)).getAttribute("data-lm-suppress-shortcuts"), null, tag);
  }
  const { select } = labelledSelect("scale", "cnnw-scale", [["a", "A"], ["b", "B"]]);
  assert.equal(/** @type {any} */ (select).getAttribute("data-lm-suppress-shortcuts"), "true");
});

test("text lines: one element per string, as text; anything else shows nothing", () => {
  const box = /** @type {any} */ (new FakeElement("div"));
  const evil = "<img src=x onerror=alert(1)>";
  textLines(box, ["guided backprop equals the gradient on this model: it has no nn.ReLU", evil], "cnnw-note");
  assert.equal(box.children.length, 2);
  assert.deepEqual(box.children.map((/** @type {any} */ c) => [c.tagName, c.className]), [["DIV", "cnnw-note"], ["DIV", "cnnw-note"]]);
  assert.equal(box.children[1].textContent, evil);
  assert.equal(box.children[1].children.length, 0, "markup in a note stays text");
  for (const empty of [[], undefined, null, "a string", { 0: "x" }, ["", 3, null]]) {
    textLines(box, empty);
    assert.equal(box.children.length, 0, JSON.stringify(empty));
  }
  textLines(box, ["x", 1, "y"]);
  assert.deepEqual(box.children.map((/** @type {any} */ c) => c.textContent), ["x", "y"]);
});

/** A grid of 10 tiles in 4 columns under gridPointer, with the selection held in `state.slot`. */
function keyboardGrid() {
  const scope = new Scope();
  const root = new FakeElement("div");
  const grid = new FakeElement("canvas");
  const tip = new FakeElement("div");
  const L = layoutGrid({ count: 10, tileH: 3, tileW: 3, cols: 4 });
  const state = { slot: -1, live: true, calls: /** @type {number[]} */ ([]) };
  gridPointer(scope, /** @type {any} */ (root), /** @type {any} */ (grid), /** @type {any} */ (tip), {
    live: () => (state.live ? { L } : null),
    describe: (_, hit) => `slot ${hit.slot}`,
    selected: () => state.slot,
    select: (_, slot) => {
      state.calls.push(slot);
      state.slot = slot;
    },
  });
  /** Press a key; returns whether the grid used it (default prevented). */
  const press = (/** @type {string} */ key, mods = {}) => {
    const e = keydown(key, mods);
    grid.dispatchEvent(e);
    return e.defaultPrevented;
  };
  return { scope, grid, L, state, press };
}

test("tile grid: focusable; arrows, Home and End move the selection, Enter and Space toggle it", () => {
  const { grid, state, press } = keyboardGrid();
  assert.equal(grid.tabIndex, 0);
  assert.equal(grid.getAttribute("data-lm-suppress-shortcuts"), "true");
  const seen = [];
  for (const key of ["ArrowRight", "ArrowRight", "ArrowDown", "ArrowDown", "ArrowLeft", "ArrowUp", "End", "Home"]) {
    assert.equal(press(key), true, key);
    seen.push(state.slot);
  }
  assert.deepEqual(seen, [0, 1, 5, 9, 8, 4, 9, 0]);
  press("ArrowRight");
  assert.equal(press("Enter"), true);
  assert.equal(state.slot, -1, "Enter clears the selection");
  assert.equal(press(" "), true);
  assert.equal(state.slot, 1, "Space brings back the tile last selected");
  press("Enter");
  assert.equal(press("ArrowLeft"), true);
  assert.equal(state.slot, 0, "an arrow from no selection starts at the first tile");
});

test("tile grid: keys it does not use, modified keys and a stale grid are left alone", () => {
  const { scope, state, press } = keyboardGrid();
  press("ArrowRight");
  state.calls.length = 0;
  assert.equal(press("ArrowLeft"), true);
  assert.equal(press("ArrowLeft"), true, "at the first tile the key is still used (the page must not scroll)");
  assert.deepEqual(state.calls, [], "… but nothing changes");
  for (const key of ["a", "Tab", "Escape", "PageDown"]) assert.equal(press(key), false, key);
  assert.equal(press("ArrowRight", { ctrlKey: true }), false);
  assert.equal(press("ArrowRight", { altKey: true }), false);
  state.live = false;
  assert.equal(press("ArrowRight"), false);
  state.live = true;
  scope.dispose();
  assert.equal(press("ArrowRight"), false, "dispose removes the listener");
  assert.deepEqual(state.calls, []);
});

test("tile grid: a click selects a tile and a second click on it clears the selection", () => {
  const { grid, L, state, press } = keyboardGrid();
  const [x, y] = slotCenter(L, 6);
  grid.dispatchEvent(click(x, y));
  assert.equal(state.slot, 6);
  grid.dispatchEvent(click(x, y));
  assert.equal(state.slot, -1);
  press("Enter");
  assert.equal(state.slot, 6, "Enter selects the tile last clicked");
  grid.dispatchEvent(click(L.width + 5, 1));
  assert.equal(state.slot, 6, "a click beside the tiles does nothing");
});

/**
 * A typed input and the values its commits saw.
 * @param {string} type
 */
function typedInput(type) {
  const scope = new Scope();
  const input = /** @type {any} */ (h("input"));
  input.type = type;
  input.value = "";
  /** @type {string[]} */
  const commits = [];
  onCommit(scope, input, () => commits.push(input.value));
  /** @param {string} value typing: one "input" event per change of value */
  const type_ = (value) => {
    input.value = value;
    input.dispatchEvent(new Event("input"));
  };
  return { scope, input, commits, type: type_, fire: (/** @type {string} */ name) => input.dispatchEvent(new Event(name)) };
}

test("a typed number commits on Enter (a notebook cell keeps Enter from firing change) and on change, once", () => {
  const { scope, input, commits, type, fire } = typedInput("number");
  type("5");
  input.dispatchEvent(keydown("Enter"));
  assert.deepEqual(commits, ["5"], "Enter commits");
  fire("change"); // the input loses the focus: the value Enter committed is not committed again
  input.dispatchEvent(keydown("Enter"));
  assert.deepEqual(commits, ["5"], "nothing new: no second commit");
  type("7");
  input.dispatchEvent(keydown("a"));
  fire("change");
  assert.deepEqual(commits, ["5", "7"], "change commits without Enter; other keys commit nothing");
  input.value = "5"; // the kernel set it back; typing the value Enter once committed commits it again
  type("5");
  input.dispatchEvent(keydown("Enter"));
  assert.deepEqual(commits, ["5", "7", "5"]);
  scope.dispose();
  type("9");
  input.dispatchEvent(keydown("Enter"));
  fire("change");
  assert.deepEqual(commits, ["5", "7", "5"], "no listener after cleanup");
});

test("a checkbox or a select commits on change only; bindControl commits typed inputs on Enter too", () => {
  const box = typedInput("checkbox");
  box.input.dispatchEvent(keydown("Enter"));
  assert.deepEqual(box.commits, []);
  box.fire("change");
  box.fire("change");
  assert.equal(box.commits.length, 2, "every change of a checkbox commits (its value is always \"on\")");
  /** @type {Record<string, any>} */
  const traits = {};
  let saves = 0;
  const model = { set: (/** @type {string} */ k, /** @type {any} */ v) => { traits[k] = v; }, save_changes: () => { saves += 1; } };
  const scope = new Scope();
  const input = /** @type {any} */ (h("input"));
  input.type = "number";
  bindControl(scope, model, input, "channel", { parse: Number });
  input.value = "3";
  input.dispatchEvent(new Event("input"));
  input.dispatchEvent(keydown("Enter"));
  input.dispatchEvent(new Event("change"));
  assert.deepEqual([traits, saves], [{ channel: 3 }, 1]);
  const slider = /** @type {any} */ (h("input"));
  slider.type = "range";
  bindControl(scope, model, slider, "layer", { event: "input" });
  slider.value = "2";
  slider.dispatchEvent(new Event("input"));
  assert.deepEqual([traits, saves], [{ channel: 3, layer: "2" }, 2]);
  scope.dispose();
});

test("the generated choice lists are the ones the views use", () => {
  assert.deepEqual(constants.SIGNS, ["positive", "negative", "absolute", "all"]);
  assert.deepEqual(OVERLAY_SIGNS, constants.SIGNS, "overlay.js's SIGNS must equal the generated list");
  assert.deepEqual(constants.ACTIVATION_SCALES, ["channel", "layer", "global"]);
  assert.deepEqual(constants.COMPARE_SCALES, ["shared", "per-method", "per-panel"]);
  assert.deepEqual(constants.FILTER_NORMALIZE, ["filter", "layer"]);
});
