/**
 * Hugging Face tokenizer.json (with tokenizer_config.json) through @huggingface/tokenizers, a pure
 * JavaScript implementation. The package is imported on first use, so llama2.c-only users never
 * load it.
 */
import {
  InvalidTokenIdError,
  ModelFileNotFoundError,
  ModelFormatError,
  TokenizerMismatchError,
} from "./errors.ts";
import { type FileStore, readFileText, readJsonFile, storeFor } from "./files.ts";
import type { ChatTemplate, EncodeOptions, StreamDecoder, Tokenizer } from "./tokenizer.ts";

type HfTokenizerImpl = import("@huggingface/tokenizers").Tokenizer;

/**
 * Tokens that end a turn in the chat templates of the families templora runs (Llama 3, Qwen,
 * Phi, Gemma-style): when a model's template writes one, generating it ends the reply.
 */
const END_OF_TURN_TOKENS = ["<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"];

/** Ids of earlier text a stream decoder keeps, so the next piece is spaced as in the full text. */
const STREAM_CONTEXT_IDS = 6;

/** A tokenizer.json tokenizer behind templora's Tokenizer interface. */
export class HfTokenizer implements Tokenizer {
  readonly #impl: HfTokenizerImpl;

  readonly #tokenIds: number;

  private constructor(
    impl: HfTokenizerImpl,
    /**
     * One past the largest id: of the vocabulary (added tokens included), or of config.json's
     * vocab_size when the model has more rows than the tokenizer has tokens (Qwen pads 151669
     * tokens to 151936 rows); ids without a token decode to nothing, as in Hugging Face's
     * tokenizers.
     */
    readonly vocabSize: number,
    /**
     * From tokenizer_config.json's bos_token, else config.json's bos_token_id; null when the
     * model adds none (bos_token null or add_bos_token false, as Qwen's tokenizer_config.json).
     */
    readonly bosId: number | null,
    /** From tokenizer_config.json's eos_token, else config.json's eos_token_id. */
    readonly eosId: number | null,
    /** From tokenizer_config.json's chat_template (or chat_template.jinja), when there is one. */
    readonly chatTemplate?: ChatTemplate,
    /** EOS, the generation config's end ids and the template's end-of-turn tokens. */
    readonly endIds: readonly number[] = eosId === null ? [] : [eosId],
    tokenIds = vocabSize,
  ) {
    this.#impl = impl;
    this.#tokenIds = tokenIds;
  }

  /** Id of a token string ("▁Hello", "<0x0A>"), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#impl.token_to_id(token);
  }

  /** Token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.#impl.id_to_token(id);
  }

  /** Builds one from parsed tokenizer.json / tokenizer_config.json (and config.json for ids). */
  static async fromJson(
    tokenizerJson: unknown,
    tokenizerConfig: unknown,
    file: string,
    modelConfig: Record<string, unknown> = {},
  ): Promise<HfTokenizer> {
    const { Tokenizer } = await import("@huggingface/tokenizers");
    let impl: HfTokenizerImpl;
    try {
      impl = new Tokenizer(tokenizerJson as object, (tokenizerConfig ?? {}) as object);
    } catch (e) {
      throw new ModelFormatError(
        file,
        `tokenizer.json could not be built: ${e instanceof Error ? e.message : e}`,
        { cause: e },
      );
    }
    let maxId = -1;
    for (const id of impl.get_vocab(true).values()) maxId = Math.max(maxId, id);
    if (maxId < 0) throw new ModelFormatError(file, "tokenizer.json has an empty vocabulary");
    const cfg = (tokenizerConfig ?? {}) as Record<string, unknown>;
    const special = (key: "bos" | "eos"): number | null => {
      // An explicit null (Qwen's bos_token) or add_bos_token false means the model has none.
      if (key === "bos" && (cfg.bos_token === null || cfg.add_bos_token === false)) return null;
      const text = specialTokenText(cfg[`${key}_token`]);
      if (text !== undefined) {
        const id = impl.token_to_id(text);
        if (id === undefined) {
          throw new TokenizerMismatchError(file, `${key}_token ${text} is not in the vocabulary`);
        }
        return id;
      }
      const fromModel = modelConfig[`${key}_token_id`];
      const id = Array.isArray(fromModel) ? fromModel[0] : fromModel;
      return typeof id === "number" ? id : null;
    };
    const bosId = special("bos");
    const eosId = special("eos");
    const template = chatTemplateSource(cfg.chat_template, file);
    let chatTemplate: ChatTemplate | undefined;
    if (template !== undefined) {
      const text = (key: "bos" | "eos", id: number | null) =>
        specialTokenText(cfg[`${key}_token`]) ??
          (id === null ? undefined : impl.id_to_token(id) ?? undefined);
      chatTemplate = { template, bosToken: text("bos", bosId), eosToken: text("eos", eosId) };
    }
    const endIds = new Set<number>(eosId === null ? [] : [eosId]);
    for (const id of [modelConfig.eos_token_id].flat()) {
      if (typeof id === "number" && Number.isInteger(id) && id >= 0 && id <= maxId) endIds.add(id);
    }
    for (const token of END_OF_TURN_TOKENS) {
      const id = impl.token_to_id(token);
      if (id !== undefined && template?.includes(token)) endIds.add(id);
    }
    const rows = modelConfig.vocab_size;
    const vocabSize = typeof rows === "number" && Number.isSafeInteger(rows) && rows > maxId + 1
      ? rows
      : maxId + 1;
    return new HfTokenizer(impl, vocabSize, bosId, eosId, chatTemplate, [...endIds], maxId + 1);
  }

