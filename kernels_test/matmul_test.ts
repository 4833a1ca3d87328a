import {
  assertClose,
  gpuTest,
  POISON_BITS,
  poisoned,
  readWritten,
  seededRng,
  type TestGpu,
  testGpu,
} from "./helpers.ts";
import {
  MATMUL_TILES,
  type MatmulForm,
  MatmulOp,
  type MatmulTiles,
  matmulTiles,
  maxDispatchDepth,
  narrowTiles,
  SHORT_ROWS,
  shortTiles,
} from "../src/ops/matmul.ts";
import { matmulRef } from "../src/reference/matmul.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import type { Rng } from "../src/core/random.ts";
import { f16ArrayToF32, f32ArrayToF16 } from "../src/formats/tensor_data.ts";
import { KernelUsageError, ShapeError } from "../src/gpu/errors.ts";
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
  tiles: MatmulTiles = matmulTiles(gpu.capabilities),
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
  // Full, short (M <= 16) and narrow (N at most half a block) products.
  const shapes: [number, number, number][] = [[37, 29, 53], [1, 70, 9], [70, 33, 130], [40, 21, 6]];
  const others: MatmulTiles[] = [
    { wgX: 4, wgY: 8, tk: 8, tm: 8, tn: 8 },
    { wgX: 8, wgY: 4, tk: 5, tm: 4, tn: 12 },
    // Blocks of 12: short tiles of one row of threads, narrow ones of 4 columns a thread.
    { wgX: 8, wgY: 2, tk: 16, tm: 12, tn: 12 },
    ...Object.values(MATMUL_TILES),
  ];
  for (const tiles of others) {
    await checkForm(g, rng, { transB: true }, tiles, shapes);
    await checkForm(g, rng, { transA: true }, tiles, shapes);
  }
});

gpuTest("matmul.wgsl: every adapter class's tiles give the same bits", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("matmul class tiles");
  const [m, k, n] = [300, 200, 150];
  const a = uploadTensor(gpu, rng.normals(m * k), [m, k]);
  const b = uploadTensor(gpu, rng.normals(n * k), [n, k]);
  const outs = [];
  for (const tiles of Object.values(MATMUL_TILES)) {
    const op = await MatmulOp.create(registry, { transB: true }, tiles);
    const c = poisoned(gpu, [m, n]);
    op.record(recorder, a, b, c);
    recorder.submit();
    outs.push(new Uint32Array((await readWritten(gpu, c, JSON.stringify(tiles))).buffer));
    c.destroy();
  }
  for (const out of outs.slice(1)) assert.deepEqual(out, outs[0]);
  for (const t of [a, b]) t.destroy();
});

gpuTest(
  "matmul.wgsl: a K longer than one dispatch walks (a vocabulary-long input gradient)",
  async () => {
    // llvmpipe ends every loop of an invocation after 65,535 iterations in all: one dispatch of
    // the full tiles summed only the first 43,689 of K, of the short tiles about the first 27,600.
    const g = await testGpu();
    const rng = seededRng("matmul long K");
    const defaults = matmulTiles(g.gpu.capabilities);
    const full = maxDispatchDepth(defaults);
    await checkForm(g, rng, {}, defaults, [[SHORT_ROWS + 1, 2 * full + 1, 5]]);
    // Llama 3's head gradient for a few rows: dH[3, 5] = dLogits[3, 128256] · W[128256, 5].
    await checkForm(g, rng, {}, defaults, [[3, 128_256, 5]]);
    // Around the window edges, with small tiles (a shorter depth, cheaper steps), in every form.
    const tiles = { wgX: 4, wgY: 4, tk: 4, tm: 8, tn: 8 };
    const d = maxDispatchDepth(shortTiles(tiles));
    const edges = (ks: number[]) => ks.map((k): [number, number, number] => [3, k, 2]);
    await checkForm(g, rng, {}, tiles, edges([d - 1, d, d + 1, 2 * d, 2 * d + 3]));
    for (const form of [{ transB: true }, { transA: true }, { transA: true, transB: true }]) {
      await checkForm(g, rng, form, tiles, edges([d + 1, 2 * d + 3]));
    }
    await checkForm(g, rng, { accumulate: true }, tiles, edges([2 * d + 1]));
    await checkForm(g, rng, { transA: true, accumulate: true }, tiles, edges([d + 2]));
  },
);

