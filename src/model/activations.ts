import type { Gpu } from "../gpu/device.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import { createTensor, slotElements, slotViews, type Tensor } from "../gpu/tensor.ts";
import { LORA_TARGETS, type LoraTarget } from "../core/lora.ts";
import type { ModelConfig } from "../formats/config.ts";
import type { ModelAdapter } from "./adapter.ts";

/**
 * Where one layer of a forward step reads and writes, each a view of `t` rows. Inference reuses
 * one set for every layer (the residual stream updated in place); the training forward keeps a
 * set per layer, so the backward finds what it needs.
 */
export interface LayerBuffers {
  /** [t, dim] residual stream entering the layer. */
  xIn: Tensor;
  /** [t, dim] input RMSNorm output. */
  h1: Tensor;
  /** [t] its reciprocal RMS, kept for the backward (training only). */
  rstd1?: Tensor;
  /** [t, nHeads * headDim] the query projection, when q is its head-wise RMSNorm (Qwen3). */
  qProj?: Tensor;
  /** [t * nHeads] that norm's reciprocal RMS (training only). */
  qRstd?: Tensor;
  /** [t, nKvHeads * headDim] the key projection, when k is its head-wise RMSNorm. */
  kProj?: Tensor;
  /** [t * nKvHeads] that norm's reciprocal RMS (training only). */
  kRstd?: Tensor;
  /** [t, nHeads, headDim] queries, rotated in place. */
  q: Tensor;
  /** [t, nKvHeads, headDim] keys before RoPE; rotated on their way into the cache. */
  k: Tensor;
  /** [t, nKvHeads, headDim] values before they are copied into the cache. */
  v: Tensor;
  /** [t, nHeads, headDim] attention output. */
  attn: Tensor;
  /** [t, nHeads] attention log-sum-exp, kept for the backward (training only). */
  lse?: Tensor;
  /** [t, dim] residual after attention (xIn itself when updated in place). */
  x2: Tensor;
  /** [t, dim] post-attention RMSNorm output. */
  h2: Tensor;
  /** [t] its reciprocal RMS (training only). */
  rstd2?: Tensor;
  /** [t, hidden] gate projection. */
  gate: Tensor;
  /** [t, hidden] up projection. */
  up: Tensor;
  /** [t, hidden] SwiGLU output. */
  act: Tensor;
  /** [t, dim] residual leaving the layer (x2 itself when updated in place). */
  xOut: Tensor;
  /** [t, rank] an adapter's dropout(x)·Aᵀ for `target`, when the step applies one. */
  loraH(target: LoraTarget): Tensor;
  /**
   * [3 · rank] room for the h of every part of one fused decode product (q, k and v at most),
   * when the step applies an adapter; inference only.
   */
  loraHParts?: () => Tensor;
}

/** The buffers a forward step writes: per layer, after the last layer, and the logits. */
export interface ForwardBuffers {
  /** Rows (tokens) a step may have. */
  readonly maxRows: number;
  /** Layer `layer`'s buffers for a step of `t` rows. */
  layer(layer: number, t: number): LayerBuffers;
  /** [rows, dim] the final RMSNorm output, and its reciprocal RMS [rows] when kept. */
  final(rows: number): { normed: Tensor; rstd?: Tensor };
  /** [1, dim] the last row of the residual stream, for "last" logits. */
  readonly lastRow: Tensor;
  /** [maxRows, vocab] logits. */
  readonly logits: Tensor;
  /** Makes sure `loraH` has room for an adapter of rank `rank`. */
  prepareAdapter(rank: number): void;
}

/** Allocates tensors and remembers them, so one call frees them all. */
class TensorPool {
  readonly tensors: Tensor[] = [];
  constructor(private readonly gpu: Gpu) {}

  make(shape: number[], label: string): Tensor {
    const t = createTensor(this.gpu, shape, "f32", label);
    this.tensors.push(t);
    return t;
  }

  /** Tensors of `shapes` in one buffer (see slotViews). */
  slots(shapes: number[][], label: string): Tensor[] {
    return slotViews(this.make([slotElements(shapes)], label), shapes);
  }

  get bytes(): number {
    return this.tensors.reduce((sum, t) => sum + t.byteLength, 0);
  }

  destroy(): void {
    for (const t of this.tensors) t.destroy();
    this.tensors.length = 0;
  }
}

