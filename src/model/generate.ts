import type { KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tokenizer } from "../formats/tokenizer.ts";
import { checkSampling, DecodeSession, type SamplingSettings } from "./decode_session.ts";
import type { LlamaModel } from "./llama.ts";
import {
  checkMaxTokens,
  decodeLoop,
  endIdsOf,
  type FinishReason,
  promptIds as encodePrompt,
} from "./decode_loop.ts";

/** Options of {@link generate}; everything but `maxTokens` has a default. */
export interface GenerateOptions {
  /** Tokens to generate (at most). */
  maxTokens: number;
  /** 0 = greedy (default 0.8). */
  temperature?: number;
  /** 0 = off (default). */
  topK?: number;
  /** 1 = off (default 0.95). */
  topP?: number;
  /** 1 = off (default). */
  repetitionPenalty?: number;
  /** Recent tokens the penalty considers (default 64). */
  penaltyWindow?: number;
  /** Random seed (default 0). */
  seed?: number;
  /** Stop sequences: generation ends before the first one, which is not included. */
  stop?: readonly string[];
  /** Never sample EOS (default false: EOS ends the text). */
  banEos?: boolean;
  /**
   * Written where the model ends one text and begins another (EOS, or a BOS it writes), which
   * then does not end generation (default: undefined, EOS ends the text).
   */
  separator?: string;
  /** KV window in tokens (default: the model's trained length). */
  window?: number;
  /**
   * Attention sinks: the text's first this many tokens stay in the window when it slides
   * (default 0; at most a quarter of the window).
   */
  sink?: number;
  /** Decode steps recorded per submission (default 8). */
  stepsPerSubmit?: number;
  /** Stops generation early (the result says "abort"). */
  signal?: AbortSignal;
}

/** One generated token and the text it released. */
export interface GeneratedToken {
  /** The token's id; null for text released when generation ends (held-back characters). */
  id: number | null;
  /** Text this token made final ("" while a character or a possible stop is incomplete). */
  text: string;
}

/** The outcome of {@link generate}. */
export interface GenerationResult {
  /** Generated text, prompt excluded, cut before a stop sequence. */
  text: string;
  /** Generated ids (EOS excluded). */
  tokens: number[];
  /** Number of prompt tokens. */
  promptTokens: number;
  /** Why generation ended. */
  finishReason: FinishReason;
  /** Wall-clock seconds from the first prefill to the last token. */
  seconds: number;
  /** Generated tokens per second over that time. */
  tokensPerSecond: number;
  /** What decoding recorded per token (absent where the writer does not count). */
  counts?: DecodeCounts;
}

/** GPU work per decoded token. */
export interface DecodeCounts {
  /** Dispatches recorded per decoded token (the forward pass and the sampling). */
  dispatchesPerToken: number;
  /** Bytes of weights read per decoded token. */
  weightBytesPerToken: number;
  /** The least a decoded token can read: every weight once, one embedding row. */
  minWeightBytesPerToken: number;
}

/** A session's decode counts per token (the minimum with the session's adapter, if any). */
export function decodeCounts(session: DecodeSession): DecodeCounts {
  const stats = session.stats;
  const perToken = (n: number) => stats.tokens ? n / stats.tokens : 0;
  return {
    dispatchesPerToken: perToken(stats.dispatches),
    weightBytesPerToken: perToken(stats.weightBytes),
    minWeightBytesPerToken: session.model.minWeightBytesPerToken(session.adapter),
  };
}

/** Resolved sampling settings with defaults applied. */
export function samplingSettings(
  options: GenerateOptions,
  endIds: readonly number[],
): SamplingSettings {
  const s: SamplingSettings = {
    temperature: options.temperature ?? 0.8,
    topK: options.topK ?? 0,
    topP: options.topP ?? 0.95,
    repetitionPenalty: options.repetitionPenalty ?? 1,
    penaltyWindow: options.penaltyWindow ?? 64,
    seed: options.seed ?? 0,
    banned: options.banEos ? [...endIds] : [],
  };
  checkSampling(s);
  return s;
}

/**
 * Writes up to `maxTokens` tokens after `prompt`, yielding each token with the text it released,
 * and returns the whole result. The prompt is encoded with BOS (when the tokenizer has one). When
 * the window is full the cache is rebuilt from its most recent half.
 */
export async function* generate(
  model: LlamaModel,
  tokenizer: Tokenizer,
  registry: KernelRegistry,
  recorder: Recorder,
  prompt: string | readonly number[],
  options: GenerateOptions,
): AsyncGenerator<GeneratedToken, GenerationResult> {
  checkMaxTokens(options.maxTokens);
  const sampling = samplingSettings(options, endIdsOf(tokenizer));
  const ids = encodePrompt(tokenizer, prompt, model.config.maxSeqLen);
  const started = performance.now();
  const session = await DecodeSession.create(model, registry, {
    capacity: options.window,
    sink: options.sink,
    maxTokens: ids.length + options.maxTokens,
  });
  try {
    const loop = decodeLoop<never>(session, recorder, tokenizer, ids, {
      maxTokens: options.maxTokens,
      sampling,
      stepsPerSubmit: options.stepsPerSubmit ?? 8,
      stop: options.stop ?? [],
      separator: options.separator,
      signal: options.signal,
      keep: session.capacity >> 1,
      chunk: Infinity,
    });
    for (;;) {
      const next = await loop.next();
      if (next.done) {
        const seconds = (performance.now() - started) / 1000;
        return {
          ...next.value,
          promptTokens: ids.length,
          seconds,
          tokensPerSecond: next.value.tokens.length / seconds,
          counts: decodeCounts(session),
        };
      }
      const event = next.value;
      if (event.type === "token") yield { id: event.id < 0 ? null : event.id, text: event.text };
    }
  } finally {
    recorder.submit(); // recorded work must not outlive the session's buffers
    session.destroy();
  }
}
