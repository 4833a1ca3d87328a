import assert from "node:assert/strict";
import {
  assertClose,
  assertCloseDots,
  gpuTest,
  poisoned,
  readWritten,
  seededRng,
  type TestGpu,
  testGpu,
} from "./helpers.ts";
import { FIXTURE_TENSORS, haveFixtures, readFixture } from "./quant_fixtures.ts";
import { QuantMatmulOp } from "../src/ops/quant_matmul.ts";
import { MATMUL_TILES, type MatmulTiles, maxDispatchDepth } from "../src/ops/matmul.ts";
import { quantMatrix, uploadQuantMatrix } from "../src/ops/quant_weight.ts";
import { createTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { KernelUsageError, ShapeError } from "../src/gpu/errors.ts";
import { GGML_QUANT_TYPES, GGML_TYPES, type GgmlQuantType } from "../src/core/quant.ts";
import {
  dequantizeMatrix,
  quantizeRandom,
  type RandomBlockOptions,
} from "../src/reference/quant.ts";
import { matmulRef } from "../src/reference/matmul.ts";
import type { Rng } from "../src/core/random.ts";

/** [T, out, in in blocks]: one token, tile edges, out not a multiple of anything. */
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 64, 2],
  [37, 29, 3],
  [130, 67, 2],
  [5, 300, 1],
  [129, 9, 1],
];

type Form = "forward" | "input grad";

async function checkCase(
  { gpu, recorder }: TestGpu,
  op: QuantMatmulOp,
  rng: Rng,
  form: Form,
  type: GgmlQuantType,
  [t, out, inBlocks]: [number, number, number],
  accumulate: boolean,
  blocks: RandomBlockOptions = {},
): Promise<void> {
  const cols = inBlocks * GGML_TYPES[type].blockElems;
  const what = `quant matmul ${form} ${type} T=${t} W [${out}, ${cols}] acc=${accumulate} ` +
    JSON.stringify(blocks);
  const bytes = quantizeRandom(type, rng, out, cols, blocks);
  const w = uploadQuantMatrix(gpu, bytes, type, out, cols);
  const wRef = dequantizeMatrix(type, bytes, out, cols);
  const [k, n] = form === "forward" ? [cols, out] : [out, cols];
  const aValues = rng.normals(t * k);
  const a = uploadTensor(gpu, aValues, [t, k]);
  let c0: Float32Array | undefined;
  const c = accumulate ? uploadTensor(gpu, c0 = rng.normals(t * n), [t, n]) : poisoned(gpu, [t, n]);
  if (form === "forward") op.recordForward(recorder, a, w, c, { accumulate });
  else op.recordInputGrad(recorder, a, w, c, { accumulate });
  recorder.submit();
  const transB = form === "forward";
  const ref = matmulRef(aValues, wRef, t, k, n, { transB, c0 });
  const abs = (v: ArrayLike<number>) => Float64Array.from(v, Math.abs);
  const refAbs = matmulRef(abs(aValues), abs(wRef), t, k, n, { transB, c0: c0 && abs(c0) });
  const result = await readWritten(gpu, c, what);
  const err = assertCloseDots(result, ref, refAbs, k, what);
  const key = `${form} ${type}`;
  if (err >= (worst.get(key)?.err ?? 0)) worst.set(key, { err, what });
  for (const x of [w.data, a, c]) x.destroy();
}

/** Largest relative error seen per form and type, and the case it came from. */
const worst = new Map<string, { err: number; what: string }>();

function report(form: Form): void {
  const rows = [...worst].filter(([key]) => key.startsWith(form)).map(([k, v]) =>
    [k, v.err] as const
  );
  const top =
    [...worst.values()].filter((v) => v.what.includes(form)).sort((a, b) => b.err - a.err)[0];
  console.log(`  largest: ${top.what}`);
  console.log(
    `  worst relative errors: ${rows.map(([k, e]) => `${k} ${e.toExponential(1)}`).join(", ")}`,
  );
}

