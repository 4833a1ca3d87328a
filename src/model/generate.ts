import type { KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tokenizer } from "../formats/tokenizer.ts";
import { checkSampling, DecodeSession, type SamplingSettings } from "./decode_session.ts";
import { InvalidSettingError, PromptTooLongError } from "./errors.ts";
import type { LlamaModel } from "./llama.ts";
import { StopWatcher } from "./stop.ts";

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
  /** KV window in tokens (default: the model's trained length). */
  window?: number;
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

/** Why generation ended. */
export type FinishReason = "length" | "eos" | "stop" | "abort";

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
}

/** Resolved sampling settings with defaults applied. */
export function samplingSettings(options: GenerateOptions, eosId: number | null): SamplingSettings {
  const s: SamplingSettings = {
    temperature: options.temperature ?? 0.8,
    topK: options.topK ?? 0,
    topP: options.topP ?? 0.95,
    repetitionPenalty: options.repetitionPenalty ?? 1,
    penaltyWindow: options.penaltyWindow ?? 64,
    seed: options.seed ?? 0,
    banned: options.banEos && eosId !== null ? [eosId] : [],
  };
  checkSampling(s);
  return s;
}

/**
 * Writes up to `maxTokens` tokens after `prompt`, yielding each token with the text it released,
 * and returns the whole result. The prompt is encoded with BOS (when the tokenizer has one).
 */
export async function* generate(
  model: LlamaModel,
  tokenizer: Tokenizer,
  registry: KernelRegistry,
  recorder: Recorder,
  prompt: string | readonly number[],
  options: GenerateOptions,
): AsyncGenerator<GeneratedToken, GenerationResult> {
  const { maxTokens } = options;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) {
    throw new InvalidSettingError(`maxTokens must be an integer >= 0, got ${maxTokens}`);
  }
  const sampling = samplingSettings(options, tokenizer.eosId);
  const stepsPerSubmit = options.stepsPerSubmit ?? 8;
  if (!Number.isInteger(stepsPerSubmit) || stepsPerSubmit < 1) {
    throw new InvalidSettingError(`stepsPerSubmit must be an integer >= 1, got ${stepsPerSubmit}`);
  }
  const promptIds = typeof prompt === "string"
    ? tokenizer.encode(prompt, { bos: true })
    : [...prompt];
  const limit = model.config.maxSeqLen;
  if (promptIds.length > limit) throw new PromptTooLongError(promptIds.length, limit);
  if (promptIds.length === 0) {
    throw new InvalidSettingError("an empty prompt needs a tokenizer with a BOS token");
  }

  const started = performance.now();
  const session = await DecodeSession.create(model, registry, {
    capacity: options.window,
    maxTokens: promptIds.length + maxTokens,
  });
  const tokens: number[] = [];
  let text = "";
  let finishReason: FinishReason = "length";
  try {
    session.append(promptIds);
    session.recordFill(recorder);
    const decoder = tokenizer.streamDecoder(promptIds);
    const stops = new StopWatcher(options.stop ?? []);
    outer: while (tokens.length < maxTokens) {
      if (options.signal?.aborted) {
        finishReason = "abort";
        break;
      }
      if (session.cache.free === 0) session.recordRebuild(recorder, session.capacity >> 1);
      const steps = Math.min(stepsPerSubmit, session.stepsAvailable, maxTokens - tokens.length);
      const ids = await session.decode(recorder, steps, sampling);
      for (const id of ids) {
        if (id === tokenizer.eosId && !options.banEos) {
          finishReason = "eos";
          break outer;
        }
        tokens.push(id);
        const piece = stops.push(decoder.push(id));
        text += piece;
        yield { id, text: piece };
        if (stops.stopped) {
          finishReason = "stop";
          break outer;
        }
      }
    }
    if (finishReason !== "stop") {
      const rest = stops.push(decoder.flush()) + (stops.stopped ? "" : stops.flush());
      if (stops.stopped) finishReason = "stop";
      if (rest) {
        text += rest;
        yield { id: null, text: rest };
      }
    }
  } finally {
    session.destroy();
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    text,
    tokens,
    promptTokens: promptIds.length,
    finishReason,
    seconds,
    tokensPerSecond: tokens.length / seconds,
  };
}
