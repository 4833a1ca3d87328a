/**
 * A small GGUF writer: the header (magic, version, counts, typed metadata, tensor infos) laid out
 * as llama.cpp lays it out, and the tensor data, each tensor at the next multiple of the
 * alignment from the start of the data section. Metadata values are the reader's own
 * {@link GgufValue}s, so a file read with readGguf can be written back with the same types.
 *
 * It writes what it is told: counts, offsets, versions and raw value bytes can be overridden,
 * which is how the reader's tests make malformed files. `writeGguf` builds a file in memory;
 * `writeGgufFile` streams one to disk, asking for each tensor's bytes only when it is written, so
 * a model larger than memory can be written tensor by tensor. `writeGgufModel` writes a model's
 * float weights as llama.cpp's converter (convert_hf_to_gguf.py) lays out the same checkpoint.
 */
import { GGML_TYPES, ggmlRowBytes, type GgmlTypeInfo } from "../core/quant.ts";
import { tensorShapes, validateConfig } from "./config.ts";
import {
  MissingTensorError,
  TensorShapeMismatchError,
  UnsupportedArchitectureError,
  UnsupportedFeatureError,
} from "./errors.ts";
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VALUE_TYPES,
  type GgufArray,
  type GgufValue,
} from "./gguf.ts";
import { hfToGgufTensorName } from "./gguf_model.ts";
import { interleavedToHalfRows, permuteRows } from "./hf.ts";
import {
  convertTensor,
  type ModelWeights,
  type TensorData,
  tensorToF32,
  type WeightDtype,
} from "./tensor_data.ts";

/** A metadata value written as this type id and these bytes, whatever they are. */
export interface GgufRawValue {
  /** Always "raw". */
  type: "raw";
  /** The value type id written before the bytes. */
  typeId: number;
  /** The value's bytes, written as they are. */
  bytes: Uint8Array;
}

/** A metadata value to write: a typed value, or raw bytes. */
export type GgufWriteValue = GgufValue | GgufRawValue;

/** A tensor held in memory. */
export interface GgufTensorSpec {
  /** The tensor's name. */
  name: string;
  /** ggml ne (innermost first: [in, out] for a matrix). */
  dims: number[];
  /** ggml type id. */
  typeId: number;
  /** The stored bytes. */
  data: Uint8Array;
  /** Offset in the data section; by default the next multiple of the alignment. */
  offset?: number;
}

/** A tensor whose bytes are produced when it is written (see {@link writeGgufFile}). */
export interface GgufStreamTensor {
  /** The tensor's name. */
  name: string;
  /** ggml ne (innermost first). */
  dims: number[];
  /** ggml type id. */
  typeId: number;
  /** Bytes `data` will return. */
  byteLength: number;
  /** The stored bytes, asked for once, when the tensor is written. */
  data: () => Uint8Array | Promise<Uint8Array>;
}

/** What a GGUF file holds; every field but the tensors has llama.cpp's default. */
export interface GgufSpec<T = GgufTensorSpec> {
  /** GGUF version (default 3). */
  version?: number;
  /** The magic (default "GGUF"). */
  magic?: number;
  /** Metadata in file order. */
  metadata?: [string, GgufWriteValue][];
  /** Tensors in file order. */
  tensors?: T[];
  /**
   * Layout alignment (default 32). Readers use `general.alignment` from the metadata; write it
   * there too when this is not 32.
   */
  alignment?: number;
  /** Tensor count as written (default: the number of tensors). */
  tensorCount?: bigint;
  /** Metadata count as written (default: the number of entries). */
  kvCount?: bigint;
  /**
   * Pad the file after the last tensor to the alignment, as llama.cpp does (default true; false
   * ends it right after the last tensor's bytes).
   */
  padEnd?: boolean;
}

