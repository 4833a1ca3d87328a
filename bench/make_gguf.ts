/**
 * The bench models: a random-weight Llama of SmolLM2-135M's shape written as GGUF in F32, F16,
 * Q8_0 and a Q4_K_M mix, so templora and llama.cpp can be timed on the same files.
 *
 *   deno run -A bench/make_gguf.ts [--dir bench/models] [--force]
 *
 * Shape (SmolLM2-135M's config.json): hidden 576, intermediate 1536, 30 layers, 9 heads and 3
 * KV heads of 64, RMSNorm eps 1e-5, rope_theta 100000, context 8192, tied embeddings. One
 * difference: the vocabulary is the 32000-token Llama 2 SentencePiece vocabulary (the
 * `tokenizer.*` metadata of ../shared/models/gguf/tiny-llama-spm-q4_k_m.gguf, which llama.cpp
 * accepts), not SmolLM2's 49152-token BPE, so the embedding (and tied LM head) is [32000, 576]:
 * 18.4M of the model's 125M parameters instead of 28.3M of 135M.
 *
 * Weights are N(0, 0.02) (norm weights 1), drawn per tensor from a fixed seed, so every file
 * holds the same model rounded four ways. What each file holds follows llama-quantize's rules
 * (llama_tensor_get_type, ftype MOSTLY_Q4_K_M):
 * - F32: every tensor F32. F16: matrices F16, norms F32. Q8_0: matrices Q8_0, norms F32.
 * - Q4_K_M: Q4_K by default; Q6_K for attn_v and ffn_down in the layers use_more_bits picks
 *   (the first and last eighth and every third between: 14 of 30) and for the output matrix
 *   (the embedding, since it is tied). K-quants need rows of whole 256-value blocks, and 576 is
 *   not one: llama-quantize then falls back per tensor, Q4_K to Q5_0 and Q6_K to Q8_0 (the
 *   output matrix goes straight to Q8_0). So only ffn_down (rows of 1536) is K-quantized:
 *   token_embd Q8_0; attn_q, attn_k, attn_output, ffn_gate, ffn_up Q5_0; attn_v Q8_0 in the 14
 *   layers, Q5_0 in the other 16; ffn_down Q6_K in the 14, Q4_K in the 16; norms F32.
 *
 * A manifest.json beside the files records the seed, the shape and each file's tensor types;
 * files whose manifest entry matches are not written again.
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { basename, join } from "node:path";
import { GGML_TYPES, type GgmlType } from "../src/core/quant.ts";
import { Rng } from "../src/core/random.ts";
import { type GgufValue, readGguf } from "../src/formats/gguf.ts";
import {
  ggmlTensorBytes,
  type GgufStreamTensor,
  type GgufWriteValue,
  writeGgufFile,
} from "../src/formats/gguf_writer.ts";
import { f32ArrayToF16 } from "../src/formats/tensor_data.ts";
import { quantizeMatrix } from "./gguf_quantize.ts";

/** A Llama shape to write (the vocabulary comes with the tokenizer). */
export interface BenchShape {
  /** general.name. */
  name: string;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  contextLength: number;
  ropeTheta: number;
  normEps: number;
}

/** SmolLM2-135M's shape (HuggingFaceTB/SmolLM2-135M config.json). */
export const SMOLLM2_135M_SHAPE: BenchShape = {
  name: "SmolLM2-135M shape (random weights, Llama 2 vocabulary)",
  dim: 576,
  hiddenDim: 1536,
  nLayers: 30,
  nHeads: 9,
  nKvHeads: 3,
  headDim: 64,
  contextLength: 8192,
  ropeTheta: 100000,
  normEps: 1e-5,
};

/** The file types written, named as llama-quantize names them. */
export type BenchFileType = "F32" | "F16" | "Q8_0" | "Q4_K_M";

/** Every file type, in the order written. */
export const BENCH_FILE_TYPES: readonly BenchFileType[] = ["F32", "F16", "Q8_0", "Q4_K_M"];

/** llama.cpp's general.file_type (enum llama_ftype) of each. */
const FTYPE: Record<BenchFileType, number> = { F32: 0, F16: 1, Q8_0: 7, Q4_K_M: 15 };

