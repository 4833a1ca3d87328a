import type { ModelConfig } from "../formats/config.ts";
import { InvalidSettingError } from "../model/errors.ts";
import { LORA_TARGETS, type LoraTarget } from "./adapter.ts";
import { DEFAULT_OPTIMIZER, type OptimizerSettings } from "./trainer.ts";

/** Everything that shapes a Temp-Lora run. */
export interface TempLoraSettings {
  /** Train the adapter while writing (false: plain generation with the same window). */
  enabled: boolean;
  /** Δ: tokens generated between two adapter updates. */
  chunk: number;
  /** Tokens of preceding text (no loss) in front of each chunk's training example. */
  trainContext: number;
  /** Optimizer steps per chunk. */
  epochs: number;
  /** W: positions the model attends to while generating (the KV window). */
  window: number;
  /** Rebuild the KV cache with the new adapter every this many chunks (0: after every one). */
  kvRefresh: number;
  /**
   * Attention sinks (StreamingLLM): the text's first this many tokens stay in front of the
   * window when it slides, at positions 0.. (0: off; at most a quarter of the window).
   */
  sink: number;
  /** LoRA rank r of the adapter. */
  rank: number;
  /** LoRA alpha; the update is scaled by alpha / r. */
  alpha: number;
  /** Projections that get an adapter. */
  targets: readonly LoraTarget[];
  /** Seed of the adapter's initialisation and dropout masks. */
  seed: number;
  /** Optimizer settings of the adapter's training steps. */
  optimizer: OptimizerSettings;
}

/**
 * Defaults scaled to the model. The paper's settings (W 4096 with Δ 1024 and a training context
 * of 3072, r 64, lr 5e-5, two steps a chunk) are for 7B models; they are used as they are for
 * models of d_model 1024 and more (Qwen2.5-1.5B, Llama 3.2 1B and 3B, Llama 3.1 8B all get them),
 * with the window capped at the model's trained length and Δ a quarter of it. Smaller models
 * get a window of at most 1024 (their attention is cheap and a longer one buys little), three
 * steps a chunk, and a larger learning rate: 1e-3 up to d_model 256 (swept on stories260K, see
 * bench/SWEEP.md: tiny models need more movement per chunk; 3e-3 overshoots), falling
 * geometrically with d_model to the paper's 5e-5 at 2048 (SmolLM2-135M at 576 gets 3.1e-4,
 * Qwen2.5-0.5B at 896 1.6e-4). The rank is d_model / 4 within 4..64, alpha equal to it.
 */
export function defaultTempLoraSettings(config: ModelConfig): TempLoraSettings {
  const small = config.dim < 1024;
  const window = Math.min(config.maxSeqLen, small ? 1024 : 4096);
  const chunk = Math.max(16, Math.floor(window / 4));
  return {
    enabled: true,
    chunk,
    trainContext: window - chunk,
    epochs: small ? 3 : 2,
    window,
    kvRefresh: 7,
    sink: 0,
    rank: Math.max(4, Math.min(64, Math.floor(config.dim / 4))),
    alpha: Math.max(4, Math.min(64, Math.floor(config.dim / 4))),
    targets: LORA_TARGETS,
    seed: 0,
    optimizer: { ...DEFAULT_OPTIMIZER, lr: defaultLearningRate(config.dim) },
  };
}

/** 1e-3 up to d_model 256, the paper's 5e-5 from 2048, geometric between (see above). */
function defaultLearningRate(dim: number): number {
  const [tiny, large] = [256, 2048];
  if (dim <= tiny) return 1e-3;
  if (dim >= large) return DEFAULT_OPTIMIZER.lr;
  const t = Math.log(dim / tiny) / Math.log(large / tiny);
  return Number((1e-3 * Math.pow(DEFAULT_OPTIMIZER.lr / 1e-3, t)).toPrecision(2));
}

/** Settings to change from the model's defaults; undefined fields keep the default. */
export type TempLoraOverrides = Partial<Omit<TempLoraSettings, "optimizer">> & {
  optimizer?: Partial<OptimizerSettings>;
};

/**
 * The model's defaults ({@link defaultTempLoraSettings}) overridden by `overrides`, checked
 * against the model; {@link InvalidSettingError} names the setting and its allowed range. The
 * training context follows the window and Δ unless given, and alpha follows the rank unless
 * given (so the update's scale alpha / r stays 1).
 */
export function resolveTempLoraSettings(
  config: ModelConfig,
  overrides: TempLoraOverrides = {},
): TempLoraSettings {
  const base = defaultTempLoraSettings(config);
  overrides = definedOnly(overrides);
  if (overrides.rank !== undefined && overrides.alpha === undefined) {
    overrides.alpha = overrides.rank;
  }
  const window = overrides.window ?? base.window;
  const chunk = overrides.chunk ?? Math.min(base.chunk, Math.max(1, Math.floor(window / 4)));
  const s: TempLoraSettings = {
    ...base,
    trainContext: window - chunk,
    ...overrides,
    window,
    chunk,
    optimizer: { ...base.optimizer, ...definedOnly(overrides.optimizer ?? {}) },
  };
  const fail = (message: string) => {
    throw new InvalidSettingError(message);
  };
  const int = (name: string, value: number, min: number, max = Infinity, why = "") => {
    if (!Number.isInteger(value) || value < min || value > max) {
      const range = max === Infinity ? `>= ${min}` : `in ${min}..${max}`;
      fail(`${name} must be an integer ${range}${why ? ` (${why})` : ""}, got ${value}`);
    }
  };
  const length = config.maxSeqLen;
  int("window", s.window, 2, length, `${length} is the model's trained length`);
  int("chunk", s.chunk, 1, Math.floor(s.window / 2), `at most half the window of ${s.window}`);
  int(
    "trainContext",
    s.trainContext,
    0,
    length - s.chunk,
    `with the chunk of ${s.chunk} it must fit the model's length of ${length}`,
  );
  int("epochs", s.epochs, 0);
  int("kvRefresh", s.kvRefresh, 0);
  int("sink", s.sink, 0, Math.floor(s.window / 4));
  int("rank", s.rank, 1, 4096);
  int("seed", s.seed, 0, 0xffffffff);
  if (!(s.alpha > 0)) fail(`alpha must be > 0, got ${s.alpha}`);
  const o = s.optimizer;
  if (!(o.lr >= 0) || !Number.isFinite(o.lr)) fail(`lr must be >= 0, got ${o.lr}`);
  if (!(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1)) {
    fail(`betas must be in [0, 1), got ${o.beta1}, ${o.beta2}`);
  }
  if (!(o.eps > 0)) fail(`eps must be > 0, got ${o.eps}`);
  if (!(o.dropout >= 0 && o.dropout < 1)) fail(`dropout must be in [0, 1), got ${o.dropout}`);
  if (!(o.maxGradNorm > 0)) fail(`maxGradNorm must be > 0, got ${o.maxGradNorm}`);
  return s;
}

/** The fields of `record` that are not undefined. */
function definedOnly<T extends object>(record: T): T {
  return Object.fromEntries(Object.entries(record).filter(([, v]) => v !== undefined)) as T;
}
