import assert from "node:assert/strict";
import { usageErrorText } from "./cli.ts";
import { runTask, taskCommand } from "./testing.ts";

const novel = (args: string[], env?: Record<string, string | undefined>) =>
  runTask("novel", args, env);

/** Every key of a JSON value, nested ones too. */
function keysOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(keysOf);
  if (typeof value !== "object" || value === null) return [];
  return Object.entries(value).flatMap(([k, v]) => [k, ...keysOf(v)]);
}

Deno.test("novel --json: the embedded model by default, settings in snake_case, quiet stderr", async () => {
  const out = await novel([
    "--prompt",
    "Once upon a time",
    "--tokens",
    "150",
    "--window",
    "128",
    "--chunk",
    "32",
    "--seed",
    "3",
    "--json",
  ]);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stderr, "", "nothing on stderr when nothing is wrong");
  const result = JSON.parse(out.stdout);
  assert.equal(typeof result.text, "string");
  assert.ok(result.text.length > 100);
  assert.match(result.settings.model, /models\/stories260K\/stories260K\.bin$/);
  assert.equal(result.totals.tokens, 150);
  assert.equal(result.totals.chunks_trained, 4);
  const t = result.settings.templora;
  assert.equal(t.chunk, 32);
  assert.equal(t.window, 128);
  assert.equal(t.train_context, 96);
  assert.equal(t.kv_refresh, 7);
  assert.equal(t.epochs, 3, "three steps a chunk by default for a small model");
  assert.equal(result.settings.separator, "\n\n");
  assert.equal(result.settings.seed, 3);
  assert.equal(result.chunks.length, 4);
  for (const c of result.chunks) assert.equal(c.losses.length, t.epochs);
  assert.ok(result.totals.peak_gpu_bytes > 0 && result.totals.tokens_per_second > 0);
  assert.equal(typeof result.gpu.adapter, "string");
  for (const key of keysOf(result)) assert.match(key, /^[a-z0-9_]+$/, `JSON key ${key}`);
});

Deno.test("novel: a normal run streams the story and prints only its summary on stderr", async () => {
  const file = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    const out = await novel(["--tokens", "40", "--window", "64", "--out", file]);
    assert.equal(out.code, 0, out.stderr);
    assert.ok(out.stdout.startsWith("Once upon a time"), out.stdout);
    assert.match(
      out.stderr,
      /^\ndone: 40 tokens in [\d.]+ s \([\d.]+ tok\/s\), training \d+% of the time over 2 chunks, peak GPU memory [\d.]+ [KM]iB; written to .+\.txt\n$/,
    );
    assert.equal(await Deno.readTextFile(file), out.stdout.replace(/\n$/, ""));
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("novel: a command-line mistake is one line and a hint, exit code 2", async () => {
  const cases: [string[], string][] = [
    [["--tokens", "many"], '--tokens must be an integer >= 1, got "many"'],
    [["--temperature", "-1"], '--temperature must be a number >= 0, got "-1"'],
    [["--frobnicate"], "unknown flag --frobnicate"],
    [["--windw", "64"], "unknown flag --windw (did you mean --window?)"],
    [["--prompt", "a", "--prompt-file", "b"], "give --prompt or --prompt-file, not both"],
    [
      ["Once upon a time"],
      'unexpected argument "Once upon a time": every value follows its flag, as in --prompt "Once upon a time"',
    ],
    [["--model"], "--model needs a value"],
    [
      ["--window", "600"],
      "--window must be an integer in 2..512 (512 is the model's trained length), got 600",
    ],
    [
      ["--window", "64", "--chunk", "60"],
      "--chunk must be an integer in 1..32 (at most half the window of 64), got 60",
    ],
  ];
  for (const [args, message] of cases) {
    const out = await novel(args);
    assert.equal(out.code, 2, `${args.join(" ")}: ${out.stderr}`);
    assert.equal(out.stdout, "");
    assert.equal(out.stderr, usageErrorText("novel", message) + "\n");
  }
});

Deno.test("novel: a file, model or GPU problem is one line naming the flag, exit code 1", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["--prompt-file", "nope.txt"],
      /^error: --prompt-file nope\.txt: cannot read it \(no such file\)$/,
    ],
    [["--prompt-file", "docs"], /^error: --prompt-file docs: is a folder, not a file$/],
    [
      ["--out", "/nonexistent/story.txt"],
      /^error: --out \/nonexistent\/story\.txt: cannot write it \(its folder does not exist\)$/,
    ],
    [
      ["--model", "/nonexistent/model.bin"],
      /^error: --model \/nonexistent\/model\.bin: no such file or folder$/,
    ],
    [
      ["--model", "README.md"],
      /^error: --model README\.md: not a llama2\.c checkpoint: .* Hugging Face model folders$/,
    ],
    [["--model", "docs"], /^error: --model docs: folder has no config\.json /],
    [
      ["--tokenizer", "/nonexistent/tok.bin"],
      /^error: --tokenizer \/nonexistent\/tok\.bin: tokenizer not found$/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const out = await novel(args);
    assert.equal(out.code, 1, `${args.join(" ")}: ${out.stderr}`);
    assert.equal(out.stdout, "");
    assert.equal(out.stderr.split("\n").length, 2, `one line: ${out.stderr}`);
    assert.match(out.stderr.trimEnd(), pattern);
  }
});

Deno.test("novel --require-gpu: refuses a software or OpenGL adapter in one line", async () => {
  const out = await novel(["--require-gpu", "--tokens", "4", "--json"]);
  if (out.code === 0) {
    assert.equal(JSON.parse(out.stdout).gpu.software, false, "ran: the adapter is a GPU");
  } else {
    assert.equal(out.code, 1);
    assert.match(out.stderr, /^error: --require-gpu: only a software adapter was found \(".+"/);
    assert.equal(out.stderr.split("\n").length, 2);
  }
  if (Deno.build.os !== "linux") return;
  // Without a Vulkan driver only OpenGL is left (or nothing at all).
  const noVulkan = await novel(["--require-gpu", "--tokens", "4"], {
    VK_ICD_FILENAMES: "/nonexistent.json",
  });
  assert.equal(noVulkan.code, 1);
  assert.match(
    noVulkan.stderr,
    /^error: (--require-gpu: only an OpenGL adapter was found \(".+"\), not a GPU through Vulkan|no WebGPU adapter was found)/,
  );
  assert.equal(noVulkan.stderr.split("\n").length, 2, noVulkan.stderr);
});

Deno.test("novel stops cleanly on Ctrl-C: text so far in --out, exit code 130", async () => {
  const file = await Deno.makeTempFile({ suffix: ".txt" });
  const child = (await taskCommand("novel", [
    "--tokens",
    "100000",
    "--window",
    "128",
    "--chunk",
    "32",
    "--out",
    file,
  ])).spawn();
  const reader = child.stdout.getReader();
  let seen = "";
  while (seen.length < 400) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += new TextDecoder().decode(value);
  }
  child.kill("SIGINT");
  for (;;) if ((await reader.read()).done) break;
  const status = await child.status;
  await child.stderr.cancel();
  assert.equal(status.code, 130);
  const written = await Deno.readTextFile(file);
  assert.ok(written.startsWith("Once upon a time"), "the story file starts with the prompt");
  assert.ok(written.length >= seen.trim().length - 1, "the text so far is written");
  assert.ok(written.startsWith(seen.slice(0, 200)));
  await Deno.remove(file);
});
