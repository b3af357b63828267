// ImageStrip view (the Explorer's image picker): one thumbnail per image with its true and predicted
// labels as text, the current one marked. Thumbnails are buttons with a roving tabindex: Tab reaches the
// current one, arrow keys / Home / End move the choice (and the focus), a click picks one. Every button
// carries data-lm-suppress-shortcuts (dom.js h), so the keys never reach notebook shortcuts.

import { decodeImage } from "../codec.js";
import { Scope, h, markPainted, mountRoot } from "../dom.js";
import { rgbToRgba } from "../overlay.js";
import { bindScale } from "../scale.js";

/** Rendered thumbnails are this many CSS px on their longer side. */
export const THUMB_SIDE = 72;

const STRIP_CSS = `
.cnnw-image-strip .cnnw-strip-list {
  display: flex;
  flex-wrap: nowrap;
  gap: 6px;
  overflow-x: auto;
  padding: 3px;
}
.cnnw-image-strip .cnnw-thumb {
  display: flex;
  flex-direction: column;
  align-items: center;
  gap: 2px;
  flex: none;
  padding: 3px;
  border: 2px solid transparent;
  background: transparent;
  font-size: var(--cnnw-small-font-size, 12px);
  line-height: 1.25;
}
.cnnw-image-strip .cnnw-thumb[aria-current="true"] {
  border-color: var(--jp-brand-color1, #1976d2);
  background: var(--jp-layout-color2, #eef3fb);
}
.cnnw-image-strip .cnnw-thumb:focus {
  outline: 2px solid var(--jp-brand-color1, #1976d2);
  outline-offset: 1px;
}
.cnnw-image-strip .cnnw-thumb canvas {
  image-rendering: pixelated;
}
.cnnw-image-strip .cnnw-thumb-truth,
.cnnw-image-strip .cnnw-thumb-predicted {
  max-width: calc(${THUMB_SIDE + 56}px * var(--cnnw-scale, 1));
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
}
.cnnw-image-strip .cnnw-wrong .cnnw-thumb-predicted {
  color: var(--jp-error-color1, #c62828);
}
`;

/**
 * The index an arrow, Home or End key moves to (clamped), or null for any other key.
 * @param {number} index the current index
 * @param {number} count number of images
 * @param {string} key KeyboardEvent.key
 * @returns {number | null}
 */
export function stepIndex(index, count, key) {
  if (count <= 0) return null;
  const at = Math.min(Math.max(index, 0), count - 1);
  switch (key) {
    case "ArrowLeft":
    case "ArrowUp":
      return Math.max(at - 1, 0);
    case "ArrowRight":
    case "ArrowDown":
      return Math.min(at + 1, count - 1);
    case "Home":
      return 0;
    case "End":
      return count - 1;
    default:
      return null;
  }
}

/**
 * The caption lines of a thumbnail, whether the prediction is wrong, and why it failed (or "").
 * @param {{truth?: string | null, predicted?: string | null, error?: string} | undefined} c
 * @returns {{truth: string, predicted: string, wrong: boolean, error: string}}
 */
export function captionText(c) {
  const truth = typeof c?.truth === "string" ? c.truth : null;
  const predicted = typeof c?.predicted === "string" ? c.predicted : null;
  const error = typeof c?.error === "string" ? c.error : "";
  return {
    truth: truth === null ? "" : `true: ${truth}`,
    predicted: predicted !== null ? `predicted: ${predicted}` : error ? "predicted: failed" : "predicted: …",
    wrong: truth !== null && predicted !== null && truth !== predicted,
    error,
  };
}

/**
 * CSS size of a thumbnail for an h×w image: the longer side becomes `side` px.
 * @param {number} h
 * @param {number} w
 * @param {number} side
 * @returns {[number, number]} [width, height]
 */
export function thumbSize(h, w, side = THUMB_SIDE) {
  const f = side / Math.max(h, w, 1);
  return [Math.max(1, Math.round(w * f)), Math.max(1, Math.round(h * f))];
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderStrip(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-image-strip");
  root.prepend(h("style", { text: STRIP_CSS }));
  bindScale(model, root, scope);
  const list = h("div", { className: "cnnw-strip-list", attrs: { role: "group", "aria-label": "images: arrow keys choose one" } });
  root.append(list);
  /** @type {HTMLButtonElement[]} */
  let buttons = [];

  function build() {
    const hadFocus = list.contains(document.activeElement);
    const thumbs = model.get("_thumbs") ?? [];
    buttons = thumbs.map((/** @type {any} */ msg, /** @type {number} */ i) => {
      const canvas = /** @type {HTMLCanvasElement} */ (h("canvas"));
      const image = decodeImage(msg);
      if (image) {
        canvas.width = image.w;
        canvas.height = image.h;
        const [cw, ch] = thumbSize(image.h, image.w);
        canvas.style.width = `${cw}px`;
        canvas.style.height = `${ch}px`;
        const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
        ctx.putImageData(new ImageData(rgbToRgba(image.rgb, image.h, image.w), image.w, image.h), 0, 0);
      }
      const button = /** @type {HTMLButtonElement} */ (h("button", {
        className: "cnnw-thumb", attrs: { type: "button", "data-index": String(i) },
      }, [canvas, h("span", { className: "cnnw-thumb-truth" }), h("span", { className: "cnnw-thumb-predicted" })]));
      return button;
    });
    list.replaceChildren(...buttons);
    captions();
    select(hadFocus);
  }

  function captions() {
    const all = model.get("_captions") ?? [];
    buttons.forEach((button, i) => {
      const { truth, predicted, wrong, error } = captionText(all[i]);
      const [t, p] = /** @type {HTMLElement[]} */ ([...button.querySelectorAll("span")]);
      t.textContent = truth;
      t.hidden = truth === "";
      p.textContent = predicted;
      button.classList.toggle("cnnw-wrong", wrong);
      button.setAttribute("aria-label", `image ${i}${truth ? `, ${truth}` : ""}, ${predicted}`);
      button.title = [`image ${i}`, truth, predicted, error].filter(Boolean).join("\n");
    });
  }

  /** Mark the current thumbnail (roving tabindex); `focus`: move the focus to it. */
  function select(focus = false) {
    const index = Number(model.get("index"));
    buttons.forEach((button, i) => {
      button.setAttribute("aria-current", String(i === index));
      button.tabIndex = i === index ? 0 : -1;
    });
    const current = buttons[index];
    if (current) {
      if (focus) current.focus();
      current.scrollIntoView?.({ block: "nearest", inline: "nearest" });
    }
    root.dataset.index = String(index);
    markPainted(root, String(index), performance.now());
  }

  /** @param {number} i */
  function choose(i) {
    if (i === Number(model.get("index"))) return;
    model.set("index", i);
    model.save_changes();
    select(true);
  }

  scope.listen(list, "click", (/** @type {MouseEvent} */ e) => {
    const button = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (e.target).closest(".cnnw-thumb"));
    if (button) choose(Number(button.dataset.index));
  });
  scope.listen(list, "keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const next = stepIndex(Number(model.get("index")), buttons.length, e.key);
    if (next === null) return;
    e.preventDefault();
    e.stopPropagation();
    choose(next);
    buttons[next]?.focus();
  });
  scope.onModel(model, "change:_thumbs", build);
  scope.onModel(model, "change:_captions", captions);
  scope.onModel(model, "change:index", () => select(list.contains(document.activeElement)));
  build();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderStrip(model, el);
  },
};