for (const form of ["forward", "input grad"] as const) {
  const formula = form === "forward" ? "Y = X·Wᵀ" : "dX = dY·W";
  gpuTest(`quant_matmul.wgsl ${formula} matches the float64 twin for every type`, async () => {
    const g = await testGpu();
    const rng = seededRng(`quant matmul ${form}`);
    const op = await QuantMatmulOp.create(g.registry);
    for (const type of GGML_QUANT_TYPES) {
      for (const shape of SHAPES) await checkCase(g, op, rng, form, type, shape, false);
      await checkCase(g, op, rng, form, type, [37, 29, 3], true);
      await checkCase(g, op, rng, form, type, [9, 40, 2], false, { fill: "ramp" });
      await checkCase(g, op, rng, form, type, [9, 40, 2], true, { edgeFraction: 0.3 });
    }
    report(form);
  });
}

gpuTest("quant_matmul.wgsl: other tile shapes give the same results", async () => {
  const g = await testGpu();
  const rng = seededRng("quant matmul tiles");
  const others: MatmulTiles[] = [
    { wgX: 4, wgY: 8, tk: 8, tm: 8, tn: 8 },
    { wgX: 8, wgY: 4, tk: 12, tm: 4, tn: 12 },
    ...Object.values(MATMUL_TILES),
  ];
  for (const tiles of others) {
    const op = await QuantMatmulOp.create(g.registry, { types: ["Q5_0", "Q4_K"], tiles });
    for (const form of ["forward", "input grad"] as const) {
      await checkCase(g, op, rng, form, "Q5_0", [37, 29, 3], false);
      await checkCase(g, op, rng, form, "Q4_K", [70, 33, 1], true);
    }
  }
});

gpuTest("quant_matmul.wgsl dX = dY·W over a vocabulary-long K (windows of K)", async () => {
  // llvmpipe ends an invocation's loops after LOOP_ITERATION_LIMIT iterations in all: a K of
  // W's rows past maxDispatchDepth must run as windows, or the sum silently comes out short.
  const g = await testGpu();
  const rng = seededRng("quant matmul long K");
  const op = await QuantMatmulOp.create(g.registry, { types: ["Q8_0", "Q4_K"] });
  const depth = maxDispatchDepth(op.tiles);
  for (const rows of [depth + 1, 2 * depth + 5]) {
    await checkCase(g, op, rng, "input grad", "Q8_0", [3, rows, 1], false);
    await checkCase(g, op, rng, "input grad", "Q8_0", [2, rows, 2], true);
  }
  await checkCase(g, op, rng, "input grad", "Q4_K", [3, 2 * depth + 5, 1], false);
});

gpuTest("quant matmul rejects mismatched shapes and types it was not compiled for", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const op = await QuantMatmulOp.create(registry, { types: ["Q8_0"] });
  const data = createTensor(gpu, [Math.ceil((3 * 2 * 34) / 4)], "u32");
  const w = quantMatrix(data, "Q8_0", 3, 64);
  const x = createTensor(gpu, [5, 64]);
  const y = createTensor(gpu, [5, 3]);
  op.recordForward(recorder, x, w, y);
  op.recordInputGrad(recorder, y, w, x);
  recorder.submit();
  assert.throws(() => op.recordForward(recorder, y, w, y), ShapeError);
  assert.throws(() => op.recordForward(recorder, x, w, createTensor(gpu, [4, 3])), ShapeError);
  assert.throws(() => op.recordInputGrad(recorder, x, w, x), ShapeError);
  assert.throws(
    () => op.recordForward(recorder, x, quantMatrix(data, "Q4_0", 3, 64), y),
    KernelUsageError,
  );
  await assert.rejects(() =>
    QuantMatmulOp.create(registry, { tiles: { wgX: 4, wgY: 4, tk: 6, tm: 8, tn: 8 } })
  );
  for (const t of [data, x, y]) t.destroy();
});

gpuTest("quant_matmul.wgsl both forms on the fixtures' real quantized tensors", async () => {
  if (!haveFixtures()) return console.log("  skipped: no GGUF fixtures in ../shared");
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("quant matmul fixtures");
  const op = await QuantMatmulOp.create(registry, {
    types: ["Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"],
  });
  const t = 7;
  for (const [file, name] of FIXTURE_TENSORS) {
    const tensor = (await readFixture(file)).get(name)!;
    const type = tensor.type as GgmlQuantType;
    const [cols, out] = tensor.dims;
    const w = uploadQuantMatrix(gpu, tensor.bytes, type, out, cols);
    const wRef = dequantizeMatrix(type, tensor.bytes, out, cols);
    for (const form of ["forward", "input grad"] as const) {
      const what = `${file} ${name} (${type} [${out}, ${cols}]) ${form}`;
      const [k, n] = form === "forward" ? [cols, out] : [out, cols];
      const aValues = rng.normals(t * k);
      const a = uploadTensor(gpu, aValues, [t, k]);
      const c = poisoned(gpu, [t, n]);
      if (form === "forward") op.recordForward(recorder, a, w, c);
      else op.recordInputGrad(recorder, a, w, c);
      recorder.submit();
      const ref = matmulRef(aValues, wRef, t, k, n, { transB: form === "forward" });
      assertClose(await readWritten(gpu, c, what), ref, what);
      for (const x of [a, c]) x.destroy();
    }
    w.data.destroy();
  }
});

