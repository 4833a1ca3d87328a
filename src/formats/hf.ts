/**
 * Hugging Face model folders: config.json (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM2/3) and
 * safetensors weights, plus
 * a converter that writes any ModelWeights (e.g. a llama2.c checkpoint) as such a folder.
 */
import { deriveHeadDim, type ModelConfig, tensorShapes, validateConfig } from "./config.ts";
import {
  CorruptHeaderError,
  InvalidConfigError,
  MissingTensorError,
  TensorShapeMismatchError,
  UnsupportedArchitectureError,
  UnsupportedFeatureError,
} from "./errors.ts";
import { writeSafetensors } from "./safetensors.ts";
import { readSafetensorsFolder } from "./safetensors_folder.ts";
import {
  convertTensor,
  type ModelWeights,
  type TensorData,
  tensorToF32,
  type WeightDtype,
} from "./tensor_data.ts";
import {
  copyLocalFile,
  type FileStore,
  joinPath,
  makeLocalFolder,
  readJsonFile,
  storeFor,
  writeLocalFile,
} from "./files.ts";
import { llama3FrequencyDivisors } from "../core/rope.ts";

/** Architectures (config.json "architectures") this reader accepts. */
export const SUPPORTED_ARCHITECTURES = [
  "LlamaForCausalLM",
  "MistralForCausalLM",
  "Qwen2ForCausalLM",
  "Qwen3ForCausalLM",
  "SmolLM3ForCausalLM",
] as const;

const DEFAULT_ROPE_THETA = 10000;
const DEFAULT_RMS_NORM_EPS = 1e-6;

/**
 * ModelConfig of a parsed config.json. A Mistral sliding window shorter than
 * max_position_embeddings caps maxSeqLen (within the window, full attention is the same thing).
 */
