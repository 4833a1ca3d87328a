import type { Gpu } from "../gpu/device.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import type { KernelRegistry } from "../gpu/kernel.ts";
import { PORTABLE_OFFSET_ALIGNMENT, type Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  LORA_TARGETS,
  type LoraTarget,
  projectionDims,
  projectionDropoutSeed,
} from "../core/lora.ts";
import { kvDim, type ModelConfig } from "../formats/config.ts";
import type { ModelWeights, WeightSource } from "../formats/tensor_data.ts";
import { AttentionOp } from "../ops/attention.ts";
import { BiasOp } from "../ops/bias.ts";
import { CopyOp } from "../ops/copy.ts";
import { EmbeddingOp } from "../ops/embedding.ts";
import { MatmulOp } from "../ops/matmul.ts";
import { MatvecOp } from "../ops/matvec.ts";
import { LoraOp } from "../ops/lora.ts";
import { LORA_DECODE_MAX_RANK, LoraDecodeOp } from "../ops/lora_decode.ts";
import { RmsNormOp } from "../ops/rmsnorm.ts";
import { RopeOp } from "../ops/rope.ts";
import { SwiGluOp } from "../ops/swiglu.ts";
import {
  DECODE_LAYER_MAX_RANK,
  type DecodeHeadShape,
  type DecodeLayerArgs,
  DecodeLayerOp,
  type DecodeLayerShape,
  type DecodeLayerWeights,
} from "../ops/decode_layer.ts";
import {
  FUSED_MAX_RANK,
  FUSED_TILES,
  type FusedLora,
  FusedMatvecOp,
  type FusedParts,
  type FusedVariant,
  type FusedWeightKind,
  singlePart,
} from "../ops/fused_matvec.ts";
import { adapterClass } from "../ops/shapes.ts";
import {
  type GpuMatrix,
  type GpuWeights,
  isQuantized,
  type RowParts,
  uploadWeights,
  type UploadWeightsOptions,
} from "./gpu_weights.ts";
import { QuantEmbeddingOp } from "../ops/quant_embedding.ts";
import { QuantMatmulOp } from "../ops/quant_matmul.ts";
import { QuantMatvecOp } from "../ops/quant_matvec.ts";
import { KV_CACHE_DTYPES, KvCache, type KvCacheDtype } from "./kv_cache.ts";
import type { AdapterMatrices, ModelAdapter } from "./adapter.ts";
import { MergedLayers } from "./merged_layers.ts";
import {
  type ForwardBuffers,
  type LayerBuffers,
  StepActivations,
  type TrainingActivationOptions,
  TrainingActivations,
} from "./activations.ts";

/** Which rows of a step get logits. */
export type LogitRows = "last" | "all" | "none";

/**
 * One forward step: `tokens` ids read from `ids` at `offset`, appended to the cache. The same
 * step serves prefill and decode (with {@link StepActivations}) and the training forward (with
 * {@link TrainingActivations}, which keep what the backward needs).
 */
export interface ForwardStep {
  /** [n] u32 token ids. */
  ids: Tensor;
  /** Index in `ids` of the step's first token. */
  offset: number;
  /** Tokens in the step (at most the activations' rows). */
  tokens: number;
  /** The cache the step's keys and values are appended to. */
  cache: KvCache;
  /** Buffers for the step's intermediate values. */
  activations: ForwardBuffers;
  /**
   * "last": logits of the last token in logits row 0; "all": row t for token t; "none": stop
   * after the final norm (the trainer applies the LM head in tiles of rows).
   */
  logits: LogitRows;
  /** A LoRA adapter to apply on top of the base weights. */
  adapter?: ModelAdapter;
  /** LoRA dropout on the adapter's inputs (training): probability and the step's seed. */
  dropout?: { p: number; seed: number };
  /**
   * One-token steps of a model with {@link LlamaModel.headArgmax}: the head also writes the
   * greedy next token (the logits' argmax, ties to the lowest index) to tokens[at].
   */
  argmaxInto?: { tokens: Tensor; at: number };
}

/** The kernels a Llama-family forward pass uses, compiled once per model shape. */
export interface ForwardOps {
  /** Token embedding gather. */
  embedding: EmbeddingOp;
  /** RMSNorm forward and backward. */
  rmsnorm: RmsNormOp;
  /** Rotary embeddings with the model's base and pair convention. */
  rope: RopeOp;
  /** Causal grouped-query attention for the model's head size. */
  attention: AttentionOp;
  /** SwiGLU activation. */
  swiglu: SwiGluOp;
  /** Bias rows (Qwen2) and token bans. */
  bias: BiasOp;
  /** Row moves (KV cache writes, the last row of a step). */
  copy: CopyOp;
  /** y = x·Wᵀ for weights stored [out, in]. */
  linear: MatmulOp;
  /** y += x·Wᵀ (residual adds). */
  linearAdd: MatmulOp;
  /** The one-token form of both, reading each weight once. */
  matvec: MatvecOp;
  /** dX = dY·W for weights stored [out, in] (the backward through a frozen projection). */
  inputGrad: MatmulOp;
  /** dX += dY·W. */
  inputGradAdd: MatmulOp;
  /** LoRA forward and backward. */
  lora: LoraOp;
  /** LoRA for one token in one dispatch (decode). */
  loraDecode: LoraDecodeOp;
  /** Kernels over quantized blocks, compiled for the block types the weights use. */
  quant?: QuantOps;
  /**
   * Decode's fused products (RMSNorm, q/k/v with RoPE and the cache write, gate/up with SwiGLU,
   * the residual adds, the adapter), compiled for the model's weights; absent when turned off.
   */
  fused?: FusedMatvecOp;
  /**
   * Whole layers in one workgroup (small models), by the layer's RoPE pairs ("none" for a layer
   * without RoPE); absent when the model's layers do not suit it or it is turned off.
   */
  layer?: Map<string, DecodeLayerOp>;
  /**
   * The LM head in one workgroup, with its argmax (small models whose layers suit it too): the
   * first layer's kernel, compiled with the head's entry point.
   */
  layerHead?: DecodeLayerOp;
}

