import type { Gpu } from "../gpu/device.ts";
import type { KernelRegistry } from "../gpu/kernel.ts";
import { PORTABLE_OFFSET_ALIGNMENT, type Recorder } from "../gpu/recorder.ts";
import { readF32 } from "../gpu/readback.ts";
import { createTensor, slotElements, slotViews, Tensor, writeTensor } from "../gpu/tensor.ts";
import type { ForwardStep, LlamaModel } from "../model/llama.ts";
import type { ModelConfig } from "../formats/config.ts";
import {
  type LayerBuffers,
  type TrainingActivationOptions,
  TrainingActivations,
} from "../model/activations.ts";
import type { AdapterMatrices } from "../model/adapter.ts";
import { planningGpu } from "../gpu/planning.ts";
import type { KvCache } from "../model/kv_cache.ts";
import { InvalidSettingError } from "../model/errors.ts";
import { AdamWOp, biasCorrections } from "../ops/adamw.ts";
import { CrossEntropyOp } from "../ops/cross_entropy.ts";
import { GradNormOp, STATS } from "../ops/grad_norm.ts";
import { type LoraTarget, projectionDropoutSeed } from "../core/lora.ts";
import type { LoraBackwardArgs, LoraDropout } from "../ops/lora.ts";
import type { LoraAdapter } from "./adapter.ts";
import type { GpuMatrix } from "../model/gpu_weights.ts";

/** Optimizer settings of adapter training (the paper's defaults in {@link DEFAULT_OPTIMIZER}). */
export interface OptimizerSettings {
  /** Peak learning rate (reached after warm-up). */
  lr: number;
  /** AdamW first-moment decay rate. */
  beta1: number;
  /** AdamW second-moment decay rate. */
  beta2: number;
  /** AdamW epsilon, added to the square root of the bias-corrected second moment. */
  eps: number;
  /** AdamW decoupled weight decay (0 = off). */
  weightDecay: number;
  /** Global gradient-norm clip (Infinity = off). */
  maxGradNorm: number;
  /** LoRA dropout on the adapter's input (0 = off). */
  dropout: number;
  /** Steps of linear warm-up: step k (0-based) uses lr * min(1, (k + 1) / (warmup + 1)). */
  warmupSteps: number;
}

/** AdamW lr 5e-5, betas (0.9, 0.999), eps 1e-7, no weight decay, clip 1.0, dropout 0.05. */
export const DEFAULT_OPTIMIZER: OptimizerSettings = {
  lr: 5e-5,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-7,
  weightDecay: 0,
  maxGradNorm: 1,
  dropout: 0.05,
  warmupSteps: 2,
};

/** What one training step or scoring pass reports. */
export interface StepReport {
  /** Mean cross-entropy (nats per token) over the scored tokens, before the update. */
  loss: number;
  /** Summed cross-entropy over the scored tokens. */
  lossSum: number;
  /** Scored tokens. */
  count: number;
  /** Global gradient norm before clipping (training only). */
  gradNorm?: number;
  /** True when a non-finite loss or gradient made the step skip the update. */
  skipped?: boolean;
  /** Learning rate used (training only). */
  lr?: number;
}

/**
 * Which predictions of a sequence carry loss: an index `from` (every token at index >= from is
 * predicted from the ones before it), or one flag per token (true: the token at that index is
 * predicted; index 0 never is, having nothing before it).
 */
export type LossSelection = number | readonly boolean[];

/** What {@link Trainer.score} reports: the loss, and on request the greedy predictions. */
export interface ScoreReport extends StepReport {
  /**
   * With `predictions`: for each scored token in order, the id the model ranks first at its
   * position given the true tokens before it (so greedy decoding reproduces a run of scored
   * tokens exactly when every prediction in it equals its token).
   */
  predicted?: number[];
}

