/**
 * Snapshots of a Temp-Lora run, so a long text survives a crash or a closed lid, and LoRA
 * adapters in PEFT's format.
 *
 * A snapshot folder holds three files:
 *
 * - `adapter_config.json` and `adapter_model.safetensors`: the adapter exactly as Hugging Face
 *   PEFT saves one (`peft_type` LORA, `r`, `lora_alpha`, `target_modules` with Hugging Face module
 *   names, ...; tensors `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in]
 *   and `...lora_B.weight` [out, r]), so `PeftModel.from_pretrained(model, folder)` loads it.
 * - `templora_state.safetensors`: what PEFT does not keep and resuming needs: the AdamW moments,
 *   the text's token ids, the KV cache and the next token's logits (so a resumed run writes
 *   exactly what the interrupted one would have), and in its metadata the settings, the sampling
 *   options (the sampler is counter-based: seed and position are its whole state), the step and
 *   chunk counters (dropout masks derive from the adapter seed and step index), the model's
 *   fingerprint and checksums binding the three files together.
 *
 * Writes are atomic for the folder as a whole: the files go to a sibling `DIR.partial` folder,
 * the old snapshot is moved to `DIR.previous`, the new folder takes its place, and the old one is
 * removed. A crash at any point leaves a complete snapshot at DIR or DIR.previous; loading finds it.
 */
import { LORA_TARGETS, type LoraTarget, projectionDims, projectionName } from "../core/lora.ts";
import type { Gpu } from "../gpu/device.ts";
import { readBytes, readF32 } from "../gpu/readback.ts";
import { Tensor, writeTensor } from "../gpu/tensor.ts";
import type { ModelConfig } from "../formats/config.ts";
import { ModelFormatError } from "../formats/errors.ts";
import { absolutePath } from "../formats/files.ts";
import {
  parseSafetensors,
  type SafetensorsFile,
  type SafetensorsTensorData,
  writeSafetensors,
} from "../formats/safetensors.ts";
import { convertTensor, type TensorData, tensorToF32 } from "../formats/tensor_data.ts";
import type { DecodeSession } from "../model/decode_session.ts";
import type { GenerateOptions } from "../model/generate.ts";
import type { TextModel } from "../model/text_model.ts";
import { LoraAdapter } from "./adapter.ts";
import { CorruptSnapshotError, SnapshotMismatchError } from "./errors.ts";
import type { TempLoraSettings } from "./settings.ts";
import { isQuantized } from "../model/gpu_weights.ts";

/** PEFT's adapter configuration file. */
export const ADAPTER_CONFIG_FILE = "adapter_config.json";
/** PEFT's adapter weights file. */
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";
/** templora's own state beside the adapter. */
export const SNAPSHOT_STATE_FILE = "templora_state.safetensors";
/** Version of the state file's layout. */
export const SNAPSHOT_VERSION = 1;

/** The name PEFT gives a projection's LoRA matrix ("base_model.model.model.layers.0...."). */
export function peftTensorName(layer: number, target: LoraTarget, matrix: "A" | "B"): string {
  return `base_model.model.${projectionName(layer, target)}.lora_${matrix}.weight`;
}

/** The Hugging Face module name of a target ("q_proj"), as PEFT's `target_modules` lists it. */
export function peftModuleName(target: LoraTarget): string {
  return projectionName(0, target).split(".").pop()!;
}

/**
 * The fields of PEFT's `adapter_config.json` that templora writes (all of them `LoraConfig`
 * fields, so PEFT loads the file as it is) and reads.
 */
export interface PeftAdapterConfig {
  /** Always "LORA". */
  peft_type: "LORA";
  /** "CAUSAL_LM". */
  task_type: string | null;
  /** The model the adapter was trained on (a path or a Hub name). */
  base_model_name_or_path: string | null;
  /** LoRA rank. */
  r: number;
  /** LoRA alpha; the update is scaled by lora_alpha / r. */
  lora_alpha: number;
  /** Dropout on the adapter's input during training. */
  lora_dropout: number;
  /** Hugging Face module names of the adapted projections ("q_proj", ..., "down_proj"). */
  target_modules: string[];
  /** "none": the adapter has no bias terms. */
  bias: "none";
  /** false: weights are [out, in] as nn.Linear keeps them. */
  fan_in_fan_out: false;
  /** Whether PEFT loads the adapter frozen. */
  inference_mode: boolean;
  /** How PEFT initialises a new adapter (true: A random, B zero, as templora). */
  init_lora_weights: boolean;
  /** Modules saved whole beside the adapter: none. */
  modules_to_save: null;
  /** false: the scale is alpha / r, not alpha / sqrt(r). */
  use_rslora: false;
  /** false: plain LoRA. */
  use_dora: false;
  /** null: every layer is adapted. */
  layers_to_transform: null;
  /** null (only meaningful with layers_to_transform). */
  layers_pattern: null;
  /** Per-module ranks: none. */
  rank_pattern: Record<string, never>;
  /** Per-module alphas: none. */
  alpha_pattern: Record<string, never>;
  /** Hub revision of the base model: none. */
  revision: null;
}

