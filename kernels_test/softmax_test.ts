import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { SoftmaxOp } from "../src/ops/softmax.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { softmaxRows } from "../src/reference/softmax.ts";

gpuTest("softmax.wgsl matches the float64 twin on odd shapes and huge logits", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("softmax");
  const op = await SoftmaxOp.create(registry);
  const cases: [number, number, number, number][] = [
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
  ];
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
});