/**
 * Trains a LoRA adapter on a token sequence with the base model frozen, entirely on the GPU: a
 * forward pass that keeps what the backward needs, masked cross-entropy, the backward through
 * every layer (input gradients only through the base weights), global-norm clipping and AdamW,
 * all recorded into one submission. Also scores sequences (loss only), with or without the
 * adapter, for evaluation. Buffers are sized once for sequences of up to `maxTokens`.
 */
export class Trainer {
  /** Longest sequence (in tokens) the trainer's buffers hold. */
  readonly maxTokens: number;
  /** What the model's training forward keeps for the backward. */
  readonly activations: TrainingActivations;
  /** Rotated keys and values of every layer, positions 0..T (the forward's cache). */
  readonly cache: KvCache;
  readonly #s: TrainerScratch;

  private constructor(
    readonly model: LlamaModel,
    readonly adapter: LoraAdapter,
    maxTokens: number,
    private readonly ops: { ce: CrossEntropyOp; gradNorm: GradNormOp; adamw: AdamWOp },
    options: TrainerOptions,
  ) {
    this.maxTokens = maxTokens;
    const c = model.config;
    const T = maxTokens;
    const layout = trainingLayout(c, T, options, adapter.rank);
    this.activations = model.createTrainingActivations(T, adapter, layout);
    this.cache = model.createCache(T);
    this.#s = new TrainerScratch(model.gpu, c, T, adapter.rank, this.activations.logitRows);
  }

  /** A trainer for sequences of up to `maxTokens` tokens. */
  static async create(
    model: LlamaModel,
    adapter: LoraAdapter,
    registry: KernelRegistry,
    maxTokens: number,
    options: TrainerOptions = {},
  ): Promise<Trainer> {
    if (!Number.isInteger(maxTokens) || maxTokens < 2 || maxTokens > model.config.maxSeqLen) {
      throw new InvalidSettingError(
        `training sequences of ${maxTokens} tokens; the model takes 2..${model.config.maxSeqLen}`,
      );
    }
    const [ce, gradNorm, adamw] = await Promise.all([
      CrossEntropyOp.create(registry),
      GradNormOp.create(registry),
      AdamWOp.create(registry),
    ]);
    return new Trainer(model, adapter, maxTokens, { ce, gradNorm, adamw }, options);
  }

  /** Bytes the trainer's buffers hold on the GPU. */
  get bytes(): number {
    return this.#s.bytes + this.activations.bytes + this.cache.bytes + this.ops.gradNorm.bytes;
  }

