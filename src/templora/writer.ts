import { readU32 } from "../gpu/readback.ts";
import { Recorder } from "../gpu/recorder.ts";
import type { DispatchProfiler } from "../gpu/profiler.ts";
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
  endIdsOf,
  type LoopResult,
  promptIds,
  type TokenEvent,
} from "../model/decode_loop.ts";
import { InvalidSettingError } from "../model/errors.ts";
import type { TextModel } from "../model/text_model.ts";
import { LoraAdapter } from "./adapter.ts";
import { SnapshotMismatchError } from "./errors.ts";
import { resolveTempLoraSettings, type TempLoraSettings } from "./settings.ts";
import {
  checkSnapshotModel,
  type ModelFingerprint,
  modelFingerprint,
  readAdapter,
  readSessionCache,
  restoreAdapter,
  restoreSessionCache,
  SNAPSHOT_VERSION,
  type SnapshotGeneration,
  type TempLoraSnapshot,
} from "./snapshot.ts";
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
  /** Wall-clock seconds of the step (its share of the chunk's training, whose steps run together). */
  seconds: number;
}

/** A snapshot of the run was taken and stored. */
export interface SnapshotEvent {
  /** Event discriminator. */
  type: "snapshot";
  /** Tokens written so far (prompt excluded). */
  tokens: number;
  /** Chunks trained so far. */
  chunksTrained: number;
  /** Why: "schedule" (every N chunks), "abort" or "end" (the run reached its length). */
  reason: "schedule" | "abort" | "end";
  /** Wall-clock seconds of reading it back and storing it. */
  seconds: number;
}

/** Anything a Temp-Lora run reports while it writes. */
export type WriterEvent = TokenEvent | TrainEvent | CacheEvent | SnapshotEvent;

/** When a run takes snapshots, and where they go. */
export interface SnapshotSchedule {
  /**
   * A snapshot after every this many chunks (counted from the text's start); undefined: none on
   * the way. Either way one is taken when the run is aborted through its signal and when it
   * reaches its length (not when it ends on EOS or a stop sequence, or fails).
   */
  everyChunks?: number;
  /** Stores a snapshot, for example `(s) => saveSnapshot(dir, s)`; a throw fails the run. */
  save(snapshot: TempLoraSnapshot): Promise<void>;
}

/** What a run does besides writing. */
export interface WriterRunOptions {
  /** Take snapshots (see {@link SnapshotSchedule}). */
  snapshots?: SnapshotSchedule;
  /** Called once the run's GPU buffers exist, with a live view of what it holds. */
  onSession?: (session: WriterSession) => void;
  /** Times every dispatch of the run, decoding and training (bench/profile.ts). */
  profiler?: DispatchProfiler;
}

/** What a running writer holds, for servers that account memory per session. */
export interface WriterSession {
  /**
   * GPU bytes the run holds now: its KV cache, activations, token history, adapter, optimizer
   * state, trainer and recorder (0 once it has ended). Readback staging buffers are pooled by
   * the device and not counted.
   */
  readonly gpuBytes: number;
}

/** Options of {@link resumeWithTempLora}: the rest comes from the snapshot. */
export interface ResumeOptions extends WriterRunOptions {
  /** Tokens the whole text may have, prompt excluded (default: the snapshot's run's). */
  maxTokens?: number;
  /** Decode steps per submission (does not change the text; default: the snapshot's run's). */
  stepsPerSubmit?: number;
  /** Stops writing early (the result says "abort"). */
  signal?: AbortSignal;
}

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
  /** Tokens of the text that came from a snapshot (0 for a fresh run). */
  resumedTokens: number;
  /** GPU bytes the run held at its end (see {@link WriterSession.gpuBytes}). */
  gpuBytes: number;
}

/**
 * Writes up to `options.maxTokens` tokens after `prompt`, training a temporary LoRA adapter on
 * each finished chunk of Δ tokens (with up to `trainContext` preceding tokens as loss-free
 * context) for `epochs` steps, and generating with the adapter from then on. After an update
 * generation continues on the KV cache computed with the previous adapter; every `kvRefresh`
 * chunks the cache is rebuilt with the current one. When the window is full, the cache is
 * rebuilt from the most recent max(W/2, W - Δ) tokens (the settings' `sink` first tokens of the
 * text in front of them). The adapter and its optimizer state are freed when the run ends, fails
 * or is aborted.
 */
