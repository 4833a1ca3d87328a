/**
 * Float64 twin of shaders/decode_layer.wgsl: one decoder layer for one token, composed of the
 * twins of the fused products (RMSNorm, q/k/v with biases, adapter and RoPE; o and the residual;
 * gate/up with SwiGLU; down and the residual) and of attention.
 */
import type { LoraTarget } from "../core/lora.ts";
import type { RopePairs } from "../core/rope.ts";
import { attentionForward, kvCacheValues } from "./attention.ts";
import { fusedAddRef, type FusedPartRef, fusedQkvRef, fusedSwigluRef } from "./fused_matvec.ts";

/** A layer's sizes. */
export interface LayerShapeRef {
  dim: number;
  hiddenDim: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  eps: number;
  /** RoPE, when the layer rotates. */
  rope?: { base: number; pairs: RopePairs };
}

/** A layer's weights as float64 (dequantized for blocks): matrices [out, in]. */
export interface LayerWeightsRef {
  attnNorm: ArrayLike<number>;
  ffnNorm: ArrayLike<number>;
  matrices: Record<LoraTarget, ArrayLike<number>>;
  /** q, k and v biases. */
  bias?: [ArrayLike<number>, ArrayLike<number>, ArrayLike<number>];
  /** A [rank, in] and B [out, rank] per target, and alpha / rank. */
  lora?: {
    a: Record<LoraTarget, ArrayLike<number>>;
    b: Record<LoraTarget, ArrayLike<number>>;
    rank: number;
    scale: number;
  };
}

/**
 * The layer for the token at position `past`, given the cache's earlier keys and values
 * ([past, nKvHeads, headDim] each): the residual after the layer and the token's key and value
 * as the cache holds them (rounded to halves in an f16 cache, and attention reads them so).
 */
export function decodeLayerRef(
  shape: LayerShapeRef,
  w: LayerWeightsRef,
  x: ArrayLike<number>,
  pastK: ArrayLike<number>,
  pastV: ArrayLike<number>,
  past: number,
  kvDtype: "f32" | "f16" = "f32",
): { x: Float64Array; k: Float64Array; v: Float64Array } {
  const { dim, hiddenDim: hidden, nHeads, nKvHeads, headDim: hd, eps } = shape;
  const q = nHeads * hd;
  const kv = nKvHeads * hd;
  const part = (t: LoraTarget, rows: number, i?: number): FusedPartRef => ({
    w: w.matrices[t],
    rows,
    bias: i === undefined ? undefined : w.bias?.[i],
    lora: w.lora && { a: w.lora.a[t], b: w.lora.b[t], rank: w.lora.rank, scale: w.lora.scale },
  });
  const qkv = fusedQkvRef(
    {
      x,
      k: dim,
      norm: { weight: w.attnNorm, eps },
      parts: [part("q", q, 0), part("k", kv, 1), part("v", kv, 2)],
    },
    shape.rope && { pos: past, headDim: hd, base: shape.rope.base, pairs: shape.rope.pairs },
  );
  const keys = new Float64Array((past + 1) * kv);
  const values = new Float64Array((past + 1) * kv);
  keys.set(Array.from(pastK).slice(0, past * kv));
  values.set(Array.from(pastV).slice(0, past * kv));
  const k = kvCacheValues(qkv.k, kvDtype);
  const v = kvCacheValues(qkv.v, kvDtype);
  keys.set(k, past * kv);
  values.set(v, past * kv);
  const { out } = attentionForward(qkv.q, keys, values, {
    tokens: 1,
    past,
    nHeads,
    nKvHeads,
    headDim: hd,
  });
  const x2 = fusedAddRef({ x: out, k: q, parts: [part("o", dim)] }, x);
  const act = fusedSwigluRef({
    x: x2,
    k: dim,
    norm: { weight: w.ffnNorm, eps },
    parts: [part("gate", hidden), part("up", hidden)],
  });
  const x3 = fusedAddRef({ x: act, k: hidden, parts: [part("down", dim)] }, x2);
  return { x: x3, k, v };
}
