/**
 * The bundles the browser tests load, built with tools/web_build.ts: the kernel tests exactly as
 * Deno runs them (their `Deno.*` calls answered by browser/harness.ts, node:assert and node:url
 * by browser/shims/), and the model check.
 */
import { bundle } from "../tools/web_build.ts";
import { fileURLToPath } from "node:url";

const here = (relative: string) => fileURLToPath(new URL(relative, import.meta.url));

/** Where the tests mount the repository and ../shared on the static server. */
export const REPO_PREFIX = "/repo/";
export const SHARED_PREFIX = "/shared/";

/**
 * URL path of the kernel-test bundle. It sits in kernels_test/ of the served repository, so that
 * the tests' `new URL("../../shared/...", import.meta.url)` names the served shared data.
 */
export const KERNEL_BUNDLE_PATH = `${REPO_PREFIX}kernels_test/browser_kernels.js`;
/** URL path of the page that runs it. */
export const KERNEL_PAGE_PATH = `${REPO_PREFIX}kernels_test/browser_kernels.html`;

/**
 * Files of kernels_test/ that run no GPU code: the test-data plumbing of Deno's runs, and static
 * checks of the shader files' text (the same text every runtime compiles).
 */
const NOT_KERNEL_TESTS = new Set(["test_data_test.ts", "portability_test.ts"]);

/** GPU tests outside kernels_test/ that the browser runs too. */
const MORE_GPU_TESTS = ["../src/gpu/device_lost_test.ts"];

/** Every kernel test file (paths from kernels_test/), in name order, then the other GPU tests. */
export function kernelTestFiles(): string[] {
  return [...Deno.readDirSync(here("../kernels_test/"))]
    .map((e) => e.name)
    .filter((n) => n.endsWith("_test.ts") && !NOT_KERNEL_TESTS.has(n))
    .sort()
    .concat(MORE_GPU_TESTS);
}

const SHIMS = {
  "node:assert": here("shims/assert.ts"),
  "node:assert/strict": here("shims/assert.ts"),
  "node:url": here("shims/url.ts"),
};

/** `Deno.*` in test files, answered by the harness. */
const HARNESS = "globalThis.__temploraHarness";
const DENO_DEFINES = {
  "Deno.test": `${HARNESS}.test`,
  "Deno.env": `${HARNESS}.env`,
  "Deno.statSync": `${HARNESS}.statSync`,
  "Deno.errors": `${HARNESS}.errors`,
};

/** A page that loads `script` as a module. */
export function modulePage(title: string, script: string): string {
  return `<!doctype html>\n<meta charset="utf-8">\n<link rel="icon" href="data:,">\n` +
    `<title>${title}</title>\n` +
    `<script type="module" src="${script}"></script>\n`;
}

/** The kernel tests, harness first, as one module. */
export function kernelTestBundle(files = kernelTestFiles()): Promise<string> {
  const contents = [
    `import ${JSON.stringify(here("harness.ts"))};`,
    ...files.map((f) => `import ${JSON.stringify(here(`../kernels_test/${f}`))};`),
    `document.title = "ready";`,
  ].join("\n");
  return bundle({
    entry: { contents, resolveDir: here("../kernels_test/"), name: "browser_kernels.ts" },
    aliases: SHIMS,
    define: DENO_DEFINES,
  });
}

/**
 * browser/model_check.ts as a module that sets `globalThis.temploraModelCheck`. It imports the
 * library from `libraryUrl` (serve buildLibrary()'s output there: the check runs against the
 * very bundle `deno task build:web` writes) instead of bundling mod.ts again.
 */
export function modelCheckBundle(libraryUrl: string): Promise<string> {
  const contents = [
    `import * as check from ${JSON.stringify(here("model_check.ts"))};`,
    `globalThis.temploraModelCheck = check;`,
    `document.title = "ready";`,
  ].join("\n");
  return bundle({
    entry: { contents, resolveDir: here("."), name: "browser_model.ts" },
    externals: { [here("../mod.ts")]: libraryUrl },
  });
}
