import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { RmsNormOp, rowLanes } from "../src/ops/rmsnorm.ts";
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { rmsnormBackward, rmsnormForward } from "../src/reference/rmsnorm.ts";
import { dot, finiteDifferences } from "../src/reference/finite_difference.ts";

const EPS = 1e-5;
// [rows, dim]: the tiny model's widths, one row, odd row counts, dims that are not a multiple of
// the workgroup, and the widest dim the kernels must support.
const SHAPES = [[1, 64], [37, 172], [5, 8192], [70, 4], [2, 260]];

gpuTest("rmsnorm forward matches the float64 twin, saves rstd and copies x", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("rmsnorm forward");
  const op = await RmsNormOp.create(registry);
  for (const [rows, dim] of SHAPES) {
    const what = `rmsnorm forward [${rows}, ${dim}]`;
    const xData = rng.normals(rows * dim, 0.1 + 3 * rng.next());
    const wData = rng.uniforms(dim, 0.2, 2);
    const x = uploadTensor(gpu, xData, [rows, dim]);
    const weight = uploadTensor(gpu, wData, [dim]);
    const out = poisoned(gpu, [rows, dim]);
    const outNoSave = poisoned(gpu, [rows, dim]);
    const rstd = poisoned(gpu, [rows]);
    const [outCopying, rstdCopying, copy] = [
      poisoned(gpu, [rows, dim]),
      poisoned(gpu, [rows]),
      poisoned(gpu, [rows, dim]),
    ];
    op.recordForward(recorder, x, weight, out, EPS, rstd);
    op.recordForward(recorder, x, weight, outNoSave, EPS);
    op.recordForward(recorder, x, weight, outCopying, EPS, rstdCopying, copy);
    recorder.submit();
    const ref = rmsnormForward(xData, wData, rows, dim, EPS);
    const outData = await readWritten(gpu, out, what);
    const rstdData = await readWritten(gpu, rstd, `${what} rstd`);
    assertClose(outData, ref.out, what);
    assertClose(await readWritten(gpu, outNoSave, what), ref.out, `${what} without rstd`);
    assertClose(rstdData, ref.rstd, `${what} rstd`);
    // The copying entry: the same out and rstd bit for bit, and x copied exactly.
    assertEquals(await readWritten(gpu, outCopying, `${what} copying`), outData);
    assertEquals(await readWritten(gpu, rstdCopying, `${what} copying rstd`), rstdData);
    assertEquals(await readWritten(gpu, copy, `${what} copy`), xData);
    for (const t of [x, weight, out, outNoSave, rstd, outCopying, rstdCopying, copy]) t.destroy();
  }
});

gpuTest("rmsnorm backward (dX and dWeight) matches the float64 twin", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("rmsnorm backward");
  const op = await RmsNormOp.create(registry);
  for (const [rows, dim] of SHAPES) {
    for (const accumulate of [false, true]) {
      const what = `rmsnorm backward [${rows}, ${dim}] accumulate=${accumulate}`;
      const xData = rng.normals(rows * dim, 0.1 + 3 * rng.next());
      const wData = rng.uniforms(dim, 0.2, 2);
      const gData = rng.normals(rows * dim);
      const dXBefore = rng.normals(rows * dim);
      const dWBefore = rng.normals(dim);
      const x = uploadTensor(gpu, xData, [rows, dim]);
      const weight = uploadTensor(gpu, wData, [dim]);
      const dOut = uploadTensor(gpu, gData, [rows, dim]);
      const out = poisoned(gpu, [rows, dim]);
      const rstd = poisoned(gpu, [rows]);
      const dX = accumulate ? uploadTensor(gpu, dXBefore, [rows, dim]) : poisoned(gpu, [rows, dim]);
      const dWeight = accumulate ? uploadTensor(gpu, dWBefore, [dim]) : poisoned(gpu, [dim]);
      op.recordForward(recorder, x, weight, out, EPS, rstd);
      op.recordBackwardInput(recorder, x, weight, rstd, dOut, dX, { accumulate });
      op.recordBackwardWeight(recorder, x, rstd, dOut, dWeight, { accumulate });
      recorder.submit();
      const { rstd: rstdRef } = rmsnormForward(xData, wData, rows, dim, EPS);
      const ref = rmsnormBackward(xData, wData, rstdRef, gData, rows, dim);
      if (accumulate) {
        ref.dX.forEach((v, i) => ref.dX[i] = v + dXBefore[i]);
        ref.dWeight.forEach((v, i) => ref.dWeight[i] = v + dWBefore[i]);
      }
      assertClose(await readWritten(gpu, dX, `${what} dX`), ref.dX, `${what} dX`);
      assertClose(await readWritten(gpu, dWeight, `${what} dW`), ref.dWeight, `${what} dWeight`);
      for (const t of [x, weight, dOut, out, rstd, dX, dWeight]) t.destroy();
    }
  }
});