/**
 * Activation buffers for inference steps (prefill and decode) of up to `maxRows` tokens: one set
 * shared by every layer, the residual stream updated in place.
 */
export class StepActivations implements ForwardBuffers {
  /** [maxRows, dim] residual stream */
  readonly x: Tensor;
  /** [maxRows, dim] normalised input of a block (and of the LM head) */
  readonly h: Tensor;
  /** [maxRows, nHeads, headDim] */
  readonly q: Tensor;
  /** [maxRows, nKvHeads, headDim] before RoPE, then rotated into the cache */
  readonly k: Tensor;
  /** [maxRows, nKvHeads, headDim] before it is copied into the cache */
  readonly v: Tensor;
  /** [1, dim] the last row of x, for "last" logits */
  readonly lastRow: Tensor;
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
  /** [maxRows, nHeads * headDim] the query projection before its head norm (qkNorm models). */
  readonly qProj?: Tensor;
  /** [maxRows, nKvHeads * headDim] the key projection before its head norm (qkNorm models). */
  readonly kProj?: Tensor;
  #pool: TensorPool;
  #loraH: Tensor | undefined; // [max(maxRows, 3), rank] an adapter's x·Aᵀ, made on first use

  /** Allocates every buffer for steps of up to `maxRows` tokens. */
  constructor(readonly gpu: Gpu, config: ModelConfig, readonly maxRows: number) {
    const { dim, nHeads, nKvHeads, headDim, hiddenDim, vocabSize } = config;
    const pool = this.#pool = new TensorPool(gpu);
    this.x = pool.make([maxRows, dim], "x");
    this.h = pool.make([maxRows, dim], "h");
    this.q = pool.make([maxRows, nHeads, headDim], "q");
    // One buffer, so that RoPE rotates k into the cache and copies v in one dispatch.
    [this.k, this.v] = pool.slots(
      [[maxRows, nKvHeads, headDim], [maxRows, nKvHeads, headDim]],
      "k v",
    );
    this.lastRow = pool.make([1, dim], "last row");
    this.attn = pool.make([maxRows, nHeads, headDim], "attn");
    this.gate = pool.make([maxRows, hiddenDim], "gate");
    this.up = pool.make([maxRows, hiddenDim], "up");
    this.act = pool.make([maxRows, hiddenDim], "act");
    this.logits = pool.make([maxRows, vocabSize], "logits");
    if (config.qkNorm) {
      this.qProj = pool.make([maxRows, nHeads * headDim], "q projection");
      this.kProj = pool.make([maxRows, nKvHeads * headDim], "k projection");
    }
  }

  /** The same views for every layer: x is updated in place. */
  layer(_layer: number, t: number): LayerBuffers {
    const x = this.x.rows(0, t);
    const h = this.h.rows(0, t);
    return {
      xIn: x,
      h1: h,
      qProj: this.qProj?.rows(0, t),
      kProj: this.kProj?.rows(0, t),
      q: this.q.rows(0, t),
      k: this.k.rows(0, t),
      v: this.v.rows(0, t),
      attn: this.attn.rows(0, t),
      x2: x,
      h2: h,
      gate: this.gate.rows(0, t),
      up: this.up.rows(0, t),
      act: this.act.rows(0, t),
      xOut: x,
      loraH: () => this.#loraH!.rows(0, t),
      loraHParts: () => {
        const h = this.#loraH!;
        return h.rows(0, 3).reshape([3 * h.shape[1]]);
      },
    };
  }

  /** The final norm writes into h. */
  final(rows: number): { normed: Tensor } {
    return { normed: this.h.rows(0, rows) };
  }

