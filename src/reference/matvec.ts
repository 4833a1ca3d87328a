import { f16ArrayToF32, f32ArrayToF16 } from "../formats/tensor_data.ts";
/** Float64 twins of the matrix-vector kernels, plus a plain matmul the other twins share. */

/**
 * y[n] = sum_k w[n, k] x[k] (+ bias[n]) (+ yIn[n] when accumulating), in float64.
 * `w` is row-major [rows, cols], the [out, in] layout of weights in llama checkpoints.
 */
export function matvecRef(
  w: ArrayLike<number>,
  x: ArrayLike<number>,
  rows: number,
  cols: number,
  bias?: ArrayLike<number>,
  yIn?: ArrayLike<number>,
): Float64Array {
  const y = new Float64Array(rows);
  for (let n = 0; n < rows; n++) {
    let sum = 0;
    const base = n * cols;
    for (let k = 0; k < cols; k++) sum += w[base + k] * x[k];
    if (bias) sum += bias[n];
    if (yIn) sum += yIn[n];
    y[n] = sum;
  }
  return y;
}

/** Values rounded to half precision: the bits to upload and the values a twin should use. */
export function toF16(values: ArrayLike<number>): { bits: Uint16Array; values: Float64Array } {
  const bits = f32ArrayToF16(values);
  return { bits, values: Float64Array.from(f16ArrayToF32(bits)) };
}