/** Options of {@link LlamaModel.create}. */
export interface LlamaModelOptions extends UploadWeightsOptions {
  /**
   * Decode one token with the fused kernels (default true): about five dispatches a layer
   * instead of fourteen. false keeps the unfused kernels everywhere (tests compare the two).
   */
  fusedDecode?: boolean;
  /**
   * With fusedDecode, run a whole layer in one workgroup where the model is small enough for the
   * adapter ({@link DecodeLayerOp.suits}; default true): one dispatch a layer. Software adapters
   * take it for small models, GPUs never; "always" takes it wherever the layer fits one
   * workgroup, as on a software adapter (to measure it on a GPU); false never.
   */
  oneWorkgroupLayers?: boolean | "always";
  /**
   * How KV caches store keys and values (default "f32"): "f16" halves their memory and the bytes
   * decode attention reads, each key and value rounded to nearest half (see KvCache).
   */
  kvCacheDtype?: KvCacheDtype;
  /**
   * Decode with an adapter on weights with its update merged in, where a layer runs in one
   * workgroup on f32 weights (default true; see merged_layers.ts): the layer kernel then skips
   * its adapter stages. Costs a copy of those layers' weights, kept with the adapter and rebuilt
   * after each change of it; false keeps the kernel's own adapter path (tests compare the two).
   */
  mergeAdapter?: boolean;
}

/** The kernels of a model whose weights stay in quantized blocks. */
export interface QuantOps {
  /** Decode: y = W·x (+ bias) (+ y). */
  matvec: QuantMatvecOp;
  /** Prefill and training: Y = X·Wᵀ, and the input gradient dX = dY·W. */
  matmul: QuantMatmulOp;
  /** The gather from a quantized embedding table. */
  embedding: QuantEmbeddingOp;
}

/** Bytes of a weight matrix as stored on the GPU (its blocks, for a quantized one). */
export function matrixBytes(m: GpuMatrix | RowParts): number {
  if ("parts" in m) return m.parts.reduce((sum, p) => sum + matrixBytes(p.matrix), 0);
  return isQuantized(m) ? m.rows * m.rowBytes : m.byteLength;
}

/**
 * The LM head's parts as one fused-kernel group (rows and kind; what decides its variant and
 * whether the final norm fits inside it). Each part is still recorded as its own product.
 */
function headParts(head: RowParts): FusedParts {
  const first = singlePart(head.parts[0].matrix);
  return { ...first, parts: head.parts.map((p) => ({ offset: 0, rows: p.rows })) };
}

/** Awaits every promise of a record, compiling kernels concurrently. */
async function compileAll<T extends Record<string, unknown>>(
  pending: { [K in keyof T]: Promise<T[K]> },
): Promise<T> {
  const keys = Object.keys(pending) as (keyof T)[];
  const values = await Promise.all(keys.map((k) => pending[k]));
  return Object.fromEntries(keys.map((k, i) => [k, values[i]])) as T;
}

/**
 * The fused decode kernels a model's weights need: per layer q/k/v (where q, k and v share a
 * buffer and there are no head norms) and gate/up (where they share one), the residual adds of o
 * and down, each with and without an adapter (and with its h computed ahead, where a large
 * adapter's would cost every workgroup too much), and the LM head with the final norm.
 */
function fusedVariants(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  kvDtype: KvCacheDtype,
): FusedVariant[] {
  const tiles = FUSED_TILES[adapterClass(gpu.capabilities)];
  const norm = (epilogue: FusedVariant["epilogue"], parts: FusedParts) =>
    FusedMatvecOp.normFits(tiles, epilogue, parts.parts.map((p) => p.rows), parts.cols);
  const head = headParts(weights.head);
  const out: FusedVariant[] = [{ kind: head.kind, epilogue: "store", norm: norm("store", head) }];
  const rope = config.ropePairs ?? "interleaved";
  for (const [l, layer] of weights.layers.entries()) {
    const layerRope = (config.ropeLayers?.[l] ?? true) ? rope : undefined;
    const kvFits = (kind: FusedWeightKind) =>
      kvDtype === "f32" || FusedMatvecOp.kvF16Fits(tiles, kind, layerRope, config.headDim);
    const groups: [FusedParts, FusedVariant][] = [];
    if (layer.qkv && !layer.qNorm && kvFits(layer.qkv.kind)) {
      groups.push([layer.qkv, {
        kind: layer.qkv.kind,
        epilogue: "qkv",
        norm: norm("qkv", layer.qkv),
        bias: layer.qkvBias !== undefined,
        rope: layerRope,
        kvDtype: kvDtype === "f16" ? "f16" : undefined,
      }]);
    }
    if (layer.gateUp) {
      const gateUp = layer.gateUp;
      groups.push([gateUp, {
        kind: gateUp.kind,
        epilogue: "swiglu",
        norm: norm("swiglu", gateUp),
      }]);
    }
    for (const parts of [singlePart(layer.o), singlePart(layer.down)]) {
      groups.push([parts, { kind: parts.kind, epilogue: "add" }]);
    }
    for (const [parts, v] of groups) {
      out.push(v, { ...v, lora: true });
      // An adapter too large (at the largest rank) for every workgroup to compute its own h
      // takes the variant that reads h computed ahead.
      const rows = parts.parts.map((p) => p.rows);
      if (!FusedMatvecOp.loraFits(tiles, v.epilogue, rows, parts.cols, FUSED_MAX_RANK)) {
        out.push({ ...v, lora: true, loraH: true });
      }
    }
  }
  return out;
}

/** How a layer runs for one token in one workgroup: its kernel, weights and adapter part. */
interface WholeLayerPlan {
  op: DecodeLayerOp;
  weights: DecodeLayerWeights;
  lora: DecodeLayerArgs["lora"];
}

/** Which one-workgroup layer kernel layer `l` takes: its RoPE pairs, or "none" without RoPE. */
function layerKernelKey(config: ModelConfig, l: number): string {
  return (config.ropeLayers?.[l] ?? true) ? config.ropePairs ?? "interleaved" : "none";
}

/**
 * The one-workgroup layer kernels a model can use, by RoPE pairs ("none": a layer without RoPE):
 * every layer packed in one buffer of one kind, no head norms, a shape that suits the kernel.
 */
