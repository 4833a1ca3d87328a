import { rejects } from "node:assert";
import { KernelUsageError } from "../src/gpu/errors.ts";
import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { LORA_DECODE_TILES, LoraDecodeOp, type LoraDecodeTiles } from "../src/ops/lora_decode.ts";
import { loraForwardRef } from "../src/reference/lora.ts";
import { Tensor, uploadTensor } from "../src/gpu/tensor.ts";

gpuTest(
  "lora_decode.wgsl: y += scale·(x·Aᵀ)·Bᵀ for one token, A and B inside a flat buffer",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("lora decode");
    // Every adapter class's tiles (each compiles on any adapter), and an odd shape: several
    // output passes per workgroup, a rank block that does not divide the rank.
    const tileSets: LoraDecodeTiles[] = [
      ...new Set(Object.values(LORA_DECODE_TILES)),
      { wg: 64, outPerWg: 40, rankBlock: 3, bLanes: 8 },
    ];
    // [in, out, rank]: odd sizes, more outputs than one workgroup writes, the largest rank.
    const shapes = [[64, 64, 16], [172, 64, 13], [576, 1539, 64], [4, 1, 1]];
    for (const tiles of tileSets) {
      const op = await LoraDecodeOp.create(registry, tiles);
      for (const [inDim, outDim, rank] of shapes) {
        const what = `lora decode ${JSON.stringify(tiles)} in=${inDim} out=${outDim} r=${rank}`;
        // The adapter's layout: A at a 64-float boundary after some padding, then B.
        const aAt = 64, bAt = aAt + Math.ceil(rank * inDim / 64) * 64;
        const flat = rng.normals(bAt + outDim * rank + 37, 0.5);
        const params = uploadTensor(gpu, flat, [flat.length]);
        const a = new Tensor(params.buffer, [rank, inDim], "f32", aAt * 4);
        const b = new Tensor(params.buffer, [outDim, rank], "f32", bAt * 4);
        const xData = rng.normals(inDim);
        const y0 = rng.normals(outDim);
        const x = uploadTensor(gpu, xData, [inDim]);
        const y = uploadTensor(gpu, y0, [outDim]);
        const scale = 0.5 + rng.next();
        op.record(recorder, x, a, b, y, scale);
        recorder.submit();
        const ref = loraForwardRef(
          { tokens: 1, inFeatures: inDim, rank, outFeatures: outDim },
          xData,
          flat.subarray(aAt, aAt + rank * inDim),
          flat.subarray(bAt, bAt + outDim * rank),
          scale,
          0,
          0,
        );
        const expected = Float64Array.from(y0, (v, i) => v + ref.delta[i]);
        assertClose(await readWritten(gpu, y, what), expected, what);
        // The adapter's share alone, so a wrong delta cannot hide behind a large y.
        const onlyDelta = poisoned(gpu, [outDim]);
        const zeros = uploadTensor(gpu, new Float32Array(outDim), [outDim]);
        recorder.copy(zeros, onlyDelta);
        op.record(recorder, x, a, b, onlyDelta, scale);
        recorder.submit();
        assertClose(
          await readWritten(gpu, onlyDelta, `${what}, delta`),
          ref.delta,
          `${what}, delta`,
        );
        for (const t of [params, x, y, onlyDelta, zeros]) t.destroy();
      }
    }
  },
);

gpuTest("lora_decode: tiles it cannot run are refused before compiling", async () => {
  const { registry } = await testGpu();
  for (
    const tiles of [{ wg: 48, outPerWg: 64, rankBlock: 8, bLanes: 4 }, {
      wg: 64,
      outPerWg: 64,
      rankBlock: 8,
      bLanes: 128,
    }]
  ) {
    await rejects(
      () => LoraDecodeOp.create(registry, tiles),
      (e: Error) => e instanceof KernelUsageError && /powers of two/.test(e.message),
    );
  }
});