export function parseHfConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new CorruptHeaderError(file, "config.json is not a JSON object");
  }
  const c = json as Record<string, unknown>;
  const archs = c.architectures;
  if (!Array.isArray(archs) || archs.length === 0 || typeof archs[0] !== "string") {
    throw new UnsupportedArchitectureError(
      file,
      `no "architectures" list; supported: ${SUPPORTED_ARCHITECTURES.join(", ")}`,
    );
  }
  const arch = archs[0];
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new UnsupportedArchitectureError(
      file,
      `architecture ${arch} is not supported; supported: ${SUPPORTED_ARCHITECTURES.join(", ")}`,
    );
  }
  const int = (key: string, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (v === undefined) throw new InvalidConfigError(file, `${key} is missing`);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new InvalidConfigError(
        file,
        `${key} must be a positive integer, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  const unsupported = (problem: string): never => {
    throw new UnsupportedFeatureError(file, `${problem} (architecture ${arch})`);
  };

  const hiddenAct = c.hidden_act ?? c.hidden_activation ?? "silu";
  if (hiddenAct !== "silu") unsupported(`hidden_act ${JSON.stringify(hiddenAct)}: only "silu"`);
  // Newer transformers releases move RoPE settings (theta and scaling) into rope_parameters.
  const ropeKey = c.rope_parameters != null ? "rope_parameters" : "rope_scaling";
  const rope = (c[ropeKey] ?? {}) as Record<string, unknown>;
  if (typeof rope !== "object" || Array.isArray(rope)) {
    throw new InvalidConfigError(file, `${ropeKey} must be an object or null`);
  }
  const ropeTheta = rope.rope_theta ?? c.rope_theta ?? DEFAULT_ROPE_THETA;
  if (c.attention_bias === true) unsupported("attention_bias: true (biases on q/k/v/o)");
  if (c.mlp_bias === true) unsupported("mlp_bias: true");
  if ((arch.startsWith("Qwen") || arch === "SmolLM3ForCausalLM") && c.use_sliding_window === true) {
    unsupported("use_sliding_window: true");
  }

  const dim = int("hidden_size");
  const nHeads = int("num_attention_heads");
  let maxSeqLen = int("max_position_embeddings");
  const window = c.sliding_window;
  if (arch === "MistralForCausalLM" && typeof window === "number" && window > 0) {
    maxSeqLen = Math.min(maxSeqLen, window);
  }
  const config: ModelConfig = {
    architecture: arch,
    dim,
    hiddenDim: int("intermediate_size"),
    nLayers: int("num_hidden_layers"),
    nHeads,
    nKvHeads: int("num_key_value_heads", nHeads),
    headDim: c.head_dim != null ? int("head_dim") : deriveHeadDim(dim, nHeads, file),
    vocabSize: int("vocab_size"),
    maxSeqLen,
    normEps: (c.rms_norm_eps ?? DEFAULT_RMS_NORM_EPS) as number,
    ropeTheta: ropeTheta as number,
    ropePairs: "half",
    tiedEmbeddings: (c.tie_word_embeddings ?? false) as boolean,
    qkvBias: arch === "Qwen2ForCausalLM",
  };
  if (arch === "Qwen3ForCausalLM") config.qkNorm = true;
  const divisors = ropeDivisors(rope, ropeKey, config, file);
  if (divisors) config.ropeFreqFactors = divisors;
  if (arch === "SmolLM3ForCausalLM") {
    const flags = c.no_rope_layers;
    if (flags == null) {
      // transformers' SmolLM3Config fills the list in: every no_rope_layer_interval-th layer
      // (counting from 1) goes without RoPE.
      const interval = int("no_rope_layer_interval", 4);
      config.ropeLayers = Array.from(
        { length: config.nLayers },
        (_, l) => (l + 1) % interval !== 0,
      );
    } else {
      if (!Array.isArray(flags) || flags.length !== config.nLayers) {
        throw new InvalidConfigError(
          file,
          `no_rope_layers must list 0 or 1 for each of the ${config.nLayers} layers`,
        );
      }
      // SmolLM3's naming: no_rope_layers[i] == 1 means layer i *uses* RoPE.
      config.ropeLayers = flags.map((f) => f === 1 || f === true);
    }
  }
  validateConfig(config, file);
  return config;
}

/**
 * The RoPE frequency divisors a config's scaling asks for: none for rope_type "default" or no
 * scaling, Llama 3's per-pair blend for "llama3", the factor on every pair for "linear".
 * Anything else (yarn, dynamic NTK, longrope, ...) is refused naming the key and its type.
 */
function ropeDivisors(
  rope: Record<string, unknown>,
  key: string,
  config: ModelConfig,
  file: string,
): Float32Array | undefined {
  const type = rope.rope_type ?? rope.type ?? "default";
  const num = (name: string, fallback?: number): number => {
    const v = rope[name] ?? fallback;
    if (typeof v !== "number" || !(v > 0)) {
      throw new InvalidConfigError(
        file,
        `${key}.${name} must be a positive number, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  switch (type) {
    case "default":
      return undefined;
    case "linear":
      return new Float32Array(config.headDim / 2).fill(num("factor"));
    case "llama3": {
      const scaling = {
        factor: num("factor"),
        lowFreqFactor: num("low_freq_factor"),
        highFreqFactor: num("high_freq_factor"),
        originalMaxPositions: num("original_max_position_embeddings"),
      };
      if (!(scaling.highFreqFactor > scaling.lowFreqFactor)) {
        throw new InvalidConfigError(file, `${key}: high_freq_factor must exceed low_freq_factor`);
      }
      return llama3FrequencyDivisors(config.headDim, config.ropeTheta, scaling);
    }
    default:
      throw new UnsupportedFeatureError(
        file,
        `${key} with rope_type ${
          JSON.stringify(type)
        } is not supported (supported: "default", "linear", "llama3")`,
      );
  }
}

/** Reads and parses `dir`/config.json. */
export async function readHfConfig(
  dir: string,
  store: FileStore = storeFor(dir),
): Promise<ModelConfig> {
  const file = store.join(dir, "config.json");
  return parseHfConfig(await readJsonFile(file, "config", store), file);
}

/**
 * Reads a Hugging Face folder: config.json plus safetensors weights (single or sharded). Every
 * tensor the config implies must exist with its shape; tensors keep their stored dtype. Extra
 * tensors (a tied checkpoint's lm_head.weight, rotary caches) are left out.
 */
export async function readHfModel(
  dir: string,
  store: FileStore = storeFor(dir),
): Promise<ModelWeights> {
  const config = await readHfConfig(dir, store);
  const set = await readSafetensorsFolder(dir, store);
  const tensors = new Map<string, TensorData>();
  for (const [name, shape] of tensorShapes(config)) {
    if (!set.has(name)) {
      throw new MissingTensorError(
        set.source,
        name,
        `needed by ${config.architecture} with ${config.nLayers} layers` +
          (name === "lm_head.weight" ? " and tie_word_embeddings false" : ""),
      );
    }
    const entry = set.entry(name);
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeMismatchError(entry.file, name, shape, entry.shape);
    }
    tensors.set(name, set.raw(name));
  }
  return { config, tensors };
}