export async function* writeWithTempLora(
  lm: TextModel,
  prompt: string | readonly number[],
  options: GenerateOptions,
  settings: TempLoraSettings,
  run: WriterRunOptions = {},
): AsyncGenerator<WriterEvent, WriterSummary> {
  return yield* write(lm, prompt, options, settings, run);
}

/**
 * Goes on writing the text of `snapshot` where its run stopped, with the snapshot's settings
 * and generation options: the text's tokens so far are replayed as token events first, then
 * writing continues, so the summary holds the whole text (prompt excluded). With the same model
 * on the same GPU the text is exactly the one the run would have written without stopping.
 * Throws {@link SnapshotMismatchError} for a snapshot of another model.
 */
export async function* resumeWithTempLora(
  lm: TextModel,
  snapshot: TempLoraSnapshot,
  options: ResumeOptions = {},
): AsyncGenerator<WriterEvent, WriterSummary> {
  checkSnapshotModel(snapshot, await modelFingerprint(lm));
  let settings: TempLoraSettings;
  try {
    settings = resolveTempLoraSettings(lm.config, snapshot.settings);
  } catch (error) {
    if (!(error instanceof InvalidSettingError)) throw error;
    throw new SnapshotMismatchError("snapshot", `its settings do not fit: ${error.message}`);
  }
  const written = snapshot.tokens.length - snapshot.promptTokens;
  const maxTokens = options.maxTokens ?? snapshot.generation.maxTokens;
  if (!(maxTokens >= written)) {
    throw new InvalidSettingError(
      `maxTokens ${maxTokens} is less than the ${written} tokens the snapshot already holds`,
    );
  }
  const generation: GenerateOptions = {
    ...snapshot.generation,
    maxTokens,
    stepsPerSubmit: options.stepsPerSubmit ?? snapshot.generation.stepsPerSubmit,
    signal: options.signal,
  };
  const prompt = [...snapshot.tokens.subarray(0, snapshot.promptTokens)];
  return yield* write(lm, prompt, generation, settings, options, snapshot);
}

