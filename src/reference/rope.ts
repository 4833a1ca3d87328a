/**
 * Float64 twin of shaders/rope.wgsl: rotary position embedding on [tokens, heads, headDim],
 * token t at position pos0 + t, pair i rotated by the angle pos * base^(-2i / headDim).
 */

import type { RopePairs } from "../core/rope.ts";

/** Settings of one RoPE application. */
export interface RopeConfig {
  /** Heads per token row. */
  heads: number;
  /** Elements per head (even). */
  headDim: number;
  /** Theta base (10000 for Llama 2; 500000 for Llama 3). */
  base: number;
  /** Which elements form a rotated pair. */
  pairs: RopePairs;
  /** Per-pair frequency divisors (Llama 3 scaling); absent means 1. */
  divisors?: ArrayLike<number>;
}

/** Frequency of pair i in radians per position, divided by its divisor when there is one. */
export function ropeFrequency(
  i: number,
  headDim: number,
  base: number,
  divisors?: ArrayLike<number>,
): number {
  return Math.pow(base, (-2 * i) / headDim) / (divisors?.[i] ?? 1);
}

/** Element offsets (within one head's row) of pair i. */
export function ropePair(i: number, headDim: number, pairs: RopePairs): [number, number] {
  return pairs === "interleaved" ? [2 * i, 2 * i + 1] : [i, i + headDim / 2];
}

function rotateAll(
  x: ArrayLike<number>,
  tokens: number,
  pos0: number,
  config: RopeConfig,
  direction: 1 | -1,
): Float64Array {
  const { heads, headDim, base, pairs, divisors } = config;
  const out = new Float64Array(tokens * heads * headDim);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < headDim / 2; i++) {
      const angle = (pos0 + t) * ropeFrequency(i, headDim, base, divisors);
      const c = Math.cos(angle);
      const s = Math.sin(angle) * direction;
      const [e0, e1] = ropePair(i, headDim, pairs);
      for (let h = 0; h < heads; h++) {
        const row = (t * heads + h) * headDim;
        const a = x[row + e0];
        const b = x[row + e1];
        out[row + e0] = a * c - b * s;
        out[row + e1] = a * s + b * c;
      }
    }
  }
  return out;
}

/** Rotates every pair of x [tokens, heads, headDim] by its position's angle. */
export function ropeForward(
  x: ArrayLike<number>,
  tokens: number,
  pos0: number,
  config: RopeConfig,
): Float64Array {
  return rotateAll(x, tokens, pos0, config, 1);
}

/** The backward: dX = R^T dOut, the rotation by minus the angle. */
export function ropeBackward(
  dOut: ArrayLike<number>,
  tokens: number,
  pos0: number,
  config: RopeConfig,
): Float64Array {
  return rotateAll(dOut, tokens, pos0, config, -1);
}
