/**
 * Llama-family models in GGUF files: architectures `llama`, `qwen2`, `qwen3` and `smollm3`,
 * hyperparameters from the `{arch}.*` metadata, and the tensors under Hugging Face Llama names
 * with their ggml type, row-major shape and a reader for their stored bytes (quantized tensors
 * stay packed).
 */
import { type GgmlTypeInfo, isGgmlQuantType } from "../core/quant.ts";
import { type ModelConfig, tensorShapes, validateConfig } from "./config.ts";
import {
  InvalidConfigError,
  MissingTensorError,
  QuantizedWeightsError,
  TensorShapeMismatchError,
  UnsupportedArchitectureError,
  UnsupportedFeatureError,
} from "./errors.ts";
import { bytesToTensorData, type GgufFile, readGguf } from "./gguf.ts";
import { type FileStore, storeFor } from "./files.ts";
import type { ModelWeights, TensorData, WeightSource } from "./tensor_data.ts";

/** GGUF architectures (`general.architecture`) read, with the Hugging Face class each becomes. */
export const GGUF_ARCHITECTURES: Readonly<Record<string, string>> = {
  llama: "LlamaForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  smollm3: "SmolLM3ForCausalLM",
};

/** llama.cpp's SmolLM3: every fourth layer (counting from 1) goes without RoPE; no key says so. */
const SMOLLM3_NO_ROPE_LAYER_STEP = 4;

const DEFAULT_ROPE_BASE = 10000;

/** One weight of a GGUF model: where it is, its type and shape, and how to read it. */
export interface GgufWeight {
  /** The tensor's name in the file (e.g. "blk.0.attn_q.weight"). */
  ggufName: string;
  /** Its ggml type (F32, F16, BF16 or a block-quantized type). */
  type: GgmlTypeInfo;
  /** Row-major shape, outermost first: [out, in] for a matrix (ggml's ne reversed). */
  shape: number[];
  /** Bytes stored in the file. */
  byteLength: number;
  /** The stored bytes, read from the file now (packed blocks for quantized types). */
  read(): Promise<Uint8Array>;
}

/** A GGUF model file, parsed: config and tensors, not yet read. */
export interface GgufModel {
  /** The file. */
  file: string;
  /** Its header (metadata, tensor infos), for the tokenizer and anything else. */
  gguf: GgufFile;
  /** The hyperparameters; `architecture` is the Hugging Face class of GGUF_ARCHITECTURES. */
  config: ModelConfig;
  /** Every tensor tensorShapes(config) lists, under its Hugging Face name. */
  tensors: ReadonlyMap<string, GgufWeight>;
  /** "name TYPE" of each block-quantized tensor (Hugging Face names), in file order. */
  quantized: readonly string[];
}

/** GGUF names of the model-wide tensors -> Hugging Face names. */
const GLOBAL_NAMES: Readonly<Record<string, string>> = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
};

/** GGUF per-layer tensor stems (blk.N.STEM.weight / .bias) -> Hugging Face modules. */
const LAYER_NAMES: Readonly<Record<string, string>> = {
  attn_norm: "input_layernorm",
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  attn_q_norm: "self_attn.q_norm",
  attn_k_norm: "self_attn.k_norm",
  ffn_norm: "post_attention_layernorm",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
};

/** Hugging Face name of a GGUF tensor name, or undefined for names outside the Llama family. */
export function ggufTensorToHfName(name: string): string | undefined {
  if (Object.hasOwn(GLOBAL_NAMES, name)) return GLOBAL_NAMES[name];
  const m = /^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$/.exec(name);
  if (!m || !Object.hasOwn(LAYER_NAMES, m[2])) return undefined;
  return `model.layers.${Number(m[1])}.${LAYER_NAMES[m[2]]}.${m[3]}`;
}

/** GGUF name of a Hugging Face Llama tensor name (the inverse of ggufTensorToHfName). */
export function hfToGgufTensorName(name: string): string | undefined {
  for (const [g, hf] of Object.entries(GLOBAL_NAMES)) if (hf === name) return g;
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(name);
  if (!m) return undefined;
  const stem = Object.entries(LAYER_NAMES).find(([, hf]) => hf === m[2])?.[0];
  return stem === undefined ? undefined : `blk.${m[1]}.${stem}.${m[3]}`;
}

/**
 * The ModelConfig of a GGUF header (RoPE divisors from linear scaling only; readGgufModel folds
 * in the rope_freqs tensor). headDim is `{arch}.attention.key_length` when present, else
 * dim / heads; RoPE pairs are interleaved for `llama` and `smollm3` (llama.cpp's converter
 * permuted Q and K, which stay as stored) and half-split for `qwen2`/`qwen3`; smollm3 skips RoPE
 * in every fourth layer, as llama.cpp does. Throws UnsupportedArchitectureError,
 * MissingMetadataError, UnsupportedFeatureError (YaRN and other RoPE scaling, partial rotary,
 * experts, ...) or InvalidConfigError.
 */
