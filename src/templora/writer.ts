import { readU32 } from "../gpu/readback.ts";
import { InvalidSettingError, PromptTooLongError } from "../model/errors.ts";
import { DecodeSession } from "../model/decode_session.ts";
import { type FinishReason, type GenerateOptions, samplingSettings } from "../model/generate.ts";
import { StopWatcher } from "../model/stop.ts";
import type { TextModel } from "../model/text_model.ts";
import { LoraAdapter } from "./adapter.ts";
import type { TempLoraSettings } from "./settings.ts";
import { type StepReport, Trainer } from "./trainer.ts";

/** A token was written. */
export interface TokenEvent {
  /** Event discriminator. */
  type: "token";
  /** Position among the generated tokens (0-based). */
  index: number;
  /** Token id (-1 for text flushed at the end that belongs to no new token). */
  id: number;
  /** Text the token made final ("" while held back). */
  text: string;
}

/** One optimizer step on a finished chunk. */
export interface TrainEvent extends StepReport {
  /** Event discriminator. */
  type: "train";
  /** Chunk number (0-based). */
  chunk: number;
  /** Epoch within the chunk (0-based). */
  epoch: number;
  /** Tokens in the training example (context + chunk). */
  exampleTokens: number;
  /** Wall-clock seconds of the step. */
  seconds: number;
}

/** The KV cache was rebuilt (window slide or refresh with the new adapter). */
export interface CacheEvent {
  /** Event discriminator. */
  type: "cache";
  /** "slide": the window was full; "refresh": periodic rebuild with the current adapter. */
  reason: "slide" | "refresh";
  /** Tokens in the KV cache after the rebuild. */
  keptTokens: number;
}

/** Anything a Temp-Lora run reports while it writes. */
export type WriterEvent = TokenEvent | TrainEvent | CacheEvent;

/** Totals at the end of a run. */
export interface WriterSummary {
  /** Generated text, prompt excluded, cut before a stop sequence. */
  text: string;
  /** Generated ids (EOS excluded). */
  tokens: number[];
  /** Number of prompt tokens. */
  promptTokens: number;
  /** Why the run ended. */
  finishReason: FinishReason;
  /** Wall-clock seconds of the run, training included. */
  seconds: number;
  /** Generated tokens per second over `seconds`. */
  tokensPerSecond: number;
  /** Seconds spent in adapter training. */
  trainingSeconds: number;
  /** trainingSeconds / seconds. */
  trainingShare: number;
  /** Chunks the adapter was trained on. */
  chunksTrained: number;
  /** Optimizer steps skipped for non-finite values. */
  skippedSteps: number;
  /** Most GPU memory in use at once during the run, in bytes. */
  peakGpuBytes: number;
  /** Mean training loss of each chunk's last epoch. */
  chunkLosses: number[];
}

/**
 * Writes up to `options.maxTokens` tokens after `prompt`, training a temporary LoRA adapter on
 * each finished chunk of Δ tokens (with up to `trainContext` preceding tokens as loss-free
 * context) for `epochs` steps, and generating with the adapter from then on. After an update
 * generation continues on the KV cache computed with the previous adapter; every `kvRefresh`
 * chunks the cache is rebuilt with the current one. When the window is full, the cache is
 * rebuilt from the most recent max(W/2, W - Δ) tokens. The adapter and its optimizer state are
 * freed when the run ends, fails or is aborted.
 */
