/**
 * Tokenizers from a GGUF file's `tokenizer.*` metadata. The vocabulary is turned into an
 * in-memory tokenizer.json and run by @huggingface/tokenizers (through HfTokenizer):
 * - `tokenizer.ggml.model` = "llama" (SentencePiece BPE: tokens with scores, byte fallback): the
 *   merges are derived from the scores the way Hugging Face's converter derives them (each token
 *   that splits into two vocabulary tokens is a merge, ranked by its score);
 * - "gpt2" (byte-level BPE with merges), with the pre-tokenizer `tokenizer.ggml.pre` names:
 *   "llama-bpe" (Llama 3), "qwen2", "smollm", and "default"/"gpt2" (GPT-2's own split).
 * Control tokens (type 3) and user-defined tokens (type 4) are matched whole in the text, as
 * llama.cpp does when it parses special tokens.
 */
import type { GgufFile, GgufValue } from "./gguf.ts";
import { MissingMetadataError, TokenizerMismatchError, UnsupportedFeatureError } from "./errors.ts";
import { HfTokenizer } from "./hf_tokenizer.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** llama.cpp's token types (`tokenizer.ggml.token_type`). */
export const GGUF_TOKEN_TYPE = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** Pre-tokenizers (`tokenizer.ggml.pre`) of "gpt2" vocabularies that are implemented. */
export const GGUF_BPE_PRE_TOKENIZERS: readonly string[] = [
  "llama-bpe",
  "qwen2",
  "smollm",
  "default",
  "gpt2",
];

/** A GGUF vocabulary, as the `tokenizer.*` keys hold it. */
export interface GgufVocab {
  /** `tokenizer.ggml.model`: "llama" (SentencePiece) or "gpt2" (byte-level BPE). */
  model: string;
  /** `tokenizer.ggml.pre` (gpt2 vocabularies), e.g. "llama-bpe"; undefined when absent. */
  pre?: string;
  /** Token strings by id. */
  tokens: string[];
  /** Merge priorities by id (SentencePiece; higher merges first). */
  scores?: Float32Array;
  /** Token types by id (see GGUF_TOKEN_TYPE); all NORMAL when absent. */
  types?: Int32Array;
  /** "left right" merges, highest priority first (gpt2). */
  merges?: string[];
  /** BOS id, or null when the file names none. */
  bosId: number | null;
  /** EOS id, or null. */
  eosId: number | null;
  /** End-of-turn and end-of-message ids (`tokenizer.ggml.eot_token_id`, `eom_token_id`). */
  endOfTurnIds: number[];
  /** Unknown-token id, or null. */
  unkId: number | null;
  /** Padding id, or null. */
  padId: number | null;
  /** Whether the model wants BOS first (`tokenizer.ggml.add_bos_token`, else llama.cpp's default). */
  addBos: boolean;
  /** `tokenizer.ggml.add_eos_token` (default false). */
  addEos: boolean;
  /** SentencePiece's dummy space before the text (`tokenizer.ggml.add_space_prefix`, default true). */
  addSpacePrefix: boolean;
  /** `tokenizer.chat_template`, when present. */
  chatTemplate?: string;
}

/**
 * An id key: llama.cpp's "none" (-1 as uint32 or int32) is null; an absent key is `fallback`
 * (llama.cpp's default for the vocabulary type) when that id exists, else null.
 */
function optionalId(gguf: GgufFile, key: string, n: number, fallback?: number): number | null {
  const id = gguf.optionalInt(key) ?? (fallback !== undefined && fallback < n ? fallback : null);
  if (id === null || id === 0xffffffff || id === -1) return null;
  if (!(id >= 0 && id < n)) {
    throw new TokenizerMismatchError(gguf.file, `${key} = ${id} is outside the ${n} tokens`);
  }
  return id;
}