  encode(text: string, options: EncodeOptions): number[] {
    const ids = this.#impl.encode(text, { add_special_tokens: false }).ids;
    if (options.bos && this.bosId !== null) ids.unshift(this.bosId);
    if (options.eos && this.eosId !== null) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[]): string {
    const kept: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new InvalidTokenIdError(
          `token id ${id} is outside the vocabulary 0..${this.vocabSize - 1}`,
        );
      }
      if (id !== this.bosId && id !== this.eosId && id < this.#tokenIds) kept.push(id);
    }
    return kept.length === 0 ? "" : this.#impl.decode(kept, { skip_special_tokens: false });
  }

  /**
   * Decodes a window of recent ids and emits what the newest id added, holding it back while it
   * ends in U+FFFD (a character whose bytes are still arriving).
   */
  streamDecoder(context: readonly number[] = []): StreamDecoder {
    const shown = context.filter((id) => id !== this.bosId && id !== this.eosId);
    let ids = shown.slice(-STREAM_CONTEXT_IDS);
    let prefixEnd = ids.length; // ids[0..prefixEnd) are already shown
    const pending = (final: boolean): string => {
      const before = this.decode(ids.slice(0, prefixEnd));
      const after = this.decode(ids);
      if (!after.startsWith(before) || after.length === before.length) return "";
      if (!final && after.endsWith("\uFFFD")) return "";
      const fresh = after.slice(before.length);
      ids = ids.slice(Math.max(0, ids.length - STREAM_CONTEXT_IDS));
      prefixEnd = ids.length;
      return fresh;
    };
    return {
      push: (id: number) => {
        this.decode([id]); // validates the id
        ids.push(id);
        return pending(false);
      },
      flush: () => {
        const rest = pending(true);
        ids = [];
        prefixEnd = 0;
        return rest;
      },
    };
  }
}

/** A special token as tokenizer_config.json writes it: a string or an object with `content`. */
function specialTokenText(token: unknown): string | undefined {
  const text = typeof token === "string" ? token : (token as { content?: unknown } | null)?.content;
  return typeof text === "string" ? text : undefined;
}

/**
 * tokenizer_config.json's `chat_template`: a Jinja string, or a list of `{name, template}` of
 * which the one named "default" is used (undefined when there is none).
 */
function chatTemplateSource(value: unknown, file: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((e) => (e as { name?: unknown } | null)?.name === "default");
    const template = (named as { template?: unknown } | undefined)?.template;
    return typeof template === "string" ? template : undefined;
  }
  throw new ModelFormatError(
    file,
    "tokenizer_config.json's chat_template must be a string or a list of {name, template}",
  );
}

/**
 * Reads `dir`/tokenizer.json (and tokenizer_config.json and chat_template.jinja when present). With `modelVocabSize`,
 * every tokenizer id must fit in the model's embedding (TokenizerMismatchError otherwise).
 */
export async function readHfTokenizer(
  dir: string,
  modelVocabSize?: number,
  store: FileStore = storeFor(dir),
): Promise<HfTokenizer> {
  const join = (name: string) => store.join(dir, name);
  const file = join("tokenizer.json");
  const tokenizerJson = await readJsonFile(file, "JSON", store);
  let tokenizerConfig: unknown = {};
  try {
    tokenizerConfig = await readJsonFile(join("tokenizer_config.json"), "JSON", store);
  } catch (e) {
    if (!(e instanceof ModelFormatError && /no such file/.test(e.message))) throw e;
  }
  const config = tokenizerConfig as Record<string, unknown> | null;
  if (typeof config === "object" && config !== null && config.chat_template == null) {
    // Newer folders keep the template in a file of its own.
    try {
      const template = await readFileText(join("chat_template.jinja"), "chat template", store);
      tokenizerConfig = { ...config, chat_template: template };
    } catch (e) {
      if (!(e instanceof ModelFileNotFoundError)) throw e;
    }
  }
  let modelConfig: Record<string, unknown> = {};
  try {
    modelConfig = (await readJsonFile(join("config.json"), "JSON", store)) as Record<
      string,
      unknown
    >;
  } catch {
    // Only used for bos/eos ids when tokenizer_config.json lacks them.
  }
  try {
    // generation_config.json lists every id that ends generation (Llama 3: three of them).
    const generation = await readJsonFile(join("generation_config.json"), "JSON", store) as Record<
      string,
      unknown
    >;
    if (generation?.eos_token_id !== undefined) {
      modelConfig = { ...modelConfig, eos_token_id: generation.eos_token_id };
    }
  } catch {
    // Optional.
  }
  const tok = await HfTokenizer.fromJson(tokenizerJson, tokenizerConfig, file, modelConfig);
  if (modelVocabSize !== undefined && tok.vocabSize > modelVocabSize) {
    throw new TokenizerMismatchError(
      file,
      `tokenizer ids go up to ${tok.vocabSize - 1} but the model's vocabulary has ` +
        `${modelVocabSize} rows`,
    );
  }
  return tok;
}