export async function* writeWithTempLora(
  lm: TextModel,
  prompt: string | readonly number[],
  options: GenerateOptions,
  settings: TempLoraSettings,
): AsyncGenerator<WriterEvent, WriterSummary> {
  const { maxTokens } = options;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) {
    throw new InvalidSettingError(`maxTokens must be an integer >= 0, got ${maxTokens}`);
  }
  const tokenizer = lm.tokenizer;
  const sampling = samplingSettings(options, tokenizer.eosId);
  const stepsPerSubmit = options.stepsPerSubmit ?? 8;
  const promptIds = typeof prompt === "string"
    ? tokenizer.encode(prompt, { bos: true })
    : [...prompt];
  if (promptIds.length === 0) throw new InvalidSettingError("the prompt is empty");
  if (promptIds.length > lm.config.maxSeqLen) {
    throw new PromptTooLongError(promptIds.length, lm.config.maxSeqLen);
  }
  const { window: W, chunk: delta } = settings;
  const keep = Math.max(W >> 1, W - delta);
  const gpu = lm.gpu;
  const rec = lm.recorder;
  gpu.memory.resetPeak();
  const started = performance.now();

  const session = await DecodeSession.create(lm.model, lm.registry, {
    capacity: W,
    maxTokens: promptIds.length + maxTokens,
  });
  let adapter: LoraAdapter | undefined;
  let trainer: Trainer | undefined;
  const tokens: number[] = [];
  const chunkLosses: number[] = [];
  let text = "";
  let finishReason: FinishReason = "length";
  let trainingMs = 0;
  let chunksTrained = 0;
  let skippedSteps = 0;
  let stepIndex = 0;
  try {
    if (settings.enabled && settings.epochs > 0) {
      adapter = new LoraAdapter(gpu, lm.config, settings);
      trainer = await Trainer.create(
        lm.model,
        adapter,
        lm.registry,
        Math.min(lm.config.maxSeqLen, settings.trainContext + delta + 1),
      );
      session.adapter = adapter;
    }
    session.append(promptIds);
    session.recordFill(rec);
    const decoder = tokenizer.streamDecoder(promptIds);
    const stops = new StopWatcher(options.stop ?? []);
    let chunkStart = session.length; // history index where the current chunk begins

    outer: while (tokens.length < maxTokens) {
      if (options.signal?.aborted) {
        finishReason = "abort";
        break;
      }
      if (session.cache.free === 0) {
        session.recordRebuild(rec, keep);
        yield { type: "cache", reason: "slide", keptTokens: session.cache.length };
      }
      const inChunk = delta - (session.length - chunkStart);
      const steps = Math.min(
        stepsPerSubmit,
        session.stepsAvailable,
        maxTokens - tokens.length,
        inChunk,
      );
      const ids = await session.decode(rec, steps, sampling);
      for (const id of ids) {
        if (id === tokenizer.eosId && sampling.banned.length === 0) {
          finishReason = "eos";
          break outer;
        }
        tokens.push(id);
        const piece = stops.push(decoder.push(id));
        text += piece;
        yield { type: "token", index: tokens.length - 1, id, text: piece };
        if (stops.stopped) {
          finishReason = "stop";
          break outer;
        }
      }
      if (session.length - chunkStart < delta || tokens.length >= maxTokens) continue;
      if (trainer) {
        // A chunk is complete: train on it with its preceding context.
        const exampleStart = Math.max(0, chunkStart - settings.trainContext);
        const history = await readU32(gpu, session.history);
        const example = [...history.subarray(exampleStart, session.length)];
        const from = Math.max(1, chunkStart - exampleStart);
        for (let epoch = 0; epoch < settings.epochs; epoch++) {
          const t0 = performance.now();
          const report = await trainer.step(rec, example, from, settings.optimizer, stepIndex++);
          const ms = performance.now() - t0;
          trainingMs += ms;
          if (report.skipped) skippedSteps++;
          if (epoch === settings.epochs - 1) chunkLosses.push(report.loss);
          yield {
            type: "train",
            chunk: chunksTrained,
            epoch,
            exampleTokens: example.length,
            seconds: ms / 1000,
            ...report,
          };
        }
        chunksTrained++;
        if (settings.kvRefresh === 0 || chunksTrained % settings.kvRefresh === 0) {
          session.recordRebuild(rec, keep);
          yield { type: "cache", reason: "refresh", keptTokens: session.cache.length };
        }
      }
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
  } finally {
    trainer?.destroy();
    adapter?.destroy();
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
    trainingSeconds: trainingMs / 1000,
    trainingShare: trainingMs / 1000 / seconds,
    chunksTrained,
    skippedSteps,
    peakGpuBytes: gpu.memory.peakBytes,
    chunkLosses,
  };
}