/**
 * Row order that turns interleaved RoPE pairs into half-split ones: within each head of
 * `headDim` rows, [rows 0, 2, 4, ..., rows 1, 3, 5, ...]. llama2.c (and Meta's original Llama)
 * rotate pairs (2i, 2i+1); Hugging Face rotates (i, i + headDim/2) with the same frequency for
 * pair i. Reordering q_proj and k_proj rows this way (biases too) makes HF's rotation of the new
 * rows equal llama2.c's rotation of the old ones, and q.k is unchanged since q and k move
 * together. HF's convert_llama_weights_to_hf.py applies this same permutation to Meta weights;
 * llama.cpp's convert script undoes it.
 */
export function interleavedToHalfRows(heads: number, headDim: number): Int32Array {
  const order = new Int32Array(heads * headDim);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      order[h * headDim + i] = h * headDim + 2 * i;
      order[h * headDim + half + i] = h * headDim + 2 * i + 1;
    }
  }
  return order;
}

/** Row `r` of the result is row order[r] of `t` (t is [rows, ...]). */
export function permuteRows(t: Float32Array, order: Int32Array): Float32Array {
  const width = t.length / order.length;
  const out = new Float32Array(t.length);
  for (let r = 0; r < order.length; r++) {
    out.set(t.subarray(order[r] * width, (order[r] + 1) * width), r * width);
  }
  return out;
}

/** Options of writeHfFolder. */
export interface WriteHfOptions {
  /** Stored element type of every tensor (default F32). */
  dtype?: WeightDtype;
  /** A llama2.c tokenizer.bin to copy beside the weights (as tokenizer.bin). */
  tokenizerBin?: string;
  /**
   * config.json keys written over the ones derived from the weights' config: a published
   * model's own keys (its rope_scaling, sliding_window, no_rope_layers, token ids). What is
   * written must read back as the weights' config (UnsupportedFeatureError otherwise).
   */
  config?: Record<string, unknown>;
}

const MODEL_TYPES: Readonly<Record<string, string>> = {
  LlamaForCausalLM: "llama",
  MistralForCausalLM: "mistral",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
  SmolLM3ForCausalLM: "smollm3",
};

/** The Hugging Face class a config is written as: its own, else the one with its features. */
function hfArchitecture(config: ModelConfig): string {
  if ((SUPPORTED_ARCHITECTURES as readonly string[]).includes(config.architecture)) {
    return config.architecture;
  }
  if (config.qkvBias) return "Qwen2ForCausalLM";
  if (config.qkNorm) return "Qwen3ForCausalLM";
  if (config.ropeLayers) return "SmolLM3ForCausalLM";
  return "LlamaForCausalLM";
}

/** config.json's keys for `config`, RoPE scaling and RoPE-less layers included where expressible. */
function hfConfigJson(config: ModelConfig, dtype: WeightDtype): Record<string, unknown> {
  const architecture = hfArchitecture(config);
  const factors = config.ropeFreqFactors;
  // One divisor on every pair is linear scaling; other divisors need the published keys.
  const linear = factors && factors.every((f) => f === factors[0]) ? factors[0] : undefined;
  return {
    architectures: [architecture],
    model_type: MODEL_TYPES[architecture],
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.nLayers,
    num_attention_heads: config.nHeads,
    num_key_value_heads: config.nKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxSeqLen,
    rms_norm_eps: config.normEps,
    rope_theta: config.ropeTheta,
    rope_scaling: linear === undefined ? null : { rope_type: "linear", factor: linear },
    ...(config.ropeLayers ? { no_rope_layers: config.ropeLayers.map((r) => (r ? 1 : 0)) } : {}),
    tie_word_embeddings: config.tiedEmbeddings,
    hidden_act: "silu",
    attention_bias: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype],
  };
}