/** A fresh run, or with `from` a resumed one. */
async function* write(
  lm: TextModel,
  prompt: string | readonly number[],
  options: GenerateOptions,
  settings: TempLoraSettings,
  run: WriterRunOptions,
  from?: TempLoraSnapshot,
): AsyncGenerator<WriterEvent, WriterSummary> {
  checkMaxTokens(options.maxTokens);
  const tokenizer = lm.tokenizer;
  const sampling = samplingSettings(options, endIdsOf(tokenizer));
  const ids = promptIds(tokenizer, prompt, lm.config.maxSeqLen);
  const { window: W, chunk: delta } = settings;
  const keep = Math.max(W >> 1, W - delta);
  const gpu = lm.gpu;
  // A recorder of the run's own, so work one run leaves half-recorded (a throw in the middle of
  // a step) can never reach another run's submission.
  const rec = new Recorder(gpu);
  rec.profiler = run.profiler;
  gpu.memory.resetPeak();
  const started = performance.now();

  const session = await DecodeSession.create(lm.model, lm.registry, {
    capacity: W,
    sink: settings.sink,
    maxTokens: ids.length + options.maxTokens,
  });
  let adapter: LoraAdapter | undefined;
  let trainer: Trainer | undefined;
  const chunkLosses: number[] = [...from?.progress.chunkLosses ?? []];
  let trainingMs = 0;
  let chunksTrained = from?.progress.chunksTrained ?? 0;
  let skippedSteps = from?.progress.skippedSteps ?? 0;
  let stepIndex = from?.progress.stepIndex ?? 0;
  /** History index where the chunk being written began. */
  let chunkStart = from?.chunkStart ?? ids.length;
  const schedule = run.snapshots;
  let freed = false;
  const footprint = () =>
    freed ? 0 : session.bytes + (adapter?.bytes ?? 0) + (trainer?.bytes ?? 0) + rec.bytes;
  let gpuBytes = 0;
  let fingerprint: ModelFingerprint | undefined;

  /** Reads the run's state back and stores it (the recorder must hold nothing unsubmitted). */
  async function* snapshot(reason: SnapshotEvent["reason"]): AsyncGenerator<SnapshotEvent, void> {
    if (!schedule) return;
    const t0 = performance.now();
    rec.submit();
    fingerprint ??= await modelFingerprint(lm);
    const [history, cache, adapterState] = await Promise.all([
      readU32(gpu, session.history),
      readSessionCache(session),
      adapter
        ? readAdapter(gpu, adapter, { baseModel: lm.path, dropout: settings.optimizer.dropout })
        : undefined,
    ]);
    await schedule.save({
      version: SNAPSHOT_VERSION,
      model: fingerprint,
      settings,
      generation: withoutSignal(options),
      tokens: history.slice(0, session.length),
      promptTokens: ids.length,
      promptText: typeof prompt === "string" ? prompt : from?.promptText,
      chunkStart,
      progress: { chunksTrained, stepIndex, skippedSteps, chunkLosses: [...chunkLosses] },
      adapter: adapterState,
      cache,
    });
    yield {
      type: "snapshot",
      tokens: session.length - ids.length,
      chunksTrained,
      reason,
      seconds: (performance.now() - t0) / 1000,
    };
  }

  /** After each chunk: training on it, then a snapshot when one is due. */
  async function* afterChunk(
    start: number,
    history: readonly number[],
  ): AsyncGenerator<WriterEvent, void> {
    yield* train(start, history);
    chunkStart = session.length;
    const every = schedule?.everyChunks;
    if (every && ((session.length - ids.length) / delta) % every === 0) yield* snapshot("schedule");
  }

  /** Trains on the chunk that began at `chunkStart` (of `history`), with its preceding context. */
  async function* train(
    chunkStart: number,
    history: readonly number[],
  ): AsyncGenerator<TrainEvent | CacheEvent, void> {
    if (!trainer) return;
    const exampleStart = Math.max(0, chunkStart - settings.trainContext);
    const example = history.slice(exampleStart, session.length);
    const from = Math.max(1, chunkStart - exampleStart);
    const t0 = performance.now();
    const reports = await trainer.epochs(
      rec,
      example,
      from,
      settings.optimizer,
      stepIndex,
      settings.epochs,
    );
    const ms = performance.now() - t0;
    trainingMs += ms;
    stepIndex += settings.epochs;
    for (const [epoch, report] of reports.entries()) {
      if (report.skipped) skippedSteps++;
      if (epoch === settings.epochs - 1) chunkLosses.push(report.loss);
      yield {
        type: "train",
        chunk: chunksTrained,
        epoch,
        exampleTokens: example.length,
        seconds: ms / 1000 / settings.epochs,
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
    if (from) {
      session.append([...from.tokens]);
      restoreSessionCache(session, from.cache);
    }
    if (settings.enabled && settings.epochs > 0) {
      if (from && !from.adapter) {
        throw new SnapshotMismatchError("snapshot", "Temp-Lora is on but it holds no adapter");
      }
      adapter = from?.adapter
        ? restoreAdapter(gpu, lm.config, from.adapter, settings.seed)
        : new LoraAdapter(gpu, lm.config, settings);
      trainer = await Trainer.create(
        lm.model,
        adapter,
        lm.registry,
        Math.min(lm.config.maxSeqLen, settings.trainContext + delta + 1),
      );
      session.adapter = adapter;
    }
    run.onSession?.({
      get gpuBytes() {
        return footprint();
      },
    });
    result = yield* decodeLoop(session, rec, tokenizer, ids, {
      maxTokens: options.maxTokens,
      sampling,
      stepsPerSubmit: options.stepsPerSubmit ?? 8,
      stop: options.stop ?? [],
      separator: options.separator,
      signal: options.signal,
      keep,
      chunk: delta,
      onChunk: afterChunk,
      resume: from && {
        tokens: [...from.tokens.subarray(from.promptTokens)],
        chunkStart: from.chunkStart,
      },
    });
    if (result.finishReason === "abort" || result.finishReason === "length") {
      yield* snapshot(result.finishReason === "abort" ? "abort" : "end");
    }
  } finally {
    // Work recorded but not yet submitted (a rebuild before an abort) goes out before the
    // buffers it uses are freed.
    gpuBytes = footprint();
    rec.submit();
    trainer?.destroy();
    adapter?.destroy();
    session.destroy();
    rec.destroy();
    freed = true;
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    ...result,
    promptTokens: ids.length,
    seconds,
    tokensPerSecond: (result.tokens.length - (from ? from.tokens.length - from.promptTokens : 0)) /
      seconds,
    trainingSeconds: trainingMs / 1000,
    trainingShare: trainingMs / 1000 / seconds,
    chunksTrained,
    skippedSteps,
    peakGpuBytes: gpu.memory.peakBytes,
    chunkLosses,
    resumedTokens: from ? from.tokens.length - from.promptTokens : 0,
    gpuBytes,
  };
}

/** Generation options as a snapshot keeps them: everything but the signal. */
function withoutSignal(options: GenerateOptions): SnapshotGeneration {
  const { signal: _, ...rest } = options;
  return rest;
}
