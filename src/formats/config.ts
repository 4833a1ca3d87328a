import type { RopePairs } from "../core/rope.ts";
import { InvalidConfigError } from "./errors.ts";

export type { RopePairs };

/** Hyperparameters of a Llama-family decoder (Llama, Mistral, Qwen2, llama2.c checkpoints). */
export interface ModelConfig {
  /** "llama2c" for llama2.c checkpoints, else the Hugging Face class (e.g. "LlamaForCausalLM"). */
  architecture: string;
  /** Model width (hidden_size). */
  dim: number;
  /** SwiGLU inner width (intermediate_size). */
  hiddenDim: number;
  /** Transformer blocks. */
  nLayers: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads (grouped-query attention: nHeads is a multiple of it). */
  nKvHeads: number;
  /** Elements per head; q_proj is [nHeads * headDim, dim]. */
  headDim: number;
  /** Rows of the token embedding (and of the LM head). */
  vocabSize: number;
  /** Longest sequence the model was trained for. */
  maxSeqLen: number;
  /** RMSNorm epsilon. */
  normEps: number;
  /** RoPE base. */
  ropeTheta: number;
  /** Which q/k elements RoPE rotates together: "interleaved" (llama2.c), "half" (Hugging Face). */
  ropePairs: RopePairs;
  /** The LM head is the token embedding (no lm_head.weight tensor). */
  tiedEmbeddings: boolean;
  /** q_proj, k_proj and v_proj carry biases (Qwen2). */
  qkvBias: boolean;
  /**
   * RMSNorm over headDim on every query and key head, after the projections and before RoPE
   * (Qwen3: self_attn.q_norm.weight and k_norm.weight, [headDim] each). Absent means false.
   */
  qkNorm?: boolean;
  /**
   * Per-pair RoPE frequency divisors (GGUF `rope_freqs.weight` of Llama 3 files): the inverse
   * frequency of pair i is divided by ropeFreqFactors[i]. headDim / 2 values; absent means 1.
   */
  ropeFreqFactors?: Float32Array;
  /** Which layers apply RoPE (SmolLM3's `no_rope_layers`, 1 = uses RoPE); absent: every layer. */
  ropeLayers?: readonly boolean[];
}

/** Width of one K or V row: nKvHeads * headDim. */
export function kvDim(config: ModelConfig): number {
  return config.nKvHeads * config.headDim;
}

/** Width of one Q row: nHeads * headDim. */
export function qDim(config: ModelConfig): number {
  return config.nHeads * config.headDim;
}

const INT_FIELDS = [
  "dim",
  "hiddenDim",
  "nLayers",
  "nHeads",
  "nKvHeads",
  "headDim",
  "vocabSize",
  "maxSeqLen",
] as const;

/**
 * Checks that `config` describes a model the runtime can build; throws InvalidConfigError naming
 * `file` and the first problem found.
 */
