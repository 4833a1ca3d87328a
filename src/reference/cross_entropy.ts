/** Float64 twins of shaders/cross_entropy.wgsl. */
import { logSumExp, softmaxRows } from "./softmax.ts";

/** Kept here for callers that import it with the cross-entropy twins. */
export { finiteDifferences } from "./finite_difference.ts";

/** Per-token losses and their masked totals. */
export interface CrossEntropyResult {
  /** [T]: mask * (logsumexp - logit of the target); 0 where the mask is 0. */
  loss: Float64Array;
  /** Sum of the losses. */
  sum: number;
  /** Sum of the mask (the scored-token count for a 0/1 mask). */
  count: number;
}

/** Masked softmax cross-entropy over row-major logits [T, V]. */
export function crossEntropyForward(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  T: number,
  V: number,
): CrossEntropyResult {
  const loss = new Float64Array(T);
  let sum = 0;
  let count = 0;
  for (let t = 0; t < T; t++) {
    if (mask[t] !== 0) {
      loss[t] = mask[t] * (logSumExp(logits, t * V, V) - logits[t * V + targets[t]]);
    }
    sum += loss[t];
    count += mask[t];
  }
  return { loss, sum, count };
}

/** dLogits [T, V] = (softmax(logits) - onehot(targets)) * mask * gradScale. */
export function crossEntropyBackward(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  T: number,
  V: number,
  gradScale: number,
): Float64Array {
  const grad = softmaxRows(logits, T, V);
  for (let t = 0; t < T; t++) {
    const scale = mask[t] * gradScale;
    if (targets[t] < V) grad[t * V + targets[t]] -= 1;
    for (let v = 0; v < V; v++) grad[t * V + v] *= scale;
  }
  return grad;
}
