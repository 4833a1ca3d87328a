import assert from "node:assert/strict";
import {
  assertClose,
  assertCloseDots,
  gpuTest,
  poisoned,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { FIXTURE_TENSORS, haveFixtures, readFixture } from "./quant_fixtures.ts";
import { QuantMatvecOp } from "../src/ops/quant_matvec.ts";
import { quantMatrix, uploadQuantMatrix } from "../src/ops/quant_weight.ts";
import { createTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { KernelUsageError, ShapeError } from "../src/gpu/errors.ts";
import { GGML_QUANT_TYPES, GGML_TYPES, type GgmlQuantType } from "../src/core/quant.ts";
import {
  dequantizeMatrix,
  quantizeRandom,
  type RandomBlockOptions,
} from "../src/reference/quant.ts";
import { matvecRef } from "../src/reference/matvec.ts";
import type { Rng } from "../src/core/random.ts";

/** [N, K in blocks]: one row, rows not a multiple of ROWS, one block, many blocks. */
const SHAPES: [number, number][] = [[1, 1], [7, 3], [37, 9], [130, 6]];

async function checkCase(
  op: QuantMatvecOp,
  rng: Rng,
  type: GgmlQuantType,
  n: number,
  k: number,
  withBias: boolean,
  accumulate: boolean,
  blocks: RandomBlockOptions = {},
): Promise<void> {
  const { gpu, recorder } = await testGpu();
  const what = `quant matvec ${type} [${n}, ${k}] bias=${withBias} acc=${accumulate} ` +
    JSON.stringify(blocks);
  const bytes = quantizeRandom(type, rng, n, k, blocks);
  const w = uploadQuantMatrix(gpu, bytes, type, n, k);
  const xValues = rng.normals(k);
  const biasValues = rng.normals(n);
  const yStart = rng.normals(n);
  const x = uploadTensor(gpu, xValues, [k]);
  const bias = withBias ? uploadTensor(gpu, biasValues, [n]) : undefined;
  const y = accumulate ? uploadTensor(gpu, yStart, [n]) : poisoned(gpu, [n]);
  op.record(recorder, w, x, y, { bias, accumulate });
  recorder.submit();
  const wRef = dequantizeMatrix(type, bytes, n, k);
  const ref = matvecRef(wRef, xValues, n, k, bias && biasValues, accumulate ? yStart : undefined);
  const abs = (v: ArrayLike<number> | undefined) => v && Float64Array.from(v, Math.abs);
  const refAbs = matvecRef(
    abs(wRef)!,
    abs(xValues)!,
    n,
    k,
    withBias ? abs(biasValues) : undefined,
    accumulate ? abs(yStart) : undefined,
  );
  const out = await readWritten(gpu, y, what);
  const err = assertCloseDots(out, ref, refAbs, k, what);
  worst.set(type, Math.max(worst.get(type) ?? 0, err));
  for (const t of [w.data, x, y, bias]) t?.destroy();
}

/** Largest relative error seen per type, printed after the main test. */
const worst = new Map<string, number>();

gpuTest(
  "quant_matvec.wgsl matches the float64 twin for every type (bias, accumulate)",
  async () => {
    const { registry } = await testGpu();
    const rng = seededRng("quant matvec");
    const op = await QuantMatvecOp.create(registry);
    for (const type of GGML_QUANT_TYPES) {
      const qk = GGML_TYPES[type].blockElems;
      for (const [n, blocks] of SHAPES) {
        await checkCase(op, rng, type, n, blocks * qk, false, false);
        await checkCase(op, rng, type, n, blocks * qk, true, true);
      }
      await checkCase(op, rng, type, 37, 3 * qk, true, false, { fill: "ramp" });
      await checkCase(op, rng, type, 37, 3 * qk, false, true, { edgeFraction: 0.3 });
    }
    const summary = [...worst].map(([t, e]) => `${t} ${e.toExponential(1)}`).join(", ");
    console.log(`  worst relative errors: ${summary}`);
  },
);

gpuTest(
  "quant_matvec.wgsl: other workgroup shapes, and a grid past 65,535 workgroups",
  async () => {
    const { registry } = await testGpu();
    const rng = seededRng("quant matvec tiles");
    for (const tiles of [{ wg: 64, rows: 4 }, { wg: 16, rows: 3 }]) {
      const op = await QuantMatvecOp.create(registry, { types: ["Q4_0", "Q6_K"], tiles });
      await checkCase(op, rng, "Q4_0", 45, 32 * 50, true, false);
      await checkCase(op, rng, "Q6_K", 13, 256 * 3, false, true);
    }
    // More rows than invocations (each stores several), and blocks starting in either half of a
    // word (rows of an odd number of 18-, 22- and 34-byte blocks).
    for (const tiles of [{ wg: 8, rows: 32 }, { wg: 4, rows: 9 }]) {
      const op = await QuantMatvecOp.create(registry, { types: ["Q4_0", "Q5_0", "Q8_0"], tiles });
      await checkCase(op, rng, "Q8_0", 70, 32 * 7, true, false, { edgeFraction: 0.2 });
      await checkCase(op, rng, "Q5_0", 33, 32 * 5, false, true, { fill: "ramp" });
      await checkCase(op, rng, "Q4_0", 41, 32 * 3, true, true);
    }
    // K-quant rows dotted in half blocks: more halves than invocations, fewer (one block a row
    // over 8 invocations), Q6_K's 210-byte blocks starting in either half of a word.
    for (const tiles of [{ wg: 8, rows: 32 }, { wg: 2, rows: 5 }]) {
      const op = await QuantMatvecOp.create(registry, { types: ["Q4_K", "Q5_K", "Q6_K"], tiles });
      await checkCase(op, rng, "Q4_K", 40, 256 * 5, true, false, { edgeFraction: 0.2 });
      await checkCase(op, rng, "Q5_K", 35, 256 * 3, false, true, { fill: "ramp" });
      await checkCase(op, rng, "Q6_K", 33, 256 * 7, true, true, { edgeFraction: 0.2 });
      await checkCase(op, rng, "Q6_K", 9, 256, false, false);
    }
    const one = await QuantMatvecOp.create(registry, {
      types: ["Q8_0"],
      tiles: { wg: 8, rows: 1 },
    });
    await checkCase(one, rng, "Q8_0", 66_000, 32, false, false);
  },
);

gpuTest("quant matvec rejects mismatched shapes and types it was not compiled for", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const op = await QuantMatvecOp.create(registry, { types: ["Q8_0"] });
  const data = createTensor(gpu, [Math.ceil((3 * 2 * 34) / 4)], "u32");
  const w = quantMatrix(data, "Q8_0", 3, 64);
  const x = createTensor(gpu, [64]);
  const y = createTensor(gpu, [3]);
  assert.throws(() => op.record(recorder, w, createTensor(gpu, [32]), y), ShapeError);
  assert.throws(() => op.record(recorder, w, x, createTensor(gpu, [4])), ShapeError);
  assert.throws(() => quantMatrix(data, "Q8_0", 3, 48), ShapeError);
  assert.throws(() => quantMatrix(data, "Q8_0", 4, 64), ShapeError);
  assert.throws(() => quantMatrix(data, "Q4_K", 1, 512), ShapeError);
  const q4 = quantMatrix(data, "Q4_0", 3, 64);
  assert.throws(() => op.record(recorder, q4, x, y), KernelUsageError);
  for (const t of [data, x, y]) t.destroy();
});

gpuTest(
  "quant_matvec.wgsl on the fixtures' real Q8_0, Q4_0, Q4_K, Q5_K and Q6_K tensors",
  async () => {
    if (!haveFixtures()) return console.log("  skipped: no GGUF fixtures in ../shared");
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("quant matvec fixtures");
    const op = await QuantMatvecOp.create(registry);
    for (const [file, name] of FIXTURE_TENSORS) {
      const t = (await readFixture(file)).get(name)!;
      const type = t.type as GgmlQuantType;
      const [k, n] = t.dims;
      const what = `${file} ${name} (${type} [${n}, ${k}])`;
      const w = uploadQuantMatrix(gpu, t.bytes, type, n, k);
      const xValues = rng.normals(k);
      const x = uploadTensor(gpu, xValues, [k]);
      const y = poisoned(gpu, [n]);
      op.record(recorder, w, x, y);
      recorder.submit();
      const ref = matvecRef(dequantizeMatrix(type, t.bytes, n, k), xValues, n, k);
      assertClose(await readWritten(gpu, y, what), ref, what);
      for (const t of [w.data, x, y]) t.destroy();
    }
  },
);