/** Reads the vocabulary keys of a GGUF file; MissingMetadataError when it has no tokenizer. */
export function readGgufVocab(gguf: GgufFile): GgufVocab {
  const file = gguf.file;
  const model = gguf.optionalString("tokenizer.ggml.model");
  if (model === undefined) {
    throw new MissingMetadataError(
      file,
      "tokenizer.ggml.model",
      "the file carries no tokenizer; pass one with tokenizerPath",
    );
  }
  if (model !== "llama" && model !== "gpt2") {
    throw new UnsupportedFeatureError(
      file,
      `tokenizer.ggml.model ${JSON.stringify(model)} is not supported (only "llama" and "gpt2")`,
    );
  }
  const tokensArr = gguf.optionalArray("tokenizer.ggml.tokens", ["string"]);
  if (!tokensArr) throw new MissingMetadataError(file, "tokenizer.ggml.tokens");
  const tokens = tokensArr.value as string[];
  if (tokens.length === 0) throw new TokenizerMismatchError(file, "tokenizer.ggml.tokens is empty");
  const n = tokens.length;
  const perToken = <T>(key: string, types: string[], convert: (v: unknown) => T): T | undefined => {
    const a = gguf.optionalArray(key, types as never);
    if (!a) return undefined;
    if (a.value.length !== n) {
      throw new TokenizerMismatchError(
        file,
        `${key} has ${a.value.length} entries for ${n} tokens`,
      );
    }
    return convert(a.value);
  };
  const scores = perToken(
    "tokenizer.ggml.scores",
    ["float32", "float64"],
    (v) => Float32Array.from(v as ArrayLike<number>),
  );
  const types = perToken(
    "tokenizer.ggml.token_type",
    ["int32", "uint32", "int8", "uint8", "int16", "uint16"],
    (v) => Int32Array.from(v as ArrayLike<number>),
  );
  const pre = gguf.optionalString("tokenizer.ggml.pre");
  let merges: string[] | undefined;
  if (model === "gpt2") {
    const m = gguf.optionalArray("tokenizer.ggml.merges", ["string"]);
    if (!m) throw new MissingMetadataError(file, "tokenizer.ggml.merges", "a gpt2 vocabulary");
    merges = m.value as string[];
  } else if (!scores) {
    throw new MissingMetadataError(file, "tokenizer.ggml.scores", "a SentencePiece vocabulary");
  }
  // llama.cpp's defaults: SentencePiece and Llama 3 add BOS; other BPE vocabularies do not.
  const spm = model === "llama";
  const defaultBos = spm || pre === "llama-bpe";
  return {
    model,
    pre,
    tokens,
    scores,
    types,
    merges,
    // SentencePiece vocabularies default to <unk> 0, <s> 1, </s> 2, as in llama.cpp.
    bosId: optionalId(gguf, "tokenizer.ggml.bos_token_id", n, spm ? 1 : undefined),
    eosId: optionalId(gguf, "tokenizer.ggml.eos_token_id", n, spm ? 2 : undefined),
    endOfTurnIds: ["eot", "eom"]
      .map((k) => optionalId(gguf, `tokenizer.ggml.${k}_token_id`, n))
      .filter((id): id is number => id !== null),
    unkId: optionalId(gguf, "tokenizer.ggml.unknown_token_id", n, spm ? 0 : undefined),
    padId: optionalId(gguf, "tokenizer.ggml.padding_token_id", n),
    addBos: gguf.optionalBool("tokenizer.ggml.add_bos_token") ?? defaultBos,
    addEos: gguf.optionalBool("tokenizer.ggml.add_eos_token") ?? false,
    addSpacePrefix: gguf.optionalBool("tokenizer.ggml.add_space_prefix") ?? true,
    chatTemplate: gguf.optionalString("tokenizer.chat_template"),
  };
}

/** Llama 3's split (tokenizer.json of Meta-Llama-3), numbers in runs of up to three digits. */
const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|" +
  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** Qwen2's split: the same with single digits. */
const QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" +
  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const split = (regex: string) => ({
  type: "Split",
  pattern: { Regex: regex },
  behavior: "Isolated",
  invert: false,
});
const byteLevel = (useRegex: boolean) => ({
  type: "ByteLevel",
  add_prefix_space: false,
  trim_offsets: false,
  use_regex: useRegex,
});