function decodeLayerShapes(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  kvDtype: KvCacheDtype,
  always: boolean,
): Map<string, DecodeLayerShape> {
  const shapes = new Map<string, DecodeLayerShape>();
  const packed = weights.layers.map((l) => l.packed);
  if (config.qkNorm || packed.some((p) => !p || p.kind !== packed[0]!.kind)) return shapes;
  for (let l = 0; l < config.nLayers; l++) {
    const key = layerKernelKey(config, l);
    const shape: DecodeLayerShape = {
      dim: config.dim,
      hiddenDim: config.hiddenDim,
      nHeads: config.nHeads,
      nKvHeads: config.nKvHeads,
      headDim: config.headDim,
      kind: packed[0]!.kind,
      bias: config.qkvBias,
      rope: key === "none" ? undefined : key as DecodeLayerShape["rope"],
      kvDtype: kvDtype === "f16" ? "f16" : undefined,
    };
    if (!DecodeLayerOp.suits(gpu, shape, always)) return new Map();
    shapes.set(key, shape);
  }
  return shapes;
}

/** Whether a first layer in one workgroup can gather its input: the table is one f32 matrix. */
function embedsInLayer(weights: GpuWeights): boolean {
  const parts = weights.embed.parts;
  const table = parts[0].matrix;
  return parts.length === 1 && !isQuantized(table) && table.dtype === "f32";
}

/**
 * The head's shape for the one-workgroup kernel (decode_layer.wgsl's `head`) when the layers take
 * that kernel (`layer`, a layer's shape) and the head, one f32 or f16 matrix, suits it too.
 */
function oneWorkgroupHead(
  gpu: Gpu,
  weights: GpuWeights,
  layer: DecodeLayerShape | undefined,
  always: boolean,
): DecodeHeadShape | undefined {
  const parts = weights.head.parts;
  const matrix = parts[0].matrix;
  if (!layer || parts.length !== 1 || isQuantized(matrix)) return undefined;
  if (matrix.dtype !== "f32" && matrix.dtype !== "f16") return undefined;
  const head = { kind: matrix.dtype, vocab: matrix.shape[0] } as const;
  return DecodeLayerOp.headSuits(gpu, layer, head, always) ? head : undefined;
}

/** Models made so far, for each one's key in an adapter's derived values. */
let modelsMade = 0;

