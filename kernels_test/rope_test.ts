import assert from "node:assert/strict";
import {
  assertClose,
  gpuTest,
  POISON_BITS,
  poisoned,
  poisonedSlots,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { ropeFrequencyTable, RopeOp } from "../src/ops/rope.ts";
import { type Tensor, uploadTensor, writeTensor } from "../src/gpu/tensor.ts";
import { readF32, readU32 } from "../src/gpu/readback.ts";
import { f16ArrayToF32, f32ArrayToF16 } from "../src/formats/tensor_data.ts";
import { kvCacheValues } from "../src/reference/attention.ts";
import {
  ropeBackward,
  type RopeConfig,
  ropeForward,
  ropeFrequency,
} from "../src/reference/rope.ts";
import type { RopePairs } from "../src/core/rope.ts";
import { dot, finiteDifferences } from "../src/reference/finite_difference.ts";

const PAIRS: RopePairs[] = ["interleaved", "half"];
// [tokens, heads, headDim, pos0, base]: one token, odd token and head counts, head sizes that are
// not multiples of the workgroup, and large positions (the reduction is exact below 2^24).
const CASES = [
  [1, 8, 8, 0, 10000],
  [2, 2, 64, 1_000_000, 500000],
  [37, 3, 64, 5, 10000],
  [5, 4, 128, 32700, 500000],
  [3, 2, 6, 32765, 1e6],
  [17, 1, 96, 12345, 10000],
];

Deno.test("rope frequency table splits each frequency exactly enough", () => {
  for (const [headDim, base] of [[64, 10000], [128, 500000], [6, 1e6]]) {
    const table = ropeFrequencyTable(headDim, base);
    for (let i = 0; i < headDim / 2; i++) {
      const turns = ropeFrequency(i, headDim, base) / (2 * Math.PI);
      const [hi, mid, lo] = table.subarray(4 * i, 4 * i + 3);
      const err = Math.abs(hi + mid + lo - turns) / turns;
      if (!(err < 1e-12)) throw new Error(`rope table ${headDim}/${base} pair ${i}: error ${err}`);
      // q * 256 hi and q * 256 mid must be exact in f32 for every q < 2^16.
      for (const part of [256 * hi, 256 * mid]) {
        const q = 65535;
        if (Math.fround(q * part) !== q * part) throw new Error(`${part} * ${q} is not exact`);
      }
    }
  }
});

gpuTest("rope forward and backward match the float64 twin, at large positions too", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("rope");
  for (const pairs of PAIRS) {
    for (const [tokens, heads, headDim, pos0, base] of CASES) {
      const config: RopeConfig = { heads, headDim, base, pairs };
      const what = `rope ${pairs} [${tokens}, ${heads}, ${headDim}] pos0=${pos0} base=${base}`;
      const op = await RopeOp.create(registry, { headDim, base, pairs });
      const n = tokens * heads * headDim;
      const xData = rng.normals(n);
      const gData = rng.normals(n);
      const x = uploadTensor(gpu, xData, [tokens, heads, headDim]);
      const g = uploadTensor(gpu, gData, [tokens, heads, headDim]);
      const out = poisoned(gpu, [tokens, heads, headDim]);
      const dX = poisoned(gpu, [tokens, heads, headDim]);
      const inPlace = uploadTensor(gpu, xData, [tokens, heads, headDim]);
      const gradInPlace = uploadTensor(gpu, gData, [tokens, heads, headDim]);
      op.recordForward(recorder, x, out, { pos0 });
      op.recordBackward(recorder, g, dX, { pos0 });
      op.recordForwardInPlace(recorder, inPlace, { pos0 });
      op.recordBackwardInPlace(recorder, gradInPlace, { pos0 });
      recorder.submit();
      const ref = ropeForward(xData, tokens, pos0, config);
      const refBack = ropeBackward(gData, tokens, pos0, config);
      assertClose(await readWritten(gpu, out, what), ref, `${what} forward`);
      assertClose(await readWritten(gpu, dX, what), refBack, `${what} backward`);
      assertClose(await readF32(gpu, inPlace), ref, `${what} forward in place`);
      assertClose(await readF32(gpu, gradInPlace), refBack, `${what} backward in place`);
      for (const t of [x, g, out, dX, inPlace, gradInPlace]) t.destroy();
      op.destroy();
    }
  }
});

