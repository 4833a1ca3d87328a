import assert from "node:assert/strict";
import { join } from "node:path";
import { sharedDataTest, sharedPath, STORIES260K_TOKENIZER } from "../kernels_test/test_data.ts";
import { readTokenizerBin } from "../src/formats/llama2c_tokenizer.ts";
import { usageErrorText } from "./cli.ts";
import { runTask } from "./testing.ts";

const cli = (...args: string[]) => runTask("tokenize", args);
const gguf = (name: string) => sharedPath(`models/gguf/${name}`);

Deno.test("tokenize CLI: the embedded stories260K's ids, as lines, a list and JSON", async () => {
  const text = "Once upon a time, Lily saw a big dog.";
  const want = (await readTokenizerBin(STORIES260K_TOKENIZER)).encode(text, { bos: true });
  const ids = await cli("--text", text, "--ids");
  assert.equal(ids.code, 0, ids.stderr);
  assert.equal(ids.stdout, `[${want.join(", ")}]\n`);
  assert.equal(ids.stderr, "");

  const lines = await cli("--text", text);
  assert.equal(lines.code, 0, lines.stderr);
  const rows = lines.stdout.trimEnd().split("\n");
  assert.equal(rows.length, want.length);
  rows.forEach((row: string, i: number) => assert.match(row, new RegExp(`^ *${want[i]} -> '.*'$`)));
  assert.equal(rows[0], "     1 -> '<bos>'"); // llama2.c's tokenizer.bin names no special tokens

  const json = await cli("--text", text, "--json", "--no-bos");
  assert.equal(json.code, 0, json.stderr);
  const out = JSON.parse(json.stdout);
  assert.deepEqual(out.ids, want.slice(1));
  assert.equal(out.count, want.length - 1);
  assert.equal(out.bos, false);
  // Without BOS first, llama2.c's decoder keeps the dummy space before the text.
  assert.equal(out.pieces.join(""), " " + text);
});

sharedDataTest({
  name: "tokenize CLI: GGUF vocabularies (Llama 3 with BOS, Qwen2 without), text from a file",
  needs: ["models/gguf/tiny-llama3-bpe-q8_0.gguf", "models/gguf/tiny-qwen2-q8_0.gguf"],
  fn: async () => {
    const llama3 = await cli(
      "--model",
      gguf("tiny-llama3-bpe-q8_0.gguf"),
      "--text",
      "Hello world!",
    );
    assert.equal(llama3.code, 0, llama3.stderr);
    assert.equal(
      llama3.stdout,
      "128000 -> '<|begin_of_text|>'\n  9906 -> 'Hello'\n  1917 -> ' world'\n     0 -> '!'\n",
    );
    const dir = await Deno.makeTempDir({ prefix: "templora_tokenize_" });
    try {
      const text = "<|im_start|>user\nnaïve café 🦙<|im_end|>\n";
      const file = join(dir, "prompt.txt");
      await Deno.writeTextFile(file, text);
      const qwen = await cli(
        "--model",
        gguf("tiny-qwen2-q8_0.gguf"),
        "--text-file",
        file,
        "--json",
      );
      assert.equal(qwen.code, 0, qwen.stderr);
      const out = JSON.parse(qwen.stdout);
      assert.equal(out.bos, false); // Qwen adds no BOS
      assert.equal(out.ids[0], 151644);
      assert.equal(out.ids.at(-2), 151645);
      assert.equal(out.pieces.join(""), text);
      const same = await cli("--model", gguf("tiny-qwen2-q8_0.gguf"), "--text", text, "--ids");
      assert.equal(same.stdout, `[${out.ids.join(", ")}]\n`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("tokenize CLI: bad command lines exit 2, unreadable models and files exit 1", async () => {
  const usage: [string[], string][] = [
    [[], "give the text with exactly one of --text and --text-file"],
    [
      ["--text", "a", "--text-file", "b"],
      "give the text with exactly one of --text and --text-file",
    ],
    [["--text", "a", "--ids", "--json"], "--ids and --json do not go together"],
    [["--text", "a", "--model", ""], "--model needs a path"],
  ];
  for (const [args, message] of usage) {
    const { code, stdout, stderr } = await cli(...args);
    assert.equal(code, 2, `${args}: ${stderr}`);
    assert.equal(stdout, "");
    assert.equal(stderr, usageErrorText("tokenize", message) + "\n");
  }
  const dir = await Deno.makeTempDir({ prefix: "templora_tokenize_" });
  try {
    const bad = join(dir, "bad.gguf");
    await Deno.writeFile(bad, new TextEncoder().encode("GGML and more bytes"));
    const failures: [string[], RegExp][] = [
      [
        ["--model", join(dir, "none.gguf"), "--text", "a"],
        /^error: --model .*none\.gguf: no such file\n$/,
      ],
      [
        ["--model", bad, "--text", "a"],
        /^error: --model .*bad\.gguf: not a GGUF file: it starts with bytes 47 47 4d 4c/,
      ],
      [
        ["--text-file", join(dir, "none.txt")],
        /^error: --text-file .*none\.txt: cannot read it \(no such file\)\n$/,
      ],
    ];
    for (const [args, pattern] of failures) {
      const { code, stdout, stderr } = await cli(...args);
      assert.equal(code, 1, `${args}: ${stderr}`);
      assert.equal(stdout, "");
      assert.match(stderr, pattern);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