/** Growable little-endian byte output. */
class Bytes {
  parts: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.length;
  }
  fixed(n: number, write: (v: DataView) => void): void {
    const b = new Uint8Array(n);
    write(new DataView(b.buffer));
    this.push(b);
  }
  u32(x: number): void {
    this.fixed(4, (v) => v.setUint32(0, x, true));
  }
  u64(x: number | bigint): void {
    this.fixed(8, (v) => v.setBigUint64(0, BigInt(x), true));
  }
  str(s: string): void {
    const b = UTF8.encode(s);
    this.u64(b.length);
    this.push(b);
  }
  /** The bytes so far, zero-padded to `total`. */
  concat(total = this.length): Uint8Array {
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

const UTF8 = new TextEncoder();

const TYPE_ID = Object.fromEntries(GGUF_VALUE_TYPES.map((t, i) => [t, i])) as Record<
  string,
  number
>;

/** Bytes of each fixed-size value type, and how to write a run of them in one go. */
const FIXED: Readonly<Record<string, [number, (v: DataView, at: number, x: any) => void]>> = {
  uint8: [1, (v, at, x) => v.setUint8(at, x)],
  int8: [1, (v, at, x) => v.setInt8(at, x)],
  uint16: [2, (v, at, x) => v.setUint16(at, x, true)],
  int16: [2, (v, at, x) => v.setInt16(at, x, true)],
  uint32: [4, (v, at, x) => v.setUint32(at, x, true)],
  int32: [4, (v, at, x) => v.setInt32(at, x, true)],
  float32: [4, (v, at, x) => v.setFloat32(at, x, true)],
  float64: [8, (v, at, x) => v.setFloat64(at, x, true)],
  uint64: [8, (v, at, x) => v.setBigUint64(at, BigInt(x), true)],
  int64: [8, (v, at, x) => v.setBigInt64(at, BigInt(x), true)],
  bool: [1, (v, at, x) => v.setUint8(at, x ? 1 : 0)],
};

function writeScalar(out: Bytes, type: string, x: unknown): void {
  if (type === "string") return out.str(x as string);
  if (type === "array") return writeArray(out, x as GgufArray);
  const fixed = FIXED[type];
  if (!fixed) throw new TypeError(`GGUF writer: unknown value type ${type}`);
  out.fixed(fixed[0], (v) => fixed[1](v, 0, x));
}

function writeArray(out: Bytes, a: GgufArray): void {
  const typeId = TYPE_ID[a.elementType];
  if (typeId === undefined) throw new TypeError(`GGUF writer: unknown type ${a.elementType}`);
  out.u32(typeId);
  out.u64(a.value.length);
  const fixed = FIXED[a.elementType];
  if (fixed) {
    // Numbers and bools: one buffer for the whole run.
    const [size, set] = fixed;
    const values = a.value as ArrayLike<unknown>;
    out.fixed(size * values.length, (v) => {
      for (let i = 0; i < values.length; i++) set(v, i * size, values[i]);
    });
    return;
  }
  for (const x of a.value as Iterable<unknown>) writeScalar(out, a.elementType, x);
}

function writeValue(out: Bytes, v: GgufWriteValue): void {
  if (v.type === "raw") out.push(v.bytes);
  else if (v.type === "array") writeArray(out, v);
  else writeScalar(out, v.type, v.value);
}

/** Bytes a tensor of ggml type `type` with ne `dims` holds (whole blocks along dims[0]). */
export function ggmlTensorBytes(type: GgmlTypeInfo, dims: readonly number[]): number {
  const rows = dims.slice(1).reduce((a, b) => a * b, 1);
  return ggmlRowBytes(type, dims[0] ?? 1) * rows;
}

/**
 * The header, up to the data section (zero-padded to the alignment), with each tensor's offset in
 * the data section and where that section starts; `writeGguf` adds the data.
 */
export function ggufHeader(
  spec: GgufSpec<GgufTensorSpec | GgufStreamTensor>,
): { header: Uint8Array; offsets: number[]; dataStart: number } {
  const alignment = spec.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const out = new Bytes();
  out.u32(spec.magic ?? GGUF_MAGIC);
  out.u32(spec.version ?? 3);
  const metadata = spec.metadata ?? [];
  const tensors = spec.tensors ?? [];
  out.u64(spec.tensorCount ?? BigInt(tensors.length));
  out.u64(spec.kvCount ?? BigInt(metadata.length));
  for (const [key, value] of metadata) {
    out.str(key);
    out.u32(value.type === "raw" ? value.typeId : TYPE_ID[value.type]);
    writeValue(out, value);
  }
  const offsets: number[] = [];
  let next = 0;
  for (const t of tensors) {
    const length = "byteLength" in t ? t.byteLength : t.data.length;
    const offset = ("offset" in t ? t.offset : undefined) ?? next;
    offsets.push(offset);
    next = Math.ceil((offset + length) / alignment) * alignment;
    out.str(t.name);
    out.u32(t.dims.length);
    for (const d of t.dims) out.u64(d);
    out.u32(t.typeId);
    out.u64(offset);
  }
  const dataStart = Math.ceil(out.length / alignment) * alignment;
  return { header: out.concat(dataStart), offsets, dataStart };
}

/**
 * A whole GGUF file in memory. Like llama.cpp's, it ends padded to the alignment after the last
 * tensor unless `padEnd` is false (a file without tensors ends with its header).
 */
export function writeGguf(spec: GgufSpec): Uint8Array {
  const { header, offsets, dataStart } = ggufHeader(spec);
  const tensors = spec.tensors ?? [];
  const alignment = spec.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  let end = dataStart;
  tensors.forEach((t, i) => end = Math.max(end, dataStart + offsets[i] + t.data.length));
  if (tensors.length && spec.padEnd !== false) end = Math.ceil(end / alignment) * alignment;
  const out = new Uint8Array(end);
  out.set(header);
  tensors.forEach((t, i) => out.set(t.data, dataStart + offsets[i]));
  return out;
}

/**
 * Writes a GGUF file to `path` tensor by tensor (each tensor's `data` is called once, in file
 * order, and must return `byteLength` bytes), padded to the alignment at the end as llama.cpp
 * pads (unless `padEnd` is false); returns the file's size. Offsets must increase in file order. The file is written to
 * `path.partial` and renamed into place at the end, so a failed write leaves no half file.
 * A file read with readGguf and written back this way is the same file, byte for byte.
 */
export async function writeGgufFile(
  path: string,
  spec: GgufSpec<GgufStreamTensor>,
): Promise<number> {
  const { header, offsets, dataStart } = ggufHeader(spec);
  const tensors = spec.tensors ?? [];
  const partial = `${path}.partial`;
  const f = await Deno.open(partial, { write: true, create: true, truncate: true });
  let at = 0;
  const put = async (bytes: Uint8Array) => {
    for (let done = 0; done < bytes.length;) done += await f.write(bytes.subarray(done));
    at += bytes.length;
  };
  try {
    await put(header);
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const start = dataStart + offsets[i];
      if (start < at) throw new RangeError(`GGUF writer: tensor ${t.name} overlaps the previous`);
      if (start > at) await put(new Uint8Array(start - at));
      const data = await t.data();
      if (data.length !== t.byteLength) {
        throw new RangeError(
          `GGUF writer: tensor ${t.name} gave ${data.length} bytes, ${t.byteLength} announced`,
        );
      }
      await put(data);
    }
    const alignment = spec.alignment ?? GGUF_DEFAULT_ALIGNMENT;
    if (tensors.length && spec.padEnd !== false) {
      await put(new Uint8Array(Math.ceil(at / alignment) * alignment - at));
    }
  } catch (error) {
    f.close();
    await Deno.remove(partial).catch(() => {});
    throw error;
  }
  f.close();
  await Deno.rename(partial, path);
  return at;
}