/** Normalizer and pre-tokenizer of a gpt2 vocabulary's `pre`. */
function bpePipeline(pre: string | undefined, file: string): { normalizer: unknown; pre: unknown } {
  switch (pre ?? "default") {
    case "llama-bpe":
      return {
        normalizer: null,
        pre: { type: "Sequence", pretokenizers: [split(LLAMA3_SPLIT), byteLevel(false)] },
      };
    case "qwen2":
      // Qwen2's tokenizer.json normalizes to NFC before splitting.
      return {
        normalizer: { type: "NFC" },
        pre: { type: "Sequence", pretokenizers: [split(QWEN2_SPLIT), byteLevel(false)] },
      };
    case "smollm":
      // Every digit on its own, then GPT-2's split (llama.cpp's and SmolLM's tokenizer.json).
      return {
        normalizer: null,
        pre: { type: "Sequence", pretokenizers: [split("\\p{N}"), byteLevel(true)] },
      };
    case "default":
    case "gpt2":
      return { normalizer: null, pre: byteLevel(true) };
    default:
      throw new UnsupportedFeatureError(
        file,
        `tokenizer.ggml.pre ${JSON.stringify(pre)} is not supported; supported: ` +
          GGUF_BPE_PRE_TOKENIZERS.join(", "),
      );
  }
}

/**
 * SentencePiece merges from token scores, as Hugging Face's Llama converter made them (the
 * merges of Llama 2's tokenizer.json): every split of a token into two vocabulary tokens is a
 * merge (left, right), ranked by the token's score, highest first, ties by the ids of left and
 * then right. Control, unknown, byte and unused tokens make no merges.
 */
export function sentencePieceMerges(
  tokens: readonly string[],
  scores: Float32Array,
  types?: Int32Array,
): [string, string][] {
  const ids = new Map<string, number>();
  for (let id = 0; id < tokens.length; id++) if (!ids.has(tokens[id])) ids.set(tokens[id], id);
  const found: { l: string; r: string; score: number; lid: number; rid: number }[] = [];
  for (let id = 0; id < tokens.length; id++) {
    const type = types?.[id] ?? GGUF_TOKEN_TYPE.NORMAL;
    if (type !== GGUF_TOKEN_TYPE.NORMAL && type !== GGUF_TOKEN_TYPE.USER_DEFINED) continue;
    const chars = Array.from(tokens[id]);
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join("");
      const r = chars.slice(k).join("");
      const lid = ids.get(l);
      const rid = ids.get(r);
      if (lid !== undefined && rid !== undefined) found.push({ l, r, score: scores[id], lid, rid });
    }
  }
  found.sort((a, b) => b.score - a.score || a.lid - b.lid || a.rid - b.rid);
  return found.map((m) => [m.l, m.r]);
}

/** "left right" -> [left, right], split at the first space after the first character. */
function splitMerge(m: string, file: string): [string, string] {
  const at = m.indexOf(" ", 1);
  if (at < 0) throw new TokenizerMismatchError(file, `merge ${JSON.stringify(m)} has no space`);
  return [m.slice(0, at), m.slice(at + 1)];
}

/**
 * The tokenizer.json (and tokenizer_config.json) equivalent of a GGUF vocabulary, for
 * @huggingface/tokenizers. `bos_token` is null when the model adds no BOS.
 */