  /**
   * Makes room for an adapter of rank `rank` ([maxRows, rank] scratch reused by every layer, at
   * least three rows for a fused product's parts).
   */
  prepareAdapter(rank: number): void {
    if (this.#loraH?.shape[1] === rank) return;
    this.#loraH?.destroy();
    this.#loraH = createTensor(this.gpu, [Math.max(this.maxRows, 3), rank], "f32", "lora h");
  }

  /** Bytes held on the GPU. */
  get bytes(): number {
    return this.#pool.bytes + (this.#loraH?.byteLength ?? 0);
  }

  /** Frees every buffer. */
  destroy(): void {
    this.#pool.destroy();
    this.#loraH?.destroy();
    this.#loraH = undefined;
  }
}

/** What one layer's backward needs, kept by the training forward. */
interface SavedLayer {
  xIn: Tensor; // [T, dim] residual stream entering the layer
  h1: Tensor; // [T, dim] input norm output
  rstd1: Tensor; // [T]
  q: Tensor; // [T, nHeads, headDim] after RoPE
  // qkNorm models: projections [T, heads * headDim] before the head norms, rstd [T, heads].
  headNorms?: { qProj: Tensor; qRstd: Tensor; kProj: Tensor; kRstd: Tensor };
  attn: Tensor; // [T, nHeads, headDim]
  lse: Tensor; // [T, nHeads]
  x2: Tensor; // [T, dim] residual after attention
  h2: Tensor; // [T, dim] post-attention norm output
  rstd2: Tensor; // [T]
  gate: Tensor; // [T, hidden]
  up: Tensor; // [T, hidden]
  act: Tensor; // [T, hidden]
  loraH: Map<LoraTarget, Tensor>; // [T, rank] each: dropout(x)·Aᵀ
}

/** Options of {@link TrainingActivations}. */
export interface TrainingActivationOptions {
  /**
   * Keep only each layer's input; the rest lives in one set of buffers shared by every layer, and
   * the backward recomputes a layer's forward from its input before it runs (default false).
   */
  recompute?: boolean;
  /** Rows of logits held at once (default maxRows): the LM head and loss run in tiles of rows. */
  logitRows?: number;
}

/**
 * Activation buffers of a training forward over up to `maxRows` tokens: every layer keeps what
 * its backward reads (norm inputs and reciprocal RMS, rotated queries, attention output and
 * log-sum-exp, MLP activations, the adapter's x·Aᵀ), or with `recompute` only its input. Rotated
 * keys and values stay in the KV cache the step writes. The residual stream leaving layer l is
 * layer l + 1's input.
 */
export class TrainingActivations implements ForwardBuffers {
  /** [maxRows, dim] residual stream after the last layer. */
  readonly xFinal: Tensor;
  /** [maxRows, dim] final norm output. */
  readonly normed: Tensor;
  /** [maxRows] final norm reciprocal RMS. */
  readonly rstdFinal: Tensor;
  /** [1, dim] unused by training steps ("all" logits), present for the interface. */
  readonly lastRow: Tensor;
  /** [logitRows, vocab] one tile of rows of logits. */
  readonly logits: Tensor;
  /** Rows of `logits`. */
  readonly logitRows: number;
  /** Whether the backward must recompute each layer (only layer inputs are kept). */
  readonly recompute: boolean;
  readonly #saved: SavedLayer[] = [];
  readonly #inputs: Tensor[] = []; // with recompute: [maxRows, dim] each layer's input
  readonly #k: Tensor; // [maxRows, nKvHeads, headDim] keys before RoPE, shared by every layer
  readonly #v: Tensor; // [maxRows, nKvHeads, headDim] values before the cache copy, shared
  readonly #rank: number;
  #pool: TensorPool;