/** A LoRA adapter on the host, under PEFT's names, with templora's optimizer state if it has one. */
export interface AdapterSnapshot {
  /** The adapter's PEFT configuration. */
  config: PeftAdapterConfig;
  /** Every lora_A [r, in] and lora_B [out, r], f32, under {@link peftTensorName}s. */
  weights: Map<string, TensorData>;
  /** AdamW's state; adapters written elsewhere have none (the moments then start at zero). */
  optimizer?: OptimizerSnapshot;
}

/** AdamW's state of an adapter: both moments under the weights' names, and the steps taken. */
export interface OptimizerSnapshot {
  /** Optimizer steps applied (bias correction depends on it). */
  steps: number;
  /** First moments (PyTorch's `exp_avg`), same names and shapes as the weights. */
  m: Map<string, TensorData>;
  /** Second moments (`exp_avg_sq`). */
  v: Map<string, TensorData>;
}

/** What identifies a model: its sizes and a hash of some of its weights. */
export interface ModelFingerprint {
  /** The architecture ("llama2c", "LlamaForCausalLM", ...). */
  architecture: string;
  /** Model width. */
  dim: number;
  /** MLP width. */
  hiddenDim: number;
  /** Layers. */
  nLayers: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads. */
  nKvHeads: number;
  /** Width of a head. */
  headDim: number;
  /** Vocabulary size. */
  vocabSize: number;
  /** Trained length. */
  maxSeqLen: number;
  /** SHA-256 (hex) of the final norm's weights and the first bytes of the embedding table. */
  weights: string;
}

/** The KV cache of a run and the logits its next token is drawn from. */
export interface CacheSnapshot {
  /** Rows at the cache's start holding the attention sinks (the history's first tokens). */
  sinkRows: number;
  /** History index of the cache's first row after the sinks. */
  start: number;
  /** Keys of each layer, [rows, nKvHeads, headDim], F32 or F16 as the session's cache held them. */
  k: TensorData[];
  /** Values of each layer, same shape. */
  v: TensorData[];
  /** The next token's logits, f32 [vocab]. */
  logits: Float32Array;
}

/** How far a run had come. */
export interface SnapshotProgress {
  /** Chunks the adapter was trained on. */
  chunksTrained: number;
  /** Optimizer steps attempted (skipped ones included): warm-up and dropout masks follow it. */
  stepIndex: number;
  /** Steps skipped for non-finite values. */
  skippedSteps: number;
  /** Mean training loss of each trained chunk's last epoch. */
  chunkLosses: number[];
}

/** The generation options a run was started with (everything but its abort signal). */
export type SnapshotGeneration = Omit<GenerateOptions, "signal">;

/** Everything needed to go on writing a Temp-Lora text exactly where a run stopped. */
export interface TempLoraSnapshot {
  /** Layout version ({@link SNAPSHOT_VERSION}). */
  version: number;
  /** The model the text is written with. */
  model: ModelFingerprint;
  /** The run's Temp-Lora settings. */
  settings: TempLoraSettings;
  /** The run's generation options. */
  generation: SnapshotGeneration;
  /** Token ids so far: the prompt, then the generated ones. */
  tokens: Uint32Array;
  /** How many of `tokens` are the prompt. */
  promptTokens: number;
  /** The prompt as the run was given it, when it was text. */
  promptText?: string;
  /** Index in `tokens` where the chunk being written began. */
  chunkStart: number;
  /** Counters. */
  progress: SnapshotProgress;
  /** The adapter and its optimizer state (none when Temp-Lora is off). */
  adapter?: AdapterSnapshot;
  /** The KV cache and next-token logits. */
  cache: CacheSnapshot;
}

// ---------------------------------------------------------------------------------------------
// The model's fingerprint

/** The fingerprint of a loaded model (reads a few KiB of weights back from the GPU). */
export async function modelFingerprint(lm: TextModel): Promise<ModelFingerprint> {
  const c = lm.config;
  const { norm } = lm.model.weights;
  const weights = lm.model.weights;
  // The embedding's first bytes, whether it is stored as floats or quantized blocks.
  const first = weights.embed.parts[0].matrix;
  const embed = isQuantized(first) ? first.data : first;
  const head = Math.min(embed.buffer.size - embed.byteOffset, 16384) >> 2;
  const parts = await Promise.all([
    readBytes(lm.gpu, norm),
    readBytes(lm.gpu, new Tensor(embed.buffer, [head], "u32", embed.byteOffset)),
  ]);
  return {
    architecture: c.architecture,
    dim: c.dim,
    hiddenDim: c.hiddenDim,
    nLayers: c.nLayers,
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    headDim: c.headDim,
    vocabSize: c.vocabSize,
    maxSeqLen: c.maxSeqLen,
    weights: await sha256(concat(parts.map((p) => new Uint8Array(p)))),
  };
}