gpuTest("matmul.wgsl: products of few rows run on short tiles, bit for bit the same", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("matmul short tiles");
  const defaults = matmulTiles(gpu.capabilities);
  for (const transB of [false, true]) {
    const op = await MatmulOp.create(registry, { transB });
    assert.deepEqual(op.tilesFor(SHORT_ROWS), shortTiles(defaults));
    assert.deepEqual(op.tilesFor(SHORT_ROWS + 1), defaults);
    // The first rows of a product computed on SHORT_ROWS + 1 rows equal the short product.
    const [k, n] = [300, 70];
    const aData = rng.normals((SHORT_ROWS + 1) * k);
    const a = uploadTensor(gpu, aData, [SHORT_ROWS + 1, k]);
    const aShort = uploadTensor(gpu, aData.subarray(0, SHORT_ROWS * k), [SHORT_ROWS, k]);
    const b = uploadTensor(gpu, rng.normals(k * n), transB ? [n, k] : [k, n]);
    const c = poisoned(gpu, [SHORT_ROWS + 1, n]);
    const cShort = poisoned(gpu, [SHORT_ROWS, n]);
    op.record(recorder, a, b, c);
    op.record(recorder, aShort, b, cShort);
    recorder.submit();
    const long = await readWritten(gpu, c, "full tiles");
    const short = await readWritten(gpu, cShort, "short tiles");
    assert.deepEqual(short, long.subarray(0, SHORT_ROWS * n), `transB=${transB}`);
    for (const t of [a, aShort, b, c, cShort]) t.destroy();
  }
});

gpuTest("matmul.wgsl: narrow products run on narrow tiles, bit for bit the same", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("matmul narrow tiles");
  const defaults = matmulTiles(gpu.capabilities);
  const narrowest = defaults.tn * defaults.wgX / 2; // half of a full block's columns
  for (const transB of [false, true]) {
    const op = await MatmulOp.create(registry, { transB });
    const m = SHORT_ROWS + 37;
    assert.deepEqual(op.tilesFor(m, narrowest), narrowTiles(defaults));
    assert.deepEqual(op.tilesFor(m, narrowest + 1), defaults);
    assert.deepEqual(op.tilesFor(SHORT_ROWS, narrowest), shortTiles(defaults));
    // The first columns of a product one column too wide for narrow tiles equal the narrow one.
    const [k, n] = [300, narrowest + 1];
    const bData = rng.normals(k * n);
    const bNarrow = new Float32Array(k * narrowest);
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < narrowest; j++) {
        // B [k, n] keeps its first columns; Bᵀ [n, k] its first rows.
        if (transB) bNarrow[j * k + i] = bData[j * k + i];
        else bNarrow[i * narrowest + j] = bData[i * n + j];
      }
    }
    const a = uploadTensor(gpu, rng.normals(m * k), [m, k]);
    const b = uploadTensor(gpu, bData, transB ? [n, k] : [k, n]);
    const b2 = uploadTensor(gpu, bNarrow, transB ? [narrowest, k] : [k, narrowest]);
    const c = poisoned(gpu, [m, n]);
    const cNarrow = poisoned(gpu, [m, narrowest]);
    op.record(recorder, a, b, c);
    op.record(recorder, a, b2, cNarrow);
    recorder.submit();
    const wide = await readWritten(gpu, c, "full tiles");
    const narrow = await readWritten(gpu, cNarrow, "narrow tiles");
    for (let r = 0; r < m; r++) {
      assert.deepEqual(
        narrow.subarray(r * narrowest, (r + 1) * narrowest),
        wide.subarray(r * n, r * n + narrowest),
        `transB=${transB} row ${r}`,
      );
    }
    for (const t of [a, b, b2, c, cNarrow]) t.destroy();
  }
});

