import { InvalidSettingError } from "../model/errors.ts";
import type { TextModel } from "../model/text_model.ts";
import { LoraAdapter } from "./adapter.ts";
import type { TempLoraSettings } from "./settings.ts";
import { type LossSelection, type ScoreReport, type StepReport, Trainer } from "./trainer.ts";

/** One chunk of a walk: tokens [start, end) of the text. */
export interface WalkChunk {
  /** Chunk number (0-based). */
  index: number;
  /** Text index of the chunk's first token. */
  start: number;
  /** Text index just past its last token. */
  end: number;
}

/** Tokens of a text as the model sees them in a window, and where each came from. */
export interface WindowTokens {
  /** Token ids, in the order the model reads them (position 0 first). */
  tokens: number[];
  /** The text index of each token. */
  positions: number[];
}

/**
 * The window in which the span [start, end) of `ids` is read: the up to `budget` tokens before
 * `start`, then the span. With attention sinks (`sink` > 0), when those tokens do not reach back
 * to the text's beginning, its first `sink` tokens stand in front of them instead of the oldest
 * `sink` of them (StreamingLLM's window: the sinks at positions 0..sink-1, the recent tokens
 * after), so the window never holds more than budget + (end - start) tokens.
 */
export function windowTokens(
  ids: readonly number[],
  start: number,
  end: number,
  budget: number,
  sink = 0,
): WindowTokens {
  if (!(start >= 0 && start <= end && end <= ids.length && budget >= 0)) {
    throw new InvalidSettingError(`window over [${start}, ${end}) of ${ids.length} tokens`);
  }
  const contextStart = Math.max(0, start - budget);
  const positions: number[] = [];
  if (sink > 0 && contextStart > 0) {
    const sinks = Math.min(sink, budget);
    for (let i = 0; i < sinks; i++) positions.push(i);
    for (let i = Math.max(sinks, start - (budget - sinks)); i < end; i++) positions.push(i);
  } else {
    for (let i = contextStart; i < end; i++) positions.push(i);
  }
  return { tokens: positions.map((i) => ids[i]), positions };
}

/** Options of {@link TestThenTrain.create}. */
export interface TestThenTrainOptions {
  /**
   * Chunk boundaries: chunk k covers [bounds[k], bounds[k + 1]), the first bound 0 and the last
   * the text's length (default: every Δ tokens).
   */
  bounds?: readonly number[];
  /**
   * One flag per token of the text: true where the token carries loss, in scoring and in
   * training (default: every token). Translation marks only the target's tokens.
   */
  lossMask?: readonly boolean[];
  /**
   * The longest chunk {@link TestThenTrain.append} will add (default: none longer than the
   * text's own chunks); it sizes the trainer's buffers.
   */
  maxChunkTokens?: number;
}

/**
 * The walk of the PG19 protocol and its relatives (test-then-train): a text cut into chunks, an
 * adapter, and a trainer. Each chunk is first scored in its window (the up to W − max(Δ, its
 * length) tokens before it, with the settings' attention sinks), with or without the adapter;
 * then the adapter trains on it for `epochs` steps, the chunk's up to `trainContext` preceding
 * tokens in front as loss-free context. Perplexity, recall and translation evaluation all walk
 * their texts with it; what to score between chunks is theirs.
 */
export class TestThenTrain {
  /** Optimizer steps taken so far (they drive warm-up and dropout seeds). */
  steps = 0;
  #ids: number[];
  #chunks: WalkChunk[];
  #lossMask: boolean[] | undefined;

  private constructor(
    ids: readonly number[],
    chunks: WalkChunk[],
    readonly settings: TempLoraSettings,
    private readonly trainer: Trainer,
    /**
     * The adapter the walk trains, for the library's evaluations that generate with it between
     * chunks (translation).
     * @ignore
     */
    readonly adapter: LoraAdapter,
    lossMask: readonly boolean[] | undefined,
    private readonly lm: TextModel,
  ) {
    this.#ids = [...ids];
    this.#chunks = chunks;
    this.#lossMask = lossMask ? [...lossMask] : undefined;
  }

  /** The text walked so far. */
  get ids(): readonly number[] {
    return this.#ids;
  }

  /** Its chunks, in order. */
  get chunks(): readonly WalkChunk[] {
    return this.#chunks;
  }

  /** A walk over `ids` with a fresh adapter; {@link destroy} frees its GPU buffers. */
  static async create(
    lm: TextModel,
    ids: readonly number[],
    settings: TempLoraSettings,
    options: TestThenTrainOptions = {},
  ): Promise<TestThenTrain> {
    const { lossMask } = options;
    if (lossMask && lossMask.length !== ids.length) {
      throw new InvalidSettingError(
        `a loss mask of ${lossMask.length} flags for ${ids.length} tokens`,
      );
    }
    const bounds = options.bounds ?? deltaBounds(ids.length, settings.chunk);
    if (
      bounds[0] !== 0 || bounds[bounds.length - 1] !== ids.length ||
      bounds.some((b, i) => i > 0 && !(b > bounds[i - 1]))
    ) {
      throw new InvalidSettingError(
        `chunk bounds must rise from 0 to the text's ${ids.length} tokens`,
      );
    }
    const chunks = bounds.slice(1).map((end, index) => ({ index, start: bounds[index], end }));
    const longest = Math.max(options.maxChunkTokens ?? 0, ...chunks.map((c) => c.end - c.start));
    const maxSeqLen = lm.config.maxSeqLen;
    if (longest > maxSeqLen) {
      throw new InvalidSettingError(
        `a chunk of ${longest} tokens; the model reads at most ${maxSeqLen} at once`,
      );
    }
    const { window: W } = settings;
    const seqMax = Math.max(
      W,
      Math.min(maxSeqLen, settings.trainContext + Math.max(settings.chunk, longest)),
    );
    const adapter = new LoraAdapter(lm.gpu, lm.config, settings);
    try {
      const trainer = await Trainer.create(lm.model, adapter, lm.registry, seqMax);
      return new TestThenTrain(ids, chunks, settings, trainer, adapter, lossMask, lm);
    } catch (error) {
      adapter.destroy();
      throw error;
    }
  }