/** A Llama-family model on the GPU: weights, compiled kernels, and the forward pass. */
export class LlamaModel {
  private constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly weights: GpuWeights,
    private readonly ops: ForwardOps,
    /** How this model's KV caches store keys and values. */
    readonly kvCacheDtype: KvCacheDtype,
    /** Which layers decode with an adapter on merged weights ({@link LlamaModelOptions.mergeAdapter}). */
    private readonly merges: readonly boolean[] = [],
  ) {}

  /** This model's key in an adapter's derived values. */
  readonly #mergedKey = `merged layers of model ${++modelsMade}`;

  /** Uploads the weights and compiles the kernels. */
  static async create(
    gpu: Gpu,
    registry: KernelRegistry,
    model: ModelWeights | WeightSource,
    file = "model",
    options: LlamaModelOptions = {},
  ): Promise<LlamaModel> {
    const config = model.config;
    const kvDtype = options.kvCacheDtype ?? "f32";
    if (!KV_CACHE_DTYPES.includes(kvDtype)) {
      throw new KernelUsageError(
        `kvCacheDtype ${JSON.stringify(kvDtype)}: expected ${KV_CACHE_DTYPES.join(" or ")}`,
      );
    }
    const weights = await uploadWeights(gpu, model, file, options);
    const types = weights.quantTypes;
    try {
      const variants = options.fusedDecode === false
        ? []
        : fusedVariants(gpu, config, weights, kvDtype);
      const always = options.oneWorkgroupLayers === "always";
      const layerShapes = options.fusedDecode === false || options.oneWorkgroupLayers === false
        ? new Map<string, DecodeLayerShape>()
        : decodeLayerShapes(gpu, config, weights, kvDtype, always);
      // The first layer's kernel also gathers the embedding and, where it suits, runs the head.
      const firstLayerKey = layerKernelKey(config, 0);
      const head = oneWorkgroupHead(gpu, weights, layerShapes.get(firstLayerKey), always);
      const ops = await compileAll({
        embedding: EmbeddingOp.create(registry),
        rmsnorm: RmsNormOp.create(registry, { widestRow: Math.max(config.dim, config.headDim) }),
        rope: RopeOp.create(registry, {
          headDim: config.headDim,
          base: config.ropeTheta,
          pairs: config.ropePairs,
          frequencyDivisors: config.ropeFreqFactors,
        }),
        attention: AttentionOp.create(registry, config.headDim, { kvDtype }),
        swiglu: SwiGluOp.create(registry),
        bias: BiasOp.create(registry),
        copy: CopyOp.create(registry),
        linear: MatmulOp.create(registry, { transB: true }),
        linearAdd: MatmulOp.create(registry, { transB: true, accumulate: true }),
        matvec: MatvecOp.create(registry, { f16: weights.f16Tensors.length > 0 }),
        inputGrad: MatmulOp.create(registry, {}),
        inputGradAdd: MatmulOp.create(registry, { accumulate: true }),
        lora: LoraOp.create(registry),
        loraDecode: LoraDecodeOp.create(registry),
        quant: types.length
          ? compileAll({
            matvec: QuantMatvecOp.create(registry, { types }),
            matmul: QuantMatmulOp.create(registry, { types }),
            embedding: QuantEmbeddingOp.create(registry, { types }),
          })
          : Promise.resolve(undefined),
        fused: variants.length
          ? FusedMatvecOp.create(registry, variants)
          : Promise.resolve(undefined),
        layer: layerShapes.size
          ? Promise.all(
            [...layerShapes].map(async ([key, shape]) =>
              [
                key,
                await DecodeLayerOp.create(
                  registry,
                  shape,
                  key === firstLayerKey ? { embeds: embedsInLayer(weights), head } : {},
                ),
              ] as const
            ),
          ).then((entries) => new Map(entries))
          : Promise.resolve(undefined),
      });
      const first = ops.layer?.get(firstLayerKey);
      const merges = weights.layers.map((layer, l) =>
        options.mergeAdapter !== false && layer.packed?.kind === "f32" &&
        ops.layer?.get(layerKernelKey(config, l))?.shape.kind === "f32"
      );
      return new LlamaModel(
        gpu,
        config,
        weights,
        { ...ops, layerHead: first?.head ? first : undefined },
        kvDtype,
        merges,
      );
    } catch (error) {
      weights.destroy();
      throw error;
    }
  }

  /** The compiled kernels, for the training pass that reuses them. */
  get kernels(): Readonly<ForwardOps> {
    return this.ops;
  }

  /**
   * Bytes of weights one decoded token must read at the least: every matrix, norm and bias once,
   * one row of the embedding table, and with `adapter` every adapted projection's A and B (but
   * in layers that decode on merged weights, which hold the adapter's update in their matrices).
   */
  minWeightBytesPerToken(adapter?: ModelAdapter): number {
    const w = this.weights;
    let bytes = w.norm.byteLength + matrixBytes(w.head) + this.#embeddingRowBytes;
    for (let l = 0; l < this.config.nLayers; l++) {
      const layer = w.layers[l];
      for (const v of [layer.attnNorm, layer.ffnNorm, layer.qNorm, layer.kNorm]) {
        bytes += v?.byteLength ?? 0;
      }
      for (const v of [layer.qBias, layer.kBias, layer.vBias]) bytes += v?.byteLength ?? 0;
      for (const target of LORA_TARGETS) {
        bytes += matrixBytes(layer[target]);
        const p = this.merges[l] ? undefined : adapter?.get(l, target);
        if (p) bytes += p.a.byteLength + p.b.byteLength;
      }
    }
    return bytes;
  }

  /** Bytes of one row of the embedding table. */
  get #embeddingRowBytes(): number {
    const e = this.weights.embed.parts[0].matrix;
    return isQuantized(e) ? e.rowBytes : 4 * this.config.dim;
  }

  /** A KV cache of `capacity` positions (at most the model's trained length), of kvCacheDtype. */
  createCache(capacity: number): KvCache {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > this.config.maxSeqLen) {
      throw new KernelUsageError(
        `KV cache capacity ${capacity} must be in 1..${this.config.maxSeqLen} (the model's length)`,
      );
    }
    return new KvCache(this.gpu, this.config, capacity, this.kvCacheDtype);
  }

  /** Activation buffers for inference steps of up to `maxRows` tokens. */
  createActivations(maxRows: number): StepActivations {
    return new StepActivations(this.gpu, this.config, maxRows);
  }

  /** Activation buffers for training forwards of up to `maxRows` tokens with `adapter`. */
  createTrainingActivations(
    maxRows: number,
    adapter: ModelAdapter,
    options: TrainingActivationOptions = {},
  ): TrainingActivations {
    return new TrainingActivations(this.gpu, this.config, maxRows, adapter, options);
  }

  /**
   * Whether one-token steps can take {@link ForwardStep.argmaxInto}: the head runs in one
   * workgroup and picks the greedy token itself, so greedy decoding needs no sampling dispatch.
   */
  get headArgmax(): boolean {
    return this.ops.layerHead !== undefined;
  }

  /**
   * Records one forward step: embeds the tokens, runs every layer with the cache (writing this
   * step's rotated keys and values at rows cache.length..), and writes logits. Advances
   * cache.length. The only layer loop: prefill, decode and the training forward all run it.
   */
  recordForward(rec: Recorder, step: ForwardStep): void {
    const { ids, offset, tokens: t, cache, activations: act, adapter } = step;
    const c = this.config;
    const past = cache.length;
    if (!Number.isInteger(t) || t < 1 || t > act.maxRows) {
      throw new KernelUsageError(`a step of ${t} tokens; these activations hold 1..${act.maxRows}`);
    }
    if (past + t > cache.capacity) {
      throw new KernelUsageError(
        `${t} tokens after ${past} overflow the KV cache of ${cache.capacity} positions`,
      );
    }
    // Inference activations keep no final-norm statistics (the training ones do).
    const layerHead = t === 1 && step.logits === "last" && !act.final(1).rstd
      ? this.ops.layerHead
      : undefined;
    if (step.argmaxInto && !layerHead) {
      throw new KernelUsageError(
        "argmaxInto needs a one-token inference step with logits of the last row, on a model " +
          "with headArgmax",
      );
    }
    if (adapter) act.prepareAdapter(adapter.rank);
    const { embedding, rmsnorm, copy } = this.ops;
    const w = this.weights;
    const first = act.layer(0, t);
    if (adapter && this.#isDecodeStep(first, step)) this.#refreshMerged(rec, adapter);
    // One token through a first layer in one workgroup: that kernel gathers the embedding row.
    const firstPlan = this.#isDecodeStep(first, step)
      ? this.#wholeLayer(0, cache, step)
      : undefined;
    const embedInLayer = firstPlan?.op.embeds === true;
    if (!embedInLayer) {
      for (const { start, matrix } of w.embed.parts) {
        // Each part of a split table writes the rows of the tokens it holds.
        const part = { first: start, vocab: c.vocabSize };
        if (isQuantized(matrix)) {
          this.#quant.embedding.recordForward(rec, matrix, ids, first.xIn, offset, part);
        } else embedding.recordForward(rec, matrix, ids, first.xIn, offset, part);
      }
    }
    rec.countWeightBytes(t * this.#embeddingRowBytes);
    for (let l = 0; l < c.nLayers; l++) {
      if (l === 0 && embedInLayer) {
        const embed = { table: w.embed.parts[0].matrix as Tensor, tokens: ids, at: offset };
        this.#recordWholeLayer(rec, 0, first, cache, past, firstPlan, embed);
      } else this.recordLayer(rec, l, act.layer(l, t), cache, past, step);
    }
    let rows = act.layer(c.nLayers - 1, t).xOut;
    rec.countWeightBytes(w.norm.byteLength);
    if (step.logits === "none") {
      const final = act.final(t);
      rmsnorm.recordForward(rec, rows, w.norm, final.normed, c.normEps, final.rstd);
      cache.length = past + t;
      return;
    }
    if (layerHead) {
      rec.countWeightBytes(matrixBytes(w.head));
      layerHead.recordHead(rec, {
        x: rows.reshape([c.dim]),
        norm: w.norm,
        head: w.head.parts[0].matrix as Tensor,
        logits: act.logits.rows(0, 1).reshape([c.vocabSize]),
        eps: c.normEps,
        argmax: step.argmaxInto,
      });
      cache.length = past + t;
      return;
    }
    const head = t === 1 && this.#normFits("store", headParts(w.head)) &&
      this.#fused("store", w.head.parts[0].matrix, { norm: true });
    if (head && !act.final(1).rstd) {
      // One row: the final norm inside the LM head's product (each part's), no copy of the last
      // row; a part writes its slice of the logits.
      rec.countWeightBytes(matrixBytes(w.head));
      const logits = act.logits.rows(0, 1).reshape([c.vocabSize]);
      for (const part of w.head.parts) {
        head.op.record(rec, "store", {
          x: rows.reshape([c.dim]),
          weights: singlePart(part.matrix),
          y: logits.rows(part.start, part.rows),
          norm: { weight: w.norm, eps: c.normEps },
        });
      }
      cache.length = past + t;
      return;
    }
    if (step.logits === "last" && t > 1) {
      copy.record(rec, rows, act.lastRow, { srcOffset: (t - 1) * c.dim, count: c.dim });
      rows = act.lastRow;
    }
    const n = rows.shape[0];
    const final = act.final(n);
    rmsnorm.recordForward(rec, rows, w.norm, final.normed, c.normEps, final.rstd);
    this.recordHead(rec, final.normed, act.logits.rows(0, n));
    cache.length = past + t;
  }

  /**
   * logits = x·W_headᵀ for x [n, dim] and logits [n, vocab], part by part of the head: each
   * writes its columns of the logits.
   */
  recordHead(rec: Recorder, x: Tensor, logits: Tensor): void {
    for (const part of this.weights.head.parts) {
      this.recordLinear(rec, x, part.matrix, logits, { columns: part.start });
    }
  }

  /**
   * dX = dLogits·W_head for dLogits [n, vocab] and dX [n, dim]: the head's input gradient, the
   * parts' products (each over its columns of dLogits) summed in part order.
   */
  recordHeadInputGradient(rec: Recorder, dLogits: Tensor, dX: Tensor): void {
    for (const [i, part] of this.weights.head.parts.entries()) {
      this.recordInputGradient(rec, dLogits, part.matrix, dX, i > 0, part.start);
    }
  }

  /**
   * One decoder layer of `step`: attention with the cache (writing the step's keys and values at
   * row `past`), then the MLP, each added to the residual. recordForward runs it for every layer;
   * the trainer runs it again to recompute a layer it did not keep.
   */
  recordLayer(
    rec: Recorder,
    l: number,
    b: LayerBuffers,
    cache: KvCache,
    past: number,
    step: ForwardStep,
  ): void {
    const c = this.config;
    const { rmsnorm, rope, attention, swiglu, copy } = this.ops;
    const layer = this.weights.layers[l];
    const t = step.tokens;
    const flat = (x: Tensor) => x.reshape([t, x.size / t]);
    const vec = (x: Tensor) => x.reshape([x.size]);
    // Decode (one row of inference, no dropout) takes the fused kernels where they cover the
    // weights; prefill and the training forward keep the tiled ones.
    const decode = this.#isDecodeStep(b, step);
    const plan = decode ? this.#wholeLayer(l, cache, step) : undefined;
    if (plan) {
      this.#recordWholeLayer(rec, l, b, cache, past, plan);
      return;
    }
    const fusedLora = (targets: LoraTarget[]) =>
      decode ? this.#fusedLora(l, targets, step, b) : null;
    const project = (
      target: LoraTarget,
      x: Tensor,
      weight: GpuMatrix,
      y: Tensor,
      options: { accumulate?: boolean; bias?: Tensor } = {},
    ) => {
      const lora = fusedLora([target]);
      const fused = options.accumulate && !options.bias && lora !== null &&
        this.#fused("add", weight, { lora: lora !== undefined, loraH: lora?.h !== undefined });
      if (fused) {
        this.#countProjection(rec, weight, lora);
        fused.op.record(rec, "add", { x: vec(x), weights: fused.weights, y: vec(y), lora });
        return;
      }
      this.recordLinear(rec, x, weight, y, options);
      this.#recordAdapters(rec, l, [target], x, [y], b, step);
    };
    /** Projections sharing the input x: the base products, then the adapter's at once. */
    const projectAll = (
      targets: LoraTarget[],
      x: Tensor,
      outputs: { weight: GpuMatrix; y: Tensor; bias?: Tensor }[],
    ) => {
      for (const { weight, y, bias } of outputs) this.recordLinear(rec, x, weight, y, { bias });
      this.#recordAdapters(rec, l, targets, x, outputs.map((o) => o.y), b, step);
    };

    let x2Copied = false;
    const qkvLora = fusedLora(["q", "k", "v"]);
    const qkvNorm = layer.qkv !== undefined && this.#normFits("qkv", layer.qkv);
    const qkv = decode && !layer.qNorm && qkvLora !== null && layer.qkv &&
      this.#fused("qkv", layer.qkv, {
        norm: qkvNorm,
        bias: layer.qkvBias !== undefined,
        lora: qkvLora !== undefined,
        loraH: qkvLora?.h !== undefined,
        rope: this.rotates(l) ? rope.pairs : undefined,
        kvDtype: cache.dtype === "f16" ? "f16" : undefined,
      });
    if (qkv) {
      // RMSNorm, q, k and v, bias, adapter, RoPE, and the cache append: one dispatch (the norm
      // its own where the product is large, see FusedMatvecOp.normFits).
      if (!qkvNorm) rmsnorm.recordForward(rec, b.xIn, layer.attnNorm, b.h1, c.normEps);
      rec.countWeightBytes(layer.attnNorm.byteLength + (layer.qkvBias?.data.byteLength ?? 0));
      for (const target of ["q", "k", "v"] as const) {
        this.#countProjection(rec, layer[target], undefined);
      }
      this.#countAdapter(rec, qkvLora);
      const kvRow = past * kvDim(c);
      qkv.op.record(rec, "qkv", {
        x: vec(qkvNorm ? b.xIn : b.h1),
        weights: qkv.weights,
        y: vec(b.q),
        norm: qkvNorm ? { weight: layer.attnNorm, eps: c.normEps } : undefined,
        bias: layer.qkvBias,
        lora: qkvLora,
        kv: {
          kv: cache.kv[l],
          kAt: kvRow,
          vAt: cache.vOffset + kvRow,
          rope: this.rotates(l)
            ? { freqs: rope.frequencies, pos: past, headDim: c.headDim, pairs: rope.pairs }
            : undefined,
        },
      });
    } else {
      // A training layer's norm also starts x2 as a copy of the layer input (the attention's output
      // is added to it); inference updates the stream in place.
      x2Copied = b.x2 !== b.xIn && b.rstd1 !== undefined;
      rmsnorm.recordForward(
        rec,
        b.xIn,
        layer.attnNorm,
        b.h1,
        c.normEps,
        b.rstd1,
        x2Copied ? b.x2 : undefined,
      );
      rec.countWeightBytes(layer.attnNorm.byteLength);
      projectAll(["q", "k", "v"], b.h1, [
        { weight: layer.q, y: b.qProj ?? flat(b.q), bias: layer.qBias },
        { weight: layer.k, y: b.kProj ?? flat(b.k), bias: layer.kBias },
        { weight: layer.v, y: flat(b.v), bias: layer.vBias },
      ]);
      if (layer.qNorm && layer.kNorm && b.qProj && b.kProj) {
        // Qwen3: RMSNorm over each head of q and k, before RoPE.
        const heads = (x: Tensor) => x.reshape([x.size / c.headDim, c.headDim]);
        rmsnorm.recordForward(rec, heads(b.qProj), layer.qNorm, heads(b.q), c.normEps, b.qRstd);
        rmsnorm.recordForward(rec, heads(b.kProj), layer.kNorm, heads(b.k), c.normEps, b.kRstd);
        rec.countWeightBytes(layer.qNorm.byteLength + layer.kNorm.byteLength);
      }
      // Keys are rotated on their way into the cache; values are copied; both land at row past
      // (rounded to halves in an f16 cache).
      const copyValues = () =>
        copy.record(rec, flat(b.v), cache.v[l], { dstOffset: past * kvDim(c) });
      if (this.rotates(l) && cache.dtype === "f32") {
        // Queries, keys and (where the buffers allow) values in one dispatch.
        const qkv = { q: b.q, k: b.k, v: b.v, kDst: cache.k[l], vDst: cache.v[l] };
        if (!rope.recordForwardQKV(rec, qkv, { pos0: past, dstRow: past })) copyValues();
      } else {
        if (this.rotates(l)) {
          rope.recordForwardInPlace(rec, b.q, { pos0: past });
          rope.recordForward(rec, b.k, cache.k[l], { pos0: past, dstRow: past });
        } else {
          copy.record(rec, flat(b.k), cache.k[l], { dstOffset: past * kvDim(c) });
        }
        copyValues();
      }
    }
    attention.recordForward(rec, {
      q: b.q,
      k: cache.k[l],
      v: cache.v[l],
      out: b.attn,
      past,
      lse: b.lse,
    });
    if (b.x2 !== b.xIn && !x2Copied) copy.record(rec, b.xIn, b.x2);
    project("o", flat(b.attn), layer.o, b.x2, { accumulate: true });
    let xOutCopied = false;
    const mlpLora = fusedLora(["gate", "up"]);
    const mlpNorm = layer.gateUp !== undefined && this.#normFits("swiglu", layer.gateUp);
    const gateUp = decode && mlpLora !== null && layer.gateUp &&
      this.#fused("swiglu", layer.gateUp, {
        norm: mlpNorm,
        lora: mlpLora !== undefined,
        loraH: mlpLora?.h !== undefined,
      });
    if (gateUp) {
      // RMSNorm, gate and up, adapter, SwiGLU: one dispatch (the norm as for q, k and v).
      if (!mlpNorm) rmsnorm.recordForward(rec, b.x2, layer.ffnNorm, b.h2, c.normEps);
      rec.countWeightBytes(layer.ffnNorm.byteLength);
      this.#countProjection(rec, layer.gate, undefined);
      this.#countProjection(rec, layer.up, undefined);
      this.#countAdapter(rec, mlpLora);
      gateUp.op.record(rec, "swiglu", {
        x: vec(mlpNorm ? b.x2 : b.h2),
        weights: gateUp.weights,
        y: vec(b.act),
        norm: mlpNorm ? { weight: layer.ffnNorm, eps: c.normEps } : undefined,
        lora: mlpLora,
      });
    } else {
      xOutCopied = b.xOut !== b.x2 && b.rstd2 !== undefined;
      rmsnorm.recordForward(
        rec,
        b.x2,
        layer.ffnNorm,
        b.h2,
        c.normEps,
        b.rstd2,
        xOutCopied ? b.xOut : undefined,
      );
      rec.countWeightBytes(layer.ffnNorm.byteLength);
      projectAll(["gate", "up"], b.h2, [
        { weight: layer.gate, y: b.gate },
        { weight: layer.up, y: b.up },
      ]);
      swiglu.recordForward(rec, b.gate, b.up, b.act);
    }
    if (b.xOut !== b.x2 && !xOutCopied) copy.record(rec, b.x2, b.xOut);
    project("down", b.act, layer.down, b.xOut, { accumulate: true });
  }

  /** Decode: one row of inference, no dropout (the fused kernels' case; prefill and training keep the tiled ones). */
  #isDecodeStep(b: LayerBuffers, step: ForwardStep): boolean {
    return step.tokens === 1 && !b.rstd1 && !(step.dropout && step.dropout.p > 0);
  }

  /** `adapter`'s merged layers for this model if they hold its present values. */
  #merged(adapter: ModelAdapter): MergedLayers | undefined {
    const merged = adapter.derived.get(this.#mergedKey);
    return merged instanceof MergedLayers && merged.version === adapter.version
      ? merged
      : undefined;
  }

  /**
   * Records bringing `adapter`'s merged layers up to date (allocating them the first time) when
   * the model merges any layer it adapts and they are older than the adapter.
   */
  #refreshMerged(rec: Recorder, adapter: ModelAdapter): void {
    const layers = this.weights.layers;
    const merges = this.merges.map((m, l) => m && LORA_TARGETS.some((t) => adapter.get(l, t)));
    if (!merges.some((m) => m) || this.#merged(adapter)) return;
    let merged = adapter.derived.get(this.#mergedKey);
    if (!(merged instanceof MergedLayers)) {
      merged = MergedLayers.allocate(this.gpu, layers, merges);
      adapter.derived.set(this.#mergedKey, merged);
    }
    (merged as MergedLayers).record(rec, adapter, layers, this.ops.inputGradAdd);
  }

  /** The one-workgroup kernel of layer `l`'s RoPE pairs, if the model has it. */
  #wholeLayerOp(l: number): DecodeLayerOp | undefined {
    return this.ops.layer?.get(layerKernelKey(this.config, l));
  }

  /**
   * How layer `l` runs for one token in one workgroup: its kernel and the adapter's part, when
   * the model has that kernel for the layer's weights and cache and the adapter (if any) adapts
   * every projection of the layer at a rank it takes; undefined otherwise.
   */
  #wholeLayer(
    l: number,
    cache: KvCache,
    step: ForwardStep,
  ): WholeLayerPlan | undefined {
    const weights = this.weights.layers[l].packed;
    const op = this.#wholeLayerOp(l);
    if (!op || !weights || op.shape.kind !== weights.kind) return undefined;
    if ((op.shape.kvDtype ?? "f32") !== cache.dtype) return undefined;
    const adapter = step.adapter;
    if (!adapter) return { op, weights, lora: undefined };
    const merged = this.#merged(adapter)?.layers[l];
    if (merged) return { op, weights: merged, lora: undefined };
    const parts = Object.fromEntries(LORA_TARGETS.map((t) => [t, adapter.get(l, t)]));
    if (LORA_TARGETS.every((t) => parts[t]) && adapter.rank <= DECODE_LAYER_MAX_RANK) {
      return {
        op,
        weights,
        lora: { parts: parts as Record<LoraTarget, AdapterMatrices>, scale: adapter.scale },
      };
    }
    // An adapter on none of the layer's projections leaves it to the base kernel.
    return LORA_TARGETS.some((t) => parts[t]) ? undefined : { op, weights, lora: undefined };
  }

  /**
   * Records layer `l` for one token in one workgroup as `plan` ({@link #wholeLayer}) says, with
   * `embed` its input gathered from the embedding table.
   */
  #recordWholeLayer(
    rec: Recorder,
    l: number,
    b: LayerBuffers,
    cache: KvCache,
    past: number,
    plan: WholeLayerPlan,
    embed?: DecodeLayerArgs["embed"],
  ): void {
    const { op, weights, lora } = plan;
    const layer = this.weights.layers[l];
    const c = this.config;
    rec.countWeightBytes(
      layer.attnNorm.byteLength + layer.ffnNorm.byteLength + (layer.qkvBias?.data.byteLength ?? 0),
    );
    for (const t of LORA_TARGETS) {
      rec.countWeightBytes(matrixBytes(layer[t]));
      const p = lora?.parts[t];
      if (p) rec.countWeightBytes(p.a.byteLength + p.b.byteLength);
    }
    op.record(rec, {
      x: b.xIn.reshape([c.dim]),
      weights,
      kv: cache.kv[l],
      vOffset: cache.vOffset,
      past,
      eps: c.normEps,
      freqs: this.rotates(l) ? this.ops.rope.frequencies : undefined,
      lora,
      embed,
    });
  }

  /**
   * The fused kernel for `epilogue` over `weights` (one matrix or a group), when it was compiled
   * for them; undefined otherwise (the caller takes the unfused kernels).
   */
  #fused(
    epilogue: FusedVariant["epilogue"],
    weights: GpuMatrix | FusedParts,
    flags: Omit<FusedVariant, "kind" | "epilogue">,
  ): { op: FusedMatvecOp; weights: FusedParts } | undefined {
    const op = this.ops.fused;
    if (!op) return undefined;
    const parts = "parts" in weights ? weights : singlePart(weights);
    if (!op.has({ kind: parts.kind, epilogue, ...flags })) return undefined;
    return { op, weights: parts };
  }

  /**
   * The adapter of layer `l`'s `targets` for a fused kernel: undefined when none is adapted (or
   * no adapter is on), null when the fused kernel cannot take it (only some adapted, a rank above
   * its maximum). An adapter too large for every workgroup to compute its own h (loraFits) comes
   * with `b`'s scratch for h computed ahead (the caller checks that variant was compiled).
   */
  #fusedLora(
    l: number,
    targets: LoraTarget[],
    step: ForwardStep,
    b: LayerBuffers,
  ): FusedLora | undefined | null {
    const adapter = step.adapter;
    if (!adapter) return undefined;
    const parts = targets.map((t) => adapter.get(l, t));
    if (parts.every((p) => !p)) return undefined;
    if (parts.some((p) => !p) || adapter.rank > FUSED_MAX_RANK || !this.ops.fused) return null;
    const c = this.config;
    const dims = targets.map((t) => projectionDims(c, t));
    const epilogue = targets.length === 3 ? "qkv" : targets.length === 2 ? "swiglu" : "add";
    const rows = dims.map(([, out]) => out);
    const lora = { parts: parts as AdapterMatrices[], scale: adapter.scale };
    if (this.ops.fused.loraFits(epilogue, rows, dims[0][0], adapter.rank)) return lora;
    const h = b.loraHParts?.().rows(0, targets.length * adapter.rank);
    return h ? { ...lora, h } : null;
  }

  /** Whether the RMSNorm before `parts` goes inside the fused product (FusedMatvecOp.normFits). */
  #normFits(epilogue: FusedVariant["epilogue"], parts: FusedParts): boolean {
    return this.ops.fused?.normFits(epilogue, parts.parts.map((p) => p.rows), parts.cols) ?? false;
  }

  /** Counts a projection's weight (and its adapter's) as read. */
  #countProjection(rec: Recorder, weight: GpuMatrix, lora: FusedLora | undefined): void {
    rec.countWeightBytes(matrixBytes(weight));
    this.#countAdapter(rec, lora);
  }

  #countAdapter(rec: Recorder, lora: FusedLora | undefined): void {
    for (const p of lora?.parts ?? []) rec.countWeightBytes(p.a.byteLength + p.b.byteLength);
  }

  /** Whether layer `layer` applies RoPE (all do, except those a SmolLM3 config exempts). */
  rotates(layer: number): boolean {
    return this.config.ropeLayers?.[layer] ?? true;
  }

  /**
   * y += scale · dropout(x)·Aᵀ·Bᵀ for each adapted projection of `targets`, which share the input
   * x (a layer's q, k and v; gate and up): one dispatch a projection for one token, else their
   * h = dropout(x)·Aᵀ at once (LoraOp.recordGroupForward) and then each output.
   */
  #recordAdapters(
    rec: Recorder,
    l: number,
    targets: LoraTarget[],
    x: Tensor,
    ys: Tensor[],
    b: LayerBuffers,
    step: ForwardStep,
  ): void {
    const adapter = step.adapter;
    if (!adapter) return;
    const rows = x.shape[0];
    const byRows = (t: Tensor) => t.reshape([rows, t.size / rows]);
    const parts = targets.flatMap((target, i) => {
      const p = adapter.get(l, target);
      if (!p) return [];
      rec.countWeightBytes(p.a.byteLength + p.b.byteLength);
      const dropout = step.dropout && step.dropout.p > 0
        ? { p: step.dropout.p, seed: projectionDropoutSeed(step.dropout.seed, l, target) }
        : undefined;
      return [{ a: p.a, b: p.b, h: b.loraH(target), y: ys[i], dropout }];
    });
    if (rows === 1 && !step.dropout?.p && adapter.rank <= LORA_DECODE_MAX_RANK) {
      for (const p of parts) this.ops.loraDecode.record(rec, x, p.a, p.b, p.y, adapter.scale);
      return;
    }
    if (parts.length) {
      const grouped = parts.map((p) => ({ ...p, y: byRows(p.y) }));
      this.ops.lora.recordGroupForward(rec, { x: byRows(x), parts: grouped, scale: adapter.scale });
    }
  }

  /** The quantized kernels; only called for quantized weights, which compiled them. */
  get #quant(): QuantOps {
    if (!this.ops.quant) throw new KernelUsageError("this model has no quantized weights");
    return this.ops.quant;
  }

  /**
   * y (=|+=) x·Wᵀ (+ bias) for x [t, in] and W [out, in]: the matrix-vector kernel for one row
   * (it streams each weight once), the tiled matmul for more. f16 weights (see gpu_weights.ts)
   * take matvec's f16 path when it was compiled, else matmul's f16-B kernel; quantized weights
   * their own kernels, which dequantize blocks as they read them. With `columns` (a part of a
   * split head, no bias), y is [t, width] and W's outputs go to its columns [columns, columns + out).
   */
  recordLinear(
    rec: Recorder,
    x: Tensor,
    weight: GpuMatrix,
    y: Tensor,
    options: { accumulate?: boolean; bias?: Tensor; columns?: number } = {},
  ): void {
    const { accumulate = false, bias } = options;
    const [rows, inDim] = [x.shape[0], x.size / x.shape[0]];
    const outDim = isQuantized(weight) ? weight.rows : weight.shape[0];
    let columns = options.columns;
    if (columns !== undefined && bias) {
      throw new KernelUsageError("a linear layer writes a column window only without a bias");
    }
    if (columns !== undefined && rows === 1 && (columns * 4) % PORTABLE_OFFSET_ALIGNMENT === 0) {
      // One row: the window is a contiguous slice at a bindable offset.
      y = y.reshape([y.size]).rows(columns, outDim);
      columns = undefined;
    }
    if (columns !== undefined && columns === 0 && y.size === rows * outDim) columns = undefined;
    rec.countWeightBytes(matrixBytes(weight) + (bias?.byteLength ?? 0));
    if (isQuantized(weight)) {
      if (rows === 1 && columns === undefined) {
        this.#quant.matvec.record(rec, weight, x.reshape([inDim]), y.reshape([weight.rows]), {
          bias,
          accumulate,
        });
        return;
      }
      const flat = (t: Tensor) => t.reshape([rows, t.size / rows]);
      this.#quant.matmul.recordForward(rec, flat(x), weight, flat(y), { accumulate, columns });
      if (bias) this.ops.bias.record(rec, y, bias);
      return;
    }
    const matvec = weight.dtype === "f32" || this.ops.matvec.f16;
    if (rows === 1 && columns === undefined && inDim % 4 === 0 && matvec) {
      this.ops.matvec.record(rec, weight, x.reshape([inDim]), y.reshape([outDim]), {
        bias,
        accumulate,
      });
      return;
    }
    const flat = (t: Tensor) => columns === undefined ? t : t.reshape([rows, t.size / rows]);
    (accumulate ? this.ops.linearAdd : this.ops.linear).record(rec, flat(x), weight, flat(y), 1, {
      c: columns,
    });
    if (bias) this.ops.bias.record(rec, y, bias);
  }

  /**
   * dX (=|+=) dY·W for dY [t, out] and W [out, in]: the gradient of a projection's input through
   * its frozen weight (no weight gradient is ever computed). With `columns` (a part of a split
   * head), dY is [t, width] and W's rows meet its columns [columns, columns + out).
   */
  recordInputGradient(
    rec: Recorder,
    dY: Tensor,
    weight: GpuMatrix,
    dX: Tensor,
    accumulate = false,
    columns?: number,
  ): void {
    rec.countWeightBytes(matrixBytes(weight));
    const outDim = isQuantized(weight) ? weight.rows : weight.shape[0];
    if (columns === 0 && dY.size === dY.shape[0] * outDim) columns = undefined;
    if (isQuantized(weight)) {
      const rows = dY.shape[0];
      const flat = (t: Tensor) => t.reshape([rows, t.size / rows]);
      this.#quant.matmul.recordInputGrad(rec, flat(dY), weight, flat(dX), { accumulate, columns });
      return;
    }
    (accumulate ? this.ops.inputGradAdd : this.ops.inputGrad).record(rec, dY, weight, dX, 1, {
      a: columns,
    });
  }

  /** Frees the weights. Caches and activations are freed by their owners. */
  destroy(): void {
    this.weights.destroy();
  }
}
