import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);
const STORIES = "../shared/models/stories260K/stories260K.bin";
const GREEDY_START =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

/** Runs the CLI from the repository root; stderr without the driver's harmless XDG notice. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "examples/generate.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  const stderr = decode(out.stderr).split("\n").filter((l) => !l.includes("XDG_RUNTIME_DIR"))
    .join("\n");
  return { code: out.code, stdout: decode(out.stdout), stderr };
}

Deno.test("generate CLI: greedy stories260K text as JSON", async () => {
  const args = ["--prompt", "", "--max-tokens", "60", "--temperature", "0", "--json"];
  const { code, stdout, stderr } = await cli("--model", STORIES, ...args);
  assert.equal(code, 0, stderr);
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 1, "--json prints one line");
  const result = JSON.parse(lines[0]);
  assert.ok(result.text.startsWith(GREEDY_START), result.text);
  assert.equal(result.tokens.length, 60);
  assert.ok(result.tokens.every((id: unknown) => Number.isInteger(id)));
  assert.ok(result.tokens_per_second > 0);
  assert.equal(result.prompt_tokens, 1);
  assert.equal(result.finish_reason, "length");
  assert.equal(result.settings.temperature, 0);
  assert.equal(result.settings.max_tokens, 60);
});

Deno.test("generate CLI: streams text to stdout and a summary line to stderr", async () => {
  const args = ["--max-tokens", "30", "--temperature", "0", "--stop", "Lily"];
  const { code, stdout, stderr } = await cli("--model", STORIES, ...args);
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "Once upon a time, there was a little girl named \n");
  assert.match(stderr.trim(), /^\d+ tokens in [\d.]+ s \([\d.]+ tokens\/s\).*finish: stop$/);
});

Deno.test("generate CLI: bad flags exit 2 with usage; a missing model exits 1", async () => {
  for (
    const args of [
      ["--prompt", "hi"],
      ["--model", STORIES, "--max-tokens", "ten"],
      ["--model", STORIES, "--top-p", "0"],
      ["--model", STORIES, "--no-such-flag"],
    ]
  ) {
    const { code, stdout, stderr } = await cli(...args);
    assert.equal(code, 2, `${args}: ${stderr}`);
    assert.equal(stdout, "");
    assert.match(stderr, /^error: .*\nusage: deno task generate/);
  }
  const missing = await cli("--model", "../shared/models/no_such_model.bin");
  assert.equal(missing.code, 1);
  assert.equal(missing.stdout, "");
  assert.equal(missing.stderr.trim().split("\n").length, 1, missing.stderr);
  assert.match(missing.stderr, /^error: .*no_such_model\.bin: no such file/);
});
