/**
 * Float64 twins of the LoRA kernels, with the dropout of shaders/lora.wgsl (its hash is in src/core/lora.ts).
 *
 * Shapes (the PEFT convention): x [T, in], A = lora_A.weight [r, in], B = lora_B.weight [out, r],
 * h = dropout(x) A^T [T, r], and the adapter's contribution to the layer output is
 * scale * h B^T [T, out].
 */
import { dropoutSeedMix, dropoutThreshold, hash32 } from "../core/lora.ts";
import { matmulRef } from "./matmul.ts";

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
