/** Float64 twin of shaders/swiglu.wgsl: out = silu(gate) * up, elementwise. */

/** 1 / (1 + exp(-x)), without overflow for large |x|. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** x * sigmoid(x). */
export function silu(x: number): number {
  return x * sigmoid(x);
}

/** out[i] = silu(gate[i]) * up[i]. */
export function swigluForward(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = silu(gate[i]) * up[i];
  return out;
}

/** dUp = dOut * silu(gate); dGate = dOut * up * silu'(gate), silu'(x) = s(x) (1 + x s(-x)). */
export function swigluBackward(
  dOut: ArrayLike<number>,
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
): { dGate: Float64Array; dUp: Float64Array } {
  const dGate = new Float64Array(gate.length);
  const dUp = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    dUp[i] = dOut[i] * silu(g);
    dGate[i] = dOut[i] * up[i] * sigmoid(g) * (1 + g * sigmoid(-g));
  }
  return { dGate, dUp };
}
