// The one place a view's text scale (the `font_scale` trait, see cnn_widgets.style) reaches the page:
// the `--cnnw-scale` CSS custom property on the view's root. Every font size in style.js and in the
// views' own CSS is written as calc(<base> * var(--cnnw-scale, 1)), so setting the property rescales
// every caption, label, tile text and control at once; text drawn on a canvas takes its size from
// canvasFont, which reads the same property.

/** The CSS custom property that carries the text scale. */
export const SCALE_PROPERTY = "--cnnw-scale";

/**
 * A usable scale from a trait value (1 for anything that is not a positive finite number).
 * @param {unknown} value
 * @returns {number}
 */
export function scaleOf(value) {
  const s = Number(value);
  return Number.isFinite(s) && s > 0 ? s : 1;
}

/**
 * Keep the root's `--cnnw-scale` equal to the model's `font_scale`, now and on every change;
 * `onChange` (e.g. a repaint of canvas-drawn text) runs after each change.
 * @param {any} model
 * @param {HTMLElement} root the view's root (dom.js mountRoot)
 * @param {import("./dom.js").Scope} scope
 * @param {() => void} [onChange]
 */
export function bindScale(model, root, scope, onChange) {
  const apply = () => root.style.setProperty(SCALE_PROPERTY, String(scaleOf(model.get("font_scale"))));
  apply();
  scope.onModel(model, "change:font_scale", () => {
    apply();
    onChange?.();
  });
}

/**
 * A canvas `font` string for text of `px` pixels at scale 1, scaled like the view's CSS text.
 * @param {Element} node an element inside the view (its root or a canvas in it)
 * @param {number} px
 * @param {string} [family]
 * @returns {string}
 */
export function canvasFont(node, px, family = "sans-serif") {
  const s = scaleOf(parseFloat(getComputedStyle(node).getPropertyValue(SCALE_PROPERTY)));
  return `${Math.round(px * s * 10) / 10}px ${family}`;
}