/** The GGUF architecture llama.cpp's converter writes each Hugging Face class as. */
const GGUF_ARCH_OF: Readonly<Record<string, string>> = {
  LlamaForCausalLM: "llama",
  MistralForCausalLM: "llama",
  llama2c: "llama",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
  SmolLM3ForCausalLM: "smollm3",
};

/** llama.cpp's SmolLM3 skips RoPE in every fourth layer and has no key to say otherwise. */
const SMOLLM3_NO_ROPE_LAYER_STEP = 4;

/** Options of {@link writeGgufModel}. */
export interface GgufModelOptions {
  /** general.name. */
  name?: string;
  /** Element type of the matrices (default F32); 1-D tensors are F32, as llama.cpp writes them. */
  dtype?: WeightDtype;
  /** `tokenizer.*` metadata to carry (see hfTokenizerGgufMetadata). */
  tokenizer?: [string, GgufValue][];
}

const u32 = (value: number): GgufValue => ({ type: "uint32", value });
const f32 = (value: number): GgufValue => ({ type: "float32", value });
const str = (value: string): GgufValue => ({ type: "string", value });

/** Row order that undoes interleavedToHalfRows: half-split pairs back to adjacent ones. */
function halfToInterleavedRows(heads: number, headDim: number): Int32Array {
  const forward = interleavedToHalfRows(heads, headDim);
  const inverse = new Int32Array(forward.length);
  forward.forEach((from, to) => inverse[from] = to);
  return inverse;
}

function tensorBytes(t: TensorData): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/**
 * The GGUF file llama.cpp's converter makes of these weights: architecture `llama` (Llama,
 * Mistral, llama2.c), `qwen2`, `qwen3` or `smollm3`; `{arch}.*` hyperparameters; Q and K rows
 * permuted to adjacent RoPE pairs for `llama` and `smollm3` (half-split for the Qwens); RoPE
 * divisors as linear scaling keys when every pair has the same one, else as the `rope_freqs`
 * tensor (Llama 3). Settings llama.cpp cannot hold for the architecture (RoPE-less layers other
 * than SmolLM3's every fourth, per-pair divisors on a Qwen, q/k biases outside Qwen2) are
 * refused with UnsupportedFeatureError.
 */
