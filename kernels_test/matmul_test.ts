import {
  assertClose,
  gpuTest,
  poisoned,
  readWritten,
  seededRng,
  type TestGpu,
  testGpu,
} from "./helpers.ts";
import { DEFAULT_TILES, type MatmulForm, MatmulOp, type MatmulTiles } from "../src/ops/matmul.ts";
import { matmulRef } from "../src/reference/matmul.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import type { Rng } from "../src/core/random.ts";
import { f16ArrayToF32, f32ArrayToF16 } from "../src/formats/tensor_data.ts";
import { KernelUsageError } from "../src/gpu/errors.ts";
import assert from "node:assert/strict";

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 64, 172], // decode: one token through a projection
  [37, 29, 53], // nothing a multiple of a tile
  [64, 64, 64],
  [130, 67, 70], // past the tile edges
  [257, 33, 129], // one past a 128 block
  [5, 300, 3],
];

async function checkForm(
  { gpu, registry, recorder }: TestGpu,
  rng: Rng,
  form: MatmulForm,
  tiles: MatmulTiles = DEFAULT_TILES,
  shapes = SHAPES,
): Promise<void> {
  const op = await MatmulOp.create(registry, form, tiles);
  for (const [m, k, n] of shapes) {
    const what = `matmul ${JSON.stringify(form)} ${JSON.stringify(tiles)} m=${m} k=${k} n=${n}`;
    const aData = rng.normals(m * k);
    const bData = rng.normals(k * n);
    const a = uploadTensor(gpu, aData, form.transA ? [k, m] : [m, k]);
    const b = uploadTensor(gpu, bData, form.transB ? [n, k] : [k, n]);
    const alpha = 0.5 + rng.next();
    let c0: Float32Array | undefined;
    const c = form.accumulate
      ? uploadTensor(gpu, c0 = rng.normals(m * n), [m, n])
      : poisoned(gpu, [m, n]);
    op.record(recorder, a, b, c, alpha);
    recorder.submit();
    const out = await readWritten(gpu, c, what);
    const ref = matmulRef(aData, bData, m, k, n, { ...form, alpha, c0 });
    assertClose(out, ref, what);
    for (const t of [a, b, c]) t.destroy();
  }
}

gpuTest("matmul.wgsl: C = A·B against float64", async () => {
  await checkForm(await testGpu(), seededRng("matmul NN"), {});
});

gpuTest("matmul.wgsl: C = A·Bᵀ (weights stored [out, in])", async () => {
  await checkForm(await testGpu(), seededRng("matmul NT"), { transB: true });
});

gpuTest("matmul.wgsl: C = Aᵀ·B (weight-gradient form)", async () => {
  await checkForm(await testGpu(), seededRng("matmul TN"), { transA: true });
});

gpuTest("matmul.wgsl: C = Aᵀ·Bᵀ and accumulation into C", async () => {
  const g = await testGpu();
  const rng = seededRng("matmul TT / accumulate");
  await checkForm(g, rng, { transA: true, transB: true });
  await checkForm(g, rng, { accumulate: true });
  await checkForm(g, rng, { transB: true, accumulate: true });
});

gpuTest("matmul.wgsl: other tile shapes give the same results", async () => {
  const g = await testGpu();
  const rng = seededRng("matmul tiles");
  const shapes: [number, number, number][] = [[37, 29, 53], [1, 70, 9], [70, 33, 130]];
  for (const tiles of [{ wgX: 4, wgY: 8, tk: 8 }, { wgX: 8, wgY: 4, tk: 5 }]) {
    await checkForm(g, rng, { transB: true }, tiles, shapes);
    await checkForm(g, rng, { transA: true }, tiles, shapes);
  }
});

gpuTest("matmul.wgsl main_f16b: C = A·Bᵀ with B stored as float16", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("matmul f16 B");
  for (const accumulate of [false, true]) {
    const op = await MatmulOp.create(registry, { transB: true, accumulate });
    for (const [m, k, n] of [...SHAPES, [3, 7, 5] as [number, number, number]]) {
      const what = `matmul f16 B accumulate=${accumulate} m=${m} k=${k} n=${n}`;
      const aData = rng.normals(m * k);
      const bBits = f32ArrayToF16(rng.normals(k * n)); // odd k * n leaves half a word of padding
      const a = uploadTensor(gpu, aData, [m, k]);
      const b = uploadTensor(gpu, bBits, [n, k], "f16");
      const alpha = 0.5 + rng.next();
      let c0: Float32Array | undefined;
      const c = accumulate
        ? uploadTensor(gpu, c0 = rng.normals(m * n), [m, n])
        : poisoned(gpu, [m, n]);
      op.record(recorder, a, b, c, alpha);
      recorder.submit();
      const out = await readWritten(gpu, c, what);
      const bRounded = f16ArrayToF32(bBits);
      assertClose(out, matmulRef(aData, bRounded, m, k, n, { transB: true, alpha, c0 }), what);
      for (const t of [a, b, c]) t.destroy();
    }
  }
  const plain = await MatmulOp.create(registry, {});
  const half = uploadTensor(gpu, new Uint16Array(4), [2, 2], "f16");
  const x = uploadTensor(gpu, new Float32Array(4), [2, 2]);
  assert.throws(() => plain.record(recorder, x, half, x), KernelUsageError);
  for (const t of [half, x]) t.destroy();
});
