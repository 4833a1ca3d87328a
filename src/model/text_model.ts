import { acquireGpu, type Gpu } from "../gpu/device.ts";
import { KernelRegistry } from "../gpu/kernel.ts";
import { Recorder } from "../gpu/recorder.ts";
import type { ModelConfig } from "../formats/config.ts";
import { loadModelFiles, type LoadOptions } from "../formats/load.ts";
import type { ModelSource } from "../formats/files.ts";
import type { Tokenizer } from "../formats/tokenizer.ts";
import {
  generate,
  type GeneratedToken,
  type GenerateOptions,
  type GenerationResult,
} from "./generate.ts";
import { LlamaModel, type LlamaModelOptions } from "./llama.ts";
import type { UploadWeightsOptions } from "./gpu_weights.ts";

/** Options of {@link TextModel.load}. */
export interface TextModelOptions extends LoadOptions, UploadWeightsOptions {
  /** A device to use; by default one is acquired (and destroyed on dispose). */
  gpu?: Gpu;
  /** How KV caches store keys and values (default "f32"; see {@link LlamaModelOptions}). */
  kvCacheDtype?: LlamaModelOptions["kvCacheDtype"];
  /** Decode small f32 models on weights with the adapter merged in (default true; see {@link LlamaModelOptions}). */
  mergeAdapter?: LlamaModelOptions["mergeAdapter"];
}

/**
 * A language model ready to write: weights on the GPU, its tokenizer, and a recorder. Load it
 * from a llama2.c checkpoint (.bin, with its tokenizer.bin beside it), a GGUF file or a Hugging
 * Face folder: by path (Deno), by URL, or from files a user picked (`File`s in a browser).
 */
export class TextModel {
  /** Kernel cache for sessions and trainers built on this model. */
  readonly registry: KernelRegistry;
  /** Recorder that generation and training record their GPU work into. */
  readonly recorder: Recorder;

  private constructor(
    readonly gpu: Gpu,
    readonly model: LlamaModel,
    readonly tokenizer: Tokenizer,
    readonly path: string,
    private readonly ownsGpu: boolean,
  ) {
    this.registry = new KernelRegistry(gpu);
    this.recorder = new Recorder(gpu);
  }

  /**
   * Loads a model and its tokenizer from `source`: a path or an http(s) URL string, a URL, a
   * `File`/`Blob`, or several files (a FileList) holding a model and its tokenizer.
   */
  static async load(source: ModelSource, options: TextModelOptions = {}): Promise<TextModel> {
    const files = await loadModelFiles(source, options);
    const { path } = files;
    const gpu = options.gpu ?? await acquireGpu();
    try {
      const model = await LlamaModel.create(gpu, new KernelRegistry(gpu), files.source, path, {
        weightDtype: options.weightDtype,
        kvCacheDtype: options.kvCacheDtype,
        mergeAdapter: options.mergeAdapter,
      });
      return new TextModel(gpu, model, files.tokenizer, path, !options.gpu);
    } catch (error) {
      if (!options.gpu) gpu.destroy();
      throw error;
    }
  }

  /** The model's sizes and settings. */
  get config(): ModelConfig {
    return this.model.config;
  }

  /** Token ids of `text` (with BOS first when `bos`, the default). */
  encode(text: string, bos = true): number[] {
    return this.tokenizer.encode(text, { bos });
  }

  /** Text of token ids. */
  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(ids);
  }

  /** Streams generated tokens with their text; the iterator's return value is the result. */
  generate(
    prompt: string | readonly number[],
    options: GenerateOptions,
  ): AsyncGenerator<GeneratedToken, GenerationResult> {
    return generate(this.model, this.tokenizer, this.registry, this.recorder, prompt, options);
  }

  /** Generates and returns only the result. */
  async complete(
    prompt: string | readonly number[],
    options: GenerateOptions,
  ): Promise<GenerationResult> {
    const it = this.generate(prompt, options);
    for (;;) {
      const step = await it.next();
      if (step.done) return step.value;
    }
  }

  /** Frees the weights, and the device when this model acquired it. */
  dispose(): void {
    this.recorder.destroy();
    this.model.destroy();
    if (this.ownsGpu) this.gpu.destroy();
  }
}
