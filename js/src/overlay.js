// The enlarged view: the input image with one channel's colours over it, upsampled to the image's
// size (bilinear) at a chosen opacity; and the colour bar beside it.

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
 * Draw a horizontal colour bar of a packed-free RGB LUT (768 bytes) into a 256×1 canvas.
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
