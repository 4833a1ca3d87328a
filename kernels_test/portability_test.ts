/**
 * Static checks of every shader for what some WebGPU implementations get wrong or reject: a
 * component of a workgroup-shared vector written on its own (invocations writing different
 * components of one vector race on GPUs that store whole vectors), and float literals beyond
 * f32's range (a constant expression that is infinite is an error in Tint).
 */
import assert from "node:assert/strict";
import { readShaderFiles } from "../tools/gen_shaders.ts";

/** Lines of `code` that write one component of a `var<workgroup>` vector. */
function componentWrites(file: string, code: string): string[] {
  const found: string[] = [];
  const lines = code.split("\n").map((l) => l.replace(/\/\/.*$/, ""));
  for (const m of code.matchAll(/var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g)) {
    if (!/vec[234]/.test(m[2])) continue;
    // An array of vectors: name[i][c] or name[i].x; one vector: name[c] or name.x (each also
    // with a compound assignment).
    const element = /^\s*array\s*</.test(m[2]) ? "\\[[^\\]]*\\]\\s*" : "";
    const write = new RegExp(
      `\\b${m[1]}\\s*${element}(\\[[^\\]]*\\]|\\.[xyzwrgba]+)\\s*[-+*/]?=[^=]`,
    );
    lines.forEach((line, i) => {
      if (write.test(line)) found.push(`${file}:${i + 1}: ${line.trim()}`);
    });
  }
  return found;
}

/** Float literals of `code` whose magnitude f32 cannot hold. */
function outOfRangeLiterals(file: string, code: string): string[] {
  const found: string[] = [];
  const text = code.split("\n").map((l) => l.replace(/\/\/.*$/, "")).join("\n");
  for (const m of text.matchAll(/\b\d+(\.\d*)?[eE][-+]?\d+\b/g)) {
    if (Math.abs(Number(m[0])) > 3.4028234663852886e38) found.push(`${file}: ${m[0]}`);
  }
  return found;
}

Deno.test("no shader writes one component of a workgroup vector", async () => {
  const offenders: string[] = [];
  for (const [file, code] of await readShaderFiles()) {
    offenders.push(...componentWrites(file, code));
  }
  assert.deepEqual(offenders, []);
});

Deno.test("no shader has a float literal beyond f32's range", async () => {
  const offenders: string[] = [];
  for (const [file, code] of await readShaderFiles()) {
    offenders.push(...outOfRangeLiterals(file, code));
  }
  assert.deepEqual(offenders, []);
});

Deno.test("the checks find what they look for", () => {
  const racy = "var<workgroup> tileA: array<vec4<f32>, 64>;\n" +
    "fn f(kk: u32, mm: u32) {\n  tileA[kk * (16u / 4u) + mm / 4u][mm % 4u] = 1.0;\n}\n" +
    "var<workgroup> v: vec4<f32>;\nfn g() { v.y += 1.0; let ok = tileA[0] == tileA[1]; }";
  assert.deepEqual(componentWrites("t.wgsl", racy), [
    "t.wgsl:3: tileA[kk * (16u / 4u) + mm / 4u][mm % 4u] = 1.0;",
    "t.wgsl:6: fn g() { v.y += 1.0; let ok = tileA[0] == tileA[1]; }",
  ]);
  assert.deepEqual(
    componentWrites("t.wgsl", "var<workgroup> t: array<vec4<f32>, 4>;\nt[0] = x;"),
    [],
  );
  assert.deepEqual(outOfRangeLiterals("t.wgsl", "const A = -3.0e38; const B = 1e39;"), [
    "t.wgsl: 1e39",
  ]);
});