export function ggufModelConfig(gguf: GgufFile): ModelConfig {
  const file = gguf.file;
  const arch = gguf.string("general.architecture");
  const architecture = GGUF_ARCHITECTURES[arch];
  if (architecture === undefined) {
    throw new UnsupportedArchitectureError(
      file,
      `GGUF architecture ${JSON.stringify(arch)} is not supported; supported: ` +
        Object.keys(GGUF_ARCHITECTURES).join(", "),
    );
  }
  const key = (k: string) => `${arch}.${k}`;
  const unsupported = (problem: string): never => {
    throw new UnsupportedFeatureError(file, `${problem} (architecture ${arch})`);
  };
  const invalid = (problem: string): never => {
    throw new InvalidConfigError(file, problem);
  };
  /** A per-model integer; a per-layer array is accepted when all its values agree. */
  const hparam = (k: string, fallback?: number): number => {
    const v = gguf.metadata.get(key(k));
    if (v?.type === "array") {
      const values = Array.from(v.value as ArrayLike<number | bigint>, Number);
      if (values.length === 0 || values.some((x) => x !== values[0])) {
        unsupported(`${key(k)} differs between layers`);
      }
      return values[0];
    }
    return fallback === undefined ? gguf.int(key(k)) : gguf.optionalInt(key(k)) ?? fallback;
  };

  const embed = gguf.tensors.get("token_embd.weight");
  if (!embed) throw new MissingTensorError(file, "token_embd.weight", "the token embedding");
  const dim = hparam("embedding_length");
  const nHeads = hparam("attention.head_count");
  const nLayers = hparam("block_count");
  const headDim = gguf.optionalInt(key("attention.key_length")) ??
    (dim % nHeads === 0 ? dim / nHeads : invalid(
      `embedding_length ${dim} is not a multiple of head_count ${nHeads} (and no key_length)`,
    ));
  const valueLength = gguf.optionalInt(key("attention.value_length"));
  if (valueLength !== undefined && valueLength !== headDim) {
    unsupported(`attention.value_length ${valueLength} differs from key_length ${headDim}`);
  }
  const rotary = gguf.optionalInt(key("rope.dimension_count"));
  if (rotary !== undefined && rotary !== headDim) {
    unsupported(`rope.dimension_count ${rotary} rotates part of a head of ${headDim}`);
  }
  const scaling = gguf.optionalString(key("rope.scaling.type"));
  const scalingFactor = gguf.optionalFloat(key("rope.scaling.factor"));
  if (scaling !== undefined && scaling !== "none" && scaling !== "linear") {
    unsupported(`rope.scaling.type ${JSON.stringify(scaling)} (factor ${scalingFactor})`);
  }
  const linearFactor = scaling === "linear" ? scalingFactor ?? 1 : 1;
  if (!(linearFactor > 0 && Number.isFinite(linearFactor))) {
    invalid(`${key("rope.scaling.factor")} must be a positive number, got ${linearFactor}`);
  }
  const experts = gguf.optionalInt(key("expert_count")) ?? 0;
  if (experts > 0) unsupported(`${experts} experts (mixture of experts)`);
  const vocabSize = embed.shape[0];
  const statedVocab = gguf.optionalInt(key("vocab_size"));
  if (statedVocab !== undefined && statedVocab !== vocabSize) {
    throw new InvalidConfigError(
      file,
      `${key("vocab_size")} = ${statedVocab} but token_embd.weight has ${vocabSize} rows`,
    );
  }
  const config: ModelConfig = {
    architecture,
    dim,
    hiddenDim: hparam("feed_forward_length"),
    nLayers,
    nHeads,
    nKvHeads: hparam("attention.head_count_kv", nHeads),
    headDim,
    vocabSize,
    maxSeqLen: hparam("context_length"),
    normEps: gguf.float(key("attention.layer_norm_rms_epsilon")),
    ropeTheta: gguf.optionalFloat(key("rope.freq_base")) ?? DEFAULT_ROPE_BASE,
    // llama.cpp rotates adjacent pairs (its converter permuted Q and K) for llama and smollm3.
    ropePairs: arch === "llama" || arch === "smollm3" ? "interleaved" : "half",
    tiedEmbeddings: !gguf.tensors.has("output.weight"),
    qkvBias: arch === "qwen2",
  };
  if (arch === "qwen3") config.qkNorm = true;
  if (arch === "smollm3") {
    config.ropeLayers = Array.from(
      { length: nLayers },
      (_, l) => (l + 1) % SMOLLM3_NO_ROPE_LAYER_STEP !== 0,
    );
  }
  // Linear scaling divides every frequency (ggml's freq_scale = 1 / factor).
  if (linearFactor !== 1) config.ropeFreqFactors = new Float32Array(headDim / 2).fill(linearFactor);
  validateConfig(config, file);
  return config;
}

