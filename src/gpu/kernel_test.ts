import assert from "node:assert/strict";
import { acquireGpu } from "./device.ts";
import { ShaderCompileError } from "./errors.ts";
import { KernelRegistry } from "./kernel.ts";

const gpuTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, fn, sanitizeResources: false, sanitizeOps: false });

let registry: Promise<KernelRegistry> | undefined;
const getRegistry = () => registry ??= acquireGpu().then((gpu) => new KernelRegistry(gpu));

/** A snippet whose function reads a binding that only the including shader declares. */
const SNIPPET = [
  "// helper.wgsl",
  "fn scaled(i: u32) -> f32 {",
  "  return input[i] * SCALE;",
  "}",
].join("\n");

const main = (body: string) =>
  [
    "override SCALE: f32 = 2.0;",
    '//!include "helper.wgsl"',
    "@group(0) @binding(0) var<storage, read> input: array<f32>;        // [n]",
    "@group(0) @binding(1) var<storage, read_write> output: array<f32>; // [n]",
    "@group(0) @binding(2) var<storage, read> unused: array<f32>;       // [n]",
    "@compute @workgroup_size(1)",
    "fn main() {",
    body,
    "}",
  ].join("\n");

gpuTest("an included function's bindings are bound by name like the kernel's own", async () => {
  const kernel = await (await getRegistry()).get({
    file: "include_ok.wgsl",
    source: main("  output[0] = scaled(0u);"),
    includes: { "helper.wgsl": SNIPPET },
  });
  assert.deepEqual(kernel.storage.map((b) => b.name).sort(), ["input", "output"]);
});

async function compileError(file: string, source: string, helper: string) {
  try {
    await (await getRegistry()).get({ file, source, includes: { "helper.wgsl": helper } });
  } catch (e) {
    if (e instanceof ShaderCompileError) return e;
    throw e;
  }
  throw new Error(`${file} compiled`);
}

gpuTest("a compile error in an included file names that file and line", async () => {
  const broken = SNIPPET.replace("input[i] * SCALE", "input[i] * missing_name");
  const e = await compileError(
    "include_bad_snippet.wgsl",
    main("  output[0] = scaled(0u);"),
    broken,
  );
  const d = e.diagnostics.find((d) => d.type === "error");
  assert.ok(d, e.message);
  assert.deepEqual([d.file, d.line], ["helper.wgsl", 3], e.message);
  assert.match(d.where, /^helper\.wgsl:3:\d+ \(included from include_bad_snippet\.wgsl:2\)$/);
  assert.match(
    e.message,
    /helper\.wgsl:3:\d+ \(included from include_bad_snippet\.wgsl:2\) error:/,
  );
  assert.ok(!/wgsl:\d+:\d+\n\s*│/.test(e.message), "naga's drawing with expanded line numbers");
});

gpuTest("a compile error after an include keeps the kernel file's own line numbers", async () => {
  const e = await compileError(
    "include_bad_main.wgsl",
    main("  output[0] = scaled(0u) + also_missing;"),
    SNIPPET,
  );
  const d = e.diagnostics.find((d) => d.type === "error");
  assert.ok(d, e.message);
  assert.deepEqual([d.file, d.line], ["include_bad_main.wgsl", 8], e.message);
  assert.match(d.sourceLine, /also_missing/);
});
