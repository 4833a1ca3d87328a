import assert from "node:assert/strict";
import {
  assertClose,
  gpuTest,
  POISON_BITS,
  poisoned,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { readBytes, readF32 } from "../src/gpu/readback.ts";
import { f32ArrayToF16 } from "../src/formats/tensor_data.ts";
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

gpuTest("copy.wgsl into an f16 tensor rounds each value to the nearest half", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("copy f16");
  const op = await CopyOp.create(registry);
  const srcData = rng.normals(64, 3);
  // Ties to even both ways, and values between halves. (Subnormal halves may flush to zero and
  // values past the largest half are indeterminate in WGSL, so none are here.)
  srcData.set([1 + 2 ** -11, 1 + 3 * 2 ** -11, -2049, 1 / 3, 65504, -1e-3, 0.1, -0], 8);
  const src = uploadTensor(gpu, srcData, [16, 4]);
  const dst = poisoned(gpu, [20, 4], "f16");
  op.record(recorder, src, dst, { srcOffset: 4, dstOffset: 40, count: 24 });
  recorder.submit();
  const words = new Uint32Array(await readBytes(gpu, dst));
  const halves = new Uint16Array(words.buffer);
  words.forEach((w, i) => {
    const inside = i >= 20 && i < 32;
    if (inside === (w === POISON_BITS)) throw new Error(`copy f16: word ${i} wrong side`);
  });
  assert.deepEqual(halves.subarray(40, 64), f32ArrayToF16(srcData.subarray(4, 28)));
  src.destroy();
  dst.destroy();
});