gpuTest("quant_matmul.wgsl: Y and dY as column windows of a wider tensor", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("quant matmul windows");
  const types: GgmlQuantType[] = ["Q8_0", "Q4_K"];
  const op = await QuantMatmulOp.create(registry, { types });
  // [T, out, in blocks, width, from]: W's out features are columns [from, from + out) of width.
  const cases: [number, number, number, number, number][] = [
    [1, 64, 1, 150, 64],
    [37, 29, 2, 80, 45],
  ];
  for (const type of types) {
    for (const [t, out, inBlocks, width, from] of cases) {
      for (const accumulate of [false, true]) {
        const cols = inBlocks * GGML_TYPES[type].blockElems;
        const what = `quant matmul window ${type} T=${t} W [${out}, ${cols}] width=${width} ` +
          `from=${from} acc=${accumulate}`;
        const bytes = quantizeRandom(type, rng, out, cols);
        const w = uploadQuantMatrix(gpu, bytes, type, out, cols);
        const wRef = dequantizeMatrix(type, bytes, out, cols);
        // Forward into columns of Y; the columns outside keep their values.
        const xData = rng.normals(t * cols);
        const before = rng.normals(t * width);
        const x = uploadTensor(gpu, xData, [t, cols]);
        const y = uploadTensor(gpu, before, [t, width]);
        op.recordForward(recorder, x, w, y, { accumulate, columns: from });
        // Input gradient from columns of dY.
        const dyData = rng.normals(t * width);
        const dy = uploadTensor(gpu, dyData, [t, width]);
        let c0: Float32Array | undefined;
        const dx = accumulate
          ? uploadTensor(gpu, c0 = rng.normals(t * cols), [t, cols])
          : poisoned(gpu, [t, cols]);
        op.recordInputGrad(recorder, dy, w, dx, { accumulate, columns: from });
        recorder.submit();
        const yOut = await readWritten(gpu, y, what);
        const product = matmulRef(xData, wRef, t, cols, out, { transB: true });
        const yRef = Float64Array.from(before);
        for (let r = 0; r < t; r++) {
          for (let j = 0; j < out; j++) {
            const at = r * width + from + j;
            yRef[at] = product[r * out + j] + (accumulate ? before[at] : 0);
          }
        }
        assertClose(yOut, yRef, `${what} forward`);
        for (let r = 0; r < t; r++) {
          for (let j = 0; j < width; j++) {
            if (j < from || j >= from + out) {
              assert.equal(yOut[r * width + j], before[r * width + j], `${what}: column ${j} kept`);
            }
          }
        }
        const window = new Float64Array(t * out);
        for (let r = 0; r < t; r++) {
          for (let j = 0; j < out; j++) window[r * out + j] = dyData[r * width + from + j];
        }
        const dxRef = matmulRef(window, wRef, t, out, cols, { c0 });
        assertClose(await readWritten(gpu, dx, what), dxRef, `${what} input grad`);
        for (const v of [w.data, x, y, dy, dx]) v.destroy();
      }
    }
  }
  const data = createTensor(gpu, [Math.ceil((3 * 2 * 34) / 4)], "u32");
  const w = quantMatrix(data, "Q8_0", 3, 64);
  const x = createTensor(gpu, [5, 64]);
  const y = createTensor(gpu, [5, 6]);
  op.recordForward(recorder, x, w, y, { columns: 3 });
  assert.throws(() => op.recordForward(recorder, x, w, y, { columns: 4 }), ShapeError);
  assert.throws(() => op.recordInputGrad(recorder, y, w, x, { columns: -1 }), ShapeError);
  recorder.submit();
  for (const v of [data, x, y]) v.destroy();
});
