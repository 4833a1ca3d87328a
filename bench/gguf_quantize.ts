/**
 * Quantizers for the GGUF block types the bench models use, written from ggml's block layouts
 * (src/reference/quant.ts describes them and holds the float64 dequantizing twins) and following
 * the reference quantizers of ggml-quants.c (quantize_row_*_ref) in their choice of scales:
 *
 * - Q8_0 (32 values): d = max|x| / 127, q = round(x / d).
 * - Q5_0 (32 values): d = -m / 16 for the value m of largest magnitude, q = floor(x / d + 16.5)
 *   capped at 31: the fallback llama-quantize uses for a Q4_K tensor whose rows are not whole
 *   256-value blocks.
 * - Q4_K (256 values, eight sub-blocks of 32): per sub-block a scale and a min found by
 *   make_qkx2_quants' search (weighted least squares over 21 candidate scales), the scales and
 *   mins then quantized to 6 bits against the block's f16 d and dmin, and every value given the
 *   nearest 4-bit code under the stored scale and min.
 * - Q6_K (256 values, sixteen sub-blocks of 16): per sub-block a signed scale from
 *   make_qx_quants (rmse_type 1: weights x², 19 candidate scales), quantized to int8 against the
 *   block's f16 d, and every value the nearest 6-bit code under the stored scale.
 *
 * Rounding follows ggml (round half to even where ggml uses nearest_int, half away from zero
 * where it uses roundf); the arithmetic is float64 where ggml's is float32, so a code can differ
 * from llama-quantize's in a near tie. Benchmarks and tests only.
 */
import type { GgmlQuantType } from "../src/core/quant.ts";
import { f32ToF16Bits } from "../src/formats/tensor_data.ts";
import { halfValue, rowBytes } from "../src/reference/quant.ts";

/** The block types these quantizers write. */
export type QuantizerType = Extract<GgmlQuantType, "Q8_0" | "Q5_0" | "Q4_K" | "Q6_K">;

/** Every type {@link quantizeMatrix} writes. */
export const QUANTIZER_TYPES: readonly QuantizerType[] = ["Q8_0", "Q5_0", "Q4_K", "Q6_K"];

/** ggml's nearest_int: round half to even. */
function nearest(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

/** C's roundf: half away from zero. */
function roundAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/** Writes a float as f16 at out[o] and returns the value the f16 holds. */
function putHalf(out: Uint8Array, o: number, x: number): number {
  const bits = f32ToF16Bits(x);
  out[o] = bits & 255;
  out[o + 1] = bits >> 8;
  return halfValue(bits);
}

const GROUP_MAX_EPS = 1e-15;

function q8_0(x: Float32Array, at: number, out: Uint8Array, o: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[at + j]));
  const d = amax / 127;
  const id = d ? 1 / d : 0;
  putHalf(out, o, d);
  for (let j = 0; j < 32; j++) out[o + 2 + j] = roundAway(x[at + j] * id) & 255;
}

function q5_0(x: Float32Array, at: number, out: Uint8Array, o: number): void {
  let amax = 0, max = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[at + j];
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = max / -16;
  const id = d ? 1 / d : 0;
  putHalf(out, o, d);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const a = Math.min(31, Math.trunc(x[at + j] * id + 16.5));
    const b = Math.min(31, Math.trunc(x[at + j + 16] * id + 16.5));
    out[o + 6 + j] = (a & 15) | ((b & 15) << 4);
    qh |= ((a >> 4) << j) | ((b >> 4) << (j + 16));
  }
  for (let k = 0; k < 4; k++) out[o + 2 + k] = (qh >>> (8 * k)) & 255;
}

/**
 * make_qkx2_quants(32, 15, ..., rmin -1, rdelta 0.1, nstep 20): scale and min (returned as the
 * positive amount subtracted) of one Q4_K sub-block, with its codes in L[0..32).
 */
