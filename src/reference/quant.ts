/**
 * Float64 twins of GGUF block dequantization, written from ggml's block layouts, plus generators
 * of fresh random blocks for the quantized kernels' tests. Tests only.
 *
 * Layouts (little-endian; "f16" is an IEEE half; a row of a [rows, cols] matrix is cols / QK
 * consecutive blocks and rows follow each other):
 * - Q8_0, 32 values in 34 bytes: f16 d, int8 q[32]; x = d q.
 * - Q4_0, 32 in 18: f16 d, qs[16]; value j < 16 is the low nibble of qs[j], value j + 16 its high
 *   nibble; x = d (q - 8).
 * - Q4_1, 32 in 20: f16 d, f16 m, qs[16] as Q4_0; x = d q + m.
 * - Q5_0, 32 in 22: f16 d, u32 qh (bit j is the fifth bit of value j), qs[16] as Q4_0;
 *   x = d (q - 16).
 * - Q5_1, 32 in 24: f16 d, f16 m, u32 qh, qs[16]; x = d q + m.
 * - Q4_K, 256 in 144: f16 d, f16 dmin, scales[12] (eight 6-bit scales and eight 6-bit mins),
 *   qs[128]. Sub-block s (values 32s .. 32s + 31) reads qs[32 (s >> 1) + l] for l < 32, the low
 *   nibble when s is even and the high one when odd; x = d sc[s] q - dmin mn[s].
 * - Q5_K, 256 in 176: f16 d, f16 dmin, scales[12], qh[32], qs[128] as Q4_K; bit s of qh[l] is
 *   the fifth bit of value 32s + l.
 * - Q6_K, 256 in 210: ql[128], qh[64], int8 scales[16], f16 d. In half h (values 128h ..), value
 *   128h + r takes its low four bits from ql[64h + (r & 63)] (low nibble if r < 64), its top two
 *   from qh[32h + (r & 31)] at bit 2 (r >> 5), and scale scales[8h + (r >> 4)]; x = d sc (q - 32).
 */
import { GGML_TYPES, type GgmlQuantType } from "../core/quant.ts";
import type { Rng } from "../core/random.ts";
import { f32ToF16Bits } from "../formats/tensor_data.ts";

/** Exact value of the float16 at `bytes[at]` (little-endian); subnormals included. */
export function halfAt(bytes: Uint8Array, at: number): number {
  return halfValue(bytes[at] | (bytes[at + 1] << 8));
}

/** Exact value of a float16 bit pattern. Infinities and NaN are refused: no block holds them. */
export function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 31;
  const fraction = bits & 1023;
  if (exponent === 31) throw new RangeError(`f16 ${bits.toString(16)} is not finite`);
  if (exponent === 0) return sign * fraction * 2 ** -24;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** Values per block and bytes per block of a quantized type. */
export function blockShape(type: GgmlQuantType): { elems: number; bytes: number } {
  const info = GGML_TYPES[type];
  return { elems: info.blockElems, bytes: info.blockBytes };
}

/** Bytes of one row of `cols` values (a whole number of blocks). */
export function rowBytes(type: GgmlQuantType, cols: number): number {
  const { elems, bytes } = blockShape(type);
  if (cols % elems !== 0) throw new RangeError(`${type}: ${cols} is not a multiple of ${elems}`);
  return (cols / elems) * bytes;
}

const int8 = (b: number) => (b << 24) >> 24;

/** The 6-bit scale and min of sub-block s (0..7) from a K-quant block's 12 scale bytes at `at`. */
function kScaleMin(bytes: Uint8Array, at: number, s: number): [number, number] {
  if (s < 4) return [bytes[at + s] & 63, bytes[at + s + 4] & 63];
  const low = bytes[at + s + 4];
  return [
    (low & 15) | ((bytes[at + s - 4] >> 6) << 4),
    (low >> 4) | ((bytes[at + s] >> 6) << 4),
  ];
}