gpuTest(
  "rope with per-pair frequency divisors (Llama 3 scaling) matches the float64 twin",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("rope divisors");
    for (const pairs of PAIRS) {
      for (
        const [tokens, heads, headDim, pos0, base] of [[9, 2, 16, 8000, 500000], [1, 3, 64, 3, 1e4]]
      ) {
        // Divisors from 1 to 32, as Llama 3's rope_freqs, drawn fresh each run.
        const divisors = Array.from({ length: headDim / 2 }, () => 1 + 31 * rng.next());
        const config: RopeConfig = { heads, headDim, base, pairs, divisors };
        const what = `rope ${pairs} divisors [${tokens}, ${heads}, ${headDim}] pos0=${pos0}`;
        const op = await RopeOp.create(registry, {
          headDim,
          base,
          pairs,
          frequencyDivisors: divisors,
        });
        const xData = rng.normals(tokens * heads * headDim);
        const x = uploadTensor(gpu, xData, [tokens, heads, headDim]);
        const out = poisoned(gpu, [tokens, heads, headDim]);
        op.recordForward(recorder, x, out, { pos0 });
        recorder.submit();
        assertClose(
          await readWritten(gpu, out, what),
          ropeForward(xData, tokens, pos0, config),
          what,
        );
        // Without the divisors the result differs: the table really carries them.
        const plain = ropeForward(xData, tokens, pos0, { heads, headDim, base, pairs });
        const ref = ropeForward(xData, tokens, pos0, config);
        if (pos0 > 0 && plain.every((v, i) => Math.abs(v - ref[i]) < 1e-3)) {
          throw new Error(`${what}: divisors changed nothing`);
        }
        x.destroy();
        out.destroy();
        op.destroy();
      }
    }
    await assert.rejects(
      RopeOp.create(registry, { headDim: 8, frequencyDivisors: [1, 2, 0, 4] }),
      /frequencyDivisors/,
    );
  },
);

gpuTest("rope writes K into a KV cache at a row offset and reads from a row offset", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("rope cache");
  for (const pairs of PAIRS) {
    const [capacity, heads, headDim, base] = [50, 3, 32, 10000];
    const [srcRows, srcRow, tokens, past] = [20, 4, 13, 29];
    const what = `rope ${pairs} into cache rows ${past}..${past + tokens - 1}`;
    const op = await RopeOp.create(registry, { headDim, base, pairs });
    const rowLen = heads * headDim;
    const kData = rng.normals(srcRows * rowLen);
    const cacheData = rng.normals(capacity * rowLen);
    const k = uploadTensor(gpu, kData, [srcRows, heads, headDim]);
    const cache = uploadTensor(gpu, cacheData, [capacity, heads, headDim]);
    op.recordForward(recorder, k, cache, { pos0: past, srcRow, dstRow: past, tokens });
    // A second, partially overlapping in-place rotation of rows [2, 9) at positions 100..106.
    op.recordForwardInPlace(recorder, cache, { pos0: 100, row: 2, tokens: 7 });
    recorder.submit();
    const expected = Float64Array.from(cacheData);
    const slice = kData.subarray(srcRow * rowLen, (srcRow + tokens) * rowLen);
    expected.set(ropeForward(slice, tokens, past, { heads, headDim, base, pairs }), past * rowLen);
    const rows2 = expected.subarray(2 * rowLen, 9 * rowLen);
    rows2.set(ropeForward(rows2, 7, 100, { heads, headDim, base, pairs }));
    assertClose(await readF32(gpu, cache), expected, what);
    // Reading a row range back out of the cache into a separate poisoned tensor.
    const back = poisoned(gpu, [tokens, heads, headDim]);
    op.recordBackward(recorder, cache, back, { pos0: past, srcRow: past, tokens });
    recorder.submit();
    const cached = Float32Array.from(expected.subarray(past * rowLen, (past + tokens) * rowLen));
    const refBack = ropeBackward(cached, tokens, past, { heads, headDim, base, pairs });
    assertClose(await readWritten(gpu, back, what), refBack, `${what} backward from cache`);
    assertClose(refBack, slice, `${what}: backward undoes forward`);
    for (const t of [k, cache, back]) t.destroy();
    op.destroy();
  }
});

