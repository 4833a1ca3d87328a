/**
 * Where the tests find their data. stories260K and its tokenizer are in the repository
 * (models/stories260K/); the larger data (books, GGUF fixtures) is in `../shared` beside the
 * checkout. A test that needs `../shared` is declared with {@link sharedDataTest}: where the data
 * is missing it is skipped, and one line on stderr says what was skipped and why (once per run
 * when ../shared is missing altogether), unless TEMPLORA_REQUIRE_SHARED=1 (set by CI, which has
 * the data), where it fails instead.
 */
import { fileURLToPath } from "node:url";

const file = (relative: string) => fileURLToPath(new URL(relative, import.meta.url));

/** The embedded stories260K checkpoint (llama2.c format). */
export const STORIES260K = file("../models/stories260K/stories260K.bin");
/** Its tokenizer (llama2.c tokenizer.bin format, 512 tokens). */
export const STORIES260K_TOKENIZER = file("../models/stories260K/tok512.bin");
/** The folder holding both. */
export const STORIES260K_DIR = file("../models/stories260K/");

/** The shared data folder: ../shared beside the checkout, or TEMPLORA_SHARED_DIR when set. */
export const SHARED_DIR = (Deno.env.get("TEMPLORA_SHARED_DIR") ?? file("../../shared/"))
  .replace(/\/?$/, "/");

/** The path of `relative` (for example "data/books/austen-emma.txt") in the shared data. */
export function sharedPath(relative: string): string {
  return SHARED_DIR + relative;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The environment variable that turns a skip for missing shared data into a failure. */
export const REQUIRE_SHARED = "TEMPLORA_REQUIRE_SHARED";

/** Marks, process-wide (test files run in one process), which notices were given. */
const NOTICE_GIVEN = "TEMPLORA_SHARED_NOTICE_GIVEN";

/** A test that needs files of the shared data: `needs` holds paths relative to `../shared`. */
export interface SharedDataTest extends Deno.TestDefinition {
  needs: readonly string[];
}

/**
 * Declares a test that needs shared data. With the data it is an ordinary test; without it the
 * test is ignored and stderr says so once, or, with TEMPLORA_REQUIRE_SHARED=1, the test fails
 * naming what is missing.
 */
export function sharedDataTest(test: SharedDataTest): void {
  const { needs, ...definition } = test;
  const missing = needs.filter((relative) => !exists(sharedPath(relative)));
  if (missing.length === 0) {
    Deno.test(definition);
    return;
  }
  const what = missing.map((m) => `../shared/${m}`).join(", ");
  if (Deno.env.get(REQUIRE_SHARED) === "1") {
    Deno.test({
      ...definition,
      fn: () => {
        throw new Error(`${what} not found beside the checkout, and ${REQUIRE_SHARED}=1`);
      },
    });
    return;
  }
  // One line per process (test files share it) when ../shared is missing altogether, else one
  // per missing file or folder.
  const notices = exists(SHARED_DIR)
    ? missing.map((m) => [m, `../shared/${m} is missing`])
    : [["*", "../shared is not beside the checkout"]];
  const given = new Set((Deno.env.get(NOTICE_GIVEN) ?? "").split("|").filter(Boolean));
  const fresh = notices.filter(([key]) => !given.has(key));
  for (const [, why] of fresh) {
    console.error(
      `templora tests: skipping the tests that need the larger test data (books, GGUF files): ` +
        `${why} (CI sets ${REQUIRE_SHARED}=1 to fail them instead)`,
    );
  }
  if (fresh.length > 0) {
    Deno.env.set(NOTICE_GIVEN, [...given, ...fresh.map(([key]) => key)].join("|"));
  }
  Deno.test({ ...definition, ignore: true });
}
