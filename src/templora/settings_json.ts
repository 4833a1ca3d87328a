import type { TempLoraSettings } from "./settings.ts";

/**
 * Temp-Lora settings as they are spelled in JSON everywhere: the server's `templora` request
 * object and its echo, the commands' --json output and the README. Names are snake_case, as in
 * OpenAI's API; the optimizer's settings sit beside the others, as `lr` does in a request.
 */
export interface TempLoraSettingsJson {
  enabled: boolean;
  chunk: number;
  train_context: number;
  epochs: number;
  window: number;
  kv_refresh: number;
  rank: number;
  alpha: number;
  targets: string[];
  seed: number;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  max_grad_norm: number;
  dropout: number;
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
