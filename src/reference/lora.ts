/**
 * Float64 twins of the LoRA kernels, and the dropout hash they share with shaders/lora.wgsl.
 *
 * Shapes (the PEFT convention): x [T, in], A = lora_A.weight [r, in], B = lora_B.weight [out, r],
 * h = dropout(x) A^T [T, r], and the adapter's contribution to the layer output is
 * scale * h B^T [T, out].
 */
import { matmulRef } from "./matmul.ts";

/** lowbias32 (Chris Wellons): the integer hash of shaders/lora.wgsl, bit for bit. */
export function hash32(value: number): number {
  let x = value >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The per-seed word the kernel XORs into every element index before hashing. */
export function dropoutSeedMix(seed: number): number {
  return hash32(seed >>> 0);
}

/** Hash values at or above this are kept: a fraction 1 - p of them. */
export function dropoutThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout probability ${p} is not in [0, 1)`);
  return Math.min(0xffffffff, Math.round(p * 2 ** 32));
}

/** The dropout multiplier of element `index`: 0 when dropped, 1 / (1 - p) when kept. */
export function dropoutFactor(seed: number, index: number, p: number): number {
  const kept = hash32((index ^ dropoutSeedMix(seed)) >>> 0) >= dropoutThreshold(p);
  return kept ? 1 / (1 - p) : 0;
}

/** dropout(x) for a tensor of `x.length` elements, element index = row-major position. */
export function dropoutRef(x: ArrayLike<number>, p: number, seed: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * dropoutFactor(seed, i, p);
  return out;
}

/** LoRA sizes: tokens, input features, rank, output features. */
export interface LoraDims {
  /** T: rows of x. */
  tokens: number;
  /** in: columns of x and of A. */
  inFeatures: number;
  /** r: rows of A, columns of B. */
  rank: number;
  /** out: rows of B. */
  outFeatures: number;
}

/** Forward: h = dropout(x) A^T and delta = scale * h B^T (what the kernel adds to y). */
export function loraForwardRef(
  dims: LoraDims,
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  scale: number,
  p: number,
  seed: number,
): { h: Float64Array; delta: Float64Array } {
  const { tokens, inFeatures, rank, outFeatures } = dims;
  const h = matmulRef(dropoutRef(x, p, seed), a, tokens, inFeatures, rank, { transB: true });
  const delta = matmulRef(h, b, tokens, rank, outFeatures, { transB: true });
  for (let i = 0; i < delta.length; i++) delta[i] *= scale;
  return { h, delta };
}

/**
 * Backward from dY [T, out]: dB = scale dY^T h, dH = scale dY B, dA = dH^T dropout(x), and
 * dXDelta = (dH A) * dropout factor, which the kernel adds to the base path's dX.
 */
export function loraBackwardRef(
  dims: LoraDims,
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  h: ArrayLike<number>,
  dY: ArrayLike<number>,
  scale: number,
  p: number,
  seed: number,
): { dA: Float64Array; dB: Float64Array; dH: Float64Array; dXDelta: Float64Array } {
  const { tokens, inFeatures, rank, outFeatures } = dims;
  const dB = matmulRef(dY, h, outFeatures, tokens, rank, { transA: true });
  const dH = matmulRef(dY, b, tokens, outFeatures, rank);
  for (let i = 0; i < dB.length; i++) dB[i] *= scale;
  for (let i = 0; i < dH.length; i++) dH[i] *= scale;
  const dA = matmulRef(dH, dropoutRef(x, p, seed), rank, tokens, inFeatures, { transA: true });
  const dXDelta = matmulRef(dH, a, tokens, rank, inFeatures);
  for (let i = 0; i < dXDelta.length; i++) dXDelta[i] *= dropoutFactor(seed, i, p);
  return { dA, dB, dH, dXDelta };
}
