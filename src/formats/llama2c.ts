/**
 * llama2.c checkpoints (Karpathy's run.c "version 0" / legacy export): a header of seven int32
 * (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
 * means a separate classifier follows) and then float32 weights in a fixed order.
 */
import { type ModelConfig, validateConfig } from "./config.ts";
import {
  CorruptHeaderError,
  InvalidConfigError,
  ModelFormatError,
  TrailingBytesError,
  TruncatedFileError,
  UnsupportedFeatureError,
} from "./errors.ts";
import type { ModelWeights, TensorData } from "./tensor_data.ts";
import { type FileStore, readFileBytes, storeFor } from "./files.ts";

const HEADER_BYTES = 7 * 4;
/** Magic of llama2.c's newer "version 1/2" exports ("ak42"), which this reader does not take. */
const AK42_MAGIC = 0x616b3432;

/** Limits past which a header value is taken for garbage rather than a model. */
const HEADER_LIMITS = {
  dim: 1 << 16,
  hidden_dim: 1 << 20,
  n_layers: 1 << 10,
  n_heads: 1 << 12,
  n_kv_heads: 1 << 12,
  vocab_size: 1 << 22,
  seq_len: 1 << 24,
} as const;

/** The seven header fields as stored (vocab_size may be negative). */
interface Llama2cHeader {
  dim: number;
  hidden_dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  vocab_size: number;
  seq_len: number;
}

/** llama2.c's fixed hyperparameters that are not in the header. */
const LLAMA2C_NORM_EPS = 1e-5;
const LLAMA2C_ROPE_THETA = 10000;