/**
 * Reads a GGUF model's header and checks its tensors: every tensor the config implies is there
 * with its shape, and nothing else is (an unknown tensor means a feature this runtime lacks).
 * A `rope_freqs.weight` tensor (Llama 3) is read into config.ropeFreqFactors. No other tensor
 * data is read.
 */
export async function readGgufModel(
  path: string,
  store: FileStore = storeFor(path),
): Promise<GgufModel> {
  const gguf = await readGguf(path, store);
  const config = ggufModelConfig(gguf);
  const expected = tensorShapes(config);
  const tensors = new Map<string, GgufWeight>();
  const quantized: string[] = [];
  for (const info of gguf.tensors.values()) {
    if (info.name === "rope_freqs.weight") continue;
    const hf = ggufTensorToHfName(info.name);
    const shape = hf === undefined ? undefined : expected.get(hf);
    if (hf === undefined || shape === undefined) {
      throw new UnsupportedFeatureError(
        path,
        `tensor ${info.name} is not part of a ${config.architecture} with this config ` +
          `(${config.nLayers} layers${config.qkvBias ? ", q/k/v biases" : ""}` +
          `${config.qkNorm ? ", q/k norms" : ""})`,
      );
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeMismatchError(path, info.name, shape, info.shape);
    }
    tensors.set(hf, {
      ggufName: info.name,
      type: info.type,
      shape: [...info.shape],
      byteLength: info.byteLength,
      read: () => gguf.readTensorBytes(info.name),
    });
    if (info.type.quantized) quantized.push(`${hf} ${info.type.name}`);
  }
  for (const name of expected.keys()) {
    if (!tensors.has(name)) {
      throw new MissingTensorError(
        path,
        hfToGgufTensorName(name) ?? name,
        `needed by ${config.architecture} with this config`,
      );
    }
  }
  const freqs = gguf.tensors.get("rope_freqs.weight");
  if (freqs) {
    const half = config.headDim / 2;
    if (freqs.type.name !== "F32" || freqs.shape.length !== 1 || freqs.shape[0] !== half) {
      throw new TensorShapeMismatchError(path, freqs.name, [half], freqs.shape);
    }
    const t = await gguf.readTensor(freqs.name);
    // Both apply in llama.cpp: the frequency is divided by the factor and by rope_freqs[i].
    const linear = config.ropeFreqFactors?.[0] ?? 1;
    config.ropeFreqFactors = (t.data as Float32Array).map((f) => f * linear);
    validateConfig(config, path);
  }
  return { file: path, gguf, config, tensors, quantized };
}

/**
 * Every tensor of a GGUF model as TensorData (F32 as floats, F16/BF16 as raw bits), read one at a
 * time, for the float model. A model with block-quantized tensors throws QuantizedWeightsError
 * (the float model cannot use them; they stay readable through `model.tensors`).
 */
export async function ggufModelWeights(model: GgufModel): Promise<ModelWeights> {
  if (model.quantized.length > 0) throw quantizedWeightsError(model);
  const tensors = new Map<string, TensorData>();
  for (const [name, w] of model.tensors) {
    const info = model.gguf.tensor(w.ggufName);
    tensors.set(name, bytesToTensorData(info, await w.read()));
  }
  return { config: model.config, tensors };
}

/** The error for building the float model from a quantized GGUF model. */
export function quantizedWeightsError(model: GgufModel): QuantizedWeightsError {
  const types = [...new Set(model.quantized.map((q) => q.split(" ")[1]))].join(", ");
  const shown = model.quantized.slice(0, 3).map((q) => q.split(" ")[0]).join(", ");
  return new QuantizedWeightsError(
    model.file,
    model.quantized,
    `${model.quantized.length} of ${model.tensors.size} tensors are block-quantized (${types}: ` +
      `${shown}${model.quantized.length > 3 ? ", ..." : ""}); the float model takes F32, F16 ` +
      "and BF16 weights only",
  );
}

/**
 * The model's tensors as a weight source that reads each from the file when asked: F32, F16 and
 * BF16 as TensorData, block-quantized ones as their packed blocks (they stay packed on the GPU).
 */
export function ggufWeightSource(model: GgufModel): WeightSource {
  return {
    config: model.config,
    names: () => model.tensors.keys(),
    shape: (name) => model.tensors.get(name)?.shape,
    read: async (name) => {
      const w = model.tensors.get(name);
      if (!w) throw new MissingTensorError(model.file, name);
      const bytes = await w.read();
      const type = w.type.name;
      if (!isGgmlQuantType(type)) return bytesToTensorData(model.gguf.tensor(w.ggufName), bytes);
      return { dtype: type, shape: [...w.shape], data: bytes };
    },
  };
}
