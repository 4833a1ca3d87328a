import type { Recorder } from "../gpu/recorder.ts";
import { readU32 } from "../gpu/readback.ts";
import { createTensor, type Tensor, writeTensor } from "../gpu/tensor.ts";
import { BiasOp } from "../ops/bias.ts";
import { SamplingOp } from "../ops/sampling.ts";
import type { KernelRegistry } from "../gpu/kernel.ts";
import { InvalidSettingError, PromptTooLongError } from "./errors.ts";
import type { LlamaModel } from "./llama.ts";
import type { StepActivations } from "./activations.ts";
import type { KvCache } from "./kv_cache.ts";
import type { ModelAdapter } from "./adapter.ts";

/** How tokens are picked. */
export interface SamplingSettings {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** 1 = off; the paper generates with 1.12. */
  repetitionPenalty: number;
  /** How many recent tokens the repetition penalty looks at. */
  penaltyWindow: number;
  /** Seed of the GPU random generator: the same seed gives the same text. */
  seed: number;
  /** Token ids never sampled (EOS when it is banned). */
  banned: readonly number[];
}

/** What a session's decode steps have recorded, summed over every {@link DecodeSession.decode}. */
export interface DecodeStats {
  /** Tokens decoded. */
  tokens: number;
  /** Dispatches recorded for them: the forward passes and the sampling. */
  dispatches: number;
  /** Bytes of weights those dispatches read (each weight once per dispatch that reads it). */
  weightBytes: number;
}

/** Decode steps recorded and submitted by {@link DecodeSession.startDecode}. */
export interface DecodeBatch {
  /** History index of the batch's first token. */
  readonly first: number;
  /** Its tokens. */
  readonly steps: number;
  /** Their ids, once the GPU has written them. */
  readonly ids: Promise<number[]>;
}

/** Checks sampling settings, throwing {@link InvalidSettingError} with the offending value. */
export function checkSampling(s: SamplingSettings): void {
  const bad = (what: string) => {
    throw new InvalidSettingError(what);
  };
  if (!(s.temperature >= 0) || !Number.isFinite(s.temperature)) {
    bad(`temperature must be >= 0, got ${s.temperature}`);
  }
  if (!Number.isInteger(s.topK) || s.topK < 0) bad(`topK must be an integer >= 0, got ${s.topK}`);
  if (!(s.topP > 0 && s.topP <= 1)) bad(`topP must be in (0, 1], got ${s.topP}`);
  if (!(s.repetitionPenalty > 0) || !Number.isFinite(s.repetitionPenalty)) {
    bad(`repetition penalty must be > 0, got ${s.repetitionPenalty}`);
  }
  if (!Number.isInteger(s.penaltyWindow) || s.penaltyWindow < 0) {
    bad(`penalty window must be an integer >= 0, got ${s.penaltyWindow}`);
  }
  if (!Number.isInteger(s.seed) || s.seed < 0 || s.seed > 0xffffffff) {
    bad(`seed must be an integer in 0..2^32-1, got ${s.seed}`);
  }
}

/**
 * The state of one text being written: every token so far in a GPU buffer (`history`), a KV
 * cache holding the most recent ones, and activations. Decoding samples on the GPU and feeds the
 * sampled id straight into the next step's embedding, several steps per submit, so the host only
 * waits once per batch.
 *
 * The window: the cache holds at most `capacity` positions. When it is full, it is rebuilt from
 * the most recent `capacity / 2` tokens at positions 0.. (one prefill), so positions never exceed
 * the capacity and the model always sees at least half a window of context. With attention sinks
 * (`sink` > 0, StreamingLLM), a rebuild that no longer reaches the text's start puts its first
 * `sink` tokens at positions 0..sink-1 and the most recent tokens after them.
 */
export class DecodeSession {
  /** Every token so far, u32 [maxTokens]: the prompt, then the generated ids. */
  readonly history: Tensor;
  /** KV cache of the most recent tokens, `capacity` positions. */
  readonly cache: KvCache;
  /** Activation buffers of forward passes, for up to `prefillRows` tokens at once. */
  readonly activations: StepActivations;
  /** Tokens in history. */
  length = 0;
  /** Rows at the cache's start that hold the attention sinks, history[0, sinkRows). */
  sinkRows = 0;
  /** history index of the cache's first row after the sinks (row 0 without sinks). */
  cacheStart = 0;
  /** The adapter every forward pass applies (none: the base model). */
  adapter: ModelAdapter | undefined;
  #banned: { ids: readonly number[]; tensor: Tensor } | undefined;
  #stats: DecodeStats = { tokens: 0, dispatches: 0, weightBytes: 0 };
  /** The newest batch, what it added to the stats and where it left the cache: {@link discard}. */
  #newest: { batch: DecodeBatch; counted: DecodeStats; cacheEnd: number } | undefined;