/** Dequantizes one block at `bytes[at]` into `out[o ..]`, in float64. */
export function dequantizeBlock(
  type: GgmlQuantType,
  bytes: Uint8Array,
  at: number,
  out: Float64Array,
  o: number,
): void {
  switch (type) {
    case "Q8_0": {
      const d = halfAt(bytes, at);
      for (let j = 0; j < 32; j++) out[o + j] = d * int8(bytes[at + 2 + j]);
      return;
    }
    case "Q4_0":
    case "Q4_1": {
      const d = halfAt(bytes, at);
      const one = type === "Q4_1";
      const m = one ? halfAt(bytes, at + 2) : -8 * d;
      const qs = at + (one ? 4 : 2);
      for (let j = 0; j < 16; j++) {
        out[o + j] = d * (bytes[qs + j] & 15) + m;
        out[o + j + 16] = d * (bytes[qs + j] >> 4) + m;
      }
      return;
    }
    case "Q5_0":
    case "Q5_1": {
      const d = halfAt(bytes, at);
      const one = type === "Q5_1";
      const m = one ? halfAt(bytes, at + 2) : -16 * d;
      const h = at + (one ? 4 : 2);
      const qh = (bytes[h] | (bytes[h + 1] << 8) | (bytes[h + 2] << 16) | (bytes[h + 3] << 24)) >>>
        0;
      const qs = h + 4;
      for (let j = 0; j < 16; j++) {
        const lo = (bytes[qs + j] & 15) | (((qh >>> j) & 1) << 4);
        const hi = (bytes[qs + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4);
        out[o + j] = d * lo + m;
        out[o + j + 16] = d * hi + m;
      }
      return;
    }
    case "Q4_K":
    case "Q5_K": {
      const d = halfAt(bytes, at);
      const dmin = halfAt(bytes, at + 2);
      const five = type === "Q5_K";
      const qh = at + 16;
      const qs = at + (five ? 48 : 16);
      for (let s = 0; s < 8; s++) {
        const [sc, mn] = kScaleMin(bytes, at + 4, s);
        const shift = (s & 1) * 4;
        for (let l = 0; l < 32; l++) {
          let q = (bytes[qs + 32 * (s >> 1) + l] >> shift) & 15;
          if (five) q |= ((bytes[qh + l] >> s) & 1) << 4;
          out[o + 32 * s + l] = d * sc * q - dmin * mn;
        }
      }
      return;
    }
    case "Q6_K": {
      const d = halfAt(bytes, at + 208);
      for (let h = 0; h < 2; h++) {
        const ql = at + 64 * h;
        const qh = at + 128 + 32 * h;
        const sc = at + 192 + 8 * h;
        for (let l = 0; l < 32; l++) {
          const high = bytes[qh + l];
          const codes = [
            (bytes[ql + l] & 15) | ((high & 3) << 4),
            (bytes[ql + l + 32] & 15) | (((high >> 2) & 3) << 4),
            (bytes[ql + l] >> 4) | (((high >> 4) & 3) << 4),
            (bytes[ql + l + 32] >> 4) | (((high >> 6) & 3) << 4),
          ];
          for (let k = 0; k < 4; k++) {
            const scale = int8(bytes[sc + 2 * k + (l >> 4)]);
            out[o + 128 * h + 32 * k + l] = d * scale * (codes[k] - 32);
          }
        }
      }
      return;
    }
  }
}

/** Dequantizes `cols` values (whole blocks) starting at `bytes[at]`. */
export function dequantizeRow(
  type: GgmlQuantType,
  bytes: Uint8Array,
  cols: number,
  at = 0,
): Float64Array {
  const { elems, bytes: size } = blockShape(type);
  rowBytes(type, cols);
  const out = new Float64Array(cols);
  for (let b = 0; b < cols / elems; b++) {
    dequantizeBlock(type, bytes, at + b * size, out, b * elems);
  }
  return out;
}

/** Dequantizes a [rows, cols] matrix stored as rows of blocks; row-major float64. */
export function dequantizeMatrix(
  type: GgmlQuantType,
  bytes: Uint8Array,
  rows: number,
  cols: number,
): Float64Array {
  const stride = rowBytes(type, cols);
  if (bytes.length < rows * stride) {
    throw new RangeError(`${type} [${rows}, ${cols}] needs ${rows * stride} bytes`);
  }
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(dequantizeRow(type, bytes, cols, r * stride), r * cols);
  return out;
}

/** Byte offsets of the float16 fields inside a block (scales and mins). */
export function halfFields(type: GgmlQuantType): number[] {
  switch (type) {
    case "Q8_0":
    case "Q4_0":
    case "Q5_0":
      return [0];
    case "Q4_1":
    case "Q5_1":
    case "Q4_K":
    case "Q5_K":
      return [0, 2];
    case "Q6_K":
      return [208];
  }
}

/**
 * Float16 scales worth testing beyond ordinary ones: zero (both signs), the largest finite
 * value, the smallest normal, the largest and smallest subnormals.
 */
export const EDGE_HALVES: readonly number[] = [
  0x0000,
  0x8000,
  0x7bff,
  0xfbff,
  0x0400,
  0x8400,
  0x03ff,
  0x0001,
  0x8001,
];

/** Packs eight 6-bit scales and mins into a K-quant block's 12 scale bytes, as ggml writes them. */
export function packKScales(sc: readonly number[], mn: readonly number[]): Uint8Array {
  const out = new Uint8Array(12);
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      out[j] = sc[j];
      out[j + 4] = mn[j];
    } else {
      out[j + 4] = (sc[j] & 15) | ((mn[j] & 15) << 4);
      out[j - 4] |= (sc[j] >> 4) << 6;
      out[j] |= (mn[j] >> 4) << 6;
    }
  }
  return out;
}

