/**
 * One entry point for "a model": llama2.c .bin files, GGUF files and Hugging Face folders, read
 * from a path (Deno), a URL or files a user picked (see {@link ModelSource}).
 */
import type { ModelConfig } from "./config.ts";
import { ModelFileNotFoundError } from "./errors.ts";
import {
  type FileFacts,
  type FileStore,
  isUrlPath,
  type ModelSource,
  statPath,
  storedPath,
  urlFiles,
} from "./files.ts";
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
  /**
   * Tokenizer file (tokenizer.bin) or folder (with tokenizer.json) to use instead of the default:
   * a path in the same place as the model (among chosen files: a name), or an http(s) URL.
   */
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
  /** Where the model was read: its path, URL, or name among the chosen files. */
  path: string;
}

/**
 * Loads a model and its tokenizer from `source` (a path, a URL, a `File` or several):
 * - a llama2.c checkpoint (a file): the tokenizer is `tokenizerPath`, else tokenizer.bin beside
 *   it, else the only tok*.bin beside it (beside a URL, which cannot be listed:
 *   tok{vocabulary size}.bin, llama2.c's name for a trained tokenizer);
 * - a GGUF file (`.gguf`, or any file starting with the GGUF magic): the tokenizer is the one in
 *   its metadata unless `tokenizerPath` is given; F32/F16/BF16 tensors are read now;
 * - a folder with config.json (Hugging Face; a URL ending in "/"): safetensors weights, and
 *   tokenizer.json from the folder (or `tokenizerPath`), falling back to a tokenizer.bin there
 *   (written by writeHfFolder).
 * Among several chosen files the model is the folder with config.json, else the GGUF file, else
 * the largest .bin that is not a tokenizer.
 * The tokenizer is checked against the model's vocabulary (TokenizerMismatchError).
 */
export async function loadModelFiles(
  source: ModelSource,
  options: LoadOptions = {},
): Promise<LoadedModel> {
  const { store, path: given } = storedPath(source);
  const path = given === "" ? await modelAmongFiles(store) : given;
  const info = await statPath(path, store);
  if (!info) throw new ModelFileNotFoundError(path, "no such file or folder");
  const tokenizerAt = (fallback: string) => {
    const p = options.tokenizerPath ?? fallback;
    return { store: isUrlPath(p) ? urlFiles : store, path: p };
  };
  if (info.isDirectory) {
    if (!(await statPath(store.join(path, "config.json"), store))?.isFile) {
      throw new ModelFileNotFoundError(
        path,
        "folder has no config.json (a Hugging Face model folder is expected; a llama2.c " +
          "checkpoint is given as its .bin file)",
      );
    }
    const weights = await readHfModel(path, store);
    const tokenizer = await loadTokenizer(tokenizerAt(path), weights.config.vocabSize);
    return {
      format: "hf",
      config: weights.config,
      weights,
      tokenizer,
      source: weightSourceOf(weights),
      path,
    };
  }
  if (path.toLowerCase().endsWith(".gguf") || (await isGgufFile(path, store))) {
    return await loadGguf(path, store, options);
  }
  const weights = await readLlama2c(path, store);
  const tokenizer = await loadTokenizer(
    options.tokenizerPath === undefined
      ? { store, path: await findTokenizerBin(path, store, weights.config.vocabSize) }
      : tokenizerAt(options.tokenizerPath),
    weights.config.vocabSize,
  );
  return {
    format: "llama2c",
    config: weights.config,
    weights,
    tokenizer,
    source: weightSourceOf(weights),
    path,
  };
}

/** A GGUF model with its own tokenizer (or `tokenizerPath`'s). */
async function loadGguf(
  path: string,
  store: FileStore,
  options: LoadOptions,
): Promise<LoadedModel> {
  const gguf = await readGgufModel(path, store);
  const { config } = gguf;
  const tokenizer = options.tokenizerPath === undefined
    ? await ggufTokenizer(gguf.gguf, config.vocabSize)
    : await loadTokenizer(
      {
        store: isUrlPath(options.tokenizerPath) ? urlFiles : store,
        path: options.tokenizerPath,
      },
      config.vocabSize,
    );
  if (gguf.quantized.length === 0) {
    const weights = await ggufModelWeights(gguf);
    return {
      format: "gguf",
      config,
      weights,
      tokenizer,
      gguf,
      source: weightSourceOf(weights),
      path,
    };
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
    path,
  };
}

