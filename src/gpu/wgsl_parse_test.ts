import assert from "node:assert/strict";
import { ShaderCompileError } from "./errors.ts";
import { describeLine, expandIncludes, foldConstantBranches, specialise } from "./wgsl_parse.ts";

const lineOf = (code: string, text: string) => code.split("\n").indexOf(text);

Deno.test("expandIncludes splices each file once, where it is first named, and maps every line", () => {
  const main = [
    "// main",
    '//!include "a.wgsl"',
    '  //!include "b.wgsl"  ',
    '//!include "a.wgsl"',
    "fn main_line() {}",
  ].join("\n");
  const includes = {
    "a.wgsl": 'fn a() {}\n//!include "b.wgsl"\n//!include "main.wgsl"',
    "b.wgsl": "fn b() {}",
    "unused.wgsl": "fn unused() {}",
  };
  const { code, origins } = expandIncludes("main.wgsl", main, includes);
  const lines = code.split("\n");
  assert.equal(lines.length, origins.length);
  assert.equal(lines.filter((l) => l === "fn a() {}").length, 1);
  assert.equal(lines.filter((l) => l === "fn b() {}").length, 1);
  assert.ok(!code.includes("unused"));

  const a = origins[lineOf(code, "fn a() {}")];
  assert.deepEqual([a.file, a.line, a.includedFrom?.file, a.includedFrom?.line], [
    "a.wgsl",
    1,
    "main.wgsl",
    2,
  ]);
  // b is first named inside a, so it is spliced there, two levels down.
  const b = origins[lineOf(code, "fn b() {}")];
  assert.equal(
    describeLine(b, 4),
    "b.wgsl:1:4 (included from a.wgsl:2) (included from main.wgsl:2)",
  );
  const last = origins[lineOf(code, "fn main_line() {}")];
  assert.deepEqual([last.file, last.line, last.includedFrom], ["main.wgsl", 5, undefined]);
});

Deno.test("expandIncludes rejects unknown names and malformed directives at their line", () => {
  const unknown = () =>
    expandIncludes("k.wgsl", 'fn f() {}\n//!include "nope.wgsl"', { "x.wgsl": "" });
  assert.throws(
    unknown,
    (e: unknown) =>
      e instanceof ShaderCompileError && e.message.startsWith("k.wgsl:2: ") &&
      /"nope\.wgsl"/.test(e.message) && /x\.wgsl/.test(e.message),
  );
  for (const bad of ["//!include reduce.wgsl", '//!include "a.wgsl" extra', "//!include"]) {
    assert.throws(
      () => expandIncludes("k.wgsl", bad, { "a.wgsl": "" }),
      (e: unknown) => e instanceof ShaderCompileError && e.message.startsWith("k.wgsl:1: "),
      bad,
    );
  }
  // Comments that merely mention the directive are left alone.
  assert.equal(
    expandIncludes("k.wgsl", '// use //!include "a.wgsl"').code,
    '// use //!include "a.wgsl"',
  );
});

Deno.test("specialise keeps the line count of a declaration over several lines", () => {
  const source = "override WG: u32 =\n  64;\nfn f() {}";
  const out = specialise(source, { WG: 8 }, "k.wgsl");
  assert.equal(out, "const WG: u32 = 8u;\n\nfn f() {}");
});

Deno.test("foldConstantBranches drops the branches constants decide and keeps the rest", () => {
  const src = [
    "const MODE_B: u32 = 2u;",
    "fn f(p: u32) -> f32 {",
    "  if (NORM) { return g(p); } // a comment with ( and {",
    "  if (MODE == 1u) {",
    "    a();",
    "  } else if (MODE == MODE_B && p < 3u) {",
    "    b();",
    "  } else {",
    "    c();",
    "  }",
    "  if (!NORM || p == 0u) { d(); }",
    "  if (p == 1u && FLAG) { e(); } else { h(); }",
    "  if (p > 2u) { if (FLAG) { i(); } }",
    "  return 0.0;",
    "}",
  ].join("\n");
  const folded = foldConstantBranches(src, { NORM: false, MODE: 2, FLAG: false });
  assert.equal(folded.length, src.length);
  assert.equal(folded.split("\n").length, src.split("\n").length);
  const calls = (code: string) => [...code.matchAll(/\b([abcdeghi])\(/g)].map((m) => m[1]);
  assert.deepEqual(calls(folded), ["b", "c", "d", "h"]);
  assert.ok(/\{\s*d\(\);\s*\}/.test(folded), "a true condition leaves its block");
  assert.ok(!folded.includes("MODE == 1u") && folded.includes("if (MODE == MODE_B && p < 3u)"));
  // MODE 1: only a(); the else chain goes.
  assert.deepEqual(calls(foldConstantBranches(src, { NORM: true, MODE: 1, FLAG: true })), [
    "g",
    "a",
    "d",
    "e",
    "h",
    "i",
  ]);
  // An else-if that folds away entirely leaves an empty block for its else.
  const tail = "fn k() { if (x) { a(); } else if (OFF) { b(); } }";
  assert.equal(
    foldConstantBranches(tail, { OFF: false }).replace(/\s+/g, " "),
    "fn k() { if (x) { a(); } else {} }",
  );
  // Unknown or unreadable conditions stay.
  const kept = "fn m() { if (v.x > 0.0) { a(); } if (FLAG[0]) { b(); } }";
  assert.equal(foldConstantBranches(kept, { FLAG: true }), kept);
});
