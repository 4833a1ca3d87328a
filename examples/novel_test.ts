import assert from "node:assert/strict";

const MODEL = "../shared/models/stories260K/stories260K.bin";

function novel(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "examples/novel.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  });
}

Deno.test("novel --json writes a story with Temp-Lora and one parseable JSON object", async () => {
  const out = await novel([
    "--model",
    MODEL,
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
  ]).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const result = JSON.parse(stdout);
  assert.equal(typeof result.text, "string");
  assert.ok(result.text.length > 100);
  assert.equal(result.totals.tokens, 150);
  assert.equal(result.totals.chunks_trained, 4);
  assert.equal(result.settings.chunk, 32);
  assert.equal(result.settings.window, 128);
  assert.equal(result.chunks.length, 4);
  for (const c of result.chunks) assert.equal(c.losses.length, result.settings.epochs);
  assert.equal(result.settings.epochs, 3, "three steps a chunk by default for a small model");
  assert.ok(result.totals.peak_gpu_bytes > 0 && result.totals.tokens_per_second > 0);
});

Deno.test("novel rejects bad flags with a one-line error, the usage and exit code 2", async () => {
  for (
    const args of [
      [],
      ["--model", MODEL, "--tokens", "many"],
      ["--model", MODEL, "--temperature", "-1"],
      ["--model", MODEL, "--frobnicate"],
      ["--model", MODEL, "--prompt", "a", "--prompt-file", "b"],
      ["--model", MODEL, "--window", "64", "--chunk", "60"],
    ]
  ) {
    const out = await novel(args).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 2, `${args.join(" ")}: ${stderr}`);
    assert.match(stderr, /^error: .+\n\nusage: deno task novel/m);
  }
  const missing = await novel(["--model", "/nonexistent/model.bin"]).output();
  assert.equal(missing.code, 1);
  assert.match(new TextDecoder().decode(missing.stderr), /^error: .*nonexistent/m);
});

Deno.test("novel stops cleanly on Ctrl-C: text so far in --out, exit code 130", async () => {
  const file = await Deno.makeTempFile({ suffix: ".txt" });
  const child = novel([
    "--model",
    MODEL,
    "--tokens",
    "100000",
    "--window",
    "128",
    "--chunk",
    "32",
    "--out",
    file,
  ]).spawn();
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