function qkx2(
  x: Float32Array,
  at: number,
  w: Float64Array,
  L: Uint8Array,
  lo: number,
  aux: Uint8Array,
): [number, number] {
  const n = 32, nmax = 15;
  let min = x[at], max = x[at], sumW = w[0], sumX = w[0] * x[at];
  for (let i = 1; i < n; i++) {
    const v = x[at + i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW += w[i];
    sumX += w[i] * v;
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    return [0, -min];
  }
  let iscale = nmax / (max - min);
  let scale = 1 / iscale;
  let best = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearest(iscale * (x[at + i] - min))));
    L[lo + i] = l;
    const diff = scale * l + min - x[at + i];
    best += w[i] * diff * diff;
  }
  for (let is = 0; is <= 20; is++) {
    iscale = (-1 + 0.1 * is + nmax) / (max - min);
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearest(iscale * (x[at + i] - min))));
      aux[i] = l;
      sumL += w[i] * l;
      sumL2 += w[i] * l * l;
      sumXL += w[i] * l * x[at + i];
    }
    const D = sumW * sumL2 - sumL * sumL;
    if (D <= 0) continue;
    let thisScale = (sumW * sumXL - sumX * sumL) / D;
    let thisMin = (sumL2 * sumX - sumL * sumXL) / D;
    if (thisMin > 0) {
      thisMin = 0;
      thisScale = sumXL / sumL2;
    }
    let err = 0;
    for (let i = 0; i < n; i++) {
      const diff = thisScale * aux[i] + thisMin - x[at + i];
      err += w[i] * diff * diff;
    }
    if (err < best) {
      L.set(aux.subarray(0, n), lo);
      best = err;
      scale = thisScale;
      min = thisMin;
    }
  }
  return [scale, -min];
}

/** Scratch space of the K-quant quantizers, made once per matrix. */
interface Scratch {
  L: Uint8Array;
  aux: Uint8Array;
  w: Float64Array;
  scales: Float64Array;
  mins: Float64Array;
}

const scratch = (): Scratch => ({
  L: new Uint8Array(256),
  aux: new Uint8Array(32),
  w: new Float64Array(32),
  scales: new Float64Array(16),
  mins: new Float64Array(16),
});

function q4_K(x: Float32Array, at: number, out: Uint8Array, o: number, s: Scratch): void {
  const { L, aux, w, scales, mins } = s;
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const b = at + 32 * j;
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 += x[b + l] * x[b + l];
    const av = Math.sqrt(sumX2 / 32);
    for (let l = 0; l < 32; l++) w[l] = av + Math.abs(x[b + l]);
    [scales[j], mins[j]] = qkx2(x, b, w, L, 32 * j, aux);
    maxScale = Math.max(maxScale, scales[j]);
    maxMin = Math.max(maxMin, mins[j]);
  }
  const invScale = maxScale > 0 ? 63 / maxScale : 0;
  const invMin = maxMin > 0 ? 63 / maxMin : 0;
  const sc = new Uint8Array(8), mn = new Uint8Array(8);
  for (let j = 0; j < 8; j++) {
    sc[j] = Math.min(63, nearest(invScale * scales[j]));
    mn[j] = Math.min(63, nearest(invMin * mins[j]));
  }
  const d = putHalf(out, o, maxScale / 63);
  const dmin = putHalf(out, o + 2, maxMin / 63);
  // The 12 scale bytes, as packKScales (src/reference/quant.ts) packs them.
  for (let j = 0; j < 12; j++) out[o + 4 + j] = 0;
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      out[o + 4 + j] = sc[j];
      out[o + 8 + j] = mn[j];
    } else {
      out[o + 8 + j] = (sc[j] & 15) | ((mn[j] & 15) << 4);
      out[o + j] |= (sc[j] >> 4) << 6;
      out[o + 4 + j] |= (mn[j] >> 4) << 6;
    }
  }
  for (let j = 0; j < 8; j++) {
    const ds = d * sc[j];
    if (!ds) continue;
    const dm = dmin * mn[j];
    for (let i = 0; i < 32; i++) {
      L[32 * j + i] = Math.max(0, Math.min(15, nearest((x[at + 32 * j + i] + dm) / ds)));
    }
  }
  for (let j = 0, q = o + 16; j < 256; j += 64, q += 32) {
    for (let l = 0; l < 32; l++) out[q + l] = L[j + l] | (L[j + l + 32] << 4);
  }
}

