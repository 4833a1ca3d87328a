/**
 * templora: long text with Temp-Lora on WebGPU. While a model writes, a temporary LoRA adapter
 * is trained on the text it has just produced, so the context lives in the adapter's weights;
 * the adapter is discarded when the text is done.
 *
 * ```ts
 * import { resolveTempLoraSettings, TextModel, writeWithTempLora } from "jsr:@templora/templora";
 *
 * const lm = await TextModel.load("stories260K.bin");
 * const settings = resolveTempLoraSettings(lm.config, { window: 256 });
 * for await (const event of writeWithTempLora(lm, "Once upon a time", { maxTokens: 512 }, settings)) {
 *   if (event.type === "token") await Deno.stdout.write(new TextEncoder().encode(event.text));
 *   if (event.type === "train") console.error(`chunk ${event.chunk}: loss ${event.loss.toFixed(3)}`);
 * }
 * lm.dispose();
 * ```
 *
 * Measuring what the adapter buys on a long text (the PG19 protocol, test-then-train):
 *
 * ```ts
 * import { evaluatePerplexity, resolveTempLoraSettings, TextModel } from "jsr:@templora/templora";
 *
 * const lm = await TextModel.load("stories260K.bin");
 * const book = await Deno.readTextFile("book.txt");
 * const settings = resolveTempLoraSettings(lm.config);
 * const result = await evaluatePerplexity(lm, book, { maxTokens: 4096 }, settings);
 * console.log(result.base.ppl, result.templora.ppl, `${result.decrease_pct.toFixed(1)}%`);
 * lm.dispose();
 * ```
 *
 * The OpenAI-compatible HTTP server is `createApp` in `@templora/templora/server`; the WebGPU
 * runtime underneath (device, tensors, kernels and their ops, the model's forward, the trainer,
 * file formats) is `@templora/templora/gpu`.
 * @module
 */

// Loading a model
export { TextModel, type TextModelOptions } from "./src/model/text_model.ts";
export type { LoadOptions } from "./src/formats/load.ts";
export type { ModelSource, NamedBlob } from "./src/formats/files.ts";
export type { GpuWeightDtype } from "./src/model/gpu_weights.ts";
export type { ModelConfig } from "./src/formats/config.ts";
export type {
  ChatTemplate,
  EncodeOptions,
  StreamDecoder,
  Tokenizer,
} from "./src/formats/tokenizer.ts";
export { acquireGpu, type AcquireGpuOptions, type Gpu } from "./src/gpu/device.ts";

// Generating
export type {
  DecodeCounts,
  GeneratedToken,
  GenerateOptions,
  GenerationResult,
} from "./src/model/generate.ts";
export type { CacheEvent, FinishReason, TokenEvent } from "./src/model/decode_loop.ts";

// Writing with Temp-Lora, and its settings
export {
  type TrainEvent,
  type WriterEvent,
  type WriterSummary,
  writeWithTempLora,
} from "./src/templora/writer.ts";
export {
  defaultTempLoraSettings,
  resolveTempLoraSettings,
  type TempLoraOverrides,
  type TempLoraSettings,
} from "./src/templora/settings.ts";
export { DEFAULT_OPTIMIZER, type OptimizerSettings } from "./src/templora/trainer.ts";
export { LORA_TARGETS, type LoraTarget } from "./src/core/lora.ts";

// Planning GPU memory
export { type MemoryPlan, type MemoryPlanOptions, planMemory } from "./src/templora/memory.ts";

// Evaluating
export {
  type ChunkScore,
  evaluatePerplexity,
  type EvaluationOptions,
  type EvaluationProgress,
  type EvaluationResult,
  type Perplexity,
  perplexityOf,
} from "./src/templora/evaluate.ts";
export {
  evaluateRecall,
  type FactRecall,
  type FactScore,
  parseRecallFacts,
  queryIds,
  type RecallAtDistance,
  type RecallConditions,
  type RecallFact,
  type RecallOptions,
  type RecallResult,
  type RecallSummary,
  resolveDecoys,
  type ResolvedFact,
} from "./src/templora/recall.ts";
export {
  TestThenTrain,
  type TestThenTrainOptions,
  type WalkChunk,
  type WindowTokens,
  windowTokens,
} from "./src/templora/test_then_train.ts";
export type { LossSelection, ScoreReport, StepReport } from "./src/templora/trainer.ts";
export { type TempLoraSettingsJson, tempLoraSettingsJson } from "./src/templora/settings_json.ts";
export { DocumentFormatError } from "./src/templora/jsonl.ts";
export {
  type EncodedPair,
  encodePair,
  encodeParallelDocument,
  evaluateTranslation,
  type PairScore,
  type ParallelDocument,
  parseSegmentPairs,
  type SegmentPair,
  translateDocument,
  type TranslatedSegment,
  type TranslationOptions,
  type TranslationQuality,
  type TranslationResult,
} from "./src/templora/translate.ts";
export { type BleuScore, corpusBleu, corpusChrf, tokenize13a } from "./src/templora/metrics.ts";

// Snapshots: a long run that survives a crash, and LoRA adapters in PEFT's format
export {
  type ResumeOptions,
  resumeWithTempLora,
  type SnapshotEvent,
  type SnapshotSchedule,
  type WriterRunOptions,
  type WriterSession,
} from "./src/templora/writer.ts";
export {
  type AdapterSnapshot,
  type CacheSnapshot,
  checkSnapshotTarget,
  type CommitStep,
  loadPeftAdapter,
  loadSnapshot,
  type ModelFingerprint,
  type OptimizerSnapshot,
  type PeftAdapterConfig,
  peftTensorName,
  savePeftAdapter,
  saveSnapshot,
  snapshotExists,
  type SnapshotGeneration,
  type SnapshotProgress,
  type TempLoraSnapshot,
} from "./src/templora/snapshot.ts";

// Errors: every error templora throws on purpose extends TemploraError.
export * from "./src/gpu/errors.ts";
export * from "./src/model/errors.ts";
export * from "./src/formats/errors.ts";
export * from "./src/templora/errors.ts";