export function ggufTokenizerJson(
  vocab: GgufVocab,
  file: string,
): { tokenizerJson: Record<string, unknown>; tokenizerConfig: Record<string, unknown> } {
  const { tokens } = vocab;
  const map: Record<string, number> = Object.create(null);
  for (let id = 0; id < tokens.length; id++) if (!(tokens[id] in map)) map[tokens[id]] = id;
  const added: Record<string, unknown>[] = [];
  for (let id = 0; id < tokens.length; id++) {
    const type = vocab.types?.[id] ?? GGUF_TOKEN_TYPE.NORMAL;
    if (
      type === GGUF_TOKEN_TYPE.CONTROL || type === GGUF_TOKEN_TYPE.USER_DEFINED ||
      type === GGUF_TOKEN_TYPE.UNKNOWN
    ) {
      if (tokens[id] === "") continue; // an empty token can never be matched
      added.push({
        id,
        content: tokens[id],
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: type !== GGUF_TOKEN_TYPE.USER_DEFINED,
      });
    }
  }
  const text = (id: number | null) => (id === null ? null : tokens[id]);
  let tokenizerJson: Record<string, unknown>;
  if (vocab.model === "llama") {
    const space = "\u2581";
    const replace = { type: "Replace", pattern: { String: " " }, content: space };
    tokenizerJson = {
      version: "1.0",
      added_tokens: added,
      normalizer: vocab.addSpacePrefix
        ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: space }, replace] }
        : replace,
      pre_tokenizer: null,
      post_processor: null,
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: space }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          ...(vocab.addSpacePrefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: "BPE",
        unk_token: text(vocab.unkId),
        fuse_unk: true,
        byte_fallback: true,
        vocab: map,
        merges: sentencePieceMerges(tokens, vocab.scores!, vocab.types),
      },
    };
  } else {
    const { normalizer, pre } = bpePipeline(vocab.pre, file);
    tokenizerJson = {
      version: "1.0",
      added_tokens: added,
      normalizer,
      pre_tokenizer: pre,
      post_processor: null,
      decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true },
      model: {
        type: "BPE",
        unk_token: null,
        fuse_unk: false,
        byte_fallback: false,
        // Llama 3 takes a pre-token that is itself in the vocabulary without merging it.
        ignore_merges: vocab.pre === "llama-bpe",
        vocab: map,
        merges: (vocab.merges ?? []).map((m) => splitMerge(m, file)),
      },
    };
  }
  const tokenizerConfig: Record<string, unknown> = {
    bos_token: vocab.addBos ? text(vocab.bosId) : null,
    eos_token: text(vocab.eosId),
    clean_up_tokenization_spaces: false,
  };
  if (vocab.chatTemplate !== undefined) tokenizerConfig.chat_template = vocab.chatTemplate;
  return { tokenizerJson, tokenizerConfig };
}

/**
 * The tokenizer a GGUF file carries (an HfTokenizer underneath). BOS is the file's when the model adds it
 * (`add_bos_token`), else null (Qwen); the chat template is `tokenizer.chat_template`. With
 * `modelVocabSize`, every token must have a row in the model's embedding.
 */
export async function ggufTokenizer(gguf: GgufFile, modelVocabSize?: number): Promise<Tokenizer> {
  const vocab = readGgufVocab(gguf);
  if (modelVocabSize !== undefined && vocab.tokens.length > modelVocabSize) {
    throw new TokenizerMismatchError(
      gguf.file,
      `the vocabulary has ${vocab.tokens.length} tokens but the model's embedding has ` +
        `${modelVocabSize} rows`,
    );
  }
  const { tokenizerJson, tokenizerConfig } = ggufTokenizerJson(vocab, gguf.file);
  const modelConfig: Record<string, unknown> = {
    // EOS with the end-of-turn ids the file names: each ends a reply.
    eos_token_id: [vocab.eosId, ...vocab.endOfTurnIds].filter((id) => id !== null),
  };
  if (vocab.addBos && vocab.bosId !== null) modelConfig.bos_token_id = vocab.bosId;
  return await HfTokenizer.fromJson(tokenizerJson, tokenizerConfig, gguf.file, modelConfig);
}

/** Options of {@link hfTokenizerGgufMetadata}. */
export interface GgufVocabOptions {
  /** `tokenizer.ggml.pre`: the pre-tokenizer llama.cpp knows this vocabulary's split as. */
  pre: string;
  /** Tokens to write: the model's vocabulary; ids the tokenizer lacks become `[PAD{id}]`. */
  vocabSize: number;
  /** config.json's ids, used where tokenizer_config.json names no bos/eos token. */
  bosTokenId?: number | null;
  /** See bosTokenId. */
  eosTokenId?: number | null;
}