/** A tokenizer file (tokenizer.bin format) or a folder (tokenizer.json, else tokenizer.bin). */
async function loadTokenizer(
  { store, path }: { store: FileStore; path: string },
  vocabSize: number,
): Promise<Tokenizer> {
  const info = await statPath(path, store);
  if (!info) throw new ModelFileNotFoundError(path, "tokenizer not found");
  if (!info.isDirectory) return await readTokenizerBin(path, vocabSize, store);
  if (await statPath(store.join(path, "tokenizer.json"), store)) {
    return await readHfTokenizer(path, vocabSize, store);
  }
  const bin = store.join(path, "tokenizer.bin");
  if (await statPath(bin, store)) return await readTokenizerBin(bin, vocabSize, store);
  throw new ModelFileNotFoundError(path, "folder has neither tokenizer.json nor tokenizer.bin");
}

/**
 * tokenizer.bin beside the checkpoint, else the single tok*.bin there (symbolic links count as
 * the files they point to); when the checkpoint is a link and nothing is beside it, the same
 * search beside the file it points to. Where the folder cannot be listed (a URL): tokenizer.bin
 * or tok{vocabSize}.bin.
 */
async function findTokenizerBin(
  modelPath: string,
  store: FileStore,
  vocabSize: number,
): Promise<string> {
  const found = await tokenizerBeside(modelPath, store, vocabSize);
  if (typeof found === "string") return found;
  const real = await store.realPath(modelPath).catch(() => modelPath);
  if (found.length === 0 && store.dirname(real) !== store.dirname(modelPath)) {
    const besideTarget = await tokenizerBeside(real, store, vocabSize);
    if (typeof besideTarget === "string") return besideTarget;
  }
  const dir = store.dirname(modelPath);
  const how = "name it with the tokenizerPath option (--tokenizer on the command line)";
  throw new ModelFileNotFoundError(
    modelPath,
    found.length === 0
      ? `no tokenizer.bin or tok*.bin beside it in ${dir}; ${how}`
      : `several tokenizers beside it (${found.sort().join(", ")}); ${how}`,
  );
}

/** The tokenizer file beside `modelPath`, or the candidates when there is not exactly one. */
async function tokenizerBeside(
  modelPath: string,
  store: FileStore,
  vocabSize: number,
): Promise<string | string[]> {
  const dir = store.dirname(modelPath);
  const standard = store.join(dir, "tokenizer.bin");
  const entries = await store.list(dir);
  if (entries === null) {
    // Probe the likelier name first (each miss is a request): llama2.c's own tokenizer.bin has
    // 32000 tokens, the ones its scripts train are saved as tok{vocab size}.bin.
    const named = store.join(dir, `tok${vocabSize}.bin`);
    for (const candidate of vocabSize === 32000 ? [standard, named] : [named, standard]) {
      if ((await statPath(candidate, store))?.isFile) return candidate;
    }
    return [];
  }
  if (entries.some((e) => e.name === "tokenizer.bin" && e.isFile)) return standard;
  const candidates = entries
    .filter((e) => e.isFile && /^tok.*\.bin$/.test(e.name) && e.name !== store.basename(modelPath))
    .map((e) => e.name);
  return candidates.length === 1 ? store.join(dir, candidates[0]) : candidates;
}

/**
 * Which of several chosen files is the model: the folder holding config.json (the shallowest),
 * else the only GGUF file, else the largest .bin that is not a tokenizer.
 */
async function modelAmongFiles(store: FileStore): Promise<string> {
  const files: { path: string; facts: FileFacts }[] = [];
  const walk = async (dir: string) => {
    for (const e of (await store.list(dir)) ?? []) {
      const path = store.join(dir, e.name);
      if (e.isDirectory) await walk(path);
      else files.push({ path, facts: e });
    }
  };
  await walk("");
  const configs = files.filter((f) => store.basename(f.path) === "config.json")
    .sort((a, b) => a.path.split("/").length - b.path.split("/").length);
  if (configs.length > 0) {
    const dir = store.dirname(configs[0].path);
    return dir === "." ? "" : dir;
  }
  const ggufs = files.filter((f) => f.path.toLowerCase().endsWith(".gguf"));
  if (ggufs.length === 1) return ggufs[0].path;
  const bins = files
    .filter((f) => /\.bin$/i.test(f.path) && !/^tok/.test(store.basename(f.path)))
    .sort((a, b) => b.facts.size - a.facts.size);
  if (ggufs.length === 0 && bins.length > 0) return bins[0].path;
  throw new ModelFileNotFoundError(
    store.description,
    ggufs.length > 1
      ? `several GGUF files (${ggufs.map((f) => f.path).join(", ")}); choose one`
      : "no model among them (a llama2.c .bin with its tokenizer, a .gguf file, or a Hugging " +
        "Face folder with config.json)",
  );
}
