import type { Recorder } from "../gpu/recorder.ts";
import type { Tokenizer } from "../formats/tokenizer.ts";
import type { DecodeBatch, DecodeSession, SamplingSettings } from "./decode_session.ts";
import { InvalidSettingError, PromptTooLongError } from "./errors.ts";
import { StopWatcher } from "./stop.ts";

/** Why writing ended. */
export type FinishReason = "length" | "eos" | "stop" | "abort";

/** A token was written. */
export interface TokenEvent {
  /** Discriminates the event kinds. */
  type: "token";
  /** Position among the generated tokens (0-based). */
  index: number;
  /** The token id, or -1 for text released when writing ends (held-back characters). */
  id: number;
  /** Text the token made final ("" while a character or a possible stop is incomplete). */
  text: string;
}

/** The KV cache was rebuilt (window slide, or refresh with a new adapter). */
export interface CacheEvent {
  /** Discriminates the event kinds. */
  type: "cache";
  /** "slide": the window was full; "refresh": rebuilt after an adapter update. */
  reason: "slide" | "refresh";
  /** Tokens in the rebuilt cache. */
  keptTokens: number;
}

/** What the loop returns. */
export interface LoopResult {
  /** Generated text, cut before a stop sequence. */
  text: string;
  /** Generated ids (EOS excluded, unless written as the separator). */
  tokens: number[];
  /** Why writing ended. */
  finishReason: FinishReason;
}

/** How the loop writes. */
export interface LoopSettings {
  /** Tokens to generate at most. */
  maxTokens: number;
  /** How tokens are picked. */
  sampling: SamplingSettings;
  /**
   * Decode steps of the first submission. Later ones grow (doubling, to at most
   * {@link MAX_STEP_GROWTH} times this) while a batch takes under {@link BATCH_TARGET_MS}, so
   * that on a fast model the host's round trip per batch (about 12 ms on llvmpipe) stays a small
   * share of the time; the text is the same whatever the batches.
   */
  stepsPerSubmit: number;
  /** Stop sequences (generation ends before the first one). */
  stop: readonly string[];
  /** Ends writing early (finish reason "abort"). */
  signal?: AbortSignal;
  /** Tokens kept when the full cache is rebuilt. */
  keep: number;
  /** Tokens per chunk: `onChunk` runs after each complete one (Infinity: never). */
  chunk: number;
  /**
   * When set, the end of a text does not end writing: EOS, or a BOS the model writes to begin
   * another text, is written as this separator and writing goes on.
   */
  separator?: string;
  /**
   * Goes on with a text already in the session (a resumed run): the session holds the prompt
   * followed by `tokens`, its cache filled, and the chunk being written began at history index
   * `chunkStart`. The tokens are replayed as token events first, so the text is the whole text.
   */
  resume?: { tokens: readonly number[]; chunkStart: number };
}

/** Settings of {@link decodeLoop} with a chunk hook whose events are `E`. */
export interface LoopSettingsWithHook<E> extends LoopSettings {
  /**
   * Called after each complete chunk with the history index where it began and the session's
   * history so far (the prompt, then every token written; not after the last tokens of the
   * text); its events are passed on.
   */
  onChunk?: (chunkStart: number, history: readonly number[]) => AsyncGenerator<E, void>;
}

/** A batch of decode steps shorter than this (ms) makes the next one twice as long. */
export const BATCH_TARGET_MS = 50;

/** Batches grow to at most this many times the first one's steps. */
export const MAX_STEP_GROWTH = 8;

/**
 * A batch that took under this long (ms, ids to ids) lets the loop start the next one before
 * reading its ids: the host's recording then overlaps the GPU's work, and a batch the text ends
 * before (taken back, its work wasted) costs at most about this long.
 */
export const AHEAD_MS = 2 * BATCH_TARGET_MS;

/**
 * The steps of the next batch, after a batch of `steps` (of `batch` asked) that took `ms` from
 * submission to ids: twice as many while a full batch takes under {@link BATCH_TARGET_MS}, up to
 * {@link MAX_STEP_GROWTH} times the first batch's `first` steps.
 */
