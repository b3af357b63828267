// Decoder for cnn_widgets.wire, the one tensor codec (its module docstring defines the format). A
// message is {shape, dtype, kind, codec, data, nonfinite?}; `data` holds the per-slice float32 side part
// followed by the payload, little-endian. It arrives as a DataView that may be a window into a larger
// buffer, so byteOffset/byteLength are always honoured.

/**
 * @typedef {Object} WireMessage
 * @property {number[]} shape
 * @property {"uint8" | "float16" | "float32"} dtype payload element type
 * @property {"quantized" | "exact" | "scaled" | "raw"} kind how payload values map to values
 * @property {number} codec format version, CODEC
 * @property {DataView | ArrayBuffer | ArrayBufferView} data side part, then payload
 * @property {number} [nonfinite] how many NaN/Inf were encoded as 0
 */

/**
 * @typedef {Object} Tensor
 * @property {number[]} shape
 * @property {Float32Array | Uint8Array} data Float32Array, or the raw bytes for exact uint8
 * @property {number[]} min per slice along axis 0 (exact values before quantisation for "quantized")
 * @property {number[]} max
 */

/** The format version this decoder reads. */
export const CODEC = 2;

/** kind → [payload dtype, bytes per payload element, float32 side values per slice] */
/** @type {Map<string, [string, number, number]>} */
const KINDS = new Map([
  ["quantized", ["uint8", 1, 2]],
  ["exact", ["uint8", 1, 0]],
  ["scaled", ["float16", 2, 1]],
  ["raw", ["float32", 4, 0]],
]);

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
 * Decode one wire message. Quantised uint8 becomes float32, min + scale·q with
 * scale = fround((max − min) / 255) exactly as the encoder computed it (error at most scale/2); scaled
 * float16 becomes scale·h; exact uint8 stays the raw bytes, without a copy.
 * @param {WireMessage} msg
 * @returns {Tensor}
 */
export function decode(msg) {
  const { shape, dtype, kind } = msg;
  if (msg.codec !== CODEC) {
    throw new Error(`wire message has codec ${JSON.stringify(msg.codec)} but this decoder reads codec ${CODEC}; rebuild the bundle or restart the kernel`);
  }
  const spec = KINDS.get(kind);
  if (!spec || spec[0] !== dtype) {
    throw new Error(`unknown wire kind/dtype ${JSON.stringify(kind)}/${JSON.stringify(dtype)}; expected one of ${[...KINDS.keys()]}`);
  }
  const [, itemsize, perSlice] = spec;
  const view = asDataView(msg.data);
  const n = numel(shape);
  const slices = shape.length ? shape[0] : 1;
  const side = 4 * perSlice * slices;
  if (view.byteLength !== side + n * itemsize) {
    throw new Error(
      `wire data has ${view.byteLength} bytes but shape [${shape}] of ${kind} ${dtype} needs ${side + n * itemsize}`,
    );
  }
  /** @param {number} row side-part row: the slices' values at floats [row·slices, (row+1)·slices) */
  const sideRow = (row) => Array.from({ length: slices }, (_, c) => view.getFloat32(4 * (row * slices + c), true));
  const size = slices ? n / slices : 0;
  if (kind === "exact") {
    const q = new Uint8Array(view.buffer, view.byteOffset, n);
    return { shape, data: q, ...sliceRange(q, slices) };
  }
  const data = new Float32Array(n);
  if (kind === "quantized") {
    const min = sideRow(0);
    const max = sideRow(1);
    const q = new Uint8Array(view.buffer, view.byteOffset + side, n);
    for (let c = 0; c < slices; c++) {
      const o = min[c];
      const s = Math.fround((max[c] - o) / 255);
      for (let i = c * size, end = i + size; i < end; i++) data[i] = o + s * q[i];
    }
    return { shape, data, min, max };
  }
  if (kind === "scaled") {
    const scale = sideRow(0);
    for (let c = 0; c < slices; c++) {
      const s = scale[c];
      for (let i = c * size, end = i + size; i < end; i++) data[i] = s * halfToFloat(view.getUint16(side + 2 * i, true));
    }
  } else {
    for (let i = 0; i < n; i++) data[i] = view.getFloat32(4 * i, true);
  }
  return { shape, data, ...sliceRange(data, slices) };
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