/**
 * The `tokenizer.*` metadata llama.cpp's converter writes for a byte-level BPE tokenizer.json
 * (Llama 3, Qwen, SmolLM): tokens by id with their types (special added tokens CONTROL, other
 * added tokens USER_DEFINED, ids past the tokenizer UNUSED padding), the merges, BOS/EOS and
 * whether BOS is added (tokenizer_config.json's add_bos_token, else whenever there is a BOS),
 * and the chat template. Other tokenizer models are refused (UnsupportedFeatureError).
 */
export function hfTokenizerGgufMetadata(
  tokenizerJson: any,
  tokenizerConfig: Record<string, unknown>,
  options: GgufVocabOptions,
): [string, GgufValue][] {
  const where = "(tokenizer.json to GGUF)";
  const model = tokenizerJson?.model;
  const byteLevel = JSON.stringify(tokenizerJson?.pre_tokenizer ?? null).includes('"ByteLevel"');
  if (model?.type !== "BPE" || model.byte_fallback === true || !byteLevel) {
    throw new UnsupportedFeatureError(
      where,
      "only byte-level BPE tokenizers are written as GGUF vocabularies",
    );
  }
  const n = options.vocabSize;
  const tokens: (string | undefined)[] = new Array(n);
  const types = new Int32Array(n).fill(GGUF_TOKEN_TYPE.NORMAL);
  const place = (token: string, id: number) => {
    if (!(Number.isInteger(id) && id >= 0 && id < n)) {
      throw new TokenizerMismatchError(where, `token ${token} has id ${id}, outside ${n} ids`);
    }
    tokens[id] = token;
  };
  for (const [token, id] of Object.entries(model.vocab as Record<string, number>)) {
    place(token, id);
  }
  for (const added of tokenizerJson.added_tokens ?? []) {
    place(added.content, added.id);
    types[added.id] = added.special ? GGUF_TOKEN_TYPE.CONTROL : GGUF_TOKEN_TYPE.USER_DEFINED;
  }
  for (let id = 0; id < n; id++) {
    if (tokens[id] !== undefined) continue;
    tokens[id] = `[PAD${id}]`;
    types[id] = GGUF_TOKEN_TYPE.UNUSED;
  }
  const ids = new Map(tokens.map((t, id) => [t!, id]));
  const special = (key: "bos" | "eos", fallback?: number | null): number | null => {
    const value = tokenizerConfig[`${key}_token`];
    const text = typeof value === "string"
      ? value
      : (value as { content?: string } | null)?.content;
    if (text === undefined || text === null) return fallback ?? null;
    const id = ids.get(text);
    if (id === undefined) {
      throw new TokenizerMismatchError(where, `${key}_token ${text} is unknown`);
    }
    return id;
  };
  const bos = special("bos", options.bosTokenId);
  const eos = special("eos", options.eosTokenId);
  const merges = (model.merges as (string | [string, string])[]).map((m) =>
    typeof m === "string" ? m : `${m[0]} ${m[1]}`
  );
  const addBos = typeof tokenizerConfig.add_bos_token === "boolean"
    ? tokenizerConfig.add_bos_token
    : bos !== null;
  const out: [string, GgufValue][] = [
    ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: "string", value: options.pre }],
    ["tokenizer.ggml.tokens", { type: "array", elementType: "string", value: tokens as string[] }],
    ["tokenizer.ggml.token_type", { type: "array", elementType: "int32", value: types }],
    ["tokenizer.ggml.merges", { type: "array", elementType: "string", value: merges }],
  ];
  if (bos !== null) out.push(["tokenizer.ggml.bos_token_id", { type: "uint32", value: bos }]);
  if (eos !== null) out.push(["tokenizer.ggml.eos_token_id", { type: "uint32", value: eos }]);
  out.push(["tokenizer.ggml.add_bos_token", { type: "bool", value: addBos }]);
  if (typeof tokenizerConfig.chat_template === "string") {
    out.push(["tokenizer.chat_template", { type: "string", value: tokenizerConfig.chat_template }]);
  }
  return out;
}
