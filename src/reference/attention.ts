/**
 * Float64 twin of shaders/attention.wgsl: causal grouped-query attention over a KV cache, written
 * as plain softmax attention (no online softmax, no tiling) so it can serve as the reference.
 *
 * Layouts (row-major): q, out, dOut [tokens, nHeads, headDim]; k, v [rows >= past + tokens,
 * nKvHeads, headDim]; logsumexp [tokens, nHeads]. Query t sits at position past + t and attends
 * to keys 0..past + t; head h reads kv head floor(h / (nHeads / nKvHeads)).
 */

import { f16BitsToF32, f32ToF16Bits } from "../formats/tensor_data.ts";

/**
 * Values as a KV cache of `dtype` holds them: as given for "f32" (a float64 twin keeps its own
 * precision), else each rounded to float32 and then to the nearest half (ties to even), as the
 * kernels' pack2x16float of their f32 results does.
 */
export function kvCacheValues(values: ArrayLike<number>, dtype: "f32" | "f16"): Float64Array {
  const out = Float64Array.from(values);
  if (dtype === "f16") {
    for (let i = 0; i < out.length; i++) out[i] = f16BitsToF32(f32ToF16Bits(out[i]));
  }
  return out;
}

/** Sizes of one attention call. */
export interface AttentionShape {
  tokens: number;
  past: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** Score scale; 1 / sqrt(headDim) when omitted. */
  scale?: number;
}

/** The score scale an attention call uses. */
export function attentionScale(shape: AttentionShape): number {
  return shape.scale ?? 1 / Math.sqrt(shape.headDim);
}

/** Softmax probabilities of query row t, head h over keys 0..past + t. */
function probabilities(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  shape: AttentionShape,
  t: number,
  h: number,
): { p: Float64Array; logsumexp: number } {
  const { past, nHeads, nKvHeads, headDim: hd } = shape;
  const scale = attentionScale(shape);
  const g = Math.floor(h / (nHeads / nKvHeads));
  const qBase = (t * nHeads + h) * hd;
  const n = past + t + 1;
  const scores = new Float64Array(n);
  let max = -Infinity;
  for (let j = 0; j < n; j++) {
    const kBase = (j * nKvHeads + g) * hd;
    let s = 0;
    for (let d = 0; d < hd; d++) s += q[qBase + d] * k[kBase + d];
    scores[j] = s * scale;
    max = Math.max(max, scores[j]);
  }
  let sum = 0;
  for (let j = 0; j < n; j++) sum += Math.exp(scores[j] - max);
  const p = scores.map((s) => Math.exp(s - max) / sum);
  return { p, logsumexp: max + Math.log(sum) };
}

/** Forward: out [tokens, nHeads, headDim] and the per-row logsumexp [tokens, nHeads]. */
export function attentionForward(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  shape: AttentionShape,
): { out: Float64Array; logsumexp: Float64Array } {
  const { tokens, nHeads, nKvHeads, headDim: hd } = shape;
  const out = new Float64Array(tokens * nHeads * hd);
  const logsumexp = new Float64Array(tokens * nHeads);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / (nHeads / nKvHeads));
      const { p, logsumexp: lse } = probabilities(q, k, shape, t, h);
      logsumexp[t * nHeads + h] = lse;
      const oBase = (t * nHeads + h) * hd;
      for (let j = 0; j < p.length; j++) {
        const vBase = (j * nKvHeads + g) * hd;
        for (let d = 0; d < hd; d++) out[oBase + d] += p[j] * v[vBase + d];
      }
    }
  }
  return { out, logsumexp };
}

/**
 * Backward of {@link attentionForward} given dOut: dQ [tokens, nHeads, headDim] and dK, dV
 * [past + tokens, nKvHeads, headDim], the latter summed over the heads sharing a kv head.
 */
export function attentionBackward(
  dOut: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  shape: AttentionShape,
): { dQ: Float64Array; dK: Float64Array; dV: Float64Array } {
  const { tokens, past, nHeads, nKvHeads, headDim: hd } = shape;
  const scale = attentionScale(shape);
  const keys = past + tokens;
  const dQ = new Float64Array(tokens * nHeads * hd);
  const dK = new Float64Array(keys * nKvHeads * hd);
  const dV = new Float64Array(keys * nKvHeads * hd);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / (nHeads / nKvHeads));
      const { p } = probabilities(q, k, shape, t, h);
      const row = (t * nHeads + h) * hd;
      // out = sum_j p_j v_j, so dp_j = dOut·v_j and ds_j = p_j (dp_j - sum_i p_i dp_i).
      const dp = new Float64Array(p.length);
      let weighted = 0;
      for (let j = 0; j < p.length; j++) {
        const vBase = (j * nKvHeads + g) * hd;
        for (let d = 0; d < hd; d++) {
          dp[j] += dOut[row + d] * v[vBase + d];
          dV[vBase + d] += p[j] * dOut[row + d];
        }
        weighted += p[j] * dp[j];
      }
      for (let j = 0; j < p.length; j++) {
        const ds = p[j] * (dp[j] - weighted) * scale;
        const kBase = (j * nKvHeads + g) * hd;
        for (let d = 0; d < hd; d++) {
          dQ[row + d] += ds * k[kBase + d];
          dK[kBase + d] += ds * q[row + d];
        }
      }
    }
  }
  return { dQ, dK, dV };
}
