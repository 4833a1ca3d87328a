import type { Gpu } from "../gpu/device.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import type { KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import { kvDim, type ModelConfig, qDim } from "../formats/config.ts";
import type { ModelWeights } from "../formats/tensor_data.ts";
import { AttentionOp } from "../ops/attention.ts";
import { BiasOp } from "../ops/bias.ts";
import { CopyOp } from "../ops/copy.ts";
import { EmbeddingOp } from "../ops/embedding.ts";
import { MatmulOp } from "../ops/matmul.ts";
import { MatvecOp } from "../ops/matvec.ts";
import { LoraOp } from "../ops/lora.ts";
import { LoraDecodeOp } from "../ops/lora_decode.ts";
import type { LoraAdapter, LoraTarget } from "../templora/adapter.ts";
import { RmsNormOp } from "../ops/rmsnorm.ts";
import { RopeOp } from "../ops/rope.ts";
import { SwiGluOp } from "../ops/swiglu.ts";
import { type GpuWeights, uploadWeights, type UploadWeightsOptions } from "./gpu_weights.ts";
import { KvCache } from "./kv_cache.ts";

/** Activation buffers for steps of up to `maxRows` tokens. */
export class Activations {
  /** [maxRows, dim] residual stream */
  readonly x: Tensor;
  /** [maxRows, dim] normalised input of a block */
  readonly h: Tensor;
  /** [maxRows, nHeads, headDim] */
  readonly q: Tensor;
  /** [maxRows, nKvHeads, headDim] before RoPE, then rotated into the cache */
  readonly k: Tensor;
  /** [maxRows, nKvHeads, headDim] before it is copied into the cache */
  readonly v: Tensor;
  /** [1, dim] the last row of x, for "last" logits */
  readonly last: Tensor;
  /** [maxRows, nHeads, headDim] */
  readonly attn: Tensor;
  /** [maxRows, hidden] */
  readonly gate: Tensor;
  /** [maxRows, hidden] */
  readonly up: Tensor;
  /** [maxRows, hidden] */
  readonly act: Tensor;
  /** [maxRows, vocab] */
  readonly logits: Tensor;
  #loraH: Tensor | undefined; // [maxRows, rank] an adapter's x·Aᵀ, made on first use

  /** Allocates every buffer for steps of up to `maxRows` tokens. */
  constructor(readonly gpu: Gpu, config: ModelConfig, readonly maxRows: number) {
    const { dim, nHeads, headDim, hiddenDim, vocabSize } = config;
    const make = (shape: number[], label: string) => createTensor(gpu, shape, "f32", label);
    this.x = make([maxRows, dim], "x");
    this.h = make([maxRows, dim], "h");
    this.q = make([maxRows, nHeads, headDim], "q");
    this.k = make([maxRows, config.nKvHeads, headDim], "k");
    this.v = make([maxRows, config.nKvHeads, headDim], "v");
    this.last = make([1, dim], "last row");
    this.attn = make([maxRows, nHeads, headDim], "attn");
    this.gate = make([maxRows, hiddenDim], "gate");
    this.up = make([maxRows, hiddenDim], "up");
    this.act = make([maxRows, hiddenDim], "act");
    this.logits = make([maxRows, vocabSize], "logits");
  }

  /** Scratch for an adapter of rank `rank`: [maxRows, rank]. */
  loraScratch(rank: number): Tensor {
    if (this.#loraH?.shape[1] !== rank) {
      this.#loraH?.destroy();
      this.#loraH = createTensor(this.gpu, [this.maxRows, rank], "f32", "lora h");
    }
    return this.#loraH;
  }

  #all(): Tensor[] {
    const { x, h, q, k, v, last, attn, gate, up, act, logits } = this;
    const all = [x, h, q, k, v, last, attn, gate, up, act, logits];
    return this.#loraH ? [...all, this.#loraH] : all;
  }

  /** Bytes held on the GPU. */
  get bytes(): number {
    return this.#all()
      .reduce((sum, t) => sum + t.byteLength, 0);
  }

  /** Frees every buffer. */
  destroy(): void {
    for (const t of this.#all()) t.destroy();
  }
}