/** The file holding the 32000-token SentencePiece vocabulary whose metadata is copied. */
export const TOKENIZER_SOURCE = fileURLToPath(
  new URL("../../shared/models/gguf/tiny-llama-spm-q4_k_m.gguf", import.meta.url),
);

/** The default output folder (git-ignored). */
export const BENCH_MODELS_DIR = fileURLToPath(new URL("./models/", import.meta.url));

/** Seed of the weights. */
export const BENCH_SEED = 135;

/** Bumped when what the generator writes changes, so old files are written again. */
const GENERATOR_VERSION = 1;

/** llama.cpp's use_more_bits: the layers Q4_K_M gives Q6_K for attn_v and ffn_down. */
export function useMoreBits(layer: number, nLayers: number): boolean {
  const eighth = Math.floor(nLayers / 8);
  return layer < eighth || layer >= Math.floor(7 * nLayers / 8) || (layer - eighth) % 3 === 2;
}

/** The type a tensor gets in a file, and the type llama-quantize wanted when it fell back. */
export interface TensorChoice {
  type: GgmlType;
  wanted?: GgmlType;
}

/**
 * What llama-quantize stores a tensor as (see the module comment): `stem` is the GGUF name
 * without blk.N. and .weight (token_embd, attn_q, ..., output_norm), `cols` its row length.
 */
export function tensorType(
  file: BenchFileType,
  stem: string,
  cols: number,
  layer: number,
  nLayers: number,
  is1d: boolean,
): TensorChoice {
  if (is1d || file === "F32") return { type: "F32" };
  if (file === "F16") return { type: "F16" };
  if (file === "Q8_0") return { type: cols % 32 === 0 ? "Q8_0" : "F16" };
  // Q4_K_M. The output matrix (the tied embedding): Q6_K, or Q8_0 when rows are not whole
  // K-blocks (llama.cpp picks Q8_0 there directly, not as a fallback).
  if (stem === "token_embd" || stem === "output") {
    return cols % 256 === 0 ? { type: "Q6_K" } : { type: "Q8_0", wanted: "Q6_K" };
  }
  const moreBits = (stem === "attn_v" || stem === "ffn_down") && useMoreBits(layer, nLayers);
  const wanted: GgmlType = moreBits ? "Q6_K" : "Q4_K";
  if (cols % 256 === 0) return { type: wanted };
  const fallback: GgmlType = wanted === "Q6_K" ? "Q8_0" : "Q5_0";
  return { type: cols % 32 === 0 ? fallback : "F16", wanted };
}

/** One tensor of the model: GGUF name, ggml dims, and how its values are drawn. */
interface TensorPlan {
  name: string;
  stem: string;
  layer: number;
  dims: number[];
}

function plan(shape: BenchShape, vocab: number): TensorPlan[] {
  const { dim, hiddenDim: hidden, headDim } = shape;
  const q = shape.nHeads * headDim, kv = shape.nKvHeads * headDim;
  const out: TensorPlan[] = [{
    name: "token_embd.weight",
    stem: "token_embd",
    layer: -1,
    dims: [dim, vocab],
  }];
  const layer: [string, number[]][] = [
    ["attn_norm", [dim]],
    ["attn_q", [dim, q]],
    ["attn_k", [dim, kv]],
    ["attn_v", [dim, kv]],
    ["attn_output", [q, dim]],
    ["ffn_norm", [dim]],
    ["ffn_gate", [dim, hidden]],
    ["ffn_up", [dim, hidden]],
    ["ffn_down", [hidden, dim]],
  ];
  for (let l = 0; l < shape.nLayers; l++) {
    for (const [stem, dims] of layer) {
      out.push({ name: `blk.${l}.${stem}.weight`, stem, layer: l, dims });
    }
  }
  out.push({ name: "output_norm.weight", stem: "output_norm", layer: -1, dims: [dim] });
  return out;
}

/** A small string hash (FNV-1a), to give each tensor its own stream of the seed. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The float values of a tensor: the same for every file type. */
export function tensorValues(seed: number, name: string, dims: readonly number[]): Float32Array {
  const n = dims.reduce((a, b) => a * b, 1);
  if (dims.length === 1) return new Float32Array(n).fill(1);
  return new Rng((seed ^ hash(name)) >>> 0).normals(n, 0.02);
}

