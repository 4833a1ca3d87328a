/**
 * C = alpha * op(A) · op(B) (+ C0) in float64. A is [M, K] (or [K, M] if transA), B is [K, N]
 * (or [N, K] if transB), row-major.
 */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  k: number,
  n: number,
  options: { transA?: boolean; transB?: boolean; alpha?: number; c0?: ArrayLike<number> } = {},
): Float64Array {
  const { transA = false, transB = false, alpha = 1, c0 } = options;
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) {
        const av = transA ? a[p * m + i] : a[i * k + p];
        const bv = transB ? b[j * k + p] : b[p * n + j];
        sum += av * bv;
      }
      c[i * n + j] = alpha * sum + (c0 ? c0[i * n + j] : 0);
    }
  }
  return c;
}