Deno.test("rope backward twin matches finite differences of the forward twin", () => {
  const rng = seededRng("rope finite differences");
  for (const pairs of PAIRS) {
    const config: RopeConfig = { heads: 2, headDim: 6, base: 10000, pairs };
    const [tokens, pos0] = [3, 7];
    const x = Float64Array.from(rng.normals(tokens * 12));
    const w = rng.normals(tokens * 12);
    const numeric = finiteDifferences((v) => dot(w, ropeForward(v, tokens, pos0, config)), x);
    assertClose(ropeBackward(w, tokens, pos0, config), numeric, `rope fd ${pairs}`, 1e-7);
  }
});

gpuTest("rope op rejects row ranges past the tensors and overlapping copies", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const op = await RopeOp.create(registry, { headDim: 4 });
  const a = uploadTensor(gpu, new Float32Array(24), [3, 2, 4]);
  const b = uploadTensor(gpu, new Float32Array(16), [2, 2, 4]);
  const bad: [string, () => void][] = [
    ["dst rows", () => op.recordForward(recorder, a, b, { pos0: 0 })],
    ["src rows", () => op.recordForward(recorder, b, a, { pos0: 0, srcRow: 1, tokens: 2 })],
    ["aliasing", () => op.recordForward(recorder, a, a, { pos0: 0 })],
    ["head size", () => op.recordForwardInPlace(recorder, a.reshape([3, 4, 2]), { pos0: 0 })],
    ["position", () => op.recordForwardInPlace(recorder, a, { pos0: 2 ** 24 - 2 })],
  ];
  for (const [name, fn] of bad) {
    let threw = false;
    try {
      fn();
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`rope accepted bad ${name}`);
  }
  for (const t of [a, b]) t.destroy();
  op.destroy();
});

gpuTest("rope writes K into an f16 KV cache: the f32 rotation rounded to halves", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("rope f16 cache");
  // headDim 6: half-split pairs (i, i + 3) put a word's two elements in different pairs.
  for (const [heads, headDim] of [[3, 6], [2, 32]]) {
    for (const pairs of PAIRS) {
      const [capacity, srcRows, srcRow, tokens, past, base] = [40, 12, 3, 9, 21, 10000];
      const what = `rope ${pairs} hd=${headDim} into an f16 cache rows ${past}..`;
      const op = await RopeOp.create(registry, { headDim, base, pairs });
      const rowLen = heads * headDim;
      const kData = rng.normals(srcRows * rowLen);
      const k = uploadTensor(gpu, kData, [srcRows, heads, headDim]);
      const cache = poisoned(gpu, [capacity, heads, headDim], "f16");
      const f32 = poisoned(gpu, [capacity, heads, headDim]);
      const placement = { pos0: past, srcRow, dstRow: past, tokens };
      op.recordForward(recorder, k, cache, placement);
      op.recordForward(recorder, k, f32, placement);
      recorder.submit();
      const words = await readU32(gpu, cache);
      const rows = [past * rowLen / 2, (past + tokens) * rowLen / 2];
      words.forEach((w, i) => {
        const inside = i >= rows[0] && i < rows[1];
        if (inside === (w === POISON_BITS)) throw new Error(`${what}: word ${i} wrong side`);
      });
      const halves = new Uint16Array(words.buffer).subarray(2 * rows[0], 2 * rows[1]);
      const rotated = (await readF32(gpu, f32)).subarray(2 * rows[0], 2 * rows[1]);
      assert.deepEqual(halves, f32ArrayToF16(rotated), `${what}: the f32 values rounded`);
      const slice = kData.subarray(srcRow * rowLen, (srcRow + tokens) * rowLen);
      const ref = ropeForward(slice, tokens, past, { heads, headDim, base, pairs });
      assertClose(f16ArrayToF32(halves), kvCacheValues(ref, "f16"), `${what}: twin`, 1e-3);
      for (const t of [k, cache, f32]) t.destroy();
      op.destroy();
    }
  }
});

