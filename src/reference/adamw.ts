/** Float64 twin of the fused AdamW kernel (torch.optim.AdamW semantics). */
import type { AdamWHyper } from "../ops/adamw.ts";

/** AdamW's hyperparameters with the 1-based step count t that the bias corrections take. */
export interface AdamWStepHyper extends Omit<AdamWHyper, "firstStep"> {
  /** t: bias corrections 1 - beta1^t and 1 - beta2^t. */
  step: number;
}

/** Optimizer state over the flat adapter buffer. */
export interface AdamWState {
  /** [n] parameters. */
  params: Float64Array;
  /** [n] first moment. */
  m: Float64Array;
  /** [n] second moment. */
  v: Float64Array;
}

/**
 * One step in place: g = grad * gradScale; p -= lr * wd * p; m, v updated; then
 * p -= lr * (m / bc1) / (sqrt(v / bc2) + eps). Does nothing when `skip` (non-finite gradients).
 */
export function adamwStepRef(
  state: AdamWState,
  grads: ArrayLike<number>,
  hyper: AdamWStepHyper,
  gradScale = 1,
  skip = false,
): void {
  if (skip) return;
  const { lr, beta1, beta2, eps, weightDecay, step } = hyper;
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  const { params, m, v } = state;
  for (let i = 0; i < params.length; i++) {
    const g = grads[i] * gradScale;
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    params[i] -= lr * weightDecay * params[i];
    params[i] -= lr * (m[i] / bc1) / (Math.sqrt(v[i] / bc2) + eps);
  }
}
