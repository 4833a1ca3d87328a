import assert from "node:assert/strict";
import { KernelUsageError } from "./errors.ts";
import { MAX_UNROLL, unrollLoops } from "./wgsl_unroll.ts";

const lines = (code: string) => code.split("\n").length;

Deno.test("unrollLoops leaves code without markers untouched", () => {
  const code = "fn f() {\n  for (var i = 0u; i < 4u; i++) { x += 1.0; }\n}";
  assert.equal(unrollLoops(code, "plain.wgsl"), code);
});

Deno.test("unrollLoops copies the body once per iteration, bounds from consts, lines kept", () => {
  const code = [
    "const HALF = 3u;",
    "const N: u32 = HALF + 2u;",
    "fn f(v: Pair) -> f32 {",
    "  var acc = array<f32, 8>();",
    "  //!unroll",
    "  for (var i = 1u; i < N; i += 2u) {",
    "    acc[i] = v.i * f32(i); // i is the column",
    "    let idx = i + 1u;",
    "  }",
    "  return acc[1];",
    "}",
  ].join("\n");
  const out = unrollLoops(code, "step.wgsl");
  assert.equal(lines(out), lines(code));
  assert.ok(!/\bfor\b/.test(out), out);
  assert.ok(!out.includes("//!unroll"), out);
  // Iterations 1 and 3 (N = 5, step 2), each in its own block; v.i and idx are other names.
  assert.deepEqual(out.match(/acc\[\(\d+u\)\]/g), ["acc[(1u)]", "acc[(3u)]"]);
  assert.equal(out.match(/v\.i \* f32\(\(\d+u\)\)/g)?.length, 2);
  assert.equal(out.match(/let idx = \(\d+u\) \+ 1u;/g)?.length, 2);
  // The code after the loop stands on the same line as before.
  assert.equal(out.split("\n")[9], "  return acc[1];");
});

Deno.test("unrollLoops expands nested marked loops, signed and unsigned, min() and max()", () => {
  const code = [
    "const R = 2;",
    "fn f() {",
    "  //!unroll",
    "  for (var r = 0; r < R; r++) {",
    "    //!unroll",
    "    for (var c: u32 = 0u; c < min(3u, max(2u, 1u)); c++) { out[r][c] = 1.0; }",
    "  }",
    "}",
  ].join("\n");
  const out = unrollLoops(code, "nested.wgsl");
  assert.equal(lines(out), lines(code));
  assert.deepEqual(out.match(/out\[\(\d+i\)\]\[\(\d+u\)\]/g), [
    "out[(0i)][(0u)]",
    "out[(0i)][(1u)]",
    "out[(1i)][(0u)]",
    "out[(1i)][(1u)]",
  ]);
});

Deno.test("unrollLoops refuses loops it cannot expand faithfully, naming the line", () => {
  const refused = (body: string, header = "for (var i = 0u; i < 4u; i++)") => {
    const code = `fn f() {\n  //!unroll\n  ${header} {\n    ${body}\n  }\n}`;
    assert.throws(() => unrollLoops(code, "bad.wgsl"), (e: unknown) => {
      assert.ok(e instanceof KernelUsageError, String(e));
      assert.match(e.message, /^bad\.wgsl:2: /);
      return true;
    });
  };
  refused("if (x > 0.0) { break; }");
  refused("continue;");
  refused("i += 1u;");
  refused("i++;");
  refused("x = 1.0;", "for (var i = 0u; i < n; i++)"); // not a constant bound
  refused("x = 1.0;", "for (var i = 0u; i < 4u; i += 0u)");
  refused("x = 1.0;", `for (var i = 0u; i < ${MAX_UNROLL + 1}u; i++)`);
  refused("x = 1.0;", "for (var i = 0u; j < 4u; i++)");
  refused("x = 1.0;", "while (x < 4.0)");
  // A start that is a const name leaves the variable's type to be told.
  assert.throws(
    () =>
      unrollLoops(
        "const S = 1u;\nfn f() {\n  //!unroll\n  for (var i = S; i < 4u; i++) { }\n}",
        "t.wgsl",
      ),
    /t\.wgsl:3: give i a type/,
  );
  const typed =
    "const S = 1u;\nfn f() {\n  //!unroll\n  for (var i: u32 = S; i < 3u; i++) { a[i] = 0.0; }\n}";
  assert.deepEqual(unrollLoops(typed, "t.wgsl").match(/a\[\(\d+u\)\]/g), ["a[(1u)]", "a[(2u)]"]);
  // Reading the variable, or comparing it, is fine.
  const ok =
    "fn f() {\n  //!unroll\n  for (var i = 0u; i < 2u; i++) { if (i == 1u) { x = 1.0; } }\n}";
  assert.ok(unrollLoops(ok, "ok.wgsl").includes("if ((1u) == 1u)"));
});
