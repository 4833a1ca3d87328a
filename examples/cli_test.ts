import assert from "node:assert/strict";
import { InvalidSettingError } from "../src/model/errors.ts";
import {
  numberFlag,
  parseFlags,
  separatorFlag,
  settingUsageError,
  UsageError,
  usageErrorText,
  WindowTitle,
} from "./cli.ts";

const OPTIONS = {
  tokens: { type: "string" },
  prompt: { type: "string" },
  json: { type: "boolean" },
} as const;

function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    return error.message;
  }
  throw new Error("no UsageError");
}

Deno.test("flags: each mistake is one line naming the flag or argument", () => {
  const parse = (...args: string[]) => usageMessage(() => parseFlags(OPTIONS, args));
  assert.equal(parse("--tokenz", "5"), "unknown flag --tokenz (did you mean --tokens?)");
  assert.equal(parse("--frobnicate"), "unknown flag --frobnicate");
  assert.equal(parse("--tokens"), "--tokens needs a value");
  assert.equal(parse("--json=yes"), "--json is a switch and takes no value");
  assert.equal(
    parse("story"),
    'unexpected argument "story": every value follows its flag, as in --prompt "Once upon a time"',
  );
  assert.deepEqual({ ...parseFlags(OPTIONS, ["--tokens", "5", "--json"]) }, {
    tokens: "5",
    json: true,
  });

  const number = (raw: string) =>
    usageMessage(() => numberFlag({ tokens: raw }, "tokens", 1, { integer: true, min: 1 }));
  assert.equal(number("many"), '--tokens must be an integer >= 1, got "many"');
  assert.equal(number("0"), '--tokens must be an integer >= 1, got "0"');
  assert.equal(number("2.5"), '--tokens must be an integer >= 1, got "2.5"');
  assert.equal(numberFlag({}, "tokens", 7), 7);

  // A library setting message starts with its flag instead of the setting's name.
  const window = new InvalidSettingError(
    "window must be an integer in 2..512 (512 is the model's trained length), got 600",
  );
  assert.equal(
    settingUsageError(window).message,
    "--window must be an integer in 2..512 (512 is the model's trained length), got 600",
  );
  const refresh = new InvalidSettingError("kvRefresh must be an integer >= 0, got -1");
  assert.equal(settingUsageError(refresh).message, "--kv-refresh must be an integer >= 0, got -1");
  const empty = new InvalidSettingError(
    "the prompt is empty (and the tokenizer adds no BOS token)",
  );
  assert.equal(
    settingUsageError(empty).message,
    "--prompt: the prompt is empty (and the tokenizer adds no BOS token)",
  );
  assert.equal(
    usageErrorText("novel", "unknown flag --x"),
    "error: unknown flag --x\nrun `deno task novel --help` to see every flag",
  );
});

Deno.test("--separator: escapes for newline, tab and backslash; a blank line by default", () => {
  assert.equal(separatorFlag(undefined), "\n\n");
  assert.equal(separatorFlag("\\n---\\n"), "\n---\n");
  assert.equal(separatorFlag("a\\tb\\\\n"), "a\tb\\n");
  assert.equal(separatorFlag("\\x"), "\\x", "unknown escapes stay as they are");
  assert.equal(separatorFlag(""), "");
});

Deno.test("window title: the old title is saved once and restored once", () => {
  const written: string[] = [];
  const title = new WindowTitle((bytes) => written.push(new TextDecoder().decode(bytes)));
  title.restore();
  assert.deepEqual(written, [], "nothing to restore before a title was set");
  title.set("templora: 10/100 tokens");
  title.set("templora: 20/100\ttokens");
  title.restore();
  title.restore();
  assert.deepEqual(written, [
    "\x1b[22;0t\x1b]0;templora: 10/100 tokens\x07",
    "\x1b]0;templora: 20/100 tokens\x07",
    "\x1b]0;\x07\x1b[23;0t",
  ]);
});

Deno.test("flags: a negative number after a flag is its value", () => {
  const v = parseFlags(OPTIONS, ["--tokens", "-3"]);
  assert.equal(v.tokens, "-3");
  assert.equal(
    usageMessage(() => numberFlag(v, "tokens", 1, { integer: true, min: 1 })),
    '--tokens must be an integer >= 1, got "-3"',
  );
  assert.equal(usageMessage(() => parseFlags(OPTIONS, ["--json", "-3"])), "unknown flag -3");
});