gpuTest(
  "rope's q, k and v entries give the bits of the one-tensor entries and copies",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("rope qk");
    for (const pairs of PAIRS) {
      const [tokens, heads, kvHeads, headDim, pos0, dstRow] = [7, 6, 2, 10, 93, 5];
      const op = await RopeOp.create(registry, { headDim, base: 10000, pairs });
      const qData = rng.normals(tokens * heads * headDim);
      const kData = rng.normals(tokens * kvHeads * headDim);
      const what = `rope qk ${pairs}`;
      // Forward: q in place, k into a cache at dstRow and v copied there, at once (k and v in one
      // buffer, as are the cache's) and one by one.
      const vData = rng.normals(tokens * kvHeads * headDim);
      const [qAtOnce, qAlone] = [0, 1].map(() =>
        uploadTensor(gpu, qData, [tokens, heads, headDim])
      );
      const kvShapes = [[tokens, kvHeads, headDim], [tokens, kvHeads, headDim]];
      const { buffer: kvBuffer, views: [k, v] } = poisonedSlots(gpu, kvShapes);
      writeTensor(gpu, k, kData);
      writeTensor(gpu, v, vData);
      const cacheShapes = [[16, kvHeads, headDim], [16, kvHeads, headDim]];
      const { buffer: cacheAtOnce, views: [kCache, vCache] } = poisonedSlots(gpu, cacheShapes);
      const { buffer: cacheAlone, views: [kCacheAlone] } = poisonedSlots(gpu, cacheShapes);
      const qkv = { q: qAtOnce, k, v, kDst: kCache, vDst: vCache };
      const dispatches = recorder.totals.dispatches;
      assert.equal(op.recordForwardQKV(recorder, qkv, { pos0, dstRow }), true, `${what}: values`);
      assert.equal(recorder.totals.dispatches - dispatches, 1, `${what}: one forward dispatch`);
      op.recordForwardInPlace(recorder, qAlone, { pos0 });
      op.recordForward(recorder, k, kCacheAlone, { pos0, dstRow });
      // Backward: dQ and dK in one buffer (one dispatch) and in two.
      const shapes = [[tokens, heads, headDim], [tokens, kvHeads, headDim]];
      const { buffer: shared, views: [dQ, dK] } = poisonedSlots(gpu, shapes);
      writeTensor(gpu, dQ, qData);
      writeTensor(gpu, dK, kData);
      const dQAlone = uploadTensor(gpu, qData, [tokens, heads, headDim]);
      const dKAlone = uploadTensor(gpu, kData, [tokens, kvHeads, headDim]);
      const before = recorder.totals.dispatches;
      op.recordBackwardInPlaceQK(recorder, dQ, dK, pos0);
      assert.equal(recorder.totals.dispatches - before, 1, `${what}: one dispatch for both`);
      op.recordBackwardInPlaceQK(recorder, dQAlone, dKAlone, pos0);
      recorder.submit();
      assert.deepEqual(await readF32(gpu, qAtOnce), await readF32(gpu, qAlone), `${what} q`);
      const cacheRows = (t: Tensor) => t.rows(dstRow, tokens);
      assert.deepEqual(
        await readWritten(gpu, cacheRows(kCache), `${what} k cache`),
        await readWritten(gpu, cacheRows(kCacheAlone), `${what} k cache`),
        `${what} k in the cache`,
      );
      assert.deepEqual(await readWritten(gpu, cacheRows(vCache), `${what} v cache`), vData);
      assert.deepEqual(await readF32(gpu, dQ), await readF32(gpu, dQAlone), `${what} dQ`);
      assert.deepEqual(await readF32(gpu, dK), await readF32(gpu, dKAlone), `${what} dK`);
      // And against the float64 twin, so that neither path can be wrong the same way.
      const ref = ropeForward(qData, tokens, pos0, { heads, headDim, base: 10000, pairs });
      assertClose(await readF32(gpu, qAtOnce), ref, `${what} q against the float64 twin`);
      for (
        const t of [qAtOnce, qAlone, kvBuffer, cacheAtOnce, cacheAlone, shared, dQAlone, dKAlone]
      ) {
        t.destroy();
      }
    }
  },
);
