import {
  assertClose,
  gpuTest,
  poisoned,
  readWritten,
  seededRng,
  type TestGpu,
  testGpu,
} from "./helpers.ts";
import { adapterClass, ROW_WORKGROUP } from "../src/ops/shapes.ts";
import type { Rng } from "../src/core/random.ts";
import { SoftmaxOp } from "../src/ops/softmax.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { softmaxRows } from "../src/reference/softmax.ts";

type Case = [T: number, V: number, scale: number, offset: number];

gpuTest("softmax.wgsl matches the float64 twin on odd shapes and huge logits", async () => {
  const g = await testGpu();
  const op = await SoftmaxOp.create(g.registry);
  console.log(`  ${ROW_WORKGROUP[adapterClass(g.gpu.capabilities)]} invocations per row`);
  await checkCases(g, op, seededRng("softmax"), [
    // [T, V, scale, offset]
    [1, 1, 1, 0],
    [3, 7, 3, 0],
    [5, 513, 2, 0],
    [2, 32003, 4, 0],
    [1, 151_936, 3, 0],
    [4, 257, 3, 1e4], // large offset: needs the max subtraction
    [3, 1001, 1e4, 0], // huge spread: nearly one-hot rows
    [4, 300, 1e4, -5e3],
    [70_001, 3, 2, 0], // more rows than one grid dimension holds
  ]);
});

gpuTest("softmax.wgsl at every adapter class's workgroup size", async () => {
  const g = await testGpu();
  const rng = seededRng("softmax workgroups");
  for (const wg of new Set(Object.values(ROW_WORKGROUP))) {
    const op = await SoftmaxOp.create(g.registry, wg);
    const cases: Case[] = [[3, 7, 3, 0], [5, 513, 2, 0], [2, 32003, 4, 0], [3, 1001, 1e4, 0]];
    await checkCases(g, op, rng, cases);
  }
});

async function checkCases(
  { gpu, recorder }: TestGpu,
  op: SoftmaxOp,
  rng: Rng,
  cases: Case[],
): Promise<void> {
  for (const [T, V, scale, offset] of cases) {
    const data = rng.normals(T * V, scale).map((x) => x + offset);
    const logits = uploadTensor(gpu, data, T === 1 ? [V] : [T, V]);
    const probs = poisoned(gpu, logits.shape);
    op.record(recorder, logits, probs);
    recorder.submit();
    const what = `softmax T=${T} V=${V} scale=${scale} offset=${offset}`;
    const out = await readWritten(gpu, probs, what);
    const ref = softmaxRows(data, T, V);
    assertClose(out, ref, what);
    // Per row too, so one bad row among large ones cannot hide.
    for (let t = 0; t < T; t++) {
      assertClose(
        out.subarray(t * V, (t + 1) * V),
        ref.subarray(t * V, (t + 1) * V),
        `${what} row ${t}`,
      );
    }
    logits.destroy();
    probs.destroy();
  }
}