export function nextBatch(batch: number, steps: number, ms: number, first: number): number {
  return steps === batch && ms < BATCH_TARGET_MS
    ? Math.min(2 * batch, MAX_STEP_GROWTH * first)
    : batch;
}

/**
 * Decodes `count` tokens after the session's history as {@link decodeLoop} batches them (growing
 * batches from `stepsPerSubmit`, each started before the previous one's ids are read while
 * batches are quick), with no text around them: no stops, chunks or rebuilds (the cache must
 * have room). Starts no batch after `seconds`; returns the ids decoded. What the benchmarks time
 * as decode.
 */
export async function decodeCount(
  session: DecodeSession,
  rec: Recorder,
  count: number,
  sampling: SamplingSettings,
  options: { stepsPerSubmit: number; seconds?: number },
): Promise<number[]> {
  const { stepsPerSubmit, seconds = Infinity } = options;
  const ids: number[] = [];
  let batch = stepsPerSubmit;
  let started = 0;
  const t0 = performance.now();
  const start = () => {
    const b = session.startDecode(rec, Math.min(batch, count - started), sampling);
    started += b.steps;
    return b;
  };
  let last = t0;
  let quick = false;
  let current: DecodeBatch | undefined = count > 0 ? start() : undefined;
  while (current) {
    const inTime = () => (performance.now() - t0) / 1000 < seconds;
    let ahead = quick && started < count && inTime() ? start() : undefined;
    ids.push(...await current.ids);
    const now = performance.now();
    batch = nextBatch(batch, current.steps, now - last, stepsPerSubmit);
    quick = now - last < AHEAD_MS;
    last = now;
    if (!ahead && started < count && inTime()) ahead = start();
    current = ahead;
  }
  return ids;
}

/** Throws {@link InvalidSettingError} unless `maxTokens` is an integer >= 0. */
export function checkMaxTokens(maxTokens: number): void {
  if (!Number.isInteger(maxTokens) || maxTokens < 0) {
    throw new InvalidSettingError(`maxTokens must be an integer >= 0, got ${maxTokens}`);
  }
}

/** Token ids of a prompt (BOS first when encoding text), checked against the model's length. */
export function promptIds(
  tokenizer: Tokenizer,
  prompt: string | readonly number[],
  maxSeqLen: number,
): number[] {
  const ids = typeof prompt === "string" ? tokenizer.encode(prompt, { bos: true }) : [...prompt];
  checkPrompt(ids, maxSeqLen);
  return ids;
}

/**
 * Checks a prompt's token ids: {@link InvalidSettingError} when there are none (an empty text
 * and a tokenizer that adds no BOS token), {@link PromptTooLongError} past the model's length.
 */
export function checkPrompt(ids: readonly number[], maxSeqLen: number): void {
  if (ids.length === 0) {
    throw new InvalidSettingError("the prompt is empty (and the tokenizer adds no BOS token)");
  }
  if (ids.length > maxSeqLen) throw new PromptTooLongError(ids.length, maxSeqLen);
}

/**
 * The writing loop shared by plain generation and Temp-Lora: feeds the prompt through the
 * session, decodes in batches (rebuilding the cache from the last `keep` tokens when it is full;
 * while batches are quick, each one that needs no rebuild and stays inside the chunk is started
 * before the previous one's ids are read, and taken back if the text ends before it), streams
 * each token's text through the tokenizer's stream decoder and the stop watcher, ends on EOS
 * (unless banned or written as the separator), a stop sequence, `maxTokens` or the abort signal,
 * and calls `onChunk` between chunks. The session stays the caller's to free.
 */