/**
 * Throws {@link SnapshotMismatchError} unless `snapshot` was made with the model `actual`
 * describes (`path` names the snapshot in the message).
 */
export function checkSnapshotModel(
  snapshot: TempLoraSnapshot,
  actual: ModelFingerprint,
  path = "snapshot",
): void {
  const want = snapshot.model;
  for (const key of Object.keys(actual) as (keyof ModelFingerprint)[]) {
    if (key === "weights" || want[key] === actual[key]) continue;
    throw new SnapshotMismatchError(
      path,
      `made for another model: its ${key} is ${want[key]}, this model's is ${actual[key]}`,
    );
  }
  if (want.weights !== actual.weights) {
    throw new SnapshotMismatchError(
      path,
      "made for another model: the sizes match but the weights differ",
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Adapters on the GPU <-> on the host

/** The PEFT configuration of an adapter. */
export function peftConfig(
  adapter: { rank: number; alpha: number; targets: readonly LoraTarget[] },
  baseModel: string | null,
  dropout: number,
): PeftAdapterConfig {
  return {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: baseModel,
    r: adapter.rank,
    lora_alpha: adapter.alpha,
    lora_dropout: dropout,
    target_modules: LORA_TARGETS.filter((t) => adapter.targets.includes(t)).map(peftModuleName),
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    modules_to_save: null,
    use_rslora: false,
    use_dora: false,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null,
  };
}

/** Options of {@link readAdapter}. */
export interface ReadAdapterOptions {
  /** `base_model_name_or_path` (default null). */
  baseModel?: string | null;
  /** `lora_dropout` (default 0). */
  dropout?: number;
  /** Read the AdamW moments too (default true). */
  optimizer?: boolean;
}

/** Reads an adapter (and its optimizer state) back from the GPU, under PEFT's names. */
export async function readAdapter(
  gpu: Gpu,
  adapter: LoraAdapter,
  options: ReadAdapterOptions = {},
): Promise<AdapterSnapshot> {
  const withOptimizer = options.optimizer ?? true;
  const [params, m, v] = await Promise.all([
    readF32(gpu, adapter.params),
    withOptimizer ? readF32(gpu, adapter.m) : undefined,
    withOptimizer ? readF32(gpu, adapter.v) : undefined,
  ]);
  const config = peftConfig(adapter.settings, options.baseModel ?? null, options.dropout ?? 0);
  const snapshot: AdapterSnapshot = { config, weights: splitFlat(adapter, params) };
  if (m && v) {
    snapshot.optimizer = {
      steps: adapter.steps,
      m: splitFlat(adapter, m),
      v: splitFlat(adapter, v),
    };
  }
  return snapshot;
}

/**
 * An adapter on the GPU holding `snapshot`'s weights (and optimizer state) for the model
 * `config` describes. Throws {@link SnapshotMismatchError}, allocating nothing, when the adapter
 * does not fit the model (names, shapes, layers) or uses what templora does not implement.
 * `seed` seeds the dropout masks of further training.
 */
export function restoreAdapter(
  gpu: Gpu,
  config: ModelConfig,
  snapshot: AdapterSnapshot,
  seed = 0,
  path = "adapter",
): LoraAdapter {
  const targets = peftTargets(snapshot.config, path);
  const rank = snapshot.config.r;
  checkAdapterTensors(snapshot.weights, config, rank, targets, path, "");
  const opt = snapshot.optimizer;
  if (opt) {
    checkAdapterTensors(opt.m, config, rank, targets, path, "optimizer first moment: ");
    checkAdapterTensors(opt.v, config, rank, targets, path, "optimizer second moment: ");
  }
  const adapter = new LoraAdapter(gpu, config, {
    rank,
    alpha: snapshot.config.lora_alpha,
    targets,
    seed,
  });
  try {
    adapter.writeParams(gpu, joinFlat(adapter, snapshot.weights));
    if (opt) {
      writeTensor(gpu, adapter.m, joinFlat(adapter, opt.m));
      writeTensor(gpu, adapter.v, joinFlat(adapter, opt.v));
      adapter.steps = opt.steps;
    }
  } catch (error) {
    adapter.destroy();
    throw error;
  }
  return adapter;
}

/** The adapter's flat buffer as one tensor per matrix. */
function splitFlat(adapter: LoraAdapter, flat: Float32Array): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  for (const p of adapter.projections) {
    for (const [matrix, t] of [["A", p.a], ["B", p.b]] as const) {
      const at = t.byteOffset / 4;
      out.set(peftTensorName(p.layer, p.target, matrix), {
        dtype: "F32",
        shape: [...t.shape],
        data: flat.slice(at, at + t.size),
      });
    }
  }
  return out;
}

/** The inverse of {@link splitFlat} (padding zero). */
function joinFlat(adapter: LoraAdapter, tensors: Map<string, TensorData>): Float32Array {
  const flat = new Float32Array(adapter.params.size);
  for (const p of adapter.projections) {
    for (const [matrix, t] of [["A", p.a], ["B", p.b]] as const) {
      flat.set(
        tensorToF32(tensors.get(peftTensorName(p.layer, p.target, matrix))!),
        t.byteOffset / 4,
      );
    }
  }
  return flat;
}

/** The targets a PEFT configuration names; a typed error for what templora cannot load. */
function peftTargets(config: PeftAdapterConfig, path: string): LoraTarget[] {
  const byModule = new Map(LORA_TARGETS.map((t) => [peftModuleName(t), t]));
  const unknown = config.target_modules.filter((m) => !byModule.has(m));
  if (unknown.length) {
    throw new SnapshotMismatchError(
      path,
      `target_modules ${unknown.join(", ")} are not projections templora adapts ` +
        `(${[...byModule.keys()].join(", ")})`,
    );
  }
  return LORA_TARGETS.filter((t) => config.target_modules.includes(peftModuleName(t)));
}

/** Every expected tensor present with its shape, nothing else. */
function checkAdapterTensors(
  tensors: Map<string, TensorData>,
  config: ModelConfig,
  rank: number,
  targets: readonly LoraTarget[],
  path: string,
  what: string,
): void {
  const expected = new Set<string>();
  for (let layer = 0; layer < config.nLayers; layer++) {
    for (const target of targets) {
      const [inDim, outDim] = projectionDims(config, target);
      for (const [matrix, shape] of [["A", [rank, inDim]], ["B", [outDim, rank]]] as const) {
        const name = peftTensorName(layer, target, matrix);
        expected.add(name);
        const t = tensors.get(name);
        if (!t) {
          throw new SnapshotMismatchError(
            path,
            `${what}no tensor ${name}: the adapter was made for another model ` +
              `(this one has ${config.nLayers} layers)`,
          );
        }
        if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
          throw new SnapshotMismatchError(
            path,
            `${what}${name} is [${t.shape}], this model needs [${shape}] (rank ${rank}): the ` +
              "adapter was made for another model",
          );
        }
      }
    }
  }
  for (const name of tensors.keys()) {
    if (!expected.has(name)) {
      throw new SnapshotMismatchError(
        path,
        `${what}unexpected tensor ${name}: templora adapts ${targets.map(peftModuleName)} of ` +
          `${config.nLayers} layers, with no biases or saved modules`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sessions on the GPU <-> on the host

/** Reads a session's KV cache rows and its next-token logits back from the GPU. */
export async function readSessionCache(session: DecodeSession): Promise<CacheSnapshot> {
  const gpu = session.model.gpu;
  const rows = session.cache.length;
  const shape = (t: Tensor) => [rows, ...t.shape.slice(1)];
  const read = (t: Tensor): Promise<TensorData> =>
    t.dtype === "f16"
      ? readBytes(gpu, t.rows(0, rows)).then((bytes) => ({
        dtype: "F16",
        shape: shape(t),
        data: new Uint16Array(bytes),
      }))
      : readF32(gpu, t.rows(0, rows)).then((data) => ({ dtype: "F32", shape: shape(t), data }));
  const v = session.model.config.vocabSize;
  const [k, vs, logits] = await Promise.all([
    Promise.all(session.cache.k.map(read)),
    Promise.all(session.cache.v.map(read)),
    readF32(gpu, session.activations.logits.rows(0, 1).reshape([v])),
  ]);
  return { sinkRows: session.sinkRows, start: session.cacheStart, k, v: vs, logits };
}

/**
 * Puts a read-back cache and logits into `session`, which must already hold the same history.
 * Throws {@link SnapshotMismatchError} when the cache does not fit the session.
 */
export function restoreSessionCache(
  session: DecodeSession,
  cache: CacheSnapshot,
  path = "snapshot",
): void {
  const c = session.model.config;
  const rows = cache.k[0]?.shape[0] ?? 0;
  const fits = cache.k.length === c.nLayers && cache.v.length === c.nLayers &&
    rows <= session.capacity && cache.logits.length === c.vocabSize &&
    Number.isInteger(cache.sinkRows) && cache.sinkRows >= 0 && cache.sinkRows <= rows &&
    cache.start + rows - cache.sinkRows <= session.length &&
    [...cache.k, ...cache.v].every((t) =>
      t.shape.length === 3 && t.shape[0] === rows && t.shape[1] === c.nKvHeads &&
      t.shape[2] === c.headDim
    );
  if (!fits) {
    throw new SnapshotMismatchError(path, "its KV cache does not fit this model and window");
  }
  const gpu = session.model.gpu;
  // A snapshot restores into a cache of either element type (an f32 one into f16 rounds).
  const data = (t: TensorData) =>
    session.cache.dtype === "f16" ? convertTensor(t, "F16").data : tensorToF32(t);
  for (let l = 0; l < c.nLayers; l++) {
    if (rows === 0) break;
    writeTensor(gpu, session.cache.k[l].rows(0, rows), data(cache.k[l]));
    writeTensor(gpu, session.cache.v[l].rows(0, rows), data(cache.v[l]));
  }
  session.cache.length = rows;
  session.sinkRows = cache.sinkRows;
  session.cacheStart = cache.start;
  writeTensor(gpu, session.activations.logits.rows(0, 1).reshape([c.vocabSize]), cache.logits);
}

// ---------------------------------------------------------------------------------------------
// Files

/** Writes a PEFT adapter folder (replacing it whole, atomically; see the module notes). */
export async function savePeftAdapter(dir: string, adapter: AdapterSnapshot): Promise<void> {
  const { files } = await encodeAdapter(adapter);
  await commitFolder(dir, files);
}

/**
 * Reads a PEFT LoRA adapter folder (`adapter_config.json`, `adapter_model.safetensors`), whether
 * templora or PEFT wrote it; weights in F16 or BF16 are converted to f32. Throws
 * {@link CorruptSnapshotError} for missing or damaged files and {@link SnapshotMismatchError}
 * for adapters templora cannot run (DoRA, rsLoRA, biases, per-module ranks, some layers only).
 * Whether it fits a model is checked by {@link restoreAdapter}.
 */
export async function loadPeftAdapter(dir: string): Promise<AdapterSnapshot> {
  const folder = await findSnapshotFolder(dir, ADAPTER_CONFIG_FILE);
  const configPath = `${folder}/${ADAPTER_CONFIG_FILE}`;
  const weightsPath = `${folder}/${ADAPTER_WEIGHTS_FILE}`;
  const config = parsePeftConfig(await readText(configPath), configPath);
  const file = parseFile(await readBytesFile(weightsPath), weightsPath);
  return { config, weights: f32Tensors(file, weightsPath) };
}

/**
 * Writes a snapshot folder (replacing it whole, atomically; see the module notes). `onStep` runs
 * between the steps of the replacement; tests throw there to simulate a crash.
 */
export async function saveSnapshot(
  dir: string,
  snapshot: TempLoraSnapshot,
  onStep?: (step: CommitStep) => void | Promise<void>,
): Promise<void> {
  const files: [string, Uint8Array][] = [];
  const state: Record<string, unknown> = {
    version: snapshot.version,
    model: snapshot.model,
    settings: snapshot.settings,
    generation: snapshot.generation,
    promptTokens: snapshot.promptTokens,
    promptText: snapshot.promptText ?? null,
    chunkStart: snapshot.chunkStart,
    progress: snapshot.progress,
    cacheStart: snapshot.cache.start,
    cacheSinkRows: snapshot.cache.sinkRows,
    adapter: null,
  };
  const tensors = new Map<string, SafetensorsTensorData>();
  tensors.set("tokens", { dtype: "U32", shape: [snapshot.tokens.length], data: snapshot.tokens });
  snapshot.cache.k.forEach((t, l) => tensors.set(`cache.k.${l}`, t));
  snapshot.cache.v.forEach((t, l) => tensors.set(`cache.v.${l}`, t));
  tensors.set("logits", {
    dtype: "F32",
    shape: [snapshot.cache.logits.length],
    data: snapshot.cache.logits,
  });
  if (snapshot.adapter) {
    const encoded = await encodeAdapter(snapshot.adapter);
    files.push(...encoded.files);
    const opt = snapshot.adapter.optimizer;
    state.adapter = { files: encoded.sums, optimizerSteps: opt?.steps ?? null };
    for (const [name, t] of opt?.m ?? []) tensors.set(`optimizer.exp_avg.${name}`, t);
    for (const [name, t] of opt?.v ?? []) tensors.set(`optimizer.exp_avg_sq.${name}`, t);
  }
  const json = JSON.stringify(state, encodeNumber);
  files.push([
    SNAPSHOT_STATE_FILE,
    await sealed(tensors, { format: "templora-snapshot", state: json }),
  ]);
  await commitFolder(dir, files, onStep);
}

/**
 * Reads a snapshot folder written by {@link saveSnapshot} (or, after a crash in the middle of a
 * write, the complete one kept beside it). Throws {@link CorruptSnapshotError} when a file is
 * missing, damaged (checksums), or not from the same snapshot as the others.
 */
export async function loadSnapshot(dir: string): Promise<TempLoraSnapshot> {
  const folder = await findSnapshotFolder(dir, SNAPSHOT_STATE_FILE);
  const statePath = `${folder}/${SNAPSHOT_STATE_FILE}`;
  const bytes = await readBytesFile(statePath);
  const file = parseFile(bytes, statePath);
  await checkSeal(bytes, file, statePath);
  const corrupt = (problem: string): never => {
    throw new CorruptSnapshotError(statePath, problem);
  };
  if (file.metadata.format !== "templora-snapshot") corrupt("not a templora snapshot state file");
  let state: Record<string, any>;
  try {
    state = JSON.parse(file.metadata.state, decodeNumber);
  } catch {
    return corrupt("its state is not valid JSON");
  }
  if (state.version !== SNAPSHOT_VERSION) {
    corrupt(`snapshot version ${state.version}; this templora reads version ${SNAPSHOT_VERSION}`);
  }
  const n = state.model?.nLayers;
  if (!Number.isInteger(n)) corrupt("its state names no model");
  const tensor = (name: string) => {
    if (!file.has(name)) corrupt(`no tensor ${name}`);
    return { dtype: "F32" as const, shape: file.entries.get(name)!.shape, data: file.f32(name) };
  };
  let tokens: Uint32Array;
  try {
    tokens = file.u32("tokens");
  } catch (error) {
    throw new CorruptSnapshotError(statePath, "its token ids are missing", { cause: error });
  }
  const layers = Array.from({ length: n }, (_, l) => l);
  const snapshot: TempLoraSnapshot = {
    version: state.version,
    model: state.model,
    settings: state.settings,
    generation: state.generation,
    tokens,
    promptTokens: state.promptTokens,
    ...(typeof state.promptText === "string" ? { promptText: state.promptText } : {}),
    chunkStart: state.chunkStart,
    progress: state.progress,
    cache: {
      sinkRows: state.cacheSinkRows,
      start: state.cacheStart,
      k: layers.map((l) => tensor(`cache.k.${l}`)),
      v: layers.map((l) => tensor(`cache.v.${l}`)),
      logits: tensor("logits").data,
    },
  };
  const ints = [
    snapshot.promptTokens,
    snapshot.chunkStart,
    snapshot.cache.start,
    snapshot.cache.sinkRows,
  ];
  if (
    !ints.every(Number.isInteger) || typeof snapshot.settings?.optimizer !== "object" ||
    typeof snapshot.generation?.maxTokens !== "number" || !snapshot.progress ||
    snapshot.promptTokens < 1 || snapshot.chunkStart > tokens.length ||
    snapshot.promptTokens > tokens.length
  ) {
    corrupt("its state is incomplete");
  }
  if (state.adapter) {
    const sums = state.adapter.files as Record<string, string>;
    const adapterBytes: Record<string, Uint8Array> = {};
    for (const name of [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]) {
      const path = `${folder}/${name}`;
      adapterBytes[name] = await readBytesFile(path);
      if (await sha256(adapterBytes[name]) !== sums?.[name]) {
        throw new CorruptSnapshotError(
          path,
          "does not match the snapshot's state (damaged, or replaced since the snapshot)",
        );
      }
    }
    const configPath = `${folder}/${ADAPTER_CONFIG_FILE}`;
    const weightsPath = `${folder}/${ADAPTER_WEIGHTS_FILE}`;
    const config = parsePeftConfig(
      new TextDecoder().decode(adapterBytes[ADAPTER_CONFIG_FILE]),
      configPath,
    );
    const weights = f32Tensors(
      parseFile(adapterBytes[ADAPTER_WEIGHTS_FILE], weightsPath),
      weightsPath,
    );
    const moment = (prefix: string) => {
      const out = new Map<string, TensorData>();
      for (const name of weights.keys()) out.set(name, tensor(`${prefix}${name}`));
      return out;
    };
    snapshot.adapter = { config, weights };
    if (state.adapter.optimizerSteps !== null) {
      snapshot.adapter.optimizer = {
        steps: state.adapter.optimizerSteps,
        m: moment("optimizer.exp_avg."),
        v: moment("optimizer.exp_avg_sq."),
      };
    }
  }
  return snapshot;
}

/** JSON has no Infinity (an optimizer's `maxGradNorm` may be one): `{"$number": "Infinity"}`. */
function encodeNumber(_: string, x: unknown): unknown {
  return typeof x === "number" && !Number.isFinite(x) ? { $number: String(x) } : x;
}

function decodeNumber(_: string, x: unknown): unknown {
  if (typeof x !== "object" || x === null || Object.keys(x).length !== 1) return x;
  const tagged = (x as { $number?: unknown }).$number;
  return typeof tagged === "string" ? Number(tagged) : x;
}

/** adapter_config.json and adapter_model.safetensors of an adapter, and their checksums. */
async function encodeAdapter(
  adapter: AdapterSnapshot,
): Promise<{ files: [string, Uint8Array][]; sums: Record<string, string> }> {
  const config = new TextEncoder().encode(JSON.stringify(adapter.config, null, 2) + "\n");
  const weights = writeSafetensors(adapter.weights, { format: "pt" });
  return {
    files: [[ADAPTER_CONFIG_FILE, config], [ADAPTER_WEIGHTS_FILE, weights]],
    sums: {
      [ADAPTER_CONFIG_FILE]: await sha256(config),
      [ADAPTER_WEIGHTS_FILE]: await sha256(weights),
    },
  };
}

/** Checks a PEFT configuration: a LoRA adapter templora can run. */
function parsePeftConfig(text: string, path: string): PeftAdapterConfig {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new CorruptSnapshotError(path, "not valid JSON", { cause: error });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new CorruptSnapshotError(path, "not a JSON object");
  }
  const unsupported = (what: string): never => {
    throw new SnapshotMismatchError(path, `${what}; templora runs plain LoRA adapters only`);
  };
  if (raw.peft_type !== "LORA") unsupported(`peft_type is ${JSON.stringify(raw.peft_type)}`);
  const r = raw.r;
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1) {
    throw new CorruptSnapshotError(path, `r must be an integer >= 1, got ${JSON.stringify(r)}`);
  }
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== "number" || !(alpha > 0)) {
    throw new CorruptSnapshotError(path, `lora_alpha must be > 0, got ${JSON.stringify(alpha)}`);
  }
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) {
    throw new CorruptSnapshotError(path, `lora_dropout must be in [0, 1), got ${dropout}`);
  }
  const modules = raw.target_modules;
  if (!Array.isArray(modules) || !modules.every((m) => typeof m === "string") || !modules.length) {
    unsupported(`target_modules is ${JSON.stringify(modules)}, not a list of module names`);
  }
  if (raw.use_dora === true) unsupported("it is a DoRA adapter (use_dora)");
  if (raw.use_rslora === true) unsupported("it scales by alpha / sqrt(r) (use_rslora)");
  if (raw.fan_in_fan_out === true) unsupported("its weights are transposed (fan_in_fan_out)");
  if ((raw.bias ?? "none") !== "none") unsupported(`it trains biases (bias ${raw.bias})`);
  if (raw.layers_to_transform != null) unsupported("it adapts some layers only");
  if (Array.isArray(raw.modules_to_save) && raw.modules_to_save.length) {
    unsupported("it saves whole modules (modules_to_save)");
  }
  for (const key of ["rank_pattern", "alpha_pattern"]) {
    const pattern = raw[key];
    if (pattern && typeof pattern === "object" && Object.keys(pattern).length) {
      unsupported(`it has per-module ranks or alphas (${key})`);
    }
  }
  const base = raw.base_model_name_or_path;
  const task = raw.task_type;
  return {
    ...peftConfig({ rank: r, alpha, targets: [] }, typeof base === "string" ? base : null, dropout),
    target_modules: modules as string[],
    task_type: typeof task === "string" ? task : null,
    inference_mode: raw.inference_mode !== false,
    init_lora_weights: raw.init_lora_weights !== false,
  };
}

/** Every tensor of a file as f32 data (F16/BF16 converted). */
function f32Tensors(file: SafetensorsFile, path: string): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  for (const name of file.names()) {
    try {
      out.set(name, {
        dtype: "F32",
        shape: file.entries.get(name)!.shape,
        data: file.f32(name).slice(),
      });
    } catch (error) {
      throw new CorruptSnapshotError(path, `tensor ${name} cannot be read as floats`, {
        cause: error,
      });
    }
  }
  return out;
}

