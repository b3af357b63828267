// Decoder for cnn_widgets.wire, the one tensor codec (its module docstring defines the format).
// A message is {shape, dtype, data, scale?, offset?, min?, max?, nonfinite?}; `data` arrives as a
// DataView that may be a window into a larger buffer, so byteOffset/byteLength are always honoured.

/**
 * @typedef {Object} WireMessage
 * @property {number[]} shape
 * @property {"uint8" | "float16" | "float32"} dtype
 * @property {DataView | ArrayBuffer | ArrayBufferView} data
 * @property {number[]} [scale] per slice along axis 0 (uint8 quantised only)
 * @property {number[]} [offset] per slice along axis 0 (uint8 quantised only)
 * @property {number[]} [min] exact per-slice minimum before quantisation
 * @property {number[]} [max] exact per-slice maximum before quantisation
 * @property {number} [nonfinite] how many NaN/Inf were encoded as 0
 */

/**
 * @typedef {Object} Tensor
 * @property {number[]} shape
 * @property {Float32Array | Uint8Array} data Float32Array, or the raw bytes for exact uint8
 * @property {number[]} min per slice along axis 0 (computed when the message has none)
 * @property {number[]} max
 */

const ITEMSIZE = { uint8: 1, float16: 2, float32: 4 };

/**
 * A DataView over exactly the bytes of `buf`, keeping its offset into the underlying buffer.
 * @param {DataView | ArrayBuffer | ArrayBufferView} buf
 * @returns {DataView}
 */
export function asDataView(buf) {
  if (buf instanceof DataView) return buf;
  if (buf instanceof ArrayBuffer) return new DataView(buf);
  if (ArrayBuffer.isView(buf)) return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  throw new TypeError(`expected a DataView, ArrayBuffer or typed array, got ${typeof buf}`);
}

/**
 * IEEE 754 half-precision bits → number (normals, subnormals, ±0, ±Inf, NaN).
 * @param {number} bits 16-bit pattern
 * @returns {number}
 */
export function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** @param {number[]} shape */
export function numel(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Per-slice (axis 0) extrema of decoded values.
 * @param {ArrayLike<number>} data
 * @param {number} slices
 * @returns {{min: number[], max: number[]}}
 */
export function sliceRange(data, slices) {
  const size = slices ? data.length / slices : 0;
  const min = new Array(slices).fill(0);
  const max = new Array(slices).fill(0);
  for (let c = 0; c < slices; c++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = c * size, end = i + size; i < end; i++) {
      const v = data[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (size) {
      min[c] = lo;
      max[c] = hi;
    }
  }
  return { min, max };
}

/**
 * Decode one wire message into values. Quantised uint8 becomes float32 (offset + scale·q, error at
 * most scale/2); exact uint8 (no scale) stays the raw bytes, without a copy.
 * @param {WireMessage} msg
 * @returns {Tensor}
 */
export function decode(msg) {
  const { shape, dtype } = msg;
  const itemsize = ITEMSIZE[dtype];
  if (!itemsize) throw new Error(`unknown wire dtype ${JSON.stringify(dtype)}; expected uint8, float16 or float32`);
  const view = asDataView(msg.data);
  const n = numel(shape);
  if (view.byteLength !== n * itemsize) {
    throw new Error(
      `wire data has ${view.byteLength} bytes but shape [${shape}] of ${dtype} needs ${n * itemsize}`,
    );
  }
  const slices = shape.length ? shape[0] : 1;
  /** @type {Float32Array | Uint8Array} */
  let data;
  if (dtype === "uint8") {
    const q = new Uint8Array(view.buffer, view.byteOffset, n);
    if (!msg.scale) {
      const r = msg.min && msg.max ? { min: msg.min, max: msg.max } : sliceRange(q, slices);
      return { shape, data: q, min: r.min, max: r.max };
    }
    const { scale, offset } = msg;
    if (scale.length !== slices || !offset || offset.length !== slices) {
      throw new Error(`wire uint8 message needs ${slices} scale/offset values, got ${scale.length}`);
    }
    data = new Float32Array(n);
    const size = slices ? n / slices : 0;
    for (let c = 0; c < slices; c++) {
      const s = scale[c];
      const o = offset[c];
      for (let i = c * size, end = i + size; i < end; i++) data[i] = o + s * q[i];
    }
  } else if (dtype === "float16") {
    data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = halfToFloat(view.getUint16(2 * i, true));
  } else {
    data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = view.getFloat32(4 * i, true);
  }
  const r = msg.min && msg.max ? { min: msg.min, max: msg.max } : sliceRange(data, slices);
  return { shape, data, min: r.min, max: r.max };
}

/**
 * An image trait (exact uint8 H×W×3, as the kernel sends pictures) as its bytes and size; null while
 * the trait is still empty.
 * @param {WireMessage | Record<string, never> | undefined} msg
 * @returns {{rgb: Uint8Array, h: number, w: number} | null}
 */
export function decodeImage(msg) {
  if (!msg?.shape) return null;
  const [h, w] = msg.shape;
  return { rgb: /** @type {Uint8Array} */ (decode(/** @type {WireMessage} */ (msg)).data), h, w };
}