gpuTest("matmul.wgsl: a long K from an f16 B and a window of a wider A", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("matmul long K f16 / window");
  const tiles = { wgX: 4, wgY: 4, tk: 4, tm: 8, tn: 8 };
  const k = 2 * maxDispatchDepth(shortTiles(tiles)) + 5;
  for (const transB of [false, true]) {
    const op = await MatmulOp.create(registry, { transB }, tiles);
    const [m, n] = [3, 4];
    const what = `matmul f16 B long K transB=${transB}`;
    const aData = rng.normals(m * k);
    const bBits = f32ArrayToF16(rng.normals(k * n));
    const a = uploadTensor(gpu, aData, [m, k]);
    const b = uploadTensor(gpu, bBits, transB ? [n, k] : [k, n], "f16");
    const c = poisoned(gpu, [m, n]);
    op.record(recorder, a, b, c);
    recorder.submit();
    const ref = matmulRef(aData, f16ArrayToF32(bBits), m, k, n, { transB });
    assertClose(await readWritten(gpu, c, what), ref, what);
    for (const t of [a, b, c]) t.destroy();
  }
  // dX = dY[:, from..from + k]·W: the head part's rows are the long K.
  const op = await MatmulOp.create(registry, {}, tiles);
  const [m, n, from, width] = [2, 3, 7, k + 20];
  const dyData = rng.normals(m * width);
  const wData = rng.normals(k * n);
  const dy = uploadTensor(gpu, dyData, [m, width]);
  const w = uploadTensor(gpu, wData, [k, n]);
  const dx = poisoned(gpu, [m, n]);
  op.record(recorder, dy, w, dx, 1, { a: from });
  recorder.submit();
  const window = new Float64Array(m * k);
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < k; j++) window[r * k + j] = dyData[r * width + from + j];
  }
  const what = "matmul long K A window";
  assertClose(await readWritten(gpu, dx, what), matmulRef(window, wData, m, k, n, {}), what);
  for (const t of [dy, w, dx]) t.destroy();
});

gpuTest("matmul.wgsl main_f16b: C = A·Bᵀ and C = A·B with B stored as float16", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("matmul f16 B");
  for (const transB of [true, false]) {
    for (const accumulate of [false, true]) {
      const op = await MatmulOp.create(registry, { transB, accumulate });
      for (const [m, k, n] of [...SHAPES, [3, 7, 5] as [number, number, number]]) {
        const what = `matmul f16 B transB=${transB} accumulate=${accumulate} m=${m} k=${k} n=${n}`;
        const aData = rng.normals(m * k);
        const bBits = f32ArrayToF16(rng.normals(k * n)); // odd k * n leaves half a word of padding
        const a = uploadTensor(gpu, aData, [m, k]);
        const b = uploadTensor(gpu, bBits, transB ? [n, k] : [k, n], "f16");
        const alpha = 0.5 + rng.next();
        let c0: Float32Array | undefined;
        const c = accumulate
          ? uploadTensor(gpu, c0 = rng.normals(m * n), [m, n])
          : poisoned(gpu, [m, n]);
        op.record(recorder, a, b, c, alpha);
        recorder.submit();
        const out = await readWritten(gpu, c, what);
        const bRounded = f16ArrayToF32(bBits);
        assertClose(out, matmulRef(aData, bRounded, m, k, n, { transB, alpha, c0 }), what);
        for (const t of [a, b, c]) t.destroy();
      }
    }
  }
  const transA = await MatmulOp.create(registry, { transA: true });
  const half = uploadTensor(gpu, new Uint16Array(4), [2, 2], "f16");
  const x = uploadTensor(gpu, new Float32Array(4), [2, 2]);
  assert.throws(() => transA.record(recorder, x, half, x), KernelUsageError);
  for (const t of [half, x]) t.destroy();
});