  private constructor(
    readonly model: LlamaModel,
    private readonly sampler: SamplingOp,
    private readonly bias: BiasOp,
    readonly capacity: number,
    readonly maxTokens: number,
    readonly prefillRows: number,
    /** Attention sinks: the history's first tokens every rebuild keeps in front. */
    readonly sink: number,
  ) {
    const gpu = model.gpu;
    this.history = createTensor(gpu, [maxTokens], "u32", "token history");
    this.cache = model.createCache(capacity);
    this.activations = model.createActivations(prefillRows);
  }

  /**
   * A session for up to `maxTokens` tokens in all, with a KV window of `capacity` and `sink`
   * attention sinks (default 0; at most a quarter of the window).
   */
  static async create(
    model: LlamaModel,
    registry: KernelRegistry,
    options: { capacity?: number; maxTokens: number; prefillRows?: number; sink?: number },
  ): Promise<DecodeSession> {
    const capacity = options.capacity ?? model.config.maxSeqLen;
    if (!Number.isInteger(capacity) || capacity < 2 || capacity > model.config.maxSeqLen) {
      throw new InvalidSettingError(
        `window must be an integer in 2..${model.config.maxSeqLen} (${model.config.maxSeqLen} is ` +
          `the model's trained length), got ${capacity}`,
      );
    }
    const sink = options.sink ?? 0;
    if (!Number.isInteger(sink) || sink < 0 || sink > Math.floor(capacity / 4)) {
      throw new InvalidSettingError(
        `sink must be an integer in 0..${Math.floor(capacity / 4)} (a quarter of the window), ` +
          `got ${sink}`,
      );
    }
    const prefillRows = Math.min(options.prefillRows ?? 128, capacity);
    const [sampler, bias] = await Promise.all([
      SamplingOp.create(registry),
      BiasOp.create(registry),
    ]);
    return new DecodeSession(model, sampler, bias, capacity, options.maxTokens, prefillRows, sink);
  }