export function ggufModelSpec(
  weights: ModelWeights,
  options: GgufModelOptions = {},
): GgufSpec<GgufStreamTensor> {
  const where = "(writeGgufModel)";
  const { config } = weights;
  validateConfig(config, where);
  const arch = GGUF_ARCH_OF[config.architecture];
  if (arch === undefined) {
    throw new UnsupportedArchitectureError(
      where,
      `no GGUF architecture for ${config.architecture}; supported: ` +
        Object.keys(GGUF_ARCH_OF).join(", "),
    );
  }
  const refuse = (problem: string): never => {
    throw new UnsupportedFeatureError(where, `${problem} (GGUF architecture ${arch})`);
  };
  if (config.qkvBias && arch !== "qwen2") refuse("q/k/v biases");
  if (config.qkNorm && arch !== "qwen3") refuse("q/k head norms");
  const rotates = (l: number) => config.ropeLayers?.[l] ?? true;
  for (let l = 0; l < config.nLayers; l++) {
    const expected = arch !== "smollm3" || (l + 1) % SMOLLM3_NO_ROPE_LAYER_STEP !== 0;
    if (rotates(l) !== expected) {
      refuse(`layer ${l} ${rotates(l) ? "with" : "without"} RoPE`);
    }
  }
  const factors = config.ropeFreqFactors;
  const linear = factors?.every((f) => f === factors[0]) ? factors[0] : undefined;
  const ropeFreqs = factors !== undefined && linear === undefined;
  if (ropeFreqs && arch !== "llama" && arch !== "smollm3") refuse("per-pair RoPE divisors");

  const k = (key: string) => `${arch}.${key}`;
  const dtype = options.dtype ?? "F32";
  const metadata: [string, GgufWriteValue][] = [["general.architecture", str(arch)]];
  if (options.name !== undefined) metadata.push(["general.name", str(options.name)]);
  metadata.push(
    [k("block_count"), u32(config.nLayers)],
    [k("context_length"), u32(config.maxSeqLen)],
    [k("embedding_length"), u32(config.dim)],
    [k("feed_forward_length"), u32(config.hiddenDim)],
    [k("attention.head_count"), u32(config.nHeads)],
    [k("attention.head_count_kv"), u32(config.nKvHeads)],
    [k("rope.freq_base"), f32(config.ropeTheta)],
    [k("attention.layer_norm_rms_epsilon"), f32(config.normEps)],
  );
  if (config.headDim * config.nHeads !== config.dim || arch === "qwen3") {
    metadata.push([k("attention.key_length"), u32(config.headDim)]);
    metadata.push([k("attention.value_length"), u32(config.headDim)]);
  }
  metadata.push(
    ["general.file_type", u32({ F32: 0, F16: 1, BF16: 32 }[dtype])],
    [k("vocab_size"), u32(config.vocabSize)],
    [k("rope.dimension_count"), u32(config.headDim)],
  );
  if (linear !== undefined && linear !== 1) {
    metadata.push([k("rope.scaling.type"), str("linear")], [k("rope.scaling.factor"), f32(linear)]);
  }
  metadata.push(...options.tokenizer ?? []);

  const pairs = arch === "llama" || arch === "smollm3" ? "interleaved" : "half";
  const reorder = (heads: number) =>
    config.ropePairs === pairs
      ? undefined
      : pairs === "interleaved"
      ? halfToInterleavedRows(heads, config.headDim)
      : interleavedToHalfRows(heads, config.headDim);
  const qOrder = reorder(config.nHeads);
  const kOrder = reorder(config.nKvHeads);
  const tensors: GgufStreamTensor[] = [];
  const add = (name: string, t: TensorData) => {
    const stored = convertTensor(t, t.shape.length === 1 ? "F32" : dtype);
    tensors.push({
      name,
      dims: [...t.shape].reverse(),
      typeId: GGML_TYPES[stored.dtype].id,
      byteLength: stored.data.byteLength,
      data: () => tensorBytes(stored),
    });
  };
  if (ropeFreqs) {
    add("rope_freqs.weight", { dtype: "F32", shape: [factors!.length], data: factors! });
  }
  for (const [name, shape] of tensorShapes(config)) {
    const t = weights.tensors.get(name);
    if (!t) throw new MissingTensorError(where, name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeMismatchError(where, name, shape, t.shape);
    }
    const order = /self_attn\.q_proj\./.test(name)
      ? qOrder
      : /self_attn\.k_proj\./.test(name)
      ? kOrder
      : undefined;
    const data = order ? permuteRows(tensorToF32(t), order) : undefined;
    add(hfToGgufTensorName(name)!, data ? { dtype: "F32", shape: [...t.shape], data } : t);
  }
  return { metadata, tensors };
}

/** Writes {@link ggufModelSpec}'s file to `path`; returns its size in bytes. */
export async function writeGgufModel(
  path: string,
  weights: ModelWeights,
  options: GgufModelOptions = {},
): Promise<number> {
  return await writeGgufFile(path, ggufModelSpec(weights, options));
}
