import assert from "node:assert/strict";
import { usageErrorText } from "./cli.ts";
import { runTask } from "./testing.ts";

const GREEDY_START =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

const cli = (...args: string[]) => runTask("generate", args);

Deno.test("generate CLI: greedy stories260K text as JSON, from the embedded model", async () => {
  const args = ["--prompt", "", "--max-tokens", "60", "--temperature", "0", "--json"];
  const { code, stdout, stderr } = await cli(...args);
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "");
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
  assert.match(result.settings.model, /models\/stories260K\/stories260K\.bin$/);
});

Deno.test("generate CLI: streams text to stdout and only a summary line to stderr", async () => {
  const args = ["--max-tokens", "30", "--temperature", "0", "--stop", "Lily"];
  const { code, stdout, stderr } = await cli(...args);
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "Once upon a time, there was a little girl named \n");
  assert.match(stderr, /^\d+ tokens in [\d.]+ s \([\d.]+ tokens\/s\).*finish: stop\n$/);
});

Deno.test("generate CLI: bad flags exit 2 with one line and a hint; a missing model exits 1", async () => {
  const cases: [string[], string][] = [
    [["--max-tokens", "ten"], '--max-tokens must be an integer >= 0, got "ten"'],
    [["--top-p", "0"], '--top-p must be a number > 0 and <= 1, got "0"'],
    [["--no-such-flag"], "unknown flag --no-such-flag"],
    [
      ["--window", "1000"],
      "--window must be an integer in 2..512 (512 is the model's trained length), got 1000",
    ],
  ];
  for (const [args, message] of cases) {
    const { code, stdout, stderr } = await cli(...args);
    assert.equal(code, 2, `${args}: ${stderr}`);
    assert.equal(stdout, "");
    assert.equal(stderr, usageErrorText("generate", message) + "\n");
  }
  const missing = await cli("--model", "/nonexistent/no_such_model.bin");
  assert.equal(missing.code, 1);
  assert.equal(missing.stdout, "");
  assert.equal(
    missing.stderr,
    "error: --model /nonexistent/no_such_model.bin: no such file or folder\n",
  );
});