/** Options of {@link quantizeRandom}. */
export interface RandomBlockOptions {
  /** Typical magnitude of the float16 scales (default 1/64). */
  scale?: number;
  /** Fraction of blocks whose scales are drawn from {@link EDGE_HALVES} (default 0). */
  edgeFraction?: number;
  /**
   * How the non-scale bytes are filled: "random" (default), or "ramp", byte k of the matrix set
   * to (7 k + 3 + 5 floor(k / 61)) mod 256, so every byte value (every nibble, every 5- and 6-bit code and
   * every K-quant scale) occurs within a few blocks.
   */
  fill?: "random" | "ramp";
}

/** Float16 bits of a finite value near `scale` in magnitude, either sign. */
function ordinaryHalf(rng: Rng, scale: number): number {
  const v = scale * (0.25 + 1.5 * rng.next()) * (rng.next() < 0.5 ? -1 : 1);
  // Round to the nearest half by building it from the exponent and a 10-bit fraction.
  const e = Math.floor(Math.log2(Math.abs(v)));
  const exponent = Math.max(-14, Math.min(15, e));
  const fraction = Math.min(1023, Math.round((Math.abs(v) / 2 ** exponent - 1) * 1024));
  const bits = ((exponent + 15) << 10) | Math.max(0, fraction);
  return v < 0 ? bits | 0x8000 : bits;
}

/**
 * Fresh blocks for a [rows, cols] matrix of `type`: every quant byte random (or a ramp) and every
 * float16 scale finite, so the blocks decode to finite values; some scales can be edge values.
 * With random fill, the types with a min (Q4_1, Q5_1, Q4_K, Q5_K) get mins that centre each
 * group's values on zero, as a quantizer's would: independent random mins would shift whole
 * groups far off zero, and dot products of such rows with random vectors cancel so much that
 * even an exact float32 sum misses the float64 one by 1e-4.
 */
export function quantizeRandom(
  type: GgmlQuantType,
  rng: Rng,
  rows: number,
  cols: number,
  options: RandomBlockOptions = {},
): Uint8Array {
  const stride = rowBytes(type, cols);
  const bytes = new Uint8Array(rows * stride);
  const fill = options.fill ?? "random";
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = fill === "ramp" ? (7 * i + 3 + 5 * Math.floor(i / 61)) & 255 : rng.int(256);
  }
  const { bytes: size } = blockShape(type);
  const scale = options.scale ?? 1 / 64;
  const edges = options.edgeFraction ?? 0;
  const setHalf = (at: number, bits: number) => {
    bytes[at] = bits & 255;
    bytes[at + 1] = bits >> 8;
  };
  for (let at = 0; at < bytes.length; at += size) {
    let edge = false;
    for (const field of halfFields(type)) {
      const isEdge = rng.next() < edges;
      edge ||= isEdge;
      setHalf(
        at + field,
        isEdge ? EDGE_HALVES[rng.int(EDGE_HALVES.length)] : ordinaryHalf(rng, scale),
      );
    }
    if (fill !== "random" || edge || halfFields(type).length < 2) continue;
    const levels = type === "Q5_1" || type === "Q5_K" ? 31 : 15;
    const d = halfAt(bytes, at);
    if (type === "Q4_1" || type === "Q5_1") {
      setHalf(at + 2, f32ToF16Bits(-d * (levels / 2) * (0.75 + 0.5 * rng.next())));
    } else if (type === "Q4_K" || type === "Q5_K") {
      // x = d sc q - dmin mn: mn * dmin close to d sc levels / 2 in every sub-block.
      const sc = Array.from({ length: 8 }, () => 1 + rng.int(63));
      setHalf(at + 2, f32ToF16Bits((d * Math.max(...sc) * (levels / 2)) / 63));
      const dmin = halfAt(bytes, at + 2);
      const mn = sc.map((s) =>
        dmin === 0 ? 0 : Math.max(0, Math.min(63, Math.round((d * s * (levels / 2)) / dmin)))
      );
      bytes.set(packKScales(sc, mn), at + 4);
    }
  }
  return bytes;
}

/** Bytes padded with zeros to whole 32-bit words, as the GPU buffers hold them. */
export function toWords(bytes: Uint8Array): Uint32Array {
  const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  padded.set(bytes);
  return new Uint32Array(padded.buffer);
}
