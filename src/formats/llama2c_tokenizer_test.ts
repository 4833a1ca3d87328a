import assert from "node:assert/strict";
import { Rng } from "../core/random.ts";
import {
  CorruptHeaderError,
  InvalidTokenIdError,
  ModelFileNotFoundError,
  TokenizerMismatchError,
  TruncatedFileError,
} from "./errors.ts";
import { type Llama2cTokenizer, parseTokenizerBin, readTokenizerBin } from "./llama2c_tokenizer.ts";
import { STORIES260K_TOKENIZER } from "../../kernels_test/test_data.ts";

const TOK_PATH = STORIES260K_TOKENIZER;
const tokBytes = await Deno.readFile(TOK_PATH);
const tok = parseTokenizerBin(tokBytes, TOK_PATH, 512);
const utf8 = new TextEncoder();

function seed(): Rng {
  const s = (Math.random() * 2 ** 31) >>> 0;
  console.log(`seed ${s}`);
  return new Rng(s);
}

function id(piece: string): number {
  const i = tok.tokenId(piece);
  assert.ok(i !== undefined, `${JSON.stringify(piece)} should be in the vocabulary`);
  return i;
}

/** run.c's encode transliterated literally (O(n^2) merge loop), as the oracle. */
function encodeRunC(t: Llama2cTokenizer, text: string, bos: boolean): number[] {
  const key = (b: Uint8Array) => String.fromCharCode(...b);
  const lookup = new Map<string, number>();
  t.pieces.forEach((p, i) => lookup.has(key(p)) || lookup.set(key(p), i));
  const tokens: number[] = [];
  if (bos) tokens.push(1);
  const bytes = utf8.encode(text);
  if (bytes.length > 0) tokens.push(lookup.get(" ")!);
  let buf: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    if ((bytes[i] & 0xc0) !== 0x80) buf = [];
    buf.push(bytes[i]);
    if (i + 1 < bytes.length && (bytes[i + 1] & 0xc0) === 0x80 && buf.length < 4) continue;
    const found = lookup.get(String.fromCharCode(...buf));
    if (found !== undefined) tokens.push(found);
    else for (const b of buf) tokens.push(b + 3);
    buf = [];
  }
  const start = bos ? 1 : 0;
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = start; i < tokens.length - 1; i++) {
      const merged = lookup.get(key(t.pieces[tokens[i]]) + key(t.pieces[tokens[i + 1]]));
      if (merged !== undefined && t.scores[merged] > bestScore) {
        bestScore = t.scores[merged];
        bestId = merged;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

const ALPHABET = [
  ..."abcdefghijklmnopqrstuvwxyz",
  ..."ABCDELOST",
  ..."      ,.!?'\"\n\t-0123456789",
  ..."éèüßñçøå",
  ..."日本語中文",
  "🙂",
  "👍🏽",
  "\u0301",
];

function randomText(rng: Rng, maxLen: number): string {
  let s = "";
  const n = rng.int(maxLen + 1);
  for (let i = 0; i < n; i++) s += ALPHABET[rng.int(ALPHABET.length)];
  return s;
}

Deno.test("tok512.bin: vocabulary layout", () => {
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  assert.equal(tok.maxTokenLength, 7);
  assert.equal(tok.tokenId("<unk>"), 0);
  assert.equal(tok.tokenId("<0x41>"), 0x41 + 3);
  assert.ok(tok.tokenId(" ") !== undefined);
});

Deno.test("encode: 'Once upon a time' is BOS + four whole-word tokens, each with its space", () => {
  // The dummy prefix makes every word start with a space; these words are whole tokens in a
  // TinyStories vocabulary, and merging only ever lengthens the leftmost-best pair.
  const ids = tok.encode("Once upon a time", { bos: true });
  assert.deepEqual(ids, [1, id(" Once"), id(" upon"), id(" a"), id(" time")]);
  assert.equal(tok.decode(ids), "Once upon a time");
  assert.deepEqual(tok.encode("Once upon a time", { bos: false, eos: true }), [
    ...ids.slice(1),
    2,
  ]);
});

Deno.test("encode: empty text has no dummy prefix", () => {
  assert.deepEqual(tok.encode("", { bos: true }), [1]);
  assert.deepEqual(tok.encode("", { bos: false }), []);
  assert.deepEqual(tok.encode("", { bos: true, eos: true }), [1, 2]);
});

Deno.test("encode: codepoints missing from the vocabulary fall back to their UTF-8 bytes", () => {
  const text = "日本";
  assert.equal(tok.tokenId("日"), undefined);
  const bytes = [...utf8.encode(text)];
  assert.deepEqual(tok.encode(text, { bos: false }), [id(" "), ...bytes.map((b) => b + 3)]);
  assert.equal(tok.decode(tok.encode(text, { bos: true })), text);
});

Deno.test("encode: a single space and leading spaces survive the round trip", () => {
  for (const text of [" ", "  x", "x  ", "\n", "a\n\nb"]) {
    assert.equal(tok.decode(tok.encode(text, { bos: true })), text, JSON.stringify(text));
  }
  // Without BOS run.c keeps the dummy-prefix space.
  assert.equal(tok.decode(tok.encode("hi", { bos: false })), " hi");
});

Deno.test("encode: the heap merge equals run.c's quadratic loop, ties included", () => {
  const rng = seed();
  const fixed = ["aaaaaaaaaaa", "lalalalala", "          ", "the the the the", "Lily and Lily"];
  for (const text of fixed) {
    assert.deepEqual(tok.encode(text, { bos: true }), encodeRunC(tok, text, true), text);
  }
  for (let i = 0; i < 200; i++) {
    const text = randomText(rng, 60);
    assert.deepEqual(tok.encode(text, { bos: i % 2 === 0 }), encodeRunC(tok, text, i % 2 === 0));
  }
});

Deno.test("encode/decode: random ASCII and non-ASCII text round-trips", () => {
  const rng = seed();
  for (let i = 0; i < 300; i++) {
    const text = randomText(rng, 80);
    const ids = tok.encode(text, { bos: true });
    assert.ok(ids.every((t) => t >= 0 && t < 512));
    assert.equal(tok.decode(ids), text);
  }
});

Deno.test("encode: a long text stays fast", () => {
  const text = "Once upon a time, there was a little girl named Lily. ".repeat(2000);
  const t0 = performance.now();
  const ids = tok.encode(text, { bos: true });
  const ms = performance.now() - t0;
  assert.equal(tok.decode(ids), text);
  assert.ok(ms < 3000, `encoding ${text.length} chars took ${ms.toFixed(0)} ms`);
});

Deno.test("decode: <0xXX> tokens are raw bytes, BOS/EOS vanish, space stripped only after BOS", () => {
  const lily = id(" Lily");
  assert.equal(tok.decode([1, lily]), "Lily");
  assert.equal(tok.decode([lily]), " Lily");
  assert.equal(tok.decode([lily, 2, lily]), " Lily Lily");
  assert.equal(tok.decode([0x41 + 3, 0x0a + 3]), "A\n");
  // A lone continuation byte is invalid UTF-8: replaced, not thrown.
  assert.equal(tok.decode([0x97 + 3]), "\uFFFD");
  assert.throws(() => tok.decode([512]), InvalidTokenIdError);
  assert.throws(() => tok.decode([-1]), InvalidTokenIdError);
  assert.throws(() => tok.decode([1.5]), InvalidTokenIdError);
});

Deno.test("streamDecoder: holds back split characters and matches decode", () => {
  const s = tok.streamDecoder([1]);
  const [a, b, c] = [...utf8.encode("日")].map((x) => x + 3);
  assert.equal(s.push(id(" The")), "The");
  assert.equal(s.push(a), "");
  assert.equal(s.push(b), "");
  assert.equal(s.push(c), "日");
  assert.equal(s.push(0xf0 + 3), "");
  assert.equal(s.flush(), "\uFFFD");

  const rng = seed();
  for (let trial = 0; trial < 50; trial++) {
    const clean = tok.encode(randomText(rng, 40), { bos: true });
    // A prompt that ends on a whole character, then the rest streamed.
    let cut = 1 + rng.int(clean.length);
    while (tok.decode(clean.slice(0, cut)).includes("\uFFFD")) cut--;
    const dec = tok.streamDecoder(clean.slice(0, cut));
    let out = "";
    for (const t of clean.slice(cut)) out += dec.push(t);
    assert.equal(tok.decode(clean.slice(0, cut)) + out + dec.flush(), tok.decode(clean));

    // Random ids sprinkled in (stray bytes too) exercise invalid sequences.
    const ids = [...clean];
    for (let k = 0; k < 3; k++) ids.splice(1 + rng.int(ids.length), 0, rng.int(512));
    const fromStart = tok.streamDecoder();
    assert.equal(ids.map((t) => fromStart.push(t)).join("") + fromStart.flush(), tok.decode(ids));
  }
});

/** Serializes a tokenizer.bin. */
function tokenizerBin(maxLen: number, entries: [number, Uint8Array][]): Uint8Array {
  const size = 4 + entries.reduce((n, [, b]) => n + 8 + b.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setInt32(0, maxLen, true);
  let at = 4;
  for (const [score, bytes] of entries) {
    view.setFloat32(at, score, true);
    view.setInt32(at + 4, bytes.length, true);
    out.set(bytes, at + 8);
    at += 8 + bytes.length;
  }
  return out;
}

/** Byte offset where token `id`'s record starts in tok512.bin. */
function recordOffset(id: number): number {
  let at = 4;
  const view = new DataView(tokBytes.buffer, tokBytes.byteOffset);
  for (let i = 0; i < id; i++) at += 8 + view.getInt32(at + 4, true);
  return at;
}

Deno.test("tokenizer.bin: truncated files", () => {
  const name = "cut.bin";
  for (const cut of [0, 3, recordOffset(100) + 5, recordOffset(100) + 9, tokBytes.length - 1]) {
    const err = assert.throws(
      () => parseTokenizerBin(tokBytes.subarray(0, cut), name, 512),
      TruncatedFileError,
    ) as unknown;
    void err;
  }
  assert.throws(() => parseTokenizerBin(tokBytes.subarray(0, 3), name), (e: unknown) => {
    assert.ok(e instanceof TruncatedFileError);
    assert.match(e.message, /^cut\.bin: truncated/);
    return true;
  });
  // Without a vocabulary size, a cut inside a record is still truncation.
  assert.throws(
    () => parseTokenizerBin(tokBytes.subarray(0, recordOffset(300) + 10), name),
    TruncatedFileError,
  );
});

Deno.test("tokenizer.bin: vocabulary size mismatches with the model", () => {
  const name = "tok.bin";
  // Cut cleanly after 300 tokens: a smaller vocabulary, not a torn record.
  assert.throws(
    () => parseTokenizerBin(tokBytes.subarray(0, recordOffset(300)), name, 512),
    (e: unknown) => e instanceof TokenizerMismatchError && /300 tokens.*512/.test(e.message),
  );
  assert.throws(
    () => parseTokenizerBin(tokBytes, name, 500),
    (e: unknown) => e instanceof TokenizerMismatchError && e.message.startsWith("tok.bin:"),
  );
  assert.throws(() => parseTokenizerBin(tokBytes, name, 1024), TokenizerMismatchError);
  // Reading to the end without a size finds the 512.
  assert.equal(parseTokenizerBin(tokBytes, name).vocabSize, 512);
  // Too few tokens for llama2.c's byte fallback.
  assert.throws(
    () => parseTokenizerBin(tokBytes.subarray(0, recordOffset(200)), name),
    TokenizerMismatchError,
  );
});

Deno.test("tokenizer.bin: corrupt fields", () => {
  const name = "bad.bin";
  const corrupt = (edit: (view: DataView) => void) => {
    const copy = tokBytes.slice();
    edit(new DataView(copy.buffer));
    return copy;
  };
  for (const maxLen of [0, -7, 1 << 30]) {
    assert.throws(
      () => parseTokenizerBin(corrupt((v) => v.setInt32(0, maxLen, true)), name, 512),
      (e: unknown) => e instanceof CorruptHeaderError && /max_token_length/.test(e.message),
    );
  }
  const at = recordOffset(42);
  for (const len of [-1, 8, 1 << 20]) {
    assert.throws(
      () => parseTokenizerBin(corrupt((v) => v.setInt32(at + 4, len, true)), name, 512),
      (e: unknown) => e instanceof CorruptHeaderError && /token 42/.test(e.message),
    );
  }
  assert.throws(
    () => parseTokenizerBin(corrupt((v) => v.setFloat32(at, NaN, true)), name, 512),
    CorruptHeaderError,
  );
  // Swapping two byte tokens breaks run.c's id = byte + 3 fallback.
  const entries: [number, Uint8Array][] = [];
  for (let i = 0; i < 300; i++) entries.push([0, tok.pieces[i]]);
  [entries[10], entries[11]] = [entries[11], entries[10]];
  assert.throws(() => parseTokenizerBin(tokenizerBin(7, entries), name), TokenizerMismatchError);
});

Deno.test("tokenizer.bin: readTokenizerBin names the file it could not read", async () => {
  await assert.rejects(readTokenizerBin("/nonexistent/tok.bin"), (e: unknown) => {
    return e instanceof ModelFileNotFoundError && /^\/nonexistent\/tok\.bin: /.test(e.message);
  });
  const t = await readTokenizerBin(TOK_PATH, 512);
  assert.deepEqual(t.encode("Lily", { bos: true }), tok.encode("Lily", { bos: true }));
});

/** A tiny vocabulary over "a", "b" and " " whose equal scores make ties everywhere. */
function tieTokenizer(): Llama2cTokenizer {
  const entries: [number, Uint8Array][] = [
    [0, utf8.encode("<unk>")],
    [0, utf8.encode("\n<s>\n")],
    [0, utf8.encode("\n</s>\n")],
  ];
  for (let b = 0; b < 256; b++) {
    entries.push([0, utf8.encode(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`)]);
  }
  const words: [string, number][] = [
    [" ", -1],
    ["a", -1],
    ["b", -1],
    ["aa", -2],
    ["ab", -2],
    ["ba", -2],
    ["bb", -3],
    [" a", -4],
    ["aab", -3],
    ["aaaa", -2],
    ["abab", -5],
  ];
  for (const [w, score] of words) entries.push([score, utf8.encode(w)]);
  return parseTokenizerBin(tokenizerBin(8, entries), "tie.bin");
}

Deno.test("encode: equal scores merge the leftmost pair first", () => {
  const t = tieTokenizer();
  const tid = (s: string) => t.tokenId(s)!;
  // " aaa": "aa" (-2) beats " a" (-4); of the two "aa" pairs the leftmost wins.
  assert.deepEqual(t.encode("aaa", { bos: false }), [tid(" "), tid("aa"), tid("a")]);
  // "aaaaa": aa,a,a,a -> aa,aa,a -> aaaa,a.
  assert.deepEqual(t.encode("aaaaa", { bos: false }), [tid(" "), tid("aaaa"), tid("a")]);
  const rng = seed();
  for (let i = 0; i < 300; i++) {
    let text = "";
    for (let k = rng.int(30); k > 0; k--) text += "ab "[rng.int(3)];
    assert.deepEqual(t.encode(text, { bos: true }), encodeRunC(t, text, true), text);
    assert.equal(t.decode(t.encode(text, { bos: true })), text);
  }
});
