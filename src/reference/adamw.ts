/** Float64 twin of the fused AdamW kernel (torch.optim.AdamW semantics). */

/** AdamW hyperparameters; `step` t counts from 1 and sets the bias corrections. */
export interface AdamWHyper {
  /** Learning rate. */
  lr: number;
  /** Decay of the first moment (0.9). */
  beta1: number;
  /** Decay of the second moment (0.999). */
  beta2: number;
  /** Added to sqrt(v-hat) in the denominator. */
  eps: number;
  /** Decoupled weight decay: p -= lr * weightDecay * p. */
  weightDecay: number;
  /** 1-based step count t; bias corrections are 1 - beta^t. */
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
  hyper: AdamWHyper,
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
