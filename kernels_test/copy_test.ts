import assert from "node:assert/strict";
import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { readF32 } from "../src/gpu/readback.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { KernelUsageError } from "../src/gpu/errors.ts";

gpuTest("copy.wgsl copies every element, including past one grid stride", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("copy");
  const op = await CopyOp.create(registry);
  for (const n of [4, 1028, 4 * 256 * 4096 + 4 * 37]) {
    const data = rng.normals(n);
    const src = uploadTensor(gpu, data, [n]);
    const dst = poisoned(gpu, [n]);
    op.record(recorder, src, dst);
    recorder.submit();
    assertClose(await readWritten(gpu, dst, `copy n=${n}`), data, `copy n=${n}`, 1e-12);
    src.destroy();
    dst.destroy();
  }
});

gpuTest("copy.wgsl moves a range between offsets and leaves the rest alone", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("copy range");
  const op = await CopyOp.create(registry);
  const srcData = rng.normals(64);
  const dstData = rng.normals(80);
  const src = uploadTensor(gpu, srcData, [16, 4]);
  const dst = uploadTensor(gpu, dstData, [20, 4]);
  op.record(recorder, src, dst, { srcOffset: 8, dstOffset: 44, count: 12 });
  recorder.submit();
  const expected = Float32Array.from(dstData);
  expected.set(srcData.subarray(8, 20), 44);
  assert.deepEqual(await readF32(gpu, dst), expected);
  assert.throws(
    () => op.record(recorder, src, dst, { dstOffset: 72, count: 12 }),
    KernelUsageError,
  );
  assert.throws(() => op.record(recorder, src, dst, { srcOffset: 2 }), KernelUsageError);
  src.destroy();
  dst.destroy();
});
