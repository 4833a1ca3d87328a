/** Float64 twin of shaders/rmsnorm.wgsl: rows of `dim` values, normalised by their RMS. */

/** out = x * rstd * weight per row, and rstd = 1 / sqrt(mean(x^2) + eps) per row. */
export function rmsnormForward(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
): { out: Float64Array; rstd: Float64Array } {
  const out = new Float64Array(rows * dim);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let squares = 0;
    for (let c = 0; c < dim; c++) squares += x[r * dim + c] ** 2;
    rstd[r] = 1 / Math.sqrt(squares / dim + eps);
    for (let c = 0; c < dim; c++) out[r * dim + c] = x[r * dim + c] * rstd[r] * weight[c];
  }
  return { out, rstd };
}

/**
 * Gradients of the forward given dOut and the saved rstd:
 * dX = rstd * weight * dOut - x * rstd^3 / dim * sum(dOut * weight * x) per row,
 * dWeight = sum over rows of dOut * x * rstd.
 */
export function rmsnormBackward(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  rstd: ArrayLike<number>,
  dOut: ArrayLike<number>,
  rows: number,
  dim: number,
): { dX: Float64Array; dWeight: Float64Array } {
  const dX = new Float64Array(rows * dim);
  const dWeight = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const rs = rstd[r];
    let projection = 0;
    for (let c = 0; c < dim; c++) projection += dOut[r * dim + c] * weight[c] * x[r * dim + c];
    const s = projection * rs * rs * rs / dim;
    for (let c = 0; c < dim; c++) {
      const i = r * dim + c;
      dX[i] = dOut[i] * weight[c] * rs - x[i] * s;
      dWeight[c] += dOut[i] * x[i] * rs;
    }
  }
  return { dX, dWeight };
}
