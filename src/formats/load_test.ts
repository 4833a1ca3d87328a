import assert from "node:assert/strict";
import { join } from "node:path";
import { ModelFileNotFoundError, TokenizerMismatchError } from "./errors.ts";
import { writeHfFolder } from "./hf.ts";
import { loadModelFiles } from "./load.ts";
import { STORIES260K, STORIES260K_TOKENIZER } from "../../kernels_test/test_data.ts";

const MODEL = STORIES260K;
const TOK = STORIES260K_TOKENIZER;

Deno.test("loadModelFiles: llama2.c .bin finds tok512.bin beside it", async () => {
  const m = await loadModelFiles(MODEL);
  assert.equal(m.format, "llama2c");
  assert.equal(m.config.vocabSize, 512);
  assert.equal(m.weights.config, m.config);
  assert.equal(m.tokenizer.vocabSize, 512);
  const ids = m.tokenizer.encode("Once upon a time", { bos: true });
  assert.equal(ids.length, 5);
  assert.equal(m.tokenizer.decode(ids), "Once upon a time");
});

Deno.test("loadModelFiles: converted HF folder with its tokenizer.bin; errors", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "templora_load_" });
  try {
    const src = await loadModelFiles(MODEL, { tokenizerPath: TOK });
    const hfDir = join(tmp, "hf");
    await writeHfFolder(hfDir, src.weights, { dtype: "BF16", tokenizerBin: TOK });
    const hf = await loadModelFiles(hfDir);
    assert.equal(hf.format, "hf");
    assert.equal(hf.config.ropePairs, "half");
    assert.equal(hf.weights.tensors.get("model.norm.weight")!.dtype, "BF16");
    assert.deepEqual(
      hf.tokenizer.encode("Lily", { bos: true }),
      src.tokenizer.encode("Lily", { bos: true }),
    );

    // A checkpoint alone in a folder has no tokenizer to find.
    const lonely = join(tmp, "lonely");
    await Deno.mkdir(lonely);
    await Deno.copyFile(MODEL, join(lonely, "model.bin"));
    await assert.rejects(loadModelFiles(join(lonely, "model.bin")), (e: unknown) => {
      return e instanceof ModelFileNotFoundError &&
        /tokenizerPath option \(--tokenizer/.test(e.message);
    });
    // Two candidates are ambiguous; tokenizer.bin wins over tok*.bin.
    await Deno.copyFile(TOK, join(lonely, "tok512.bin"));
    await Deno.copyFile(TOK, join(lonely, "tok999.bin"));
    await assert.rejects(loadModelFiles(join(lonely, "model.bin")), /several tokenizers/);
    await Deno.copyFile(TOK, join(lonely, "tokenizer.bin"));
    assert.equal((await loadModelFiles(join(lonely, "model.bin"))).tokenizer.vocabSize, 512);

    // A tokenizer for another vocabulary: cut after 300 tokens.
    const bytes = await Deno.readFile(TOK);
    let at = 4;
    for (let i = 0; i < 300; i++) at += 8 + new DataView(bytes.buffer).getInt32(at + 4, true);
    await Deno.writeFile(join(lonely, "small.bin"), bytes.subarray(0, at));
    await assert.rejects(
      loadModelFiles(join(lonely, "model.bin"), { tokenizerPath: join(lonely, "small.bin") }),
      TokenizerMismatchError,
    );
    await assert.rejects(loadModelFiles(join(tmp, "nothing")), ModelFileNotFoundError);
    await assert.rejects(loadModelFiles(lonely), /no config\.json/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("loadModelFiles: symbolic links to the checkpoint and tokenizer are followed", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "templora_links_" });
  try {
    // Both files linked into a folder of their own.
    const linked = join(tmp, "linked");
    await Deno.mkdir(linked);
    await Deno.symlink(MODEL, join(linked, "stories.bin"));
    await Deno.symlink(TOK, join(linked, "tok512.bin"));
    const both = await loadModelFiles(join(linked, "stories.bin"));
    assert.equal(both.tokenizer.vocabSize, 512);
    // A tokenizer.bin that is a link.
    const standard = join(tmp, "standard");
    await Deno.mkdir(standard);
    await Deno.copyFile(MODEL, join(standard, "model.bin"));
    await Deno.symlink(TOK, join(standard, "tokenizer.bin"));
    assert.equal((await loadModelFiles(join(standard, "model.bin"))).tokenizer.vocabSize, 512);
    // A link to the checkpoint alone: its tokenizer is found beside the file it points to.
    const alone = join(tmp, "alone");
    await Deno.mkdir(alone);
    await Deno.symlink(MODEL, join(alone, "model.bin"));
    assert.equal((await loadModelFiles(join(alone, "model.bin"))).tokenizer.vocabSize, 512);
    // A dangling link is no candidate.
    await Deno.remove(join(standard, "tokenizer.bin"));
    await Deno.symlink(join(tmp, "missing.bin"), join(standard, "tok512.bin"));
    await assert.rejects(loadModelFiles(join(standard, "model.bin")), /no tokenizer\.bin or tok/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