/** Which rows of a step get logits. */
export type LogitRows = "last" | "all";

/** One forward step: `tokens` ids read from `ids` at `offset`, appended to the cache. */
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
  activations: Activations;
  /** "last": logits of the last token in logits row 0; "all": row t for token t. */
  logits: LogitRows;
  /** A LoRA adapter to apply on top of the base weights. */
  adapter?: LoraAdapter;
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
  /** LoRA forward and backward. */
  lora: LoraOp;
  /** LoRA for one token in one dispatch (decode). */
  loraDecode: LoraDecodeOp;
}

/** Awaits every promise of a record, compiling kernels concurrently. */
async function compileAll<T extends Record<string, unknown>>(
  pending: { [K in keyof T]: Promise<T[K]> },
): Promise<T> {
  const keys = Object.keys(pending) as (keyof T)[];
  const values = await Promise.all(keys.map((k) => pending[k]));
  return Object.fromEntries(keys.map((k, i) => [k, values[i]])) as T;
}

/** A Llama-family model on the GPU: weights, compiled kernels, and the forward pass. */
export class LlamaModel {
  private constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly weights: GpuWeights,
    private readonly ops: ForwardOps,
  ) {}

  /** Uploads the weights and compiles the kernels. */
  static async create(
    gpu: Gpu,
    registry: KernelRegistry,
    model: ModelWeights,
    file = "model",
    options: UploadWeightsOptions = {},
  ): Promise<LlamaModel> {
    const config = model.config;
    const weights = uploadWeights(gpu, model, file, options);
    try {
      const ops = await compileAll({
        embedding: EmbeddingOp.create(registry),
        rmsnorm: RmsNormOp.create(registry),
        rope: RopeOp.create(registry, {
          headDim: config.headDim,
          base: config.ropeTheta,
          pairs: config.ropePairs,
        }),
        attention: AttentionOp.create(registry, config.headDim),
        swiglu: SwiGluOp.create(registry),
        bias: BiasOp.create(registry),
        copy: CopyOp.create(registry),
        linear: MatmulOp.create(registry, { transB: true }),
        linearAdd: MatmulOp.create(registry, { transB: true, accumulate: true }),
        matvec: MatvecOp.create(registry, { f16: weights.f16Tensors.length > 0 }),
        lora: LoraOp.create(registry),
        loraDecode: LoraDecodeOp.create(registry),
      });
      return new LlamaModel(gpu, config, weights, ops);
    } catch (error) {
      weights.destroy();
      throw error;
    }
  }

  /** The compiled kernels, for the training pass that reuses them. */
  get kernels(): Readonly<ForwardOps> {
    return this.ops;
  }

  /** A KV cache of `capacity` positions (at most the model's trained length). */
  createCache(capacity: number): KvCache {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > this.config.maxSeqLen) {
      throw new KernelUsageError(
        `KV cache capacity ${capacity} must be in 1..${this.config.maxSeqLen} (the model's length)`,
      );
    }
    return new KvCache(this.gpu, this.config, capacity);
  }

  /** Activation buffers for steps of up to `maxRows` tokens. */
  createActivations(maxRows: number): Activations {
    return new Activations(this.gpu, this.config, maxRows);
  }

  /**
   * Records one forward step: embeds the tokens, runs every layer with the cache (writing this
   * step's keys and values at rows cache.length..), and writes logits. Advances cache.length.
   */
  recordForward(rec: Recorder, step: ForwardStep): void {
    const { ids, offset, tokens: t, cache, activations: act } = step;
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
    const { embedding, rmsnorm, rope, attention, swiglu, copy } = this.ops;
    const adapter = step.adapter;
    const loraH = adapter ? act.loraScratch(adapter.settings.rank).rows(0, t) : undefined;
    let layerIndex = 0;
    const adapt = (target: LoraTarget | undefined, x: Tensor, y: Tensor) => {
      const p = target && adapter?.get(layerIndex, target);
      if (!p || !loraH || !adapter) return;
      const rows = x.shape[0];
      if (rows === 1 && adapter.settings.rank <= 64) {
        this.ops.loraDecode.record(rec, x, p.a, p.b, y, adapter.scale);
        return;
      }
      this.ops.lora.recordForward(rec, {
        x: x.reshape([rows, x.size / rows]),
        a: p.a,
        b: p.b,
        h: loraH,
        y: y.reshape([rows, y.size / rows]),
        scale: adapter.scale,
      });
    };
    const linear = (x: Tensor, weight: Tensor, y: Tensor, bias?: Tensor, target?: LoraTarget) => {
      this.#linear(rec, x, weight, y, false, bias);
      adapt(target, x, y);
    };
    const linearAdd = (x: Tensor, weight: Tensor, y: Tensor, target: LoraTarget) => {
      this.#linear(rec, x, weight, y, true);
      adapt(target, x, y);
    };
    const w = this.weights;
    const x = act.x.rows(0, t);
    const h = act.h.rows(0, t);
    const q = act.q.rows(0, t);
    const qFlat = q.reshape([t, qDim(c)]);
    const k = act.k.rows(0, t);
    const kFlat = k.reshape([t, kvDim(c)]);
    const vFlat = act.v.rows(0, t).reshape([t, kvDim(c)]);
    const attn = act.attn.rows(0, t);
    const gate = act.gate.rows(0, t);
    const up = act.up.rows(0, t);
    const hidden = act.act.rows(0, t);

    embedding.recordForward(rec, w.embed, ids, x, offset);
    for (let l = 0; l < c.nLayers; l++) {
      layerIndex = l;
      const layer = w.layers[l];
      rmsnorm.recordForward(rec, x, layer.attnNorm, h, c.normEps);
      linear(h, layer.q, qFlat, layer.qBias, "q");
      linear(h, layer.k, kFlat, layer.kBias, "k");
      linear(h, layer.v, vFlat, layer.vBias, "v");
      // Keys are rotated on their way into the cache; values are copied; both land at row past.
      rope.recordForwardInPlace(rec, q, { pos0: past });
      rope.recordForward(rec, k, cache.k[l], { pos0: past, dstRow: past });
      copy.record(rec, vFlat, cache.v[l], { dstOffset: past * kvDim(c) });
      attention.recordForward(rec, { q, k: cache.k[l], v: cache.v[l], out: attn, past });
      linearAdd(attn.reshape([t, qDim(c)]), layer.o, x, "o");
      rmsnorm.recordForward(rec, x, layer.ffnNorm, h, c.normEps);
      linear(h, layer.gate, gate, undefined, "gate");
      linear(h, layer.up, up, undefined, "up");
      swiglu.recordForward(rec, gate, up, hidden);
      linearAdd(hidden, layer.down, x, "down");
    }
    let rows = x;
    if (step.logits === "last") {
      copy.record(rec, x, act.last, { srcOffset: (t - 1) * c.dim, count: c.dim });
      rows = act.last;
    }
    const normed = act.h.rows(0, rows.shape[0]);
    rmsnorm.recordForward(rec, rows, w.norm, normed, c.normEps);
    linear(normed, w.head, act.logits.rows(0, rows.shape[0]));
    cache.length = past + t;
  }

  /**
   * y (=|+=) x·Wᵀ (+ bias) for x [t, in] and W [out, in]: the matrix-vector kernel for one row
   * (it streams each weight once), the tiled matmul for more. f16 weights (see gpu_weights.ts)
   * take matvec's f16 path when it was compiled, else matmul's f16-B kernel.
   */
  #linear(rec: Recorder, x: Tensor, weight: Tensor, y: Tensor, accumulate: boolean, bias?: Tensor) {
    const [rows, inDim] = [x.shape[0], x.size / x.shape[0]];
    if (rows === 1 && inDim % 4 === 0 && (weight.dtype === "f32" || this.ops.matvec.f16)) {
      const outDim = weight.shape[0];
      this.ops.matvec.record(rec, weight, x.reshape([inDim]), y.reshape([outDim]), {
        bias,
        accumulate,
      });
      return;
    }
    (accumulate ? this.ops.linearAdd : this.ops.linear).record(rec, x, weight, y);
    if (bias) this.ops.bias.record(rec, y, bias);
  }

  /** Frees the weights. Caches and activations are freed by their owners. */
  destroy(): void {
    this.weights.destroy();
  }
}
