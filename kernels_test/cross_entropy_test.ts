import {
  assertClose,
  gpuTest,
  poisoned,
  readWritten,
  relativeError,
  seededRng,
  type TestGpu,
  testGpu,
} from "./helpers.ts";
import { ROW_WORKGROUP } from "../src/ops/shapes.ts";
import { CrossEntropyOp } from "../src/ops/cross_entropy.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import {
  crossEntropyBackward,
  crossEntropyForward,
  finiteDifferences,
} from "../src/reference/cross_entropy.ts";
import type { Rng } from "../src/core/random.ts";

/** Random targets and a 0/1 mask with at least one scored token; unscored targets are junk. */
function tokens(rng: Rng, T: number, V: number): { targets: Uint32Array; mask: Float32Array } {
  const targets = new Uint32Array(T);
  const mask = new Float32Array(T);
  for (let t = 0; t < T; t++) {
    mask[t] = rng.next() < 0.7 ? 1 : 0;
    targets[t] = mask[t] ? rng.int(V) : (rng.next() < 0.5 ? 0xffffffff : V + rng.int(9));
  }
  if (!mask.includes(1)) {
    const t = rng.int(T);
    mask[t] = 1;
    targets[t] = rng.int(V);
  }
  return { targets, mask };
}

type Case = [T: number, V: number, scale: number, offset: number];

gpuTest("cross_entropy.wgsl forward, totals and backward match the float64 twin", async () => {
  const g = await testGpu();
  const op = await CrossEntropyOp.create(g.registry);
  await checkCases(g, op, seededRng("cross_entropy"), [
    // [T, V, scale, offset]
    [1, 1, 1, 0],
    [1, 7, 2, 0],
    [3, 513, 3, 0],
    [5, 32003, 2, 0],
    [2, 151_936, 3, 0],
    [700, 37, 2, 0], // more rows than the reduction's workgroup
    [6, 1029, 1e4, 0], // huge spread: losses in the thousands, nearly one-hot softmax
    [4, 300, 3, 1e4], // large offset: needs the max subtraction
    [65_541, 2, 2, 0], // more rows than one grid dimension holds
  ]);
});

gpuTest("cross_entropy.wgsl at every adapter class's workgroup size", async () => {
  const g = await testGpu();
  const rng = seededRng("cross_entropy workgroups");
  for (const wg of new Set(Object.values(ROW_WORKGROUP))) {
    const op = await CrossEntropyOp.create(g.registry, wg);
    await checkCases(g, op, rng, [[3, 513, 3, 0], [5, 32003, 2, 0], [700, 37, 2, 0]]);
  }
});

async function checkCases(
  { gpu, recorder }: TestGpu,
  op: CrossEntropyOp,
  rng: Rng,
  cases: Case[],
): Promise<void> {
  for (const [T, V, scale, offset] of cases) {
    const what = `cross-entropy T=${T} V=${V} scale=${scale} offset=${offset}`;
    const data = rng.normals(T * V, scale).map((x) => x + offset);
    const { targets, mask } = tokens(rng, T, V);
    const logits = uploadTensor(gpu, data, [T, V]);
    const targetsT = uploadTensor(gpu, targets, [T]);
    const maskT = uploadTensor(gpu, mask, [T]);
    const loss = poisoned(gpu, [T]);
    const stats = poisoned(gpu, [T, 2]);
    const totals = poisoned(gpu, [2]);
    const dLogits = poisoned(gpu, [T, V]);
    const ref = crossEntropyForward(data, targets, mask, T, V);
    const gradScale = 1 / ref.count;
    const io = { logits, targets: targetsT, mask: maskT };
    op.recordForward(recorder, { ...io, loss, stats });
    op.recordTotals(recorder, loss, maskT, totals);
    op.recordBackward(recorder, { ...io, stats, dLogits }, gradScale);
    recorder.submit();

    const lossOut = await readWritten(gpu, loss, `${what} loss`);
    await readWritten(gpu, stats, `${what} stats`);
    for (let t = 0; t < T; t++) {
      if (!mask[t] && lossOut[t] !== 0) throw new Error(`${what}: unscored token ${t} has loss`);
    }
    if (V > 1) assertClose(lossOut, ref.loss, `${what} loss`);
    else assertClose(lossOut, ref.loss, `${what} loss`, 1e-30);
    const [sum, count] = await readWritten(gpu, totals, `${what} totals`);
    if (count !== ref.count) throw new Error(`${what}: count ${count}, expected ${ref.count}`);
    if (V > 1) assertClose([sum], [ref.sum], `${what} loss sum`);
    const grad = await readWritten(gpu, dLogits, `${what} dLogits`);
    const gradRef = crossEntropyBackward(data, targets, mask, T, V, gradScale);
    if (V > 1) assertClose(grad, gradRef, `${what} dLogits`);
    else if (grad.some((g) => g !== 0)) throw new Error(`${what}: V = 1 must give zero gradient`);
    for (const t of [logits, targetsT, maskT, loss, stats, totals, dLogits]) t.destroy();
  }
}

gpuTest("cross_entropy.wgsl gives a NaN loss for a scored out-of-range target", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const op = await CrossEntropyOp.create(registry);
  const logits = uploadTensor(gpu, new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
  const targets = uploadTensor(gpu, new Uint32Array([3, 3]), [2]);
  const mask = uploadTensor(gpu, new Float32Array([1, 0]), [2]);
  const loss = poisoned(gpu, [2]);
  const stats = poisoned(gpu, [2, 2]);
  op.recordForward(recorder, { logits, targets, mask, loss, stats });
  recorder.submit();
  const out = await readWritten(gpu, loss, "bad-target loss");
  if (!Number.isNaN(out[0]) || out[1] !== 0) throw new Error(`bad-target loss: got [${out}]`);
  for (const t of [logits, targets, mask, loss, stats]) t.destroy();
});

gpuTest("cross-entropy twin backward matches finite differences of the twin forward", () => {
  const rng = seededRng("cross_entropy finite differences");
  for (const [T, V] of [[1, 1], [1, 5], [4, 7], [3, 16]]) {
    const logits = Float64Array.from(rng.normals(T * V, 2));
    const { targets, mask } = tokens(rng, T, V);
    const count = crossEntropyForward(logits, targets, mask, T, V).count;
    const f = (x: Float64Array) => crossEntropyForward(x, targets, mask, T, V).sum / count;
    const fd = finiteDifferences(f, logits);
    const grad = crossEntropyBackward(logits, targets, mask, T, V, 1 / count);
    const err = relativeError(grad, fd);
    if (!(err < 1e-7)) throw new Error(`T=${T} V=${V}: twin vs finite differences ${err}`);
  }
  return Promise.resolve();
});
