import { assertClose, gpuTest, readWritten, seededRng, testGpu } from "./helpers.ts";
import { BiasOp } from "../src/ops/bias.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";

gpuTest("bias.wgsl adds the bias to every row", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("bias");
  const op = await BiasOp.create(registry);
  for (const [rows, cols] of [[1, 1], [37, 29], [3, 4096 * 256 + 3]]) {
    const y0 = rng.normals(rows * cols);
    const b = rng.normals(cols);
    const y = uploadTensor(gpu, y0, [rows, cols]);
    const bias = uploadTensor(gpu, b, [cols]);
    op.record(recorder, y, bias);
    recorder.submit();
    const ref = Float64Array.from(y0, (v, i) => v + b[i % cols]);
    assertClose(await readWritten(gpu, y, `bias ${rows}x${cols}`), ref, `bias ${rows}x${cols}`);
    y.destroy();
    bias.destroy();
  }
});

gpuTest("bias.wgsl ban sets exactly the banned logits to the lowest f32", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("ban");
  const op = await BiasOp.create(registry);
  const vocab = 515;
  const data = rng.normals(vocab);
  const logits = uploadTensor(gpu, data, [vocab]);
  const ids = [2, 514, 7, 9999];
  op.recordBan(recorder, logits, uploadTensor(gpu, Uint32Array.from(ids), [ids.length]));
  recorder.submit();
  const out = await readWritten(gpu, logits, "ban");
  const expected = Float32Array.from(data);
  for (const id of ids) if (id < vocab) expected[id] = -3.4028234e38;
  if (out.some((v, i) => v !== expected[i])) throw new Error("ban changed the wrong logits");
});
