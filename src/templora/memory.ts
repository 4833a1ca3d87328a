/**
 * How much GPU memory writing with Temp-Lora takes for a model, counted by building the same
 * buffers the runtime builds (KV cache, activations, adapter, trainer) on a device that allocates
 * nothing, so the figures hold for models far larger than this machine can run.
 */
import { LORA_TARGETS, type LoraTarget } from "../core/lora.ts";
import type { ModelConfig } from "../formats/config.ts";
import { planningGpu } from "../gpu/planning.ts";
import { StepActivations, TrainingActivations } from "../model/activations.ts";
import { type GpuWeightDtype, plannedWeightBytes } from "../model/gpu_weights.ts";
import { KvCache, type KvCacheDtype } from "../model/kv_cache.ts";
import { GRAD_NORM_SCRATCH_BYTES } from "../ops/grad_norm.ts";
import { LoraAdapter } from "./adapter.ts";
import { type TrainerOptions, TrainerScratch, trainingLayout } from "./trainer.ts";

/** What a plan is for: the run's window, training example and adapter. */
export interface MemoryPlanOptions extends TrainerOptions {
  /** W, the KV window while writing. */
  window: number;
  /** Longest training example (context plus chunk), in tokens. */
  trainTokens: number;
  /** LoRA rank. */
  rank: number;
  /** Adapted projections (default: all seven). */
  targets?: readonly LoraTarget[];
  /** Storage of the float matrices (default "f16": what a large model is run with). */
  weightDtype?: GpuWeightDtype;
  /** How the KV caches (writing and training) store keys and values (default "f32"). */
  kvCacheDtype?: KvCacheDtype;
  /** Tokens a prefill step processes at once (default 128). */
  prefillRows?: number;
  /** maxStorageBufferBindingSize the "auto" weight storage decides against (default 2^31). */
  bindingLimit?: number;
}

/** Bytes on the GPU, by what holds them. */
export interface MemoryPlan {
  /**
   * Weights: matrices as stored, embedding and vectors as f32 (an embedding or LM head split into
   * row parts for the adapter's binding limit takes the same bytes, in several buffers).
   */
  weights: number;
  /** The writing KV cache of `window` positions. */
  kvCache: number;
  /** Decode and prefill activations (with the adapter's scratch). */
  decode: number;
  /** The adapter: parameters, gradients, both AdamW moments. */
  adapter: number;
  /** The training step: kept (or recomputed) activations, its KV cache, loss and gradient scratch. */
  training: number;
  /** All of the above. */
  total: number;
  /** Whether the trainer would recompute layers instead of keeping them. */
  recompute: boolean;
  /** Rows of logits the LM head computes at once in training. */
  logitRows: number;
}

/** The GPU memory a Temp-Lora run of `config`'s model takes with `options`. */
export function planMemory(config: ModelConfig, options: MemoryPlanOptions): MemoryPlan {
  const gpu = planningGpu();
  const limit = options.bindingLimit ?? 2 ** 31;
  const weights = plannedWeightBytes(config, limit, {
    weightDtype: options.weightDtype ?? "f16",
  });
  const kv = new KvCache(gpu, config, options.window, options.kvCacheDtype);
  const step = new StepActivations(
    gpu,
    config,
    Math.min(options.prefillRows ?? 128, options.window),
  );
  step.prepareAdapter(options.rank);
  const adapter = new LoraAdapter(gpu, config, {
    rank: options.rank,
    alpha: options.rank,
    targets: options.targets ?? LORA_TARGETS,
    seed: 0,
  }, { initialise: false });
  const T = options.trainTokens;
  const layout = trainingLayout(config, T, options, options.rank);
  const kept = new TrainingActivations(gpu, config, T, adapter, layout);
  const trainCache = new KvCache(gpu, config, T, options.kvCacheDtype);
  const scratch = new TrainerScratch(gpu, config, T, options.rank, kept.logitRows);
  const training = kept.bytes + trainCache.bytes + scratch.bytes + GRAD_NORM_SCRATCH_BYTES;
  const plan = {
    weights,
    kvCache: kv.bytes,
    decode: step.bytes,
    adapter: adapter.bytes,
    training,
    total: 0,
    recompute: kept.recompute,
    logitRows: kept.logitRows,
  };
  plan.total = plan.weights + plan.kvCache + plan.decode + plan.adapter + plan.training;
  return plan;
}