/** The first setting in which `read` (a written config.json, parsed) differs from `want`. */
function configDifference(read: ModelConfig, want: ModelConfig): string | undefined {
  const fields = [
    "dim",
    "hiddenDim",
    "nLayers",
    "nHeads",
    "nKvHeads",
    "headDim",
    "vocabSize",
    "maxSeqLen",
    "normEps",
    "ropeTheta",
    "tiedEmbeddings",
    "qkvBias",
  ] as const;
  for (const f of fields) {
    if (read[f] !== want[f]) return `${f} ${read[f]} instead of ${want[f]}`;
  }
  if ((read.qkNorm ?? false) !== (want.qkNorm ?? false)) return `qkNorm ${read.qkNorm ?? false}`;
  const rotates = (c: ModelConfig, l: number) => c.ropeLayers?.[l] ?? true;
  for (let l = 0; l < want.nLayers; l++) {
    if (rotates(read, l) !== rotates(want, l)) return `RoPE ${rotates(read, l)} in layer ${l}`;
  }
  for (let i = 0; i < want.headDim / 2; i++) {
    const a = read.ropeFreqFactors?.[i] ?? 1;
    const b = want.ropeFreqFactors?.[i] ?? 1;
    if (Math.abs(a - b) > 1e-6 * b) return `RoPE divisor ${a} instead of ${b} for pair ${i}`;
  }
  return undefined;
}

/**
 * Writes `weights` as a Hugging Face folder: config.json and model.safetensors. Interleaved-RoPE
 * models (llama2.c) get their q_proj/k_proj rows permuted (see interleavedToHalfRows) so that
 * the folder is a standard half-split HF checkpoint computing the same function. A config whose
 * settings config.json cannot state (RoPE divisors other than Llama 3's or linear ones without
 * `options.config` naming them, q/k biases with head norms) is refused.
 */
export async function writeHfFolder(
  dir: string,
  weights: ModelWeights,
  options: WriteHfOptions = {},
): Promise<void> {
  const dtype = options.dtype ?? "F32";
  const { config } = weights;
  const where = "(writeHfFolder)";
  validateConfig(config, where);
  const configJson = { ...hfConfigJson(config, dtype), ...options.config };
  let readBack: ModelConfig;
  try {
    readBack = parseHfConfig(configJson, where);
  } catch (e) {
    throw new UnsupportedFeatureError(
      where,
      `the config cannot be written as config.json: ${e instanceof Error ? e.message : e}`,
      { cause: e },
    );
  }
  const difference = configDifference(readBack, config);
  if (difference !== undefined) {
    throw new UnsupportedFeatureError(where, `config.json would read back with ${difference}`);
  }
  const qOrder = interleavedToHalfRows(config.nHeads, config.headDim);
  const kOrder = interleavedToHalfRows(config.nKvHeads, config.headDim);
  const out = new Map<string, TensorData>();
  for (const [name, shape] of tensorShapes(config)) {
    const t = weights.tensors.get(name);
    if (!t) throw new MissingTensorError(where, name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeMismatchError(where, name, shape, t.shape);
    }
    let tensor = t;
    const isQ = /self_attn\.q_proj\.(weight|bias)$/.test(name);
    const isK = /self_attn\.k_proj\.(weight|bias)$/.test(name);
    if (config.ropePairs === "interleaved" && (isQ || isK)) {
      const data = permuteRows(tensorToF32(t), isQ ? qOrder : kOrder);
      tensor = { dtype: "F32", shape: [...t.shape], data };
    }
    out.set(name, convertTensor(tensor, dtype));
  }
  await makeLocalFolder(dir);
  await writeLocalFile(joinPath(dir, "config.json"), JSON.stringify(configJson, null, 2) + "\n");
  await writeLocalFile(
    joinPath(dir, "model.safetensors"),
    writeSafetensors(out, { format: "pt", converted_by: "templora" }),
  );
  if (options.tokenizerBin) {
    await copyLocalFile(options.tokenizerBin, joinPath(dir, "tokenizer.bin"));
  }
}