  /** Allocates every buffer; `adapter` says which projections keep x·Aᵀ and of what rank. */
  constructor(
    gpu: Gpu,
    config: ModelConfig,
    readonly maxRows: number,
    adapter: ModelAdapter,
    options: TrainingActivationOptions = {},
  ) {
    const T = maxRows;
    this.#rank = adapter.rank;
    this.recompute = options.recompute ?? false;
    this.logitRows = Math.max(1, Math.min(T, options.logitRows ?? T));
    const { dim, nHeads, nKvHeads, headDim: hd, hiddenDim } = config;
    const pool = this.#pool = new TensorPool(gpu);
    const kept = this.recompute ? 1 : config.nLayers;
    if (this.recompute) {
      for (let l = 0; l < config.nLayers; l++) this.#inputs.push(pool.make([T, dim], `xIn ${l}`));
    }
    for (let l = 0; l < kept; l++) {
      // Shared buffers serve every layer: any layer's adapted projection needs one. The layer's
      // h are slots of one buffer, so that projections sharing an input compute theirs at once.
      const targets = LORA_TARGETS.filter((target) =>
        this.recompute
          ? Array.from({ length: config.nLayers }, (_, i) => adapter.get(i, target)).some(Boolean)
          : adapter.get(l, target)
      );
      const hSlots = targets.length
        ? pool.slots(targets.map(() => [T, adapter.rank]), `lora h ${l}`)
        : [];
      const loraH = new Map(targets.map((target, i) => [target, hSlots[i]]));
      // gate and up in one buffer, so that the adapter's products for them run at once.
      const [gate, up] = pool.slots([[T, hiddenDim], [T, hiddenDim]], `gate up ${l}`);
      this.#saved.push({
        xIn: this.recompute ? this.#inputs[0] : pool.make([T, dim], `xIn ${l}`),
        h1: pool.make([T, dim], `h1 ${l}`),
        rstd1: pool.make([T], `rstd1 ${l}`),
        q: pool.make([T, nHeads, hd], `q ${l}`),
        headNorms: config.qkNorm
          ? {
            qProj: pool.make([T, nHeads * hd], `q projection ${l}`),
            qRstd: pool.make([T, nHeads], `q rstd ${l}`),
            kProj: pool.make([T, nKvHeads * hd], `k projection ${l}`),
            kRstd: pool.make([T, nKvHeads], `k rstd ${l}`),
          }
          : undefined,
        attn: pool.make([T, nHeads, hd], `attn ${l}`),
        lse: pool.make([T, nHeads], `lse ${l}`),
        x2: pool.make([T, dim], `x2 ${l}`),
        h2: pool.make([T, dim], `h2 ${l}`),
        rstd2: pool.make([T], `rstd2 ${l}`),
        gate,
        up,
        act: pool.make([T, hiddenDim], `act ${l}`),
        loraH,
      });
    }
    [this.#k, this.#v] = pool.slots([[T, nKvHeads, hd], [T, nKvHeads, hd]], "train k v");
    this.xFinal = pool.make([T, dim], "xFinal");
    this.normed = pool.make([T, dim], "final normed");
    this.rstdFinal = pool.make([T], "final rstd");
    this.lastRow = pool.make([1, dim], "last row");
    this.logits = pool.make([this.logitRows, config.vocabSize], "train logits");
  }

  /** Checks the rank: these buffers were sized for one adapter. */
  prepareAdapter(rank: number): void {
    if (rank !== this.#rank) {
      throw new KernelUsageError(
        `training activations were made for rank ${this.#rank}, not ${rank}`,
      );
    }
  }

  /** Layer `layer`'s saved buffers, t rows. */
  layer(layer: number, t: number): LayerBuffers {
    const s = this.#saved[this.recompute ? 0 : layer];
    const rows = (x: Tensor) => x.rows(0, t);
    const perHead = (x: Tensor) => x.reshape([x.size]);
    const input = (l: number) => this.recompute ? this.#inputs[l] : this.#saved[l].xIn;
    const last = (this.recompute ? this.#inputs : this.#saved).length - 1;
    const next = layer < last ? input(layer + 1) : this.xFinal;
    return {
      xIn: rows(input(layer)),
      h1: rows(s.h1),
      rstd1: rows(s.rstd1),
      qProj: s.headNorms && rows(s.headNorms.qProj),
      qRstd: s.headNorms && perHead(rows(s.headNorms.qRstd)),
      kProj: s.headNorms && rows(s.headNorms.kProj),
      kRstd: s.headNorms && perHead(rows(s.headNorms.kRstd)),
      q: rows(s.q),
      k: rows(this.#k),
      v: rows(this.#v),
      attn: rows(s.attn),
      lse: rows(s.lse),
      x2: rows(s.x2),
      h2: rows(s.h2),
      rstd2: rows(s.rstd2),
      gate: rows(s.gate),
      up: rows(s.up),
      act: rows(s.act),
      xOut: rows(next),
      loraH: (target) => rows(s.loraH.get(target)!),
    };
  }

  /** The final norm's output and reciprocal RMS. */
  final(rows: number): { normed: Tensor; rstd: Tensor } {
    return { normed: this.normed.rows(0, rows), rstd: this.rstdFinal.rows(0, rows) };
  }

  /** Bytes held on the GPU. */
  get bytes(): number {
    return this.#pool.bytes;
  }

  /** Frees every buffer. */
  destroy(): void {
    this.#pool.destroy();
  }
}