  /** Bytes this session holds on the GPU (cache, activations, history, banned ids). */
  get bytes(): number {
    return this.cache.bytes + this.activations.bytes + this.history.byteLength +
      (this.#banned?.tensor.byteLength ?? 0);
  }

  /** Appends ids to the history (no GPU work yet). */
  append(ids: readonly number[]): void {
    if (this.length + ids.length > this.maxTokens) {
      throw new PromptTooLongError(this.length + ids.length, this.maxTokens);
    }
    const data = Uint32Array.from(ids);
    const view = createView(this.history, this.length, ids.length);
    writeTensor(this.model.gpu, view, data);
    this.length += ids.length;
  }

  /**
   * Records a forward pass over history[from, to) into the cache (to: the history's end), in
   * chunks of at most the activation rows; the last chunk leaves its next-token logits in logits
   * row 0.
   */
  recordPrefill(rec: Recorder, from: number, to: number = this.length): void {
    for (let start = from; start < to; start += this.prefillRows) {
      const tokens = Math.min(this.prefillRows, to - start);
      this.model.recordForward(rec, {
        ids: this.history,
        offset: start,
        tokens,
        cache: this.cache,
        activations: this.activations,
        logits: "last",
        adapter: this.adapter,
      });
    }
  }

  /**
   * Empties the cache and refills it with `keep` rows: the last `keep` tokens of the history,
   * or, with sinks and when those do not reach its start, the history's first `sink` tokens and
   * its last `keep - sink`.
   */
  recordRebuild(rec: Recorder, keep: number): void {
    const kept = Math.min(keep, this.length, this.capacity);
    const start = this.length - kept;
    this.cache.length = 0;
    this.sinkRows = start > 0 ? Math.min(this.sink, kept - 1) : 0;
    this.cacheStart = start + this.sinkRows;
    if (this.sinkRows > 0) this.recordPrefill(rec, 0, this.sinkRows);
    this.recordPrefill(rec, this.cacheStart);
  }

  /** Fills the cache from the history's tail after new ids were appended (a prompt). */
  recordFill(rec: Recorder): void {
    const pending = this.length - (this.cacheStart + this.cache.length - this.sinkRows);
    if (this.cache.length + pending <= this.capacity) {
      this.recordPrefill(rec, this.length - pending);
    } else {
      this.recordRebuild(rec, this.capacity);
    }
  }

  /**
   * Samples `steps` tokens, each fed back through the model, in one submission; returns their
   * ids. The caller keeps steps <= cache.free (see {@link stepsAvailable}).
   */
  decode(rec: Recorder, steps: number, sampling: SamplingSettings): Promise<number[]> {
    return this.startDecode(rec, steps, sampling).ids;
  }

  /**
   * {@link decode} without waiting: records and submits the steps now and returns the batch,
   * whose `ids` arrive when the GPU is done. A later batch may be started before they do: the
   * GPU runs batches in order, each reading the tokens and cache rows the one before wrote, so
   * the host records a batch while the GPU runs the previous one. {@link discard} takes back the
   * newest batch when its tokens are not wanted (the text ended before them).
   */
  startDecode(rec: Recorder, steps: number, sampling: SamplingSettings): DecodeBatch {
    if (steps < 1 || steps > this.cache.free || this.length + steps > this.maxTokens) {
      throw new InvalidSettingError(`cannot decode ${steps} steps here`);
    }
    const v = this.model.config.vocabSize;
    const logits = this.activations.logits.rows(0, 1).reshape([v]);
    const banned = this.#bannedIds(sampling.banned);
    const first = this.length;
    const before = rec.totals;
    const penalty = sampling.repetitionPenalty !== 1 && sampling.penaltyWindow > 0;
    // Greedy, nothing banned or penalised: a head that takes its own argmax writes each next
    // token, and only the batch's first step samples the logits left from before.
    const headPicks = this.model.headArgmax && sampling.temperature === 0 && !banned && !penalty;
    for (let i = 0; i < steps; i++) {
      const at = this.length;
      // With headPicks, steps after the first find history[at] written by the step before.
      if (!headPicks || i === 0) {
        if (penalty) {
          const from = Math.max(0, at - sampling.penaltyWindow);
          this.sampler.recordRepetitionPenalty(rec, logits, this.history, {
            first: from,
            count: at - from,
          }, sampling.repetitionPenalty);
        }
        if (banned) this.bias.recordBan(rec, logits, banned);
        this.sampler.recordSample(rec, logits, { tokens: this.history, step: at, draws: 1 }, {
          temperature: sampling.temperature,
          topK: sampling.topK,
          topP: sampling.topP,
          seed: sampling.seed,
        });
      }
      this.length++;
      this.model.recordForward(rec, {
        ids: this.history,
        offset: at,
        tokens: 1,
        cache: this.cache,
        activations: this.activations,
        logits: "last",
        adapter: this.adapter,
        argmaxInto: headPicks && i < steps - 1 ? { tokens: this.history, at: at + 1 } : undefined,
      });
    }
    const after = rec.totals;
    const counted: DecodeStats = {
      tokens: steps,
      dispatches: after.dispatches - before.dispatches,
      weightBytes: after.weightBytes - before.weightBytes,
    };
    this.#addStats(counted, 1);
    rec.submit();
    const ids = readU32(this.model.gpu, createView(this.history, first, steps)).then((v) => [...v]);
    const batch: DecodeBatch = { first, steps, ids };
    this.#newest = { batch, counted, cacheEnd: this.cache.length };
    return batch;
  }

  /**
   * Takes back `batch`, which must be the newest one started: the history and the cache end
   * where they ended before it, and its steps leave the stats. Its GPU work still runs (before
   * anything recorded later) and writes only past the history's new end; then the history's last
   * token runs again (submitted here), for the logits the batch overwrote.
   */
  discard(rec: Recorder, batch: DecodeBatch): void {
    const newest = this.#newest;
    const untouched = newest?.batch === batch && this.length === batch.first + batch.steps &&
      this.cache.length === newest.cacheEnd;
    if (!untouched) {
      throw new InvalidSettingError(
        "only the newest decode batch can be discarded, before anything else is recorded",
      );
    }
    this.length = batch.first;
    this.cache.length -= batch.steps + 1;
    this.#addStats(newest.counted, -1);
    // The batch's forwards overwrote the logits: the history's last token runs again (its cache
    // row is rewritten with the same values), so whatever reads them next finds its logits.
    this.recordPrefill(rec, this.length - 1);
    rec.submit();
    this.#newest = undefined;
    batch.ids.catch(() => {}); // its ids are not wanted, nor a failure to read them
  }

  #addStats(s: DecodeStats, sign: 1 | -1): void {
    this.#stats.tokens += sign * s.tokens;
    this.#stats.dispatches += sign * s.dispatches;
    this.#stats.weightBytes += sign * s.weightBytes;
  }

  /** Dispatches and weight bytes of every decode step so far. */
  get stats(): Readonly<DecodeStats> {
    return { ...this.#stats };
  }

  /** The banned ids on the GPU, uploaded again only when the list changes. */
  #bannedIds(ids: readonly number[]): Tensor | undefined {
    const same = this.#banned && this.#banned.ids.length === ids.length &&
      this.#banned.ids.every((id, i) => id === ids[i]);
    if (same) return this.#banned!.tensor;
    this.#banned?.tensor.destroy();
    this.#banned = undefined;
    if (!ids.length) return undefined;
    const tensor = createTensor(this.model.gpu, [ids.length], "u32", "banned ids");
    writeTensor(this.model.gpu, tensor, Uint32Array.from(ids));
    this.#banned = { ids: [...ids], tensor };
    return tensor;
  }

  /** Steps that fit before the cache must be rebuilt. */
  get stepsAvailable(): number {
    return Math.min(this.cache.free, this.maxTokens - this.length);
  }

  /** Frees everything the session holds. */
  destroy(): void {
    this.history.destroy();
    this.cache.destroy();
    this.activations.destroy();
    this.#banned?.tensor.destroy();
  }
}

/** A u32 view of `count` elements from `start` (for writes and readback, never for binding). */
function createView(t: Tensor, start: number, count: number): Tensor {
  return t.reshape([t.size, 1]).rows(start, count).reshape([count]);
}