function parseFile(bytes: Uint8Array, path: string): SafetensorsFile {
  try {
    return parseSafetensors(bytes, path);
  } catch (error) {
    if (error instanceof ModelFormatError) {
      throw new CorruptSnapshotError(path, error.problem, { cause: error });
    }
    throw error;
  }
}

async function readBytesFile(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new CorruptSnapshotError(path, `cannot be read (${describe(error)})`, { cause: error });
  }
}

async function readText(path: string): Promise<string> {
  return new TextDecoder().decode(await readBytesFile(path));
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------
// Checksums

const SEAL_KEY = "sha256";
const SEAL_PLACEHOLDER = "0".repeat(64);

/**
 * A safetensors file whose metadata carries the SHA-256 of the whole file (computed with the
 * checksum's own 64 characters as zeros), so any damaged byte is found.
 */
async function sealed(
  tensors: Map<string, SafetensorsTensorData>,
  metadata: Record<string, string>,
): Promise<Uint8Array> {
  const bytes = writeSafetensors(tensors, { ...metadata, [SEAL_KEY]: SEAL_PLACEHOLDER });
  const at = sealOffset(bytes, SEAL_PLACEHOLDER);
  const sum = await sha256(bytes);
  bytes.set(new TextEncoder().encode(sum), at);
  return bytes;
}

async function checkSeal(bytes: Uint8Array, file: SafetensorsFile, path: string): Promise<void> {
  const sum = file.metadata[SEAL_KEY];
  const at = typeof sum === "string" && /^[0-9a-f]{64}$/.test(sum) ? sealOffset(bytes, sum) : -1;
  if (at < 0) throw new CorruptSnapshotError(path, "has no checksum");
  const copy = bytes.slice();
  copy.set(new TextEncoder().encode(SEAL_PLACEHOLDER), at);
  if (await sha256(copy) !== sum) {
    throw new CorruptSnapshotError(path, "is damaged (its checksum does not match its bytes)");
  }
}

/** Byte offset of the checksum's value in the header. */
function sealOffset(bytes: Uint8Array, value: string): number {
  const needle = new TextEncoder().encode(`"${SEAL_KEY}":"${value}"`);
  const headerEnd = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  outer: for (let i = 8; i + needle.length <= headerEnd; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return i + needle.length - 65;
  }
  return -1;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Atomic folder replacement

/** A step of {@link commitFolder}, for tests that simulate a crash between steps. */
export type CommitStep = "staged" | "moved-aside";

/** The folder a snapshot or adapter lives in, and the two siblings a write uses. */
function folderNames(dir: string): { dir: string; partial: string; previous: string } {
  const abs = absolutePath(dir);
  if (abs === absolutePath("/")) {
    throw new CorruptSnapshotError(dir, "the root folder cannot hold a snapshot");
  }
  return { dir: abs, partial: `${abs}.partial`, previous: `${abs}.previous` };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * The folder holding a complete snapshot (`marker` in it): DIR, or DIR.previous when a write was
 * interrupted after moving the old snapshot aside.
 */
async function findSnapshotFolder(dir: string, marker: string): Promise<string> {
  const names = folderNames(dir);
  if (await exists(`${names.dir}/${marker}`)) return names.dir;
  if (!await exists(names.dir) && await exists(`${names.previous}/${marker}`)) {
    return names.previous;
  }
  throw new CorruptSnapshotError(
    dir,
    (await exists(names.dir)) ? `no ${marker} in it: not a snapshot folder` : "no such folder",
  );
}

/** Whether `dir` holds a snapshot (or the one a write interrupted by a crash kept beside it). */
export async function snapshotExists(dir: string): Promise<boolean> {
  try {
    await findSnapshotFolder(dir, SNAPSHOT_STATE_FILE);
    return true;
  } catch (error) {
    if (error instanceof CorruptSnapshotError) return false;
    throw error;
  }
}

/**
 * Throws {@link CorruptSnapshotError} when `dir` exists and is neither empty nor a snapshot or
 * adapter folder, so a mistyped path is never replaced.
 */
export async function checkSnapshotTarget(dir: string): Promise<void> {
  const { dir: abs } = folderNames(dir);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(abs);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw new CorruptSnapshotError(dir, `cannot be used (${describe(error)})`, { cause: error });
  }
  if (!info.isDirectory) throw new CorruptSnapshotError(dir, "is a file, not a folder");
  const names: string[] = [];
  for await (const entry of Deno.readDir(abs)) names.push(entry.name);
  const ours = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, SNAPSHOT_STATE_FILE];
  if (names.length && !names.some((n) => ours.includes(n))) {
    throw new CorruptSnapshotError(
      dir,
      "holds other files and no snapshot; refusing to replace it (give an empty or new folder)",
    );
  }
}

/**
 * Replaces folder `dir` with one holding exactly `files`, atomically: they are written (and
 * synced) to DIR.partial, DIR is renamed DIR.previous, DIR.partial renamed DIR, and DIR.previous
 * removed. `onStep` runs after the named steps (a test throws there to simulate a crash).
 */
export async function commitFolder(
  dir: string,
  files: readonly [string, Uint8Array][],
  onStep?: (step: CommitStep) => void | Promise<void>,
): Promise<void> {
  await checkSnapshotTarget(dir);
  const names = folderNames(dir);
  // A write interrupted after moving the old snapshot aside: put it back first.
  if (!await exists(names.dir) && await exists(names.previous)) {
    await Deno.rename(names.previous, names.dir);
  }
  await Deno.remove(names.partial, { recursive: true }).catch(() => {});
  await Deno.remove(names.previous, { recursive: true }).catch(() => {});
  await Deno.mkdir(names.partial, { recursive: true });
  for (const [name, bytes] of files) {
    const file = await Deno.open(`${names.partial}/${name}`, { write: true, createNew: true });
    try {
      for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
      await file.syncData();
    } finally {
      file.close();
    }
  }
  await onStep?.("staged");
  const hadOld = await exists(names.dir);
  if (hadOld) await Deno.rename(names.dir, names.previous);
  await onStep?.("moved-aside");
  await Deno.rename(names.partial, names.dir);
  if (hadOld) await Deno.remove(names.previous, { recursive: true });
}