Deno.test("rmsnorm backward twin matches finite differences of the forward twin", () => {
  const rng = seededRng("rmsnorm finite differences");
  const [rows, dim] = [3, 7];
  const x = Float64Array.from(rng.normals(rows * dim));
  const weight = Float64Array.from(rng.uniforms(dim, 0.2, 2));
  const w = rng.normals(rows * dim);
  const { rstd } = rmsnormForward(x, weight, rows, dim, EPS);
  const { dX, dWeight } = rmsnormBackward(x, weight, rstd, w, rows, dim);
  const lossOfX = (v: Float64Array) => dot(w, rmsnormForward(v, weight, rows, dim, EPS).out);
  const lossOfW = (v: Float64Array) => dot(w, rmsnormForward(x, v, rows, dim, EPS).out);
  assertClose(dX, finiteDifferences(lossOfX, x), "rmsnorm fd dX", 1e-7);
  assertClose(dWeight, finiteDifferences(lossOfW, weight), "rmsnorm fd dWeight", 1e-7);
});

gpuTest("rmsnorm rows past the per-dimension workgroup limit spill into the grid's y", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("rmsnorm many rows");
  const op = await RmsNormOp.create(registry, { workgroupSize: 8 });
  const rows = gpu.limits.maxComputeWorkgroupsPerDimension + 3;
  const dim = 4;
  const xData = rng.normals(rows * dim);
  const wData = rng.uniforms(dim, 0.2, 2);
  const gData = rng.normals(rows * dim);
  const x = uploadTensor(gpu, xData, [rows, dim]);
  const weight = uploadTensor(gpu, wData, [dim]);
  const dOut = uploadTensor(gpu, gData, [rows, dim]);
  const out = poisoned(gpu, [rows, dim]);
  const rstd = poisoned(gpu, [rows]);
  const dX = poisoned(gpu, [rows, dim]);
  op.recordForward(recorder, x, weight, out, EPS, rstd);
  op.recordBackwardInput(recorder, x, weight, rstd, dOut, dX);
  recorder.submit();
  const ref = rmsnormForward(xData, wData, rows, dim, EPS);
  const back = rmsnormBackward(xData, wData, ref.rstd, gData, rows, dim);
  assertClose(await readWritten(gpu, out, "many rows out"), ref.out, "many rows out");
  assertClose(await readWritten(gpu, rstd, "many rows rstd"), ref.rstd, "many rows rstd");
  assertClose(await readWritten(gpu, dX, "many rows dX"), back.dX, "many rows dX");
  for (const t of [x, weight, dOut, out, rstd, dX]) t.destroy();
});

gpuTest("rmsnorm sized to its rows sums exactly as 64 lanes do, in every pass", async () => {
  assertEquals([1, 4, 5, 64, 65, 172, 256, 8192].map(rowLanes), [1, 1, 2, 16, 32, 64, 64, 64]);
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("rmsnorm row lanes");
  const wide = await RmsNormOp.create(registry);
  for (const [rows, dim] of [[37, 64], [9, 172], [5, 20]]) {
    const narrow = await RmsNormOp.create(registry, { widestRow: dim });
    const x = uploadTensor(gpu, rng.normals(rows * dim, 2), [rows, dim]);
    const weight = uploadTensor(gpu, rng.uniforms(dim, 0.2, 2), [dim]);
    const dOut = uploadTensor(gpu, rng.normals(rows * dim), [rows, dim]);
    const results = [];
    for (const op of [wide, narrow]) {
      const out = poisoned(gpu, [rows, dim]);
      const rstd = poisoned(gpu, [rows]);
      const dX = poisoned(gpu, [rows, dim]);
      op.recordForward(recorder, x, weight, out, EPS, rstd);
      op.recordBackwardInput(recorder, x, weight, rstd, dOut, dX);
      recorder.submit();
      const what = `rmsnorm [${rows}, ${dim}]`;
      results.push([
        await readWritten(gpu, out, what),
        await readWritten(gpu, rstd, `${what} rstd`),
        await readWritten(gpu, dX, `${what} dX`),
      ]);
      for (const t of [out, rstd, dX]) t.destroy();
    }
    // Bit for bit: the decode kernels' fused norms reproduce the 64-lane order.
    assertEquals(results[1], results[0], `[${rows}, ${dim}] with ${rowLanes(dim)} lanes`);
    for (const t of [x, weight, dOut]) t.destroy();
  }
});
