import { readU32 } from "../gpu/readback.ts";
import { DecodeSession } from "../model/decode_session.ts";
import {
  type GenerateOptions,
  type GenerationResult,
  samplingSettings,
} from "../model/generate.ts";
import {
  type CacheEvent,
  checkMaxTokens,
  decodeLoop,
  type LoopResult,
  promptIds,
  type TokenEvent,
} from "../model/decode_loop.ts";
import type { TextModel } from "../model/text_model.ts";
import { LoraAdapter } from "./adapter.ts";
import type { TempLoraSettings } from "./settings.ts";
import { type StepReport, Trainer } from "./trainer.ts";

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

/** Anything a Temp-Lora run reports while it writes. */
export type WriterEvent = TokenEvent | TrainEvent | CacheEvent;

/** Totals at the end of a run: the generation result and what training cost. */
export interface WriterSummary extends GenerationResult {
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
  checkMaxTokens(options.maxTokens);
  const tokenizer = lm.tokenizer;
  const sampling = samplingSettings(options, tokenizer.eosId);
  const ids = promptIds(tokenizer, prompt, lm.config.maxSeqLen);
  const { window: W, chunk: delta } = settings;
  const keep = Math.max(W >> 1, W - delta);
  const gpu = lm.gpu;
  const rec = lm.recorder;
  gpu.memory.resetPeak();
  const started = performance.now();

  const session = await DecodeSession.create(lm.model, lm.registry, {
    capacity: W,
    maxTokens: ids.length + options.maxTokens,
  });
  let adapter: LoraAdapter | undefined;
  let trainer: Trainer | undefined;
  const chunkLosses: number[] = [];
  let trainingMs = 0;
  let chunksTrained = 0;
  let skippedSteps = 0;
  let stepIndex = 0;

  /** Trains on the chunk that began at `chunkStart`, with its preceding context. */
  async function* train(chunkStart: number): AsyncGenerator<TrainEvent | CacheEvent, void> {
    if (!trainer) return;
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

  let result: LoopResult;
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
    result = yield* decodeLoop(session, rec, tokenizer, ids, {
      maxTokens: options.maxTokens,
      sampling,
      stepsPerSubmit: options.stepsPerSubmit ?? 8,
      stop: options.stop ?? [],
      separator: options.separator,
      signal: options.signal,
      keep,
      chunk: delta,
      onChunk: train,
    });
  } finally {
    // Work recorded for this session but not yet submitted (a rebuild before an abort) must go
    // out before its buffers are freed: the recorder is shared with other sessions.
    rec.submit();
    trainer?.destroy();
    adapter?.destroy();
    session.destroy();
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    ...result,
    promptTokens: ids.length,
    seconds,
    tokensPerSecond: result.tokens.length / seconds,
    trainingSeconds: trainingMs / 1000,
    trainingShare: trainingMs / 1000 / seconds,
    chunksTrained,
    skippedSteps,
    peakGpuBytes: gpu.memory.peakBytes,
    chunkLosses,
  };
}
