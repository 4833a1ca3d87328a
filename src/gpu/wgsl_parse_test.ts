import assert from "node:assert/strict";
import { ShaderCompileError } from "./errors.ts";
import { describeLine, expandIncludes, specialise } from "./wgsl_parse.ts";

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