/** make_qx_quants(16, 32, x, L, rmse_type 1): a signed scale with codes L[lo..lo+16) in 0..63. */
function qx(x: Float32Array, at: number, L: Uint8Array, lo: number): number {
  const n = 16, nmax = 32;
  let max = 0, amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[at + i]);
    if (ax > amax) {
      amax = ax;
      max = x[at + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n);
    return 0;
  }
  const fit = (iscale: number, keep: boolean): [number, number] => {
    let sumLX = 0, sumL2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[at + i];
      const l = Math.max(-nmax, Math.min(nmax - 1, nearest(iscale * v)));
      if (keep) L[lo + i] = l + nmax;
      const w = v * v;
      sumLX += w * v * l;
      sumL2 += w * l * l;
    }
    return [sumLX, sumL2];
  };
  let [sumLX, sumL2] = fit(-nmax / max, true);
  let scale = sumL2 ? sumLX / sumL2 : 0;
  let best = scale * sumLX;
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    const iscale = -(nmax + 0.1 * is) / max;
    [sumLX, sumL2] = fit(iscale, false);
    if (sumL2 > 0 && sumLX * sumLX > best * sumL2) {
      fit(iscale, true);
      scale = sumLX / sumL2;
      best = scale * sumLX;
    }
  }
  return scale;
}

function q6_K(x: Float32Array, at: number, out: Uint8Array, o: number, s: Scratch): void {
  const { L, scales } = s;
  let maxScale = 0, maxAbs = 0;
  for (let ib = 0; ib < 16; ib++) {
    scales[ib] = qx(x, at + 16 * ib, L, 16 * ib);
    if (Math.abs(scales[ib]) > maxAbs) {
      maxAbs = Math.abs(scales[ib]);
      maxScale = scales[ib];
    }
  }
  out.fill(0, o, o + 210);
  if (maxAbs < GROUP_MAX_EPS) return; // all zero: d = 0
  const iscale = -128 / maxScale;
  const d = putHalf(out, o + 208, 1 / iscale);
  for (let ib = 0; ib < 16; ib++) {
    const sc = Math.min(127, nearest(iscale * scales[ib]));
    out[o + 192 + ib] = sc & 255;
    const ds = d * sc;
    if (!ds) continue;
    for (let i = 0; i < 16; i++) {
      L[16 * ib + i] = Math.max(-32, Math.min(31, nearest(x[at + 16 * ib + i] / ds))) + 32;
    }
  }
  for (let h = 0; h < 2; h++) {
    const ql = o + 64 * h, qh = o + 128 + 32 * h, j = 128 * h;
    for (let l = 0; l < 32; l++) {
      out[ql + l] = (L[j + l] & 15) | ((L[j + l + 64] & 15) << 4);
      out[ql + l + 32] = (L[j + l + 32] & 15) | ((L[j + l + 96] & 15) << 4);
      out[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
        ((L[j + l + 96] >> 4) << 6);
    }
  }
}

const BLOCK: Readonly<Record<QuantizerType, [number, number]>> = {
  Q8_0: [32, 34],
  Q5_0: [32, 22],
  Q4_K: [256, 144],
  Q6_K: [256, 210],
};

/**
 * Quantizes a row-major [rows, cols] matrix into `type`'s blocks, rows after each other (cols a
 * multiple of the block size: 32, or 256 for the K-quants; RangeError otherwise).
 */
export function quantizeMatrix(
  type: QuantizerType,
  values: Float32Array,
  rows: number,
  cols: number,
): Uint8Array {
  if (values.length !== rows * cols) {
    throw new RangeError(`${type}: ${values.length} values for a [${rows}, ${cols}] matrix`);
  }
  const out = new Uint8Array(rows * rowBytes(type, cols));
  const [elems, bytes] = BLOCK[type];
  const s = scratch();
  for (let b = 0, o = 0; b < values.length; b += elems, o += bytes) {
    switch (type) {
      case "Q8_0":
        q8_0(values, b, out, o);
        break;
      case "Q5_0":
        q5_0(values, b, out, o);
        break;
      case "Q4_K":
        q4_K(values, b, out, o, s);
        break;
      case "Q6_K":
        q6_K(values, b, out, o, s);
        break;
    }
  }
  return out;
}