export async function* decodeLoop<E>(
  session: DecodeSession,
  rec: Recorder,
  tokenizer: Tokenizer,
  prompt: readonly number[],
  settings: LoopSettingsWithHook<E>,
): AsyncGenerator<TokenEvent | CacheEvent | E, LoopResult> {
  const { maxTokens, sampling, stepsPerSubmit, chunk } = settings;
  checkMaxTokens(maxTokens);
  if (!Number.isInteger(stepsPerSubmit) || stepsPerSubmit < 1) {
    throw new InvalidSettingError(`stepsPerSubmit must be an integer >= 1, got ${stepsPerSubmit}`);
  }
  let batch = stepsPerSubmit;
  const { separator } = settings;
  const eosEnds = sampling.banned.length === 0 && separator === undefined;
  const ends = new Set(endIdsOf(tokenizer));
  const endsText = (id: number) => ends.has(id) || id === tokenizer.bosId;
  const tokens: number[] = [];
  let text = "";
  let finishReason: FinishReason = "length";
  const { resume } = settings;
  if (!resume) {
    session.append(prompt);
    session.recordFill(rec);
  } else if (session.length !== prompt.length + resume.tokens.length) {
    throw new InvalidSettingError(
      `a resumed session holds ${session.length} tokens, not the prompt's ${prompt.length} and ` +
        `the ${resume.tokens.length} written`,
    );
  }
  const decoder = tokenizer.streamDecoder(prompt);
  const stops = new StopWatcher(settings.stop);
  let chunkStart = resume?.chunkStart ?? session.length;
  /** Steps of a batch that starts at the history's end, `left` tokens from maxTokens. */
  const stepsBefore = (left: number) =>
    Math.min(batch, session.stepsAvailable, left, chunk - (session.length - chunkStart));
  /** Takes a written token through the decoder and the stop watcher. */
  const written = (id: number): TokenEvent => {
    tokens.push(id);
    const released = decoder.push(id);
    const piece = stops.push(
      separator !== undefined && endsText(id) ? released + separator : released,
    );
    text += piece;
    return { type: "token", index: tokens.length - 1, id, text: piece };
  };
  for (const id of resume?.tokens ?? []) yield written(id);
  // The batch started while the one before ran: the host records it as the GPU works, and it
  // is taken back if the text ends first. It never needs a rebuild or reaches past the chunk,
  // and is started only while batches are quick (AHEAD_MS), so that one taken back wastes little.
  let ahead: DecodeBatch | undefined;
  let lastIds = performance.now();
  let quick = false;
  try {
    outer: while (tokens.length < maxTokens) {
      if (settings.signal?.aborted) {
        finishReason = "abort";
        break;
      }
      let current = ahead;
      ahead = undefined;
      if (!current) {
        if (session.cache.free === 0) {
          session.recordRebuild(rec, settings.keep);
          yield { type: "cache", reason: "slide", keptTokens: session.cache.length };
        }
        current = session.startDecode(rec, stepsBefore(maxTokens - tokens.length), sampling);
      }
      const next = quick ? stepsBefore(maxTokens - tokens.length - current.steps) : 0;
      if (next > 0) ahead = session.startDecode(rec, next, sampling);
      const ids = await current.ids;
      const now = performance.now();
      batch = nextBatch(batch, current.steps, now - lastIds, stepsPerSubmit);
      quick = now - lastIds < AHEAD_MS;
      lastIds = now;
      for (const id of ids) {
        if (ends.has(id) && eosEnds) {
          finishReason = "eos";
          break outer;
        }
        yield written(id);
        if (stops.stopped) {
          finishReason = "stop";
          break outer;
        }
      }
      if (ahead || session.length - chunkStart < chunk || tokens.length >= maxTokens) continue;
      if (settings.onChunk) yield* settings.onChunk(chunkStart, [...prompt, ...tokens]);
      chunkStart = session.length;
    }
  } finally {
    if (ahead) {
      session.discard(rec, ahead);
      // Its readback holds a staging buffer until the GPU is done: the loop leaves nothing behind.
      await ahead.ids.catch(() => {});
    }
  }
  if (finishReason !== "stop") {
    const rest = stops.push(decoder.flush());
    const tail = stops.stopped ? rest : rest + stops.flush();
    if (stops.stopped) finishReason = "stop";
    if (tail) {
      text += tail;
      yield { type: "token", index: tokens.length, id: -1, text: tail };
    }
  }
  return { text, tokens, finishReason };
}

/** The ids that end a text when written: the tokenizer's end ids, else its EOS. */
export function endIdsOf(tokenizer: Tokenizer): readonly number[] {
  return tokenizer.endIds ?? (tokenizer.eosId === null ? [] : [tokenizer.eosId]);
}
