import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";

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