  /** Whether the text's token at `i` carries loss. */
  carriesLoss(i: number): boolean {
    return i >= 1 && (this.#lossMask?.[i] ?? true);
  }

  /**
   * Adds a chunk at the text's end (text written while walking, as in translating a document
   * segment by segment), with its loss flags when the walk has a loss mask; returns the chunk.
   */
  append(ids: readonly number[], lossMask?: readonly boolean[]): WalkChunk {
    if (ids.length < 1 || ids.length > this.trainer.maxTokens) {
      throw new InvalidSettingError(
        `a chunk of ${ids.length} tokens; this walk takes 1..${this.trainer.maxTokens}`,
      );
    }
    if ((lossMask === undefined) !== (this.#lossMask === undefined)) {
      throw new InvalidSettingError(
        "loss flags go with a walk that has a loss mask, and only then",
      );
    }
    if (lossMask && lossMask.length !== ids.length) {
      throw new InvalidSettingError(
        `a loss mask of ${lossMask.length} flags for ${ids.length} tokens`,
      );
    }
    const start = this.#ids.length;
    this.#ids.push(...ids);
    if (lossMask) this.#lossMask!.push(...lossMask);
    const chunk = { index: this.#chunks.length, start, end: this.#ids.length };
    this.#chunks.push(chunk);
    return chunk;
  }

  /**
   * The window a chunk is scored in (the up to W − max(Δ, its length) tokens before it, with
   * sinks) and which of its tokens carry loss: the chunk's own, where the loss mask allows.
   */
  window(chunk: WalkChunk): WindowTokens & { loss: boolean[] } {
    const { window: W, chunk: delta, sink } = this.settings;
    const budget = Math.max(0, W - Math.max(delta, chunk.end - chunk.start));
    const w = windowTokens(this.#ids, chunk.start, chunk.end, budget, sink);
    return { ...w, loss: w.positions.map((p) => p >= chunk.start && this.carriesLoss(p)) };
  }

  /** Scores any sequence with the walk's trainer, with the adapter as trained so far or without. */
  score(
    tokens: readonly number[],
    loss: LossSelection,
    withAdapter: boolean,
    options: { predictions?: boolean } = {},
  ): Promise<ScoreReport> {
    return this.trainer.score(this.lm.recorder, tokens, loss, withAdapter, options);
  }

  /** Scores a chunk in its window (undefined when none of its tokens carries loss). */
  async scoreChunk(chunk: WalkChunk, withAdapter: boolean): Promise<ScoreReport | undefined> {
    const w = this.window(chunk);
    if (!w.loss.includes(true)) return undefined;
    return await this.score(w.tokens, lossSelection(w.loss), withAdapter);
  }

  /**
   * Trains the adapter on a chunk for `epochs` steps (none when Temp-Lora is off or no token
   * of the chunk carries loss): its up to `trainContext` preceding tokens, then the chunk.
   */
  async train(chunk: WalkChunk): Promise<{ reports: StepReport[]; seconds: number }> {
    const t0 = performance.now();
    const reports: StepReport[] = [];
    const s = this.settings;
    const start = Math.max(0, chunk.start - s.trainContext, chunk.end - this.trainer.maxTokens);
    const loss: boolean[] = [];
    for (let i = start; i < chunk.end; i++) loss.push(i >= chunk.start && this.carriesLoss(i));
    if (s.enabled && loss.includes(true)) {
      const example = this.#ids.slice(start, chunk.end);
      reports.push(
        ...await this.trainer.epochs(
          this.lm.recorder,
          example,
          lossSelection(loss),
          s.optimizer,
          this.steps,
          s.epochs,
        ),
      );
      this.steps += s.epochs;
    }
    return { reports, seconds: (performance.now() - t0) / 1000 };
  }

  /** Frees the adapter and the trainer. */
  destroy(): void {
    this.trainer.destroy();
    this.adapter.destroy();
  }
}

/** Bounds of chunks of `delta` tokens over `length` tokens (the last may be shorter). */
export function deltaBounds(length: number, delta: number): number[] {
  const bounds = [];
  for (let b = 0; b < length; b += delta) bounds.push(b);
  bounds.push(length);
  return bounds;
}

/** A loss selection as an index where the flags are one unbroken run to the end. */
function lossSelection(loss: readonly boolean[]): LossSelection {
  const from = loss.indexOf(true);
  return from > 0 && loss.every((l, i) => l === (i >= from)) ? from : loss;
}
