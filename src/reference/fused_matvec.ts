/**
 * Float64 twin of shaders/fused_matvec.wgsl, composed of the unfused twins: RMSNorm, the
 * matrix-vector product, bias, LoRA, then RoPE and the cache write, SwiGLU, or the residual add.
 */
import type { RopePairs } from "../core/rope.ts";
import { loraForwardRef } from "./lora.ts";
import { matvecRef } from "./matvec.ts";
import { rmsnormForward } from "./rmsnorm.ts";
import { ropeForward } from "./rope.ts";
import { swigluForward } from "./swiglu.ts";

/** One matrix of a fused product, with its bias and adapter. */
export interface FusedPartRef {
  /** [rows, K] row-major, as the kernel reads it (dequantized for blocks). */
  w: ArrayLike<number>;
  /** Rows. */
  rows: number;
  /** [rows] added after the product. */
  bias?: ArrayLike<number>;
  /** A [rank, K], B [rows, rank]: scale · (x·Aᵀ)·Bᵀ added after the bias. */
  lora?: { a: ArrayLike<number>; b: ArrayLike<number>; rank: number; scale: number };
}

/** A fused product: input, optional norm, parts. */
export interface FusedRefArgs {
  /** [K] input. */
  x: ArrayLike<number>;
  /** K. */
  k: number;
  /** RMSNorm of x first. */
  norm?: { weight: ArrayLike<number>; eps: number };
  /** The matrices. */
  parts: FusedPartRef[];
}

/** Each part's output: norm, product, bias, LoRA (no epilogue). */
export function fusedPartsRef(args: FusedRefArgs): Float64Array[] {
  const { k, norm, parts } = args;
  const x = norm ? rmsnormForward(args.x, norm.weight, 1, k, norm.eps).out : args.x;
  return parts.map((p) => {
    const out = matvecRef(p.w, x, p.rows, k, p.bias);
    if (p.lora) {
      const { a, b, rank, scale } = p.lora;
      const dims = { tokens: 1, inFeatures: k, rank, outFeatures: p.rows };
      const { delta } = loraForwardRef(dims, x, a, b, scale, 0, 0);
      for (let i = 0; i < p.rows; i++) out[i] += delta[i];
    }
    return out;
  });
}

/** "store": y = W·x. */
export function fusedStoreRef(args: FusedRefArgs): Float64Array {
  return fusedPartsRef(args)[0];
}

/** "add": y + W·x. */
export function fusedAddRef(args: FusedRefArgs, y: ArrayLike<number>): Float64Array {
  const out = fusedPartsRef(args)[0];
  for (let i = 0; i < out.length; i++) out[i] += y[i];
  return out;
}

/** "swiglu": silu(W_gate·x) * (W_up·x). */
export function fusedSwigluRef(args: FusedRefArgs): Float64Array {
  const [gate, up] = fusedPartsRef(args);
  return swigluForward(gate, up);
}

/** "qkv": q, k and v, with q and k rotated at `pos` when `rope` is given. */
export function fusedQkvRef(
  args: FusedRefArgs,
  rope?: { pos: number; headDim: number; base: number; pairs: RopePairs; divisors?: number[] },
): { q: Float64Array; k: Float64Array; v: Float64Array } {
  const [q, k, v] = fusedPartsRef(args);
  if (!rope) return { q, k, v };
  const rotate = (t: Float64Array) =>
    ropeForward(t, 1, rope.pos, {
      heads: t.length / rope.headDim,
      headDim: rope.headDim,
      base: rope.base,
      pairs: rope.pairs,
      divisors: rope.divisors,
    });
  return { q: rotate(q), k: rotate(k), v };
}
