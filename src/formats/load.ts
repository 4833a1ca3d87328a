/** One entry point for "a model path": llama2.c .bin files, GGUF files and Hugging Face folders. */
import { basename, dirname, join } from "node:path";
import type { ModelConfig } from "./config.ts";
import { ModelFileNotFoundError } from "./errors.ts";
import { isGgufFile } from "./gguf.ts";
import {
  type GgufModel,
  ggufModelWeights,
  ggufWeightSource,
  quantizedWeightsError,
  readGgufModel,
} from "./gguf_model.ts";
import { ggufTokenizer } from "./gguf_tokenizer.ts";
import { readHfModel } from "./hf.ts";
import { readHfTokenizer } from "./hf_tokenizer.ts";
import { readLlama2c } from "./llama2c.ts";
import { type ModelWeights, type WeightSource, weightSourceOf } from "./tensor_data.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { readTokenizerBin } from "./llama2c_tokenizer.ts";

/** Options of loadModelFiles. */
export interface LoadOptions {
  /** Tokenizer file (tokenizer.bin) or folder (with tokenizer.json) to use instead of the default. */
  tokenizerPath?: string;
}

/** What loadModelFiles returns. */
export interface LoadedModel {
  /** "llama2c" for a .bin checkpoint, "gguf" for a GGUF file, "hf" for a Hugging Face folder. */
  format: "llama2c" | "gguf" | "hf";
  /** The model's hyperparameters (the same object as weights.config). */
  config: ModelConfig;
  /**
   * Tensors under Hugging Face Llama names. For a GGUF file with block-quantized tensors, reading
   * this throws QuantizedWeightsError (the float model cannot take them; see `gguf`).
   */
  weights: ModelWeights;
  /** For a GGUF file: its tensors with their ggml types, quantized ones readable packed. */
  gguf?: GgufModel;
  /**
   * The tensors read one at a time, quantized ones as their packed blocks: what the GPU upload
   * reads (for GGUF files nothing is read before it asks).
   */
  source: WeightSource;
  /** The tokenizer, checked against config.vocabSize. */
  tokenizer: Tokenizer;
}

/**
 * Loads a model and its tokenizer from `path`:
 * - a llama2.c checkpoint (a file): the tokenizer is `tokenizerPath`, else tokenizer.bin beside
 *   it, else the only tok*.bin beside it;
 * - a GGUF file (`.gguf`, or any file starting with the GGUF magic): the tokenizer is the one in
 *   its metadata unless `tokenizerPath` is given; F32/F16/BF16 tensors are read now;
 * - a folder with config.json (Hugging Face): safetensors weights, and tokenizer.json from the
 *   folder (or `tokenizerPath`), falling back to a tokenizer.bin there (written by writeHfFolder).
 * The tokenizer is checked against the model's vocabulary (TokenizerMismatchError).
 */
export async function loadModelFiles(
  path: string,
  options: LoadOptions = {},
): Promise<LoadedModel> {
  const info = await statOrNull(path);
  if (!info) throw new ModelFileNotFoundError(path, "no such file or folder");
  if (info.isDirectory) {
    if (!(await statOrNull(join(path, "config.json")))?.isFile) {
      throw new ModelFileNotFoundError(
        path,
        "folder has no config.json (a Hugging Face model folder is expected; a llama2.c " +
          "checkpoint is given as its .bin file)",
      );
    }
    const weights = await readHfModel(path);
    const tokenizer = await loadTokenizer(options.tokenizerPath ?? path, weights.config.vocabSize);
    return {
      format: "hf",
      config: weights.config,
      weights,
      tokenizer,
      source: weightSourceOf(weights),
    };
  }
  if (path.toLowerCase().endsWith(".gguf") || (await isGgufFile(path))) {
    return await loadGguf(path, options);
  }
  const weights = await readLlama2c(path);
  const tokPath = options.tokenizerPath ?? (await findTokenizerBin(path));
  const tokenizer = await loadTokenizer(tokPath, weights.config.vocabSize);
  return {
    format: "llama2c",
    config: weights.config,
    weights,
    tokenizer,
    source: weightSourceOf(weights),
  };
}

/** A GGUF model with its own tokenizer (or `tokenizerPath`'s). */
async function loadGguf(path: string, options: LoadOptions): Promise<LoadedModel> {
  const gguf = await readGgufModel(path);
  const { config } = gguf;
  const tokenizer = options.tokenizerPath === undefined
    ? await ggufTokenizer(gguf.gguf, config.vocabSize)
    : await loadTokenizer(options.tokenizerPath, config.vocabSize);
  if (gguf.quantized.length === 0) {
    const weights = await ggufModelWeights(gguf);
    return { format: "gguf", config, weights, tokenizer, gguf, source: weightSourceOf(weights) };
  }
  const source = ggufWeightSource(gguf);
  return {
    format: "gguf",
    config,
    get weights(): ModelWeights {
      throw quantizedWeightsError(gguf);
    },
    tokenizer,
    gguf,
    source,
  };
}

/** A tokenizer file (tokenizer.bin format) or a folder (tokenizer.json, else tokenizer.bin). */
async function loadTokenizer(path: string, vocabSize: number): Promise<Tokenizer> {
  const info = await statOrNull(path);
  if (!info) throw new ModelFileNotFoundError(path, "tokenizer not found");
  if (!info.isDirectory) return await readTokenizerBin(path, vocabSize);
  if (await statOrNull(join(path, "tokenizer.json"))) return await readHfTokenizer(path, vocabSize);
  if (await statOrNull(join(path, "tokenizer.bin"))) {
    return await readTokenizerBin(join(path, "tokenizer.bin"), vocabSize);
  }
  throw new ModelFileNotFoundError(path, "folder has neither tokenizer.json nor tokenizer.bin");
}

/**
 * tokenizer.bin beside the checkpoint, else the single tok*.bin there (symbolic links count as
 * the files they point to); when the checkpoint is a link and nothing is beside it, the same
 * search beside the file it points to.
 */
async function findTokenizerBin(modelPath: string): Promise<string> {
  const found = await tokenizerBeside(modelPath);
  if (typeof found === "string") return found;
  const real = await Deno.realPath(modelPath).catch(() => modelPath);
  if (found.length === 0 && dirname(real) !== dirname(modelPath)) {
    const besideTarget = await tokenizerBeside(real);
    if (typeof besideTarget === "string") return besideTarget;
  }
  const dir = dirname(modelPath);
  const how = "name it with the tokenizerPath option (--tokenizer on the command line)";
  throw new ModelFileNotFoundError(
    modelPath,
    found.length === 0
      ? `no tokenizer.bin or tok*.bin beside it in ${dir}; ${how}`
      : `several tokenizers beside it (${found.sort().join(", ")}); ${how}`,
  );
}

/** The tokenizer file beside `modelPath`, or the candidates when there is not exactly one. */
async function tokenizerBeside(modelPath: string): Promise<string | string[]> {
  const dir = dirname(modelPath);
  const standard = join(dir, "tokenizer.bin");
  if ((await statOrNull(standard))?.isFile) return standard;
  const candidates: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (!/^tok.*\.bin$/.test(e.name) || e.name === basename(modelPath)) continue;
    if (e.isFile || (e.isSymlink && (await statOrNull(join(dir, e.name)))?.isFile)) {
      candidates.push(e.name);
    }
  }
  return candidates.length === 1 ? join(dir, candidates[0]) : candidates;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}
