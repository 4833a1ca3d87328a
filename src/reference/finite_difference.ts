/**
 * Central finite differences in float64, to check backward twins against their forward twins:
 * d f / d x_i ~ (f(x + h e_i) - f(x - h e_i)) / 2h. A typical check is d(dot(w, forward(x)))/dx
 * against backward(w) for a random w.
 */

/**
 * Central difference of `f` along element `i` of `x`. `x` is perturbed in place (so `f` may read
 * it through a closure instead of its argument) and restored before returning.
 */
export function centralDifference(
  f: (x: Float64Array) => number,
  x: Float64Array,
  i: number,
  h = 1e-5,
): number {
  const keep = x[i];
  x[i] = keep + h;
  const up = f(x);
  x[i] = keep - h;
  const down = f(x);
  x[i] = keep;
  return (up - down) / (2 * h);
}

/** Central differences of a scalar function of `x` at every element; `x` is not touched. */
export function finiteDifferences(
  f: (x: Float64Array) => number,
  x: ArrayLike<number>,
  h = 1e-5,
): Float64Array {
  const probe = Float64Array.from(x);
  const out = new Float64Array(probe.length);
  for (let i = 0; i < probe.length; i++) out[i] = centralDifference(f, probe, i, h);
  return out;
}

/** Sum of a[i] * b[i] over a's length. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