/** The `tokenizer.*` metadata of `path` (kept as stored) and its vocabulary size. */
export async function tokenizerMetadata(path = TOKENIZER_SOURCE): Promise<{
  metadata: [string, GgufValue][];
  vocab: number;
}> {
  const g = await readGguf(path);
  const metadata = [...g.metadata].filter(([k]) => k.startsWith("tokenizer."));
  const tokens = g.metadata.get("tokenizer.ggml.tokens");
  if (tokens?.type !== "array") throw new Error(`${path}: no tokenizer.ggml.tokens`);
  return { metadata, vocab: tokens.value.length };
}

/** What one written file holds. */
export interface BenchFile {
  file: string;
  type: BenchFileType;
  bytes: number;
  /** Tensor count per ggml type. */
  types: Record<string, number>;
  /** "tensor: wanted -> got" for each fallback llama-quantize would make. */
  fallbacks: string[];
  /** Tensors per type and name (blk.N collapsed to the layers that have it). */
  layout: Record<string, string>;
}

/** The manifest of a folder of bench models. */
export interface BenchManifest {
  generator: number;
  seed: number;
  shape: BenchShape;
  vocab: number;
  parameters: number;
  files: Record<string, BenchFile>;
}

function bytesOf(a: Float32Array | Uint16Array | Uint8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Summarises tensor types as "attn_v: Q8_0 in layers 0,1,...; Q5_0 in ...". */
function layoutOf(choices: [TensorPlan, GgmlType][]): Record<string, string> {
  const byStem = new Map<string, Map<GgmlType, number[]>>();
  for (const [t, type] of choices) {
    const m = byStem.get(t.stem) ?? new Map<GgmlType, number[]>();
    byStem.set(t.stem, m);
    m.set(type, [...(m.get(type) ?? []), t.layer]);
  }
  const out: Record<string, string> = {};
  for (const [stem, m] of byStem) {
    out[stem] = m.size === 1
      ? [...m.keys()][0]
      : [...m].map(([type, layers]) => `${type} in layers ${layers.join(",")}`).join("; ");
  }
  return out;
}

/**
 * Writes `shape` as `type` to `path` with the tokenizer metadata given; returns what it holds.
 */
export async function writeBenchModel(
  path: string,
  type: BenchFileType,
  shape: BenchShape,
  tokenizer: { metadata: [string, GgufValue][]; vocab: number },
  seed = BENCH_SEED,
): Promise<BenchFile> {
  const tensors = plan(shape, tokenizer.vocab);
  const u32 = (value: number): GgufValue => ({ type: "uint32", value });
  const f32 = (value: number): GgufValue => ({ type: "float32", value });
  const metadata: [string, GgufWriteValue][] = [
    ["general.architecture", { type: "string", value: "llama" }],
    ["general.name", { type: "string", value: shape.name }],
    ["general.description", {
      type: "string",
      value: `random weights (seed ${seed}), written by templora's bench/make_gguf.ts`,
    }],
    ["llama.context_length", u32(shape.contextLength)],
    ["llama.embedding_length", u32(shape.dim)],
    ["llama.block_count", u32(shape.nLayers)],
    ["llama.feed_forward_length", u32(shape.hiddenDim)],
    ["llama.attention.head_count", u32(shape.nHeads)],
    ["llama.attention.head_count_kv", u32(shape.nKvHeads)],
    ["llama.attention.key_length", u32(shape.headDim)],
    ["llama.attention.value_length", u32(shape.headDim)],
    ["llama.rope.dimension_count", u32(shape.headDim)],
    ["llama.rope.freq_base", f32(shape.ropeTheta)],
    ["llama.attention.layer_norm_rms_epsilon", f32(shape.normEps)],
    ["llama.vocab_size", u32(tokenizer.vocab)],
    ["general.file_type", u32(FTYPE[type])],
    ...(type === "Q8_0" || type === "Q4_K_M"
      ? [["general.quantization_version", u32(2)] as [string, GgufValue]]
      : []),
    ...tokenizer.metadata,
  ];
  const choices: [TensorPlan, GgmlType][] = [];
  const fallbacks: string[] = [];
  const stream: GgufStreamTensor[] = tensors.map((t) => {
    const choice = tensorType(type, t.stem, t.dims[0], t.layer, shape.nLayers, t.dims.length === 1);
    choices.push([t, choice.type]);
    if (choice.wanted && t.stem !== "token_embd") {
      fallbacks.push(`${t.name}: ${choice.wanted} -> ${choice.type}`);
    }
    const info = GGML_TYPES[choice.type];
    return {
      name: t.name,
      dims: t.dims,
      typeId: info.id,
      byteLength: ggmlTensorBytes(info, t.dims),
      data: () => {
        const x = tensorValues(seed, t.name, t.dims);
        if (choice.type === "F32") return bytesOf(x);
        if (choice.type === "F16") return bytesOf(f32ArrayToF16(x));
        const cols = t.dims[0];
        return quantizeMatrix(choice.type as "Q8_0", x, x.length / cols, cols);
      },
    };
  });
  const bytes = await writeGgufFile(path, { metadata, tensors: stream });
  const types: Record<string, number> = {};
  for (const [, t] of choices) types[t] = (types[t] ?? 0) + 1;
  return { file: basename(path), type, bytes, types, fallbacks, layout: layoutOf(choices) };
}

/** File name of a bench model of type `type`. */
export function benchModelFile(type: BenchFileType, dir = BENCH_MODELS_DIR): string {
  return join(dir, `smollm2-135m-shape-${type.toLowerCase()}.gguf`);
}

/**
 * Makes sure `dir` holds the SmolLM2-135M-shaped bench models (written unless the manifest
 * says they are there and current); returns the manifest. `log` hears what is done.
 */
export async function ensureBenchModels(
  options: { dir?: string; force?: boolean; log?: (line: string) => void } = {},
): Promise<BenchManifest> {
  const dir = options.dir ?? BENCH_MODELS_DIR;
  const log = options.log ?? ((line: string) => console.error(line));
  await Deno.mkdir(dir, { recursive: true });
  const manifestPath = join(dir, "manifest.json");
  let old: BenchManifest | undefined;
  try {
    old = JSON.parse(await Deno.readTextFile(manifestPath));
  } catch {
    old = undefined;
  }
  const tokenizer = await tokenizerMetadata();
  const shape = SMOLLM2_135M_SHAPE;
  const parameters = plan(shape, tokenizer.vocab).reduce(
    (s, t) => s + t.dims.reduce((a, b) => a * b, 1),
    0,
  );
  const current = old && old.generator === GENERATOR_VERSION && old.seed === BENCH_SEED &&
    JSON.stringify(old.shape) === JSON.stringify(shape) && old.vocab === tokenizer.vocab;
  const manifest: BenchManifest = {
    generator: GENERATOR_VERSION,
    seed: BENCH_SEED,
    shape,
    vocab: tokenizer.vocab,
    parameters,
    files: current ? old!.files : {},
  };
  for (const type of BENCH_FILE_TYPES) {
    const path = benchModelFile(type, dir);
    const had = manifest.files[type];
    const size = await Deno.stat(path).then((s) => s.size, () => -1);
    if (!options.force && had && size === had.bytes) continue;
    const t0 = performance.now();
    manifest.files[type] = await writeBenchModel(path, type, shape, tokenizer);
    log(
      `wrote ${path}: ${(manifest.files[type].bytes / 1e6).toFixed(1)} MB in ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s (${
          Object.entries(manifest.files[type].types).map(([k, v]) => `${k}:${v}`).join(" ")
        })`,
    );
    await Deno.writeTextFile(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  }
  await Deno.writeTextFile(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { dir: { type: "string" }, force: { type: "boolean", default: false } },
  });
  const manifest = await ensureBenchModels({ dir: values.dir, force: values.force });
  console.log(
    `${manifest.shape.name}: ${
      (manifest.parameters / 1e6).toFixed(1)
    } M parameters, vocab ${manifest.vocab}`,
  );
  for (const f of Object.values(manifest.files)) {
    console.log(
      `${join(values.dir ?? BENCH_MODELS_DIR, basename(f.file))} (${
        (f.bytes / 1e6).toFixed(1)
      } MB)`,
    );
    for (const [stem, t] of Object.entries(f.layout)) console.log(`  ${stem}: ${t}`);
  }
}
