import {
  assertClose,
  assertCloseDots,
  gpuTest,
  poisoned,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { MatvecOp } from "../src/ops/matvec.ts";
import { createTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { ShapeError } from "../src/gpu/errors.ts";
import { matvecRef, toF16 } from "../src/reference/matvec.ts";
import { matmulRef } from "../src/reference/matmul.ts";
import type { Rng } from "../src/core/random.ts";

// [N, K]: one row, rows not a multiple of ROWS, K not a multiple of the threads' stride.
const SHAPES: [number, number][] = [[1, 4], [1, 1028], [7, 12], [37, 260], [301, 1540]];

async function checkCase(
  op: MatvecOp,
  rng: Rng,
  n: number,
  k: number,
  f16: boolean,
  withBias: boolean,
  accumulate: boolean,
): Promise<void> {
  const { gpu, recorder } = await testGpu();
  const what = `matvec ${f16 ? "f16" : "f32"} [${n}, ${k}] bias=${withBias} acc=${accumulate}`;
  const wValues = rng.normals(n * k);
  const xValues = rng.normals(k);
  const biasValues = rng.normals(n);
  const yStart = rng.normals(n);
  let w: Tensor;
  let wRef: ArrayLike<number> = wValues;
  if (f16) {
    const half = toF16(wValues);
    w = uploadTensor(gpu, half.bits, [n, k], "f16");
    wRef = half.values;
  } else {
    w = uploadTensor(gpu, wValues, [n, k]);
  }
  const x = uploadTensor(gpu, xValues, [k]);
  const bias = withBias ? uploadTensor(gpu, biasValues, [n]) : undefined;
  const y = accumulate ? uploadTensor(gpu, yStart, [n]) : poisoned(gpu, [n]);
  op.record(recorder, w, x, y, { bias, accumulate });
  recorder.submit();
  const ref = matvecRef(wRef, xValues, n, k, bias && biasValues, accumulate ? yStart : undefined);
  // A single output's sum can cancel (seed 1233451633: [1, 1028] at 1.3e-4 of its own size), so
  // the error is measured against the same sums of absolute values too.
  const abs = (v: ArrayLike<number>) => Float64Array.from(v, Math.abs);
  const refAbs = matvecRef(
    abs(wRef),
    abs(xValues),
    n,
    k,
    bias && abs(biasValues),
    accumulate ? abs(yStart) : undefined,
  );
  assertCloseDots(await readWritten(gpu, y, what), ref, refAbs, k, what);
  for (const t of [w, x, y, bias]) t?.destroy();
}

gpuTest("matvec.wgsl f32 matches the float64 twin (bias, accumulate, odd shapes)", async () => {
  const { registry } = await testGpu();
  const rng = seededRng("matvec f32");
  const op = await MatvecOp.create(registry, { f16: false });
  for (const [n, k] of SHAPES) {
    await checkCase(op, rng, n, k, false, false, false);
    await checkCase(op, rng, n, k, false, true, true);
  }
  await checkCase(op, rng, 37, 260, false, true, false);
  await checkCase(op, rng, 37, 260, false, false, true);
});

gpuTest("matvec.wgsl f16 weights match the twin on f16-rounded weights", async () => {
  const { gpu, registry } = await testGpu();
  if (!gpu.capabilities.shaderF16) {
    console.log("  skipped: this device has no shader-f16");
    return;
  }
  const rng = seededRng("matvec f16");
  const op = await MatvecOp.create(registry);
  for (const [n, k] of SHAPES) await checkCase(op, rng, n, k, true, false, false);
  await checkCase(op, rng, 37, 260, true, true, true);
});

gpuTest("matvec rejects K not a multiple of 4 and mismatched shapes", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const op = await MatvecOp.create(registry, { f16: false });
  const w = createTensor(gpu, [3, 6]);
  const x = createTensor(gpu, [6]);
  const y = createTensor(gpu, [3]);
  const expectShapeError = (fn: () => void, what: string) => {
    try {
      fn();
    } catch (e) {
      if (e instanceof ShapeError) return;
      throw e;
    }
    throw new Error(`${what}: no ShapeError`);
  };
  expectShapeError(() => op.record(recorder, w, x, y), "K = 6");
  const w2 = createTensor(gpu, [3, 8]);
  expectShapeError(() => op.record(recorder, w2, x, y), "x size");
  for (const t of [w, x, y, w2]) t.destroy();
});

Deno.test("matmulRef agrees with itself under every transpose", () => {
  const rng = seededRng("matmulRef");
  const [m, k, n] = [3, 5, 4];
  const a = rng.normals(m * k);
  const b = rng.normals(k * n);
  const transpose = (v: Float32Array, rows: number, cols: number) => {
    const t = new Float32Array(v.length);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = v[i * cols + j];
    return t;
  };
  const ref = matmulRef(a, b, m, k, n);
  assertClose(matmulRef(transpose(a, m, k), b, m, k, n, { transA: true }), ref, "TN", 1e-12);
  assertClose(matmulRef(a, transpose(b, k, n), m, k, n, { transB: true }), ref, "NT", 1e-12);
  assertClose(
    matvecRef(transpose(b, k, n), a.subarray(0, k), n, k),
    matmulRef(a, b, 1, k, n),
    "mv",
  );
});
