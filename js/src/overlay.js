// Heatmaps over images. Pure compositing for attribution maps (sign handling, percentile clipping,
// colour range, opacity blending; unit-tested in node) and the canvas helpers of the enlarged views:
// the input image with one channel's or one map's colours over it, and the colour bar beside it.

import { colorIndex, isDiverging } from "./colormap.js";
import { SIGNS } from "./constants_data.js";

/** @typedef {"positive" | "negative" | "absolute" | "all"} Sign */

/** The sign modes, in menu order: which part of a signed map is shown (generated from Python). */
export { SIGNS };

/** The colormap used for sign "all" when the chosen one is not diverging. */
export const SIGNED_COLORMAP = "RdBu_r";

/**
 * A map value as shown under a sign mode: "positive" keeps v > 0 (else 0), "negative" shows −v for
 * v < 0 (else 0), "absolute" |v|, "all" v itself. NaN stays NaN (it is never painted).
 * @param {number} v
 * @param {Sign} sign
 * @returns {number}
 */
export function signValue(v, sign) {
  if (v !== v) return NaN;
  switch (sign) {
    case "positive":
      return v > 0 ? v : 0;
    case "negative":
      return v < 0 ? -v : 0;
    case "absolute":
      return Math.abs(v);
    case "all":
      return v;
    default:
      throw new Error(`unknown sign ${JSON.stringify(sign)}; expected ${SIGNS.join(", ")}`);
  }
}

/**
 * The colormap actually used: sign "all" needs a diverging map centred on zero, so a sequential
 * choice is replaced by SIGNED_COLORMAP; other signs use the choice as it is.
 * @param {string} name
 * @param {Sign} sign
 * @returns {string}
 */
export function overlayColormap(name, sign) {
  return sign === "all" && !isDiverging(name) ? SIGNED_COLORMAP : name;
}

/**
 * Ascending magnitudes of the shown values (|signValue|), NaN dropped: the sample the colour range's
 * percentile is taken from. Sort once per map and sign; the clip slider then costs one lookup.
 * @param {ArrayLike<number>} values
 * @param {Sign} sign
 * @returns {Float32Array}
 */
export function sortedMagnitudes(values, sign) {
  const out = new Float32Array(values.length);
  let k = 0;
  for (let i = 0; i < values.length; i++) {
    const s = signValue(values[i], sign);
    if (s === s) out[k++] = Math.abs(s);
  }
  return out.subarray(0, k).sort();
}

/**
 * Several ascending arrays merged into one ascending array (for a colour range shared by panels).
 * @param {Float32Array[]} arrays
 * @returns {Float32Array}
 */
export function mergeSorted(arrays) {
  let n = 0;
  for (const a of arrays) n += a.length;
  const out = new Float32Array(n);
  let k = 0;
  for (const a of arrays) {
    out.set(a, k);
    k += a.length;
  }
  return arrays.length > 1 ? out.sort() : out;
}

/**
 * The p-th percentile (0‥100) of ascending values, interpolated linearly between neighbours as
 * numpy.percentile does; NaN for no values.
 * @param {ArrayLike<number>} sorted
 * @param {number} p
 * @returns {number}
 */
export function percentile(sorted, p) {
  const n = sorted.length;
  if (!n) return NaN;
  const pos = (Math.min(Math.max(p, 0), 100) / 100) * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/**
 * @typedef {Object} OverlayRange
 * @property {number} lo value at the low end of the colormap
 * @property {number} hi value at the high end (values beyond it are clipped to the end colour)
 * @property {boolean} empty no non-zero value to show (the image is drawn without heat)
 */

/**
 * The colour range of a map: it ends at the `clip` percentile of the shown magnitudes, so a few
 * extreme pixels do not wash out the rest (the peak when that percentile is 0, as for a sparse map).
 * Diverging colormaps get a range symmetric about zero, sequential ones start at zero.
 * @param {ArrayLike<number>} sorted ascending magnitudes (sortedMagnitudes)
 * @param {number} clip percentile, 100 = no clipping
 * @param {boolean} diverging
 * @returns {OverlayRange}
 */
export function overlayRange(sorted, clip, diverging) {
  let top = percentile(sorted, clip);
  if (!(top > 0)) top = sorted.length ? sorted[sorted.length - 1] : 0;
  if (!(top > 0)) return { lo: diverging ? -1 : 0, hi: 1, empty: true };
  return { lo: diverging ? -top : 0, hi: top, empty: false };
}

/**
 * Composite a heatmap over an image: each pixel is (1 − opacity)·image + opacity·colour(value), the
 * colour from `table` with the shown value (signValue) placed in [lo, hi] (clamped at the ends). NaN
 * pixels, an empty range (hi ≤ lo) or opacity 0 leave the image as it is. Output is opaque RGBA.
 * @param {Uint8Array | Uint8ClampedArray} rgb H×W×3 image bytes
 * @param {ArrayLike<number>} values H×W map
 * @param {{sign: Sign, lo: number, hi: number, table: Uint8Array, opacity: number}} opts
 * @param {Uint8ClampedArray} [out] H×W×4 buffer to reuse
 * @returns {Uint8ClampedArray}
 */
export function blendOverlay(rgb, values, { sign, lo, hi, table, opacity }, out) {
  const n = values.length;
  if (rgb.length !== 3 * n) throw new Error(`expected ${3 * n} RGB bytes for ${n} map values, got ${rgb.length}`);
  const rgba = out && out.length === 4 * n ? out : new Uint8ClampedArray(4 * n);
  const a = hi > lo ? Math.min(Math.max(opacity, 0), 1) : 0;
  const b = 1 - a;
  for (let i = 0; i < n; i++) {
    const s = signValue(values[i], sign);
    const r = rgb[3 * i];
    const g = rgb[3 * i + 1];
    const bl = rgb[3 * i + 2];
    if (s !== s || a === 0) {
      rgba[4 * i] = r;
      rgba[4 * i + 1] = g;
      rgba[4 * i + 2] = bl;
    } else {
      const k = 3 * colorIndex(s, lo, hi);
      rgba[4 * i] = b * r + a * table[k];
      rgba[4 * i + 1] = b * g + a * table[k + 1];
      rgba[4 * i + 2] = b * bl + a * table[k + 2];
    }
    rgba[4 * i + 3] = 255;
  }
  return rgba;
}

/**
 * H×W×3 RGB bytes → H×W×4 RGBA bytes (opaque), ready for ImageData.
 * @param {Uint8Array} rgb
 * @param {number} h
 * @param {number} w
 * @returns {Uint8ClampedArray}
 */
export function rgbToRgba(rgb, h, w) {
  const n = h * w;
  if (rgb.length !== 3 * n) throw new Error(`expected ${3 * n} RGB bytes for ${h}×${w}, got ${rgb.length}`);
  const out = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    out[4 * i] = rgb[3 * i];
    out[4 * i + 1] = rgb[3 * i + 1];
    out[4 * i + 2] = rgb[3 * i + 2];
    out[4 * i + 3] = 255;
  }
  return out;
}

