import assert from "node:assert/strict";
import { REQUIRE_SHARED, STORIES260K, STORIES260K_TOKENIZER } from "./test_data.ts";

const HELPER = new URL("./test_data.ts", import.meta.url).href;

/** Runs a test file that declares two tests needing shared files that do not exist. */
async function runMissing(env: Record<string, string>) {
  const dir = await Deno.makeTempDir({ prefix: "templora_test_data_" });
  try {
    const file = `${dir}/missing_test.ts`;
    await Deno.writeTextFile(
      file,
      `import { sharedDataTest } from ${JSON.stringify(HELPER)};
      for (const name of ["first", "second"]) {
        sharedDataTest({ name, needs: ["no/such/file.txt"], fn() {} });
      }`,
    );
    const childEnv: Record<string, string> = { ...Deno.env.toObject(), NO_COLOR: "1", ...env };
    delete childEnv.TEMPLORA_SHARED_NOTICE_GIVEN;
    if (!(REQUIRE_SHARED in env)) delete childEnv[REQUIRE_SHARED];
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--no-check", file],
      env: childEnv,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the embedded stories260K is in the repository", async () => {
  assert.equal((await Deno.stat(STORIES260K)).size, 1056540);
  assert.equal((await Deno.stat(STORIES260K_TOKENIZER)).size, 6227);
});

Deno.test("shared data missing: the tests are skipped with one line, or fail in CI", async () => {
  const skipped = await runMissing({});
  assert.equal(skipped.code, 0, skipped.stderr);
  assert.match(skipped.stdout, /first \.\.\. ignored/);
  assert.match(skipped.stdout, /second \.\.\. ignored/);
  // Deno shows what a test file prints while loading as its "pre-test output".
  const output = skipped.stdout + skipped.stderr;
  const notices = output.split("\n").filter((l) => l.startsWith("templora tests:"));
  assert.equal(notices.length, 1, output);
  assert.match(notices[0], /skipping the tests that need the larger test data/);
  assert.match(notices[0], /TEMPLORA_REQUIRE_SHARED=1/);

  // Without the shared folder at all, one line for the whole run.
  const none = await runMissing({ TEMPLORA_SHARED_DIR: "/nonexistent/shared" });
  assert.equal(none.code, 0, none.stderr);
  const lines = (none.stdout + none.stderr).split("\n").filter((l) => l.startsWith("templora"));
  assert.deepEqual(lines, [
    "templora tests: skipping the tests that need the larger test data (books, GGUF files): " +
    "../shared is not beside the checkout (CI sets TEMPLORA_REQUIRE_SHARED=1 to fail them instead)",
  ]);

  const required = await runMissing({ [REQUIRE_SHARED]: "1" });
  assert.notEqual(required.code, 0);
  assert.match(required.stdout, /first \.\.\. FAILED/);
  assert.match(
    required.stdout + required.stderr,
    /no\/such\/file\.txt not found beside the checkout/,
  );
});