gpuTest(
  "matmul.wgsl: column windows of a wider C and A (the parts of a split LM head)",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("matmul windows");
    // [m, k, n, width, from]: the product covers columns [from, from + n) of width.
    const cases: [number, number, number, number, number][] = [
      [1, 64, 64, 160, 64],
      [37, 29, 53, 130, 70],
      [130, 16, 67, 200, 0],
      [5, 8, 11, 40, 29],
    ];
    for (const accumulate of [false, true]) {
      const forward = await MatmulOp.create(registry, { transB: true, accumulate });
      const inputGrad = await MatmulOp.create(registry, { accumulate });
      for (const [m, k, n, width, from] of cases) {
        for (const half of [false, true]) {
          // Forward: C[:, from..from + n] (=|+=) A·Bᵀ; the columns outside keep their values.
          const what = `matmul C window acc=${accumulate} f16=${half} m=${m} k=${k} n=${n} ` +
            `width=${width} from=${from}`;
          const aData = rng.normals(m * k);
          const bBits = f32ArrayToF16(rng.normals(n * k));
          const bData = half ? f16ArrayToF32(bBits) : rng.normals(n * k);
          const before = rng.normals(m * width);
          const words = new Uint32Array(before.buffer.slice(0));
          if (!accumulate) {
            for (let r = 0; r < m; r++) {
              words.fill(
                POISON_BITS,
                r * width + from,
                r * width + from + n,
              );
            }
          }
          const a = uploadTensor(gpu, aData, [m, k]);
          const b = half
            ? uploadTensor(gpu, bBits, [n, k], "f16")
            : uploadTensor(gpu, bData, [n, k]);
          const c = uploadTensor(gpu, new Float32Array(words.buffer), [m, width]);
          forward.record(recorder, a, b, c, 1, { c: from });
          recorder.submit();
          const out = await readWritten(gpu, c, what);
          const product = matmulRef(aData, bData, m, k, n, { transB: true });
          const ref = Float64Array.from(before);
          for (let r = 0; r < m; r++) {
            for (let j = 0; j < n; j++) {
              ref[r * width + from + j] = product[r * n + j] +
                (accumulate ? before[r * width + from + j] : 0);
            }
          }
          assertClose(out, ref, what);
          for (let r = 0; r < m; r++) {
            for (let j = 0; j < width; j++) {
              if (j >= from && j < from + n) continue;
              assert.equal(out[r * width + j], before[r * width + j], `${what}: column ${j} kept`);
            }
          }
          for (const t of [a, b, c]) t.destroy();
        }
        // Input gradient: dX (=|+=) dY[:, from..from + n]·W for W [n, k].
        const what = `matmul A window acc=${accumulate} m=${m} k=${k} n=${n} width=${width} ` +
          `from=${from}`;
        const dyData = rng.normals(m * width);
        const wData = rng.normals(n * k);
        const dy = uploadTensor(gpu, dyData, [m, width]);
        const w = uploadTensor(gpu, wData, [n, k]);
        let c0: Float32Array | undefined;
        const dx = accumulate
          ? uploadTensor(gpu, c0 = rng.normals(m * k), [m, k])
          : poisoned(gpu, [m, k]);
        inputGrad.record(recorder, dy, w, dx, 1, { a: from });
        recorder.submit();
        const window = new Float64Array(m * n);
        for (let r = 0; r < m; r++) {
          for (let j = 0; j < n; j++) window[r * n + j] = dyData[r * width + from + j];
        }
        const ref = matmulRef(window, wData, m, n, k, { c0 });
        assertClose(await readWritten(gpu, dx, what), ref, what);
        for (const t of [dy, w, dx]) t.destroy();
      }
    }
    // Windows that do not fit, or on a transposed A, are refused.
    const op = await MatmulOp.create(registry, { transB: true });
    const x = uploadTensor(gpu, new Float32Array(8), [2, 4]);
    const w = uploadTensor(gpu, new Float32Array(12), [3, 4]);
    const wide = uploadTensor(gpu, new Float32Array(10), [2, 5]);
    op.record(recorder, x, w, wide, 1, { c: 2 });
    assert.throws(() => op.record(recorder, x, w, wide, 1, { c: 3 }), ShapeError);
    const transA = await MatmulOp.create(registry, { transA: true });
    assert.throws(() => transA.record(recorder, x, w, wide, 1, { a: 0 }), KernelUsageError);
    recorder.submit();
    for (const t of [x, w, wide]) t.destroy();
  },
);