/**
 * A canvas holding exactly these RGBA pixels.
 * @param {Uint8ClampedArray} rgba
 * @param {number} w
 * @param {number} h
 * @returns {HTMLCanvasElement}
 */
export function pixelsCanvas(rgba, w, h) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = /** @type {CanvasRenderingContext2D} */ (c.getContext("2d"));
  ctx.putImageData(new ImageData(rgba, w, h), 0, 0);
  return c;
}

/**
 * CSS size of the detail view for an h×w image: the longer side becomes `side` px.
 * @param {number} h
 * @param {number} w
 * @param {number} side
 * @returns {[number, number]} [width, height]
 */
export function detailSize(h, w, side) {
  const s = side / Math.max(h, w, 1);
  return [Math.max(1, Math.round(w * s)), Math.max(1, Math.round(h * s))];
}

/**
 * Size a canvas for an h×w picture: h×w pixels, shown with its longer side `side` CSS px, pixelated
 * when enlarged 2× or more.
 * @param {HTMLCanvasElement} canvas
 * @param {number} h
 * @param {number} w
 * @param {number} side
 */
export function fitCanvas(canvas, h, w, side) {
  const s = side / Math.max(h, w);
  canvas.width = w;
  canvas.height = h;
  canvas.style.width = `${Math.round(w * s)}px`;
  canvas.style.height = `${Math.round(h * s)}px`;
  canvas.style.imageRendering = s >= 2 ? "pixelated" : "auto";
}

/**
 * Paint the detail view: the image (its own pixels, unsmoothed), then the heat map stretched over
 * it (bilinear) at `opacity`. Either may be null.
 * @param {HTMLCanvasElement} canvas
 * @param {HTMLCanvasElement | null} image
 * @param {HTMLCanvasElement | null} heat
 * @param {number} opacity 0‥1
 */
export function paintDetail(canvas, image, heat, opacity) {
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (image) {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  }
  if (heat) {
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.globalAlpha = image ? opacity : 1;
    ctx.drawImage(heat, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
  }
}

/**
 * Draw a horizontal colour bar of an RGB LUT (768 bytes, see colormap.lut) into a 256×1 canvas.
 * @param {HTMLCanvasElement} canvas
 * @param {Uint8Array} table
 */
export function paintColorbar(canvas, table) {
  canvas.width = 256;
  canvas.height = 1;
  const rgba = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    rgba[4 * i] = table[3 * i];
    rgba[4 * i + 1] = table[3 * i + 1];
    rgba[4 * i + 2] = table[3 * i + 2];
    rgba[4 * i + 3] = 255;
  }
  /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d")).putImageData(new ImageData(rgba, 256, 1), 0, 0);
}

/** Styles of the attribution views (added after the shared stylesheet; --jp-* theme variables). */
export const OVERLAY_CSS = `
.cnnw-root [hidden] {
  display: none !important;
}
.cnnw-overlay {
  display: block;
  background: var(--jp-layout-color3, #d0d0d0);
}
.cnnw-root input[type="number"] {
  width: 6em;
}
.cnnw-root input[type="number"]:invalid {
  border-color: var(--jp-error-color1, #d32f2f);
}
.cnnw-error {
  color: var(--jp-error-color1, #d32f2f);
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  max-width: 640px;
}
.cnnw-error:empty,
.cnnw-notice:empty {
  display: none;
}
.cnnw-notice {
  color: var(--jp-warn-color1, #b26a00);
}
.cnnw-value {
  font-family: var(--jp-code-font-family, monospace);
  min-width: 3.5em;
}
`;