  /**
   * Mean cross-entropy of predicting tokens[t + 1] from tokens[..t] for every t + 1 >= `from`
   * (or every t + 1 the selection flags), with the adapter applied or not. No gradients, no
   * update. With `predictions`, also the model's first-ranked id at each scored position.
   */
  async score(
    rec: Recorder,
    tokens: readonly number[],
    from: LossSelection,
    withAdapter: boolean,
    options: { predictions?: boolean } = {},
  ): Promise<ScoreReport> {
    const { count, span } = this.#load(tokens, from);
    const t = tokens.length;
    this.#recordForward(rec, t, withAdapter ? "adapter" : "base", 0);
    const predict = options.predictions ? scoredRows(tokens.length, from) : undefined;
    const predicted = await this.#recordHeadAndLoss(rec, t, span, { predict });
    this.ops.ce.recordTotals(
      rec,
      this.#s.loss.rows(0, tokens.length),
      this.#s.mask.rows(0, tokens.length),
      this.#s.totals,
    );
    rec.submit();
    const [lossSum] = await readF32(this.model.gpu, this.#s.totals);
    const report: ScoreReport = { loss: lossSum / count, lossSum, count };
    if (predict) report.predicted = predicted;
    return report;
  }

  /**
   * The LM head and the per-token loss over the rows of `span` (the first to the last scored
   * row), one tile of `logitRows` rows at a time, so the [t, vocab] logits never exist at once (a
   * head split by rows fills each tile's columns part by part). The other rows of [0, t) carry no
   * loss and no gradient: their loss (and dH) rows are zeroed, as the head would leave them, and
   * the head's work on a training example's context (most of its rows) is not done. With
   * `gradScale`, also each tile's dLogits and its rows of dH = dLogits·W_head (summed over the
   * head's parts). With `predict` (rows whose next token is scored), each tile is submitted and
   * the first-ranked id of those rows read back, in order.
   */
  async #recordHeadAndLoss(
    rec: Recorder,
    t: number,
    span: RowSpan,
    options: { gradScale?: number; predict?: readonly number[] },
  ): Promise<number[]> {
    const { ce } = this.ops;
    const act = this.activations;
    const normed = act.final(t).normed;
    const v = this.model.config.vocabSize;
    // Tiles start on a multiple of TILE_ROW_ALIGNMENT rows, where every per-row binding may start.
    const first = Math.floor(span.first / TILE_ROW_ALIGNMENT) * TILE_ROW_ALIGNMENT;
    const outside = [this.#s.loss, ...options.gradScale === undefined ? [] : [this.#s.dH]];
    for (const x of outside) {
      rec.clear(x.rows(0, first));
      rec.clear(x.rows(span.end, t - span.end));
    }
    const predicted: number[] = [];
    for (let r0 = first; r0 < span.end; r0 += act.logitRows) {
      const n = Math.min(act.logitRows, span.end - r0);
      const tile = (x: Tensor) => x.rows(r0, n);
      const logits = act.logits.rows(0, n);
      const io = { logits, targets: tile(this.#s.targets), mask: tile(this.#s.mask) };
      this.model.recordHead(rec, tile(normed), logits);
      ce.recordForward(rec, { ...io, loss: tile(this.#s.loss), stats: tile(this.#s.ceStats) });
      if (options.gradScale !== undefined) {
        const dLogits = this.#s.dLogits.rows(0, n);
        ce.recordBackward(rec, { ...io, stats: tile(this.#s.ceStats), dLogits }, options.gradScale);
        this.model.recordHeadInputGradient(rec, dLogits, tile(this.#s.dH));
      }
      const wanted = options.predict?.filter((row) => row >= r0 && row < r0 + n) ?? [];
      if (!wanted.length) continue;
      rec.submit();
      const values = await readF32(this.model.gpu, logits);
      for (const row of wanted) {
        const at = (row - r0) * v;
        let best = 0;
        for (let j = 1; j < v; j++) if (values[at + j] > values[at + best]) best = j;
        predicted.push(best);
      }
    }
    return predicted;
  }

  /**
   * One optimizer step on `tokens`, with loss on predicting every token at index >= `from`
   * (from = 1 scores the whole sequence). `stepIndex` (0-based) drives warm-up and dropout seeds.
   */
  async step(
    rec: Recorder,
    tokens: readonly number[],
    from: LossSelection,
    settings: OptimizerSettings,
    stepIndex: number,
  ): Promise<StepReport> {
    return (await this.steps(rec, tokens, from, settings, stepIndex, 1))[0];
  }

  /**
   * `count` optimizer steps on the same example (epochs), indices `firstStepIndex` on, each
   * submitted as soon as it is recorded (the GPU runs one while the next is recorded) and all
   * read back once: each step's loss and stats are copied aside on the GPU, and the step count
   * AdamW's bias corrections take stays on the GPU (see {@link STATS}), so a step skipped for
   * non-finite gradients does not advance the ones after it. The same numbers as `count` calls
   * of {@link step}, without a host round trip between them.
   */
  async steps(
    rec: Recorder,
    tokens: readonly number[],
    from: LossSelection,
    settings: OptimizerSettings,
    firstStepIndex: number,
    count: number,
  ): Promise<StepReport[]> {
    if (!Number.isInteger(count) || count < 1 || count > MAX_STEPS_AT_ONCE) {
      throw new InvalidSettingError(
        `optimizer steps at once must be an integer in 1..${MAX_STEPS_AT_ONCE}, got ${count}`,
      );
    }
    const t = tokens.length;
    const { count: scored, span } = this.#load(tokens, from);
    const { ce, gradNorm, adamw } = this.ops;
    const rows = (x: Tensor) => x.rows(0, t);
    const a = this.adapter;
    const gpu = this.model.gpu;
    const firstStep = a.steps + 1;
    writeTensor(
      gpu,
      this.#s.corrections.rows(0, count),
      biasCorrections(settings, firstStep, count),
    );
    const applied = a.stats.reshape([STATS.size, 1]).rows(STATS.applied, 1);
    writeTensor(gpu, applied, new Float32Array([a.steps]));
    const lrs: number[] = [];
    for (let i = 0; i < count; i++) {
      const stepIndex = firstStepIndex + i;
      const seed = (this.adapter.settings.seed * 7919 + stepIndex * 104729) >>> 0;
      const forward = this.#recordForward(rec, t, "train", settings.dropout, seed);
      await this.#recordHeadAndLoss(rec, t, span, { gradScale: 1 / scored });
      ce.recordTotals(rec, rows(this.#s.loss), rows(this.#s.mask), this.#s.totals);
      this.#recordBackward(rec, forward, settings.dropout, seed);
      gradNorm.record(rec, a.grads, a.stats, settings.maxGradNorm);
      const lr = settings.lr * Math.min(1, (stepIndex + 1) / (settings.warmupSteps + 1));
      lrs.push(lr);
      adamw.record(rec, {
        params: a.params,
        grads: a.grads,
        m: a.m,
        v: a.v,
        stats: a.stats,
        corrections: this.#s.corrections,
      }, {
        lr,
        beta1: settings.beta1,
        beta2: settings.beta2,
        eps: settings.eps,
        weightDecay: settings.weightDecay,
        firstStep,
      });
      a.changed();
      const report = this.#s.report(i);
      rec.copy(this.#s.totals, report.totals);
      rec.copy(a.stats, report.stats);
      rec.submit();
    }
    const all = await readF32(gpu, this.#s.reports.rows(0, count));
    const reports: StepReport[] = [];
    for (let i = 0; i < count; i++) {
      const lossSum = all[REPORT_FLOATS * i];
      const stats = all.subarray(REPORT_FLOATS * i + 2, REPORT_FLOATS * i + 2 + STATS.size);
      const skipped = stats[STATS.nonFinite] !== 0 || !Number.isFinite(lossSum);
      const loss = lossSum / scored;
      reports.push({
        loss,
        lossSum,
        count: scored,
        gradNorm: stats[STATS.norm],
        skipped,
        lr: lrs[i],
      });
    }
    a.steps = all[REPORT_FLOATS * (count - 1) + 2 + STATS.applied];
    return reports;
  }

  /**
   * {@link steps} for any number of epochs on one example: as many steps a submission as one
   * takes ({@link MAX_STEPS_AT_ONCE}), the reports of all of them in order.
   */
  async epochs(
    rec: Recorder,
    tokens: readonly number[],
    from: LossSelection,
    settings: OptimizerSettings,
    firstStepIndex: number,
    count: number,
  ): Promise<StepReport[]> {
    const reports: StepReport[] = [];
    for (let done = 0; done < count; done += MAX_STEPS_AT_ONCE) {
      const n = Math.min(count - done, MAX_STEPS_AT_ONCE);
      reports.push(...await this.steps(rec, tokens, from, settings, firstStepIndex + done, n));
    }
    return reports;
  }

  /**
   * Uploads ids, next-token targets and the loss mask; returns the number of scored tokens and
   * the span of rows from the first to the last whose next token is scored.
   */
  #load(tokens: readonly number[], from: LossSelection): { count: number; span: RowSpan } {
    const t = tokens.length;
    if (t < 2 || t > this.maxTokens) {
      throw new InvalidSettingError(
        `a training sequence of ${t} tokens; this trainer takes 2..${this.maxTokens}`,
      );
    }
    if (typeof from === "number") {
      if (!Number.isInteger(from) || from < 1 || from >= t) {
        throw new InvalidSettingError(`loss must start inside the sequence: from ${from} of ${t}`);
      }
    } else if (from.length !== t) {
      throw new InvalidSettingError(`a loss mask of ${from.length} flags for ${t} tokens`);
    }
    const gpu = this.model.gpu;
    const targets = new Uint32Array(t);
    const mask = new Float32Array(t);
    let count = 0;
    const span = { first: t, end: 0 };
    for (let i = 0; i + 1 < t; i++) {
      targets[i] = tokens[i + 1];
      if (!isScored(from, i + 1)) continue;
      mask[i] = 1;
      count++;
      span.first = Math.min(span.first, i);
      span.end = i + 1;
    }
    if (count === 0) throw new InvalidSettingError(`a loss mask that selects none of ${t} tokens`);
    writeTensor(gpu, this.#s.ids.rows(0, t), Uint32Array.from(tokens));
    writeTensor(gpu, this.#s.targets.rows(0, t), targets);
    writeTensor(gpu, this.#s.mask.rows(0, t), mask);
    return { count, span };
  }

  #dropout(p: number, seed: number, layer: number, target: LoraTarget): LoraDropout | undefined {
    if (!(p > 0)) return undefined;
    return { p, seed: projectionDropoutSeed(seed, layer, target) };
  }

  /**
   * The model's forward over T tokens from position 0, keeping activations, up to the final norm
   * (the head and loss follow in tiles). Returns the step, for recomputing layers.
   */
  #recordForward(
    rec: Recorder,
    t: number,
    mode: "base" | "adapter" | "train",
    p: number,
    seed = 0,
  ): ForwardStep {
    this.cache.length = 0;
    const step: ForwardStep = {
      ids: this.#s.ids,
      offset: 0,
      tokens: t,
      cache: this.cache,
      activations: this.activations,
      logits: "none",
      adapter: mode === "base" ? undefined : this.adapter,
      dropout: mode === "train" ? { p, seed } : undefined,
    };
    this.model.recordForward(rec, step);
    return step;
  }

  /**
   * Backward from dH (the head's input gradient, made with the loss) to every adapter matrix;
   * base weights get no gradient. Layers the forward did not keep are recomputed first.
   */
  #recordBackward(rec: Recorder, forward: ForwardStep, p: number, seed: number) {
    const t = forward.tokens;
    const model = this.model;
    const c = model.config;
    const w = model.weights;
    const k = model.kernels;
    const act = this.activations;
    const adapter = this.adapter;
    const rows = (x: Tensor) => x.rows(0, t);
    const flat = (x: Tensor) => x.reshape([t, x.size / t]);
    /**
     * The backward through projections that share the input x: dX = Σ dY·W over them, in order,
     * each followed by its adapter's share of dX; the adapter's dB and dH of them all first and
     * their dA last, each at once where the buffers allow (LoraOp's groups).
     */
    const through = (
      layer: number,
      x: Tensor,
      dX: Tensor,
      saved: LayerBuffers,
      projections: { target: LoraTarget; dY: Tensor; weight: GpuMatrix }[],
    ) => {
      const parts = new Map<number, LoraBackwardArgs>();
      projections.forEach(({ target, dY }, i) => {
        const proj = adapter.get(layer, target);
        if (!proj) return;
        parts.set(i, {
          x,
          a: proj.a,
          b: proj.b,
          h: saved.loraH(target),
          dY,
          dH: rows(this.#s.dLoraH[i]),
          dA: proj.dA,
          dB: proj.dB,
          dX,
          scale: adapter.scale,
          dropout: this.#dropout(p, seed, layer, target),
        });
      });
      k.lora.recordOutputGradients(rec, [...parts.values()]);
      projections.forEach(({ dY, weight }, i) => {
        model.recordInputGradient(rec, dY, weight, dX, i > 0);
        const part = parts.get(i);
        if (part) k.lora.recordInputGradient(rec, part);
      });
      if (parts.size) k.lora.recordGradientA(rec, x, [...parts.values()]);
    };

    const dx = rows(this.#s.dx);
    const dH = rows(this.#s.dH);
    const final = act.final(t);
    k.rmsnorm.recordBackwardInput(rec, rows(act.xFinal), w.norm, final.rstd, dH, dx);
    for (let l = c.nLayers - 1; l >= 0; l--) {
      const s = act.layer(l, t);
      if (act.recompute) model.recordLayer(rec, l, s, this.cache, 0, forward);
      const L = w.layers[l];
      through(l, s.act, rows(this.#s.dAct), s, [{ target: "down", dY: dx, weight: L.down }]);
      k.swiglu.recordBackward(
        rec,
        rows(this.#s.dAct),
        s.gate,
        s.up,
        rows(this.#s.dGate),
        rows(this.#s.dUp),
      );
      through(l, s.h2, dH, s, [
        { target: "gate", dY: rows(this.#s.dGate), weight: L.gate },
        { target: "up", dY: rows(this.#s.dUp), weight: L.up },
      ]);
      k.rmsnorm.recordBackwardInput(rec, s.x2, L.ffnNorm, s.rstd2!, dH, dx, {
        accumulate: true,
      });
      through(l, flat(s.attn), flat(rows(this.#s.dAttn)), s, [
        { target: "o", dY: dx, weight: L.o },
      ]);
      k.attention.recordBackward(rec, {
        dOut: rows(this.#s.dAttn),
        q: s.q,
        k: rows(this.cache.k[l]),
        v: rows(this.cache.v[l]),
        out: s.attn,
        lse: s.lse!,
        delta: rows(this.#s.delta),
        dQ: rows(this.#s.dQ),
        dK: rows(this.#s.dK),
        dV: rows(this.#s.dV),
        past: 0,
      });
      if (model.rotates(l)) {
        k.rope.recordBackwardInPlaceQK(rec, rows(this.#s.dQ), rows(this.#s.dK), 0);
      }
      let dQ = flat(rows(this.#s.dQ));
      let dK = flat(rows(this.#s.dK));
      if (L.qNorm && L.kNorm && s.qProj && s.kProj && this.#s.dQProj && this.#s.dKProj) {
        const heads = (x: Tensor) => x.reshape([x.size / c.headDim, c.headDim]);
        const dQProj = rows(this.#s.dQProj);
        const dKProj = rows(this.#s.dKProj);
        k.rmsnorm.recordBackwardInput(
          rec,
          heads(s.qProj),
          L.qNorm,
          s.qRstd!,
          heads(dQ),
          heads(dQProj),
        );
        k.rmsnorm.recordBackwardInput(
          rec,
          heads(s.kProj),
          L.kNorm,
          s.kRstd!,
          heads(dK),
          heads(dKProj),
        );
        dQ = dQProj;
        dK = dKProj;
      }
      through(l, s.h1, dH, s, [
        { target: "q", dY: dQ, weight: L.q },
        { target: "k", dY: dK, weight: L.k },
        { target: "v", dY: flat(rows(this.#s.dV)), weight: L.v },
      ]);
      k.rmsnorm.recordBackwardInput(rec, s.xIn, L.attnNorm, s.rstd1!, dH, dx, {
        accumulate: true,
      });
    }
  }

  /** Frees the trainer's buffers (not the adapter). */
  destroy(): void {
    this.ops.gradNorm.destroy();
    this.#s.destroy();
    this.activations.destroy();
    this.cache.destroy();
  }
}

/** Optimizer steps one {@link Trainer.steps} submission takes at most. */
export const MAX_STEPS_AT_ONCE = 64;

/** Floats of a step's report: its loss totals (2), its stats (STATS.size), padding to 8. */
const REPORT_FLOATS = 8;

/**
 * Rows a tile of the head and loss starts on a multiple of: a tile's row of the narrowest per-row
 * tensor (4 bytes a row: targets, mask, loss) then starts on the portable binding alignment.
 */
const TILE_ROW_ALIGNMENT = PORTABLE_OFFSET_ALIGNMENT / 4;

/** Rows [first, end) of a sequence. */
interface RowSpan {
  first: number;
  end: number;
}

/** Whether the token at index `i` (>= 1) carries loss under `selection`. */
function isScored(selection: LossSelection, i: number): boolean {
  return typeof selection === "number" ? i >= selection : i >= 1 && selection[i] === true;
}

/** Rows of a sequence of `t` tokens whose logits predict a scored token, in order. */
function scoredRows(t: number, from: LossSelection): number[] {
  const rows: number[] = [];
  for (let i = 1; i < t; i++) if (isScored(from, i)) rows.push(i - 1);
  return rows;
}

/** How a trainer holds its activations; the defaults keep a small model's step as it is. */
export interface TrainerOptions {
  /**
   * Recompute each layer's forward in the backward instead of keeping its activations: "auto"
   * (the default) does when keeping them all would take more than 1 GiB.
   */
  recompute?: boolean | "auto";
  /**
   * Bytes the LM head's logits and their gradient may take at once (default 64 MiB): the head
   * and the loss run over tiles of rows that fit (multiples of 64 rows when there are several).
   */
  logitBytes?: number;
}

const RECOMPUTE_ABOVE_BYTES = 1 << 30;
const DEFAULT_LOGIT_BYTES = 64 << 20;

/**
 * Bytes the training activations take when every layer keeps its own (what recompute saves),
 * counted by building them on a device that allocates nothing.
 */
function keptActivationBytes(config: ModelConfig, tokens: number, rank: number): number {
  const everyProjection = {
    rank,
    scale: 1,
    get: () => ({}) as AdapterMatrices,
    version: 0,
    derived: new Map(),
  };
  const kept = new TrainingActivations(planningGpu(), config, tokens, everyProjection, {
    recompute: false,
    logitRows: 1,
  });
  return kept.bytes;
}

/** The activation layout a trainer for `tokens` tokens with an adapter of `rank` uses. */
export function trainingLayout(
  config: ModelConfig,
  tokens: number,
  options: TrainerOptions,
  rank: number,
): TrainingActivationOptions {
  const recompute = options.recompute === "auto" || options.recompute === undefined
    ? keptActivationBytes(config, tokens, rank) > RECOMPUTE_ABOVE_BYTES
    : options.recompute;
  // Logits and dLogits: two f32 tiles of [rows, vocab].
  const fit = Math.floor((options.logitBytes ?? DEFAULT_LOGIT_BYTES) / (8 * config.vocabSize));
  const logitRows = fit >= tokens ? tokens : Math.max(64, Math.floor(fit / 64) * 64);
  return { recompute, logitRows };
}

/** The trainer's own buffers: the example, per-token losses, and gradient scratch shared by layers. */
export class TrainerScratch {
  /** [T] u32 token ids. */
  readonly ids: Tensor;
  /** [T] u32 next-token targets. */
  readonly targets: Tensor;
  /** [T] f32 loss mask. */
  readonly mask: Tensor;
  /** [T] per-token loss. */
  readonly loss: Tensor;
  /** [T, 2] cross-entropy row statistics. */
  readonly ceStats: Tensor;
  /** [2] summed loss and count. */
  readonly totals: Tensor;
  /** [MAX_STEPS_AT_ONCE, 2] AdamW's bias corrections for the steps of one submission. */
  readonly corrections: Tensor;
  /** [MAX_STEPS_AT_ONCE, REPORT_FLOATS] each step's totals (2) and stats (STATS.size), copied. */
  readonly reports: Tensor;
  /** [logitRows, vocab] one tile of rows of dLogits. */
  readonly dLogits: Tensor;
  /** [T, dim] gradient of the residual stream. */
  readonly dx: Tensor;
  /** [T, dim] gradient of a norm's output. */
  readonly dH: Tensor;
  /** [T, nHeads, headDim] */
  readonly dAttn: Tensor;
  /** [T, nHeads, headDim] */
  readonly dQ: Tensor;
  /** [T, nKvHeads, headDim] */
  readonly dK: Tensor;
  /** [T, nKvHeads, headDim] */
  readonly dV: Tensor;
  /** [T, nHeads] attention backward's row dot products. */
  readonly delta: Tensor;
  /** [T, hidden] */
  readonly dAct: Tensor;
  /** [T, hidden] */
  readonly dGate: Tensor;
  /** [T, hidden] */
  readonly dUp: Tensor;
  /** [T, rank] each: gradients of x·Aᵀ of up to three projections sharing an input, one buffer. */
  readonly dLoraH: Tensor[];
  /** [T, nHeads * headDim] through the q head norm (qkNorm models). */
  readonly dQProj: Tensor | undefined;
  /** [T, nKvHeads * headDim] through the k head norm (qkNorm models). */
  readonly dKProj: Tensor | undefined;
  readonly #owned: Tensor[] = [];

  /** Allocates every buffer for examples of up to `T` tokens. */
  constructor(gpu: Gpu, c: ModelConfig, T: number, rank: number, logitRows: number) {
    const make = (shape: number[], label: string, dtype: "f32" | "u32" = "f32") => {
      const t = createTensor(gpu, shape, dtype, label);
      this.#owned.push(t);
      return t;
    };
    const hd = c.headDim;
    this.ids = make([T], "train ids", "u32");
    this.targets = make([T], "train targets", "u32");
    this.mask = make([T], "train mask");
    this.loss = make([T], "token loss");
    this.ceStats = make([T, 2], "ce stats");
    this.totals = make([2], "loss totals");
    this.corrections = make([MAX_STEPS_AT_ONCE, 2], "bias corrections");
    this.reports = make([MAX_STEPS_AT_ONCE, REPORT_FLOATS], "step reports");
    this.dLogits = make([logitRows, c.vocabSize], "dLogits");
    this.dx = make([T, c.dim], "dx");
    this.dH = make([T, c.dim], "dH");
    this.dAttn = make([T, c.nHeads, hd], "dAttn");
    // Gradients of projections sharing an input lie in one buffer, so that the adapter's products
    // for them run at once (LoraOp's groups).
    const slots = (shapes: number[][], label: string) =>
      slotViews(make([slotElements(shapes)], label), shapes);
    [this.dQ, this.dK, this.dV] = slots(
      [[T, c.nHeads, hd], [T, c.nKvHeads, hd], [T, c.nKvHeads, hd]],
      "dQ dK dV",
    );
    this.delta = make([T, c.nHeads], "delta");
    this.dAct = make([T, c.hiddenDim], "dAct");
    [this.dGate, this.dUp] = slots([[T, c.hiddenDim], [T, c.hiddenDim]], "dGate dUp");
    this.dLoraH = slots([[T, rank], [T, rank], [T, rank]], "dLoraH");
    this.dQProj = c.qkNorm ? make([T, c.nHeads * hd], "dQ projection") : undefined;
    this.dKProj = c.qkNorm ? make([T, c.nKvHeads * hd], "dK projection") : undefined;
  }

  /** Where step `i` of a submission copies its totals and stats. */
  report(i: number): { totals: Tensor; stats: Tensor } {
    const at = this.reports.byteOffset + 4 * REPORT_FLOATS * i;
    return {
      totals: new Tensor(this.reports.buffer, [2], "f32", at),
      stats: new Tensor(this.reports.buffer, [STATS.size], "f32", at + 8),
    };
  }

  /** Bytes held on the GPU. */
  get bytes(): number {
    return this.#owned.reduce((sum, t) => sum + t.byteLength, 0);
  }

  /** Frees every buffer. */
  destroy(): void {
    for (const t of this.#owned) t.destroy();
    this.#owned.length = 0;
  }
}