function readHeader(bytes: Uint8Array, file: string): Llama2cHeader {
  if (bytes.byteLength < HEADER_BYTES) {
    throw new TruncatedFileError(file, HEADER_BYTES, bytes.byteLength, "the llama2.c header");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const at = (i: number) => view.getInt32(i * 4, true);
  if (at(0) === AK42_MAGIC) {
    throw new UnsupportedFeatureError(
      file,
      'llama2.c "version 1/2" export (magic "ak42") is not supported; export with ' +
        "--version 0 (the legacy format run.c reads)",
    );
  }
  return {
    dim: at(0),
    hidden_dim: at(1),
    n_layers: at(2),
    n_heads: at(3),
    n_kv_heads: at(4),
    vocab_size: at(5),
    seq_len: at(6),
  };
}

function checkHeader(h: Llama2cHeader, file: string): void {
  for (const [key, limit] of Object.entries(HEADER_LIMITS)) {
    const raw = h[key as keyof Llama2cHeader];
    const v = key === "vocab_size" ? Math.abs(raw) : raw;
    if (v <= 0 || v > limit) {
      throw new CorruptHeaderError(
        file,
        `not a llama2.c checkpoint: its header field ${key} = ${raw} is not plausible ` +
          `(expected 1..${limit}${key === "vocab_size" ? " in absolute value" : ""}); ` +
          "templora reads llama2.c .bin checkpoints, GGUF files and Hugging Face model folders",
      );
    }
  }
  if (h.dim % h.n_heads !== 0) {
    throw new CorruptHeaderError(
      file,
      `llama2.c header: dim ${h.dim} is not divisible by n_heads ${h.n_heads}`,
    );
  }
  if (h.n_heads % h.n_kv_heads !== 0) {
    throw new CorruptHeaderError(
      file,
      `llama2.c header: n_heads ${h.n_heads} is not a multiple of n_kv_heads ${h.n_kv_heads}`,
    );
  }
  if ((h.dim / h.n_heads) % 2 !== 0) {
    throw new CorruptHeaderError(
      file,
      `llama2.c header: head size ${h.dim / h.n_heads} (dim / n_heads) is odd`,
    );
  }
}

function configFromHeader(h: Llama2cHeader, file: string): ModelConfig {
  const config: ModelConfig = {
    architecture: "llama2c",
    dim: h.dim,
    hiddenDim: h.hidden_dim,
    nLayers: h.n_layers,
    nHeads: h.n_heads,
    nKvHeads: h.n_kv_heads,
    headDim: h.dim / h.n_heads,
    vocabSize: Math.abs(h.vocab_size),
    maxSeqLen: h.seq_len,
    normEps: LLAMA2C_NORM_EPS,
    ropeTheta: LLAMA2C_ROPE_THETA,
    ropePairs: "interleaved",
    tiedEmbeddings: h.vocab_size > 0,
    qkvBias: false,
  };
  try {
    validateConfig(config, file);
  } catch (e) {
    if (e instanceof InvalidConfigError) {
      throw new CorruptHeaderError(file, e.problem, { cause: e });
    }
    throw e;
  }
  return config;
}

/** One block of the file: [count] float32 arrays of `shape`, stored back to back. */
interface Section {
  key: string;
  /** How many tensors (nLayers for per-layer weights, 1 otherwise). */
  count: number;
  shape: number[];
  /** HF name of tensor i, or null when the section is skipped (RoPE tables). */
  name: (i: number) => string | null;
}

function sections(c: ModelConfig): Section[] {
  const kv = c.nKvHeads * c.headDim;
  const L = c.nLayers;
  const layer = (suffix: string) => (i: number) => `model.layers.${i}.${suffix}`;
  const list: Section[] = [
    { key: "token_embedding", count: 1, shape: [c.vocabSize, c.dim], name: () => EMBED },
    { key: "rms_att", count: L, shape: [c.dim], name: layer("input_layernorm.weight") },
    { key: "wq", count: L, shape: [c.dim, c.dim], name: layer("self_attn.q_proj.weight") },
    { key: "wk", count: L, shape: [kv, c.dim], name: layer("self_attn.k_proj.weight") },
    { key: "wv", count: L, shape: [kv, c.dim], name: layer("self_attn.v_proj.weight") },
    { key: "wo", count: L, shape: [c.dim, c.dim], name: layer("self_attn.o_proj.weight") },
    { key: "rms_ffn", count: L, shape: [c.dim], name: layer("post_attention_layernorm.weight") },
    { key: "w1", count: L, shape: [c.hiddenDim, c.dim], name: layer("mlp.gate_proj.weight") },
    { key: "w2", count: L, shape: [c.dim, c.hiddenDim], name: layer("mlp.down_proj.weight") },
    { key: "w3", count: L, shape: [c.hiddenDim, c.dim], name: layer("mlp.up_proj.weight") },
    { key: "rms_final", count: 1, shape: [c.dim], name: () => "model.norm.weight" },
    { key: "freq_cis_real", count: 1, shape: [c.maxSeqLen, c.headDim / 2], name: () => null },
    { key: "freq_cis_imag", count: 1, shape: [c.maxSeqLen, c.headDim / 2], name: () => null },
  ];
  if (!c.tiedEmbeddings) {
    list.push({ key: "wcls", count: 1, shape: [c.vocabSize, c.dim], name: () => "lm_head.weight" });
  }
  return list;
}

const EMBED = "model.embed_tokens.weight";

/** Bytes a llama2.c checkpoint with this config occupies, header included. */
export function llama2cFileBytes(config: ModelConfig): number {
  let floats = 0;
  for (const s of sections(config)) floats += s.count * s.shape.reduce((a, b) => a * b, 1);
  return HEADER_BYTES + 4 * floats;
}

/**
 * Parses a llama2.c checkpoint held in memory. Tensors are float32 views into `bytes` when its
 * offset is 4-byte aligned (no copy), copies otherwise. Names follow Hugging Face Llama; RoPE
 * pairs stay interleaved (config.ropePairs = "interleaved"), weights are not permuted.
 */
export function parseLlama2c(bytes: Uint8Array, file: string): ModelWeights {
  const header = readHeader(bytes, file);
  checkHeader(header, file);
  const config = configFromHeader(header, file);
  const expected = llama2cFileBytes(config);
  if (!Number.isSafeInteger(expected)) {
    throw new CorruptHeaderError(file, `llama2.c header implies an impossible size ${expected}`);
  }
  if (bytes.byteLength < expected) {
    throw new TruncatedFileError(file, expected, bytes.byteLength, "the llama2.c header");
  }
  if (bytes.byteLength > expected) {
    throw new TrailingBytesError(file, expected, bytes.byteLength, "the llama2.c header");
  }
  const aligned = bytes.byteOffset % 4 === 0;
  const floatsAt = (offset: number, n: number): Float32Array =>
    aligned
      ? new Float32Array(bytes.buffer, bytes.byteOffset + offset, n)
      : new Float32Array(bytes.slice(offset, offset + 4 * n).buffer);

  const tensors = new Map<string, TensorData>();
  let offset = HEADER_BYTES;
  for (const s of sections(config)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    for (let i = 0; i < s.count; i++) {
      const name = s.name(i);
      if (name !== null) {
        tensors.set(name, { dtype: "F32", shape: [...s.shape], data: floatsAt(offset, n) });
      }
      offset += 4 * n;
    }
  }
  return { config, tensors };
}

/** Reads a llama2.c checkpoint from a file, a URL or chosen files (see parseLlama2c). */
export async function readLlama2c(
  path: string,
  store: FileStore = storeFor(path),
): Promise<ModelWeights> {
  const bytes = await readFileBytes(path, "llama2.c checkpoint", store);
  return parseLlama2c(bytes, path);
}

/** Serializes weights in llama2.c's version-0 layout (tests and fixtures; F32 only). */
export function writeLlama2c(weights: ModelWeights): Uint8Array {
  const c = weights.config;
  if (c.ropePairs !== "interleaved" || c.qkvBias || c.headDim * c.nHeads !== c.dim) {
    throw new UnsupportedFeatureError(
      "(llama2.c writer)",
      "llama2.c holds only interleaved-RoPE models without biases and with headDim = dim / nHeads",
    );
  }
  const out = new Uint8Array(llama2cFileBytes(c));
  const header = new Int32Array(out.buffer, 0, 7);
  header.set([
    c.dim,
    c.hiddenDim,
    c.nLayers,
    c.nHeads,
    c.nKvHeads,
    c.tiedEmbeddings ? c.vocabSize : -c.vocabSize,
    c.maxSeqLen,
  ]);
  const floats = new Float32Array(out.buffer, HEADER_BYTES);
  let at = 0;
  for (const s of sections(c)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    for (let i = 0; i < s.count; i++) {
      const name = s.name(i);
      if (name === null) {
        writeRopeTable(floats.subarray(at, at + n), c, s.key === "freq_cis_real");
      } else {
        const t = weights.tensors.get(name);
        if (!t || t.dtype !== "F32" || t.data.length !== n) {
          throw new ModelFormatError(
            "(llama2.c writer)",
            `needs F32 tensor ${name} of ${n} floats`,
          );
        }
        floats.set(t.data, at);
      }
      at += n;
    }
  }
  return out;
}

/** cos (real) or sin (imag) of pos * theta^(-2i/headDim), as llama2.c's export writes. */
function writeRopeTable(out: Float32Array, c: ModelConfig, real: boolean): void {
  const half = c.headDim / 2;
  for (let pos = 0; pos < c.maxSeqLen; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * Math.pow(c.ropeTheta, (-2 * i) / c.headDim);
      out[pos * half + i] = real ? Math.cos(angle) : Math.sin(angle);
    }
  }
}