export function validateConfig(config: ModelConfig, file: string): void {
  const fail = (problem: string): never => {
    throw new InvalidConfigError(file, problem);
  };
  for (const key of INT_FIELDS) {
    const v = config[key];
    if (!Number.isSafeInteger(v) || v <= 0) fail(`${key} must be a positive integer, got ${v}`);
  }
  if (config.nKvHeads > config.nHeads) {
    fail(`nKvHeads (${config.nKvHeads}) exceeds nHeads (${config.nHeads})`);
  }
  if (config.nHeads % config.nKvHeads !== 0) {
    fail(`nHeads (${config.nHeads}) is not a multiple of nKvHeads (${config.nKvHeads})`);
  }
  if (config.headDim % 2 !== 0) fail(`headDim (${config.headDim}) must be even for RoPE`);
  if (!(config.normEps > 0 && config.normEps < 1)) {
    fail(`normEps must be in (0, 1), got ${config.normEps}`);
  }
  if (!(config.ropeTheta > 1 && Number.isFinite(config.ropeTheta))) {
    fail(`ropeTheta must be a finite number above 1, got ${config.ropeTheta}`);
  }
  if (config.ropePairs !== "interleaved" && config.ropePairs !== "half") {
    fail(`ropePairs must be "interleaved" or "half", got ${JSON.stringify(config.ropePairs)}`);
  }
  if (typeof config.tiedEmbeddings !== "boolean") fail("tiedEmbeddings must be a boolean");
  if (typeof config.qkvBias !== "boolean") fail("qkvBias must be a boolean");
  if (typeof config.architecture !== "string" || config.architecture === "") {
    fail("architecture must be a non-empty string");
  }
  if (config.qkNorm !== undefined && typeof config.qkNorm !== "boolean") {
    fail("qkNorm must be a boolean when present");
  }
  if (
    config.ropeLayers !== undefined &&
    (!Array.isArray(config.ropeLayers) || config.ropeLayers.length !== config.nLayers ||
      config.ropeLayers.some((r) => typeof r !== "boolean"))
  ) {
    fail(`ropeLayers must list a boolean for each of the ${config.nLayers} layers`);
  }
  const factors = config.ropeFreqFactors;
  if (factors !== undefined) {
    if (!(factors instanceof Float32Array) || factors.length !== config.headDim / 2) {
      fail(`ropeFreqFactors must be a Float32Array of headDim / 2 = ${config.headDim / 2} values`);
    }
    const bad = factors.findIndex((f) => !(f > 0 && Number.isFinite(f)));
    if (bad >= 0) fail(`ropeFreqFactors[${bad}] = ${factors[bad]} is not a positive number`);
  }
}

/** headDim = dim / nHeads when the format does not state it; throws when it does not divide. */
export function deriveHeadDim(dim: number, nHeads: number, file: string): number {
  if (!(nHeads > 0) || dim % nHeads !== 0) {
    throw new InvalidConfigError(file, `dim (${dim}) is not divisible by nHeads (${nHeads})`);
  }
  return dim / nHeads;
}

/**
 * Every tensor a model with this config has, Hugging Face Llama names -> shape ([out, in] for
 * projections). Biases only with qkvBias, q_norm/k_norm only with qkNorm; lm_head.weight only when
 * embeddings are not tied.
 */
export function tensorShapes(config: ModelConfig): Map<string, number[]> {
  const { dim: d, hiddenDim: f, vocabSize: v } = config;
  const q = qDim(config);
  const kv = kvDim(config);
  const shapes = new Map<string, number[]>([["model.embed_tokens.weight", [v, d]]]);
  for (let i = 0; i < config.nLayers; i++) {
    const p = `model.layers.${i}.`;
    shapes.set(p + "input_layernorm.weight", [d]);
    shapes.set(p + "self_attn.q_proj.weight", [q, d]);
    shapes.set(p + "self_attn.k_proj.weight", [kv, d]);
    shapes.set(p + "self_attn.v_proj.weight", [kv, d]);
    if (config.qkvBias) {
      shapes.set(p + "self_attn.q_proj.bias", [q]);
      shapes.set(p + "self_attn.k_proj.bias", [kv]);
      shapes.set(p + "self_attn.v_proj.bias", [kv]);
    }
    if (config.qkNorm) {
      shapes.set(p + "self_attn.q_norm.weight", [config.headDim]);
      shapes.set(p + "self_attn.k_norm.weight", [config.headDim]);
    }
    shapes.set(p + "self_attn.o_proj.weight", [d, q]);
    shapes.set(p + "post_attention_layernorm.weight", [d]);
    shapes.set(p + "mlp.gate_proj.weight", [f, d]);
    shapes.set(p + "mlp.up_proj.weight", [f, d]);
    shapes.set(p + "mlp.down_proj.weight", [d, f]);
  }
  shapes.set("model.norm.weight", [d]);
  if (!config.tiedEmbeddings) shapes.set("lm_head.weight", [v, d]);
  return shapes;
}
