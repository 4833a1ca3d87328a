/** Float64 twins of shaders/softmax.wgsl. */

/** Softmax of each row of a row-major [rows, V] array, max-subtracted. */
export function softmaxRows(logits: ArrayLike<number>, rows: number, V: number): Float64Array {
  const out = new Float64Array(rows * V);
  for (let r = 0; r < rows; r++) {
    const base = r * V;
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, logits[base + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += out[base + i] = Math.exp(logits[base + i] - max);
    for (let i = 0; i < V; i++) out[base + i] /= sum;
  }
  return out;
}

/** log(sum(exp(row))) of one row starting at `base`, computed stably. */
export function logSumExp(logits: ArrayLike<number>, base: number, V: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[base + i]);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[base + i] - max);
  return max + Math.log(sum);
}
