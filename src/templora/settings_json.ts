import type { TempLoraSettings } from "./settings.ts";

/**
 * Temp-Lora settings as they are spelled in JSON everywhere: the server's `templora` request
 * object and its echo, the commands' --json output and the README. Names are snake_case, as in
 * OpenAI's API; the optimizer's settings sit beside the others, as `lr` does in a request.
 */
export interface TempLoraSettingsJson {
  /** `enabled`. */
  enabled: boolean;
  /** `chunk` (Δ). */
  chunk: number;
  /** `trainContext`. */
  train_context: number;
  /** `epochs`. */
  epochs: number;
  /** `window` (W). */
  window: number;
  /** `kvRefresh`. */
  kv_refresh: number;
  /** `sink`. */
  sink: number;
  /** `rank`. */
  rank: number;
  /** `alpha`. */
  alpha: number;
  /** `targets`. */
  targets: string[];
  /** `seed`. */
  seed: number;
  /** `optimizer.lr`. */
  lr: number;
  /** `optimizer.beta1`. */
  beta1: number;
  /** `optimizer.beta2`. */
  beta2: number;
  /** `optimizer.eps`. */
  eps: number;
  /** `optimizer.weightDecay`. */
  weight_decay: number;
  /** `optimizer.maxGradNorm`. */
  max_grad_norm: number;
  /** `optimizer.dropout`. */
  dropout: number;
  /** `optimizer.warmupSteps`. */
  warmup_steps: number;
}

/** `settings` under the names of {@link TempLoraSettingsJson}. */
export function tempLoraSettingsJson(settings: TempLoraSettings): TempLoraSettingsJson {
  const o = settings.optimizer;
  return {
    enabled: settings.enabled,
    chunk: settings.chunk,
    train_context: settings.trainContext,
    epochs: settings.epochs,
    window: settings.window,
    kv_refresh: settings.kvRefresh,
    sink: settings.sink,
    rank: settings.rank,
    alpha: settings.alpha,
    targets: [...settings.targets],
    seed: settings.seed,
    lr: o.lr,
    beta1: o.beta1,
    beta2: o.beta2,
    eps: o.eps,
    weight_decay: o.weightDecay,
    max_grad_norm: o.maxGradNorm,
    dropout: o.dropout,
    warmup_steps: o.warmupSteps,
  };
}
