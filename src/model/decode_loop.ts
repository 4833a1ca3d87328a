import type { Recorder } from "../gpu/recorder.ts";
import type { Tokenizer } from "../formats/tokenizer.ts";
import type { DecodeSession, SamplingSettings } from "./decode_session.ts";
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
   * Called after each complete chunk with the history index where it began (not after the
   * last tokens of the text); its events are passed on.
   */
  onChunk?: (chunkStart: number) => AsyncGenerator<E, void>;
}

/** A batch of decode steps shorter than this (ms) makes the next one twice as long. */
export const BATCH_TARGET_MS = 50;

/** Batches grow to at most this many times the first one's steps. */
export const MAX_STEP_GROWTH = 8;

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
 * session, decodes in batches (rebuilding the cache from the last `keep` tokens when it is full),
 * streams each token's text through the tokenizer's stream decoder and the stop watcher, ends on
 * EOS (unless banned or written as the separator), a stop sequence, `maxTokens` or the abort
 * signal, and calls `onChunk` between chunks. The session stays the caller's to free.
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
  outer: while (tokens.length < maxTokens) {
    if (settings.signal?.aborted) {
      finishReason = "abort";
      break;
    }
    if (session.cache.free === 0) {
      session.recordRebuild(rec, settings.keep);
      yield { type: "cache", reason: "slide", keptTokens: session.cache.length };
    }
    const inChunk = chunk - (session.length - chunkStart);
    const steps = Math.min(
      batch,
      session.stepsAvailable,
      maxTokens - tokens.length,
      inChunk,
    );
    const started = performance.now();
    const ids = await session.decode(rec, steps, sampling);
    batch = nextBatch(batch, steps, performance.now() - started, stepsPerSubmit);
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
    if (session.length - chunkStart < chunk || tokens.length >= maxTokens) continue;
    if (settings.onChunk) yield* settings.onChunk(chunkStart);
    chunkStart = session.length;
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
