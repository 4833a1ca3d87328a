import assert from "node:assert/strict";
import {
  assertClose,
  assertCloseDots,
  gpuTest,
  POISON_BITS,
  poisoned,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import {
  FUSED_TILES,
  type FusedLora,
  FusedMatvecOp,
  type FusedPartData,
  fusedPartMatrix,
  type FusedParts,
  fusedRows,
  type FusedTiles,
  type FusedVariant,
  type FusedWeightKind,
  singlePart,
  uploadFusedParts,
} from "../src/ops/fused_matvec.ts";
import { ropeFrequencyTable } from "../src/ops/rope.ts";
import { MatvecOp, matvecTiling } from "../src/ops/matvec.ts";
import { RmsNormOp } from "../src/ops/rmsnorm.ts";
import { GGML_QUANT_TYPES, GGML_TYPES, type GgmlQuantType } from "../src/core/quant.ts";
import { readBytes, readF32 } from "../src/gpu/readback.ts";
import { f16ArrayToF32 } from "../src/formats/tensor_data.ts";
import { kvCacheValues } from "../src/reference/attention.ts";
import { createTensor, Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { KernelUsageError, ShapeError } from "../src/gpu/errors.ts";
import { Rng } from "../src/core/random.ts";
import { toF16 } from "../src/reference/matvec.ts";
import { dequantizeMatrix, quantizeRandom } from "../src/reference/quant.ts";
import {
  fusedAddRef,
  type FusedPartRef,
  fusedQkvRef,
  type FusedRefArgs,
  fusedStoreRef,
  fusedSwigluRef,
} from "../src/reference/fused_matvec.ts";

const ROPE_BASE = 10000;

/** Random weights of one kind: what to upload and the values the twin uses. */
function randomMatrix(
  rng: Rng,
  kind: FusedWeightKind,
  rows: number,
  cols: number,
): { data: FusedPartData; values: ArrayLike<number> } {
  if (kind === "f32") {
    const v = rng.normals(rows * cols, 0.5);
    return { data: v, values: v };
  }
  if (kind === "f16") {
    const half = toF16(rng.normals(rows * cols, 0.5));
    return { data: half.bits, values: half.values };
  }
  const bytes = quantizeRandom(kind, rng, rows, cols);
  return { data: bytes, values: dequantizeMatrix(kind, bytes, rows, cols) };
}

/** The adapter's layout: every A and B in one flat buffer at 64-float boundaries. */
function randomLora(
  rng: Rng,
  gpu: Awaited<ReturnType<typeof testGpu>>["gpu"],
  rank: number,
  k: number,
  rows: number[],
): { lora: FusedLora; refs: FusedPartRef["lora"][]; buffer: Tensor } {
  const pad = (n: number) => Math.ceil(n / 64) * 64;
  const layout: { a: number; b: number }[] = [];
  let n = 64 * 3; // something before the first A, as in a real adapter
  for (const r of rows) {
    const a = n;
    n += pad(rank * k);
    layout.push({ a, b: n });
    n += pad(r * rank);
  }
  const flat = rng.normals(n, 0.5);
  const buffer = uploadTensor(gpu, flat, [n]);
  const scale = 0.25 + rng.next();
  const parts = layout.map(({ a, b }, i) => ({
    a: new Tensor(buffer.buffer, [rank, k], "f32", a * 4),
    b: new Tensor(buffer.buffer, [rows[i], rank], "f32", b * 4),
  }));
  const refs = layout.map(({ a, b }, i) => ({
    a: flat.subarray(a, a + rank * k),
    b: flat.subarray(b, b + rows[i] * rank),
    rank,
    scale,
  }));
  return { lora: { parts, scale }, refs, buffer };
}

interface Case {
  kind: FusedWeightKind;
  epilogue: FusedVariant["epilogue"];
  k: number;
  rows: number[];
  norm?: boolean;
  bias?: boolean;
  rank?: number;
  rope?: "interleaved" | "half";
  headDim?: number;
  /** "qkv": the KV buffer's element type (default f32). */
  kvDtype?: "f32" | "f16";
  /** With `rank`: the adapter's h computed ahead by a dispatch of its own. */
  loraH?: boolean;
}

/** The relative error of out against ref, or the dot-scaled one for blocks. */
function check(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
  kind: FusedWeightKind,
  k: number,
  what: string,
): void {
  if (kind === "f32" || kind === "f16") {
    assertClose(out, ref, what);
    return;
  }
  // Blocks: the tolerance of quant_matvec_test, scaled by the dots of absolute values.
  const abs = Float64Array.from(ref, Math.abs);
  assertCloseDots(out, ref, abs, k, what, 2e-4);
}

/** Runs case `c` against its twin; returns the output's bits (q for "qkv"). */
async function runCase(op: FusedMatvecOp, rng: Rng, c: Case): Promise<Uint32Array> {
  const { gpu, recorder } = await testGpu();
  const what = `fused ${c.epilogue} ${c.kind} K=${c.k} rows=[${c.rows}] norm=${!!c.norm} ` +
    `bias=${!!c.bias} rank=${c.rank ?? 0}${c.loraH ? " (h ahead)" : ""} rope=${
      c.rope ?? "none"
    } tiles=${op.tiles.wg}x${fusedRows(op.tiles, c.kind)} kv=${c.kvDtype ?? "f32"}`;
  const mats = c.rows.map((r) => randomMatrix(rng, c.kind, r, c.k));
  const weights = uploadFusedParts(gpu, c.kind, c.k, mats.map((m) => m.data), c.rows);
  const xValues = rng.normals(c.k);
  const x = uploadTensor(gpu, xValues, [c.k]);
  const made: Tensor[] = [weights.data, x];
  const normValues = rng.normals(c.k, 0.5).map((v) => 1 + v);
  const norm = c.norm ? { weight: uploadTensor(gpu, normValues, [c.k]), eps: 1e-5 } : undefined;
  if (norm) made.push(norm.weight);
  const biasParts = c.rows.map((r) => rng.normals(r));
  let bias: { data: Tensor; offsets: number[] } | undefined;
  if (c.bias) {
    const offsets = c.rows.map((_, i) => c.rows.slice(0, i).reduce((a, b) => a + b, 0) + 7 * i);
    const flat = new Float32Array(offsets[offsets.length - 1] + c.rows[c.rows.length - 1]);
    biasParts.forEach((b, i) => flat.set(b, offsets[i]));
    bias = { data: uploadTensor(gpu, flat, [flat.length]), offsets };
    made.push(bias.data);
  }
  const adapter = c.rank ? randomLora(rng, gpu, c.rank, c.k, c.rows) : undefined;
  if (adapter) made.push(adapter.buffer);
  if (adapter && c.loraH) {
    const h = poisoned(gpu, [c.rows.length * c.rank!]);
    made.push(h);
    adapter.lora = { ...adapter.lora, h };
  }
  const refArgs: FusedRefArgs = {
    x: xValues,
    k: c.k,
    norm: c.norm ? { weight: normValues, eps: 1e-5 } : undefined,
    parts: c.rows.map((rows, i) => ({
      w: mats[i].values,
      rows,
      bias: c.bias ? biasParts[i] : undefined,
      lora: adapter?.refs[i],
    })),
  };
  const args = { x, weights, norm, bias: bias, lora: adapter?.lora };
  try {
    if (c.epilogue === "qkv") {
      const hd = c.headDim!;
      const kvRows = c.rows[1];
      const capacity = 5;
      const row = 3;
      const f16 = c.kvDtype === "f16";
      // The layer's KV buffer: keys [capacity, kvRows], then values at an offset (a whole word
      // for f16).
      const vStart = capacity * kvRows + (f16 ? 14 : 13);
      const kv = poisoned(gpu, [vStart + capacity * kvRows], f16 ? "f16" : "f32");
      const q = poisoned(gpu, [c.rows[0]]);
      const freqs = uploadTensor(gpu, ropeFrequencyTable(hd, ROPE_BASE), [hd / 2, 4]);
      made.push(kv, q, freqs);
      const pos = 1000 + rng.int(3000);
      op.record(recorder, "qkv", {
        ...args,
        y: q,
        kv: {
          kv,
          kAt: row * kvRows,
          vAt: vStart + row * kvRows,
          rope: c.rope ? { freqs, pos, headDim: hd, pairs: c.rope } : undefined,
        },
      });
      recorder.submit();
      const ref = fusedQkvRef(
        refArgs,
        c.rope ? { pos, headDim: hd, base: ROPE_BASE, pairs: c.rope } : undefined,
      );
      const out = await readWritten(gpu, q, `${what}: q`);
      check(out, ref.q, c.kind, c.k, `${what}: q`);
      const bytes = await readBytes(gpu, kv);
      const words = new Uint32Array(bytes);
      const all = f16 ? f16ArrayToF32(new Uint16Array(bytes)) : new Float32Array(bytes);
      const kAt = row * kvRows, vAt = vStart + row * kvRows;
      for (let i = 0; i < words.length; i++) {
        const e = f16 ? 2 * i : i; // the word's first element
        const inside = (e >= kAt && e < kAt + kvRows) || (e >= vAt && e < vAt + kvRows);
        if (inside === (words[i] === POISON_BITS)) {
          throw new Error(`${what}: kv word ${i} ${inside ? "not written" : "overwritten"}`);
        }
      }
      if (f16) {
        // The kernel's f32 value may round to the half beside the twin's.
        const k = all.subarray(kAt, kAt + kvRows), v = all.subarray(vAt, vAt + kvRows);
        assertClose(k, kvCacheValues(ref.k, "f16"), `${what}: k`, 1e-3);
        assertClose(v, kvCacheValues(ref.v, "f16"), `${what}: v`, 1e-3);
      } else {
        check(all.subarray(kAt, kAt + kvRows), ref.k, c.kind, c.k, `${what}: k`);
        check(all.subarray(vAt, vAt + kvRows), ref.v, c.kind, c.k, `${what}: v`);
      }
      return new Uint32Array(out.buffer);
    } else if (c.epilogue === "swiglu") {
      const y = poisoned(gpu, [c.rows[0]]);
      made.push(y);
      op.record(recorder, "swiglu", { ...args, y });
      recorder.submit();
      const out = await readWritten(gpu, y, what);
      check(out, fusedSwigluRef(refArgs), c.kind, c.k, what);
      return new Uint32Array(out.buffer);
    } else if (c.epilogue === "add") {
      const start = rng.normals(c.rows[0]);
      const y = uploadTensor(gpu, start, [c.rows[0]]);
      made.push(y);
      op.record(recorder, "add", { ...args, y });
      recorder.submit();
      const out = await readF32(gpu, y);
      check(out, fusedAddRef(refArgs, start), c.kind, c.k, what);
      return new Uint32Array(out.buffer);
    } else {
      const y = poisoned(gpu, [c.rows[0]]);
      made.push(y);
      op.record(recorder, "store", { ...args, y });
      recorder.submit();
      const out = await readWritten(gpu, y, what);
      check(out, fusedStoreRef(refArgs), c.kind, c.k, what);
      return new Uint32Array(out.buffer);
    }
  } finally {
    for (const t of made) t.destroy();
  }
}

function variantsOf(cases: Case[]): FusedVariant[] {
  return cases.map((c) => ({
    kind: c.kind,
    epilogue: c.epilogue,
    norm: c.norm,
    lora: c.rank !== undefined,
    loraH: c.loraH,
    bias: c.bias,
    rope: c.rope,
    kvDtype: c.kvDtype,
  }));
}

/** Every epilogue with and without its options, odd sizes (rows not a multiple of the slots). */
function floatCases(kind: FusedWeightKind): Case[] {
  const cases: Case[] = [
    { kind, epilogue: "store", k: 4, rows: [1] },
    { kind, epilogue: "store", k: 260, rows: [37], norm: true },
    { kind, epilogue: "store", k: 68, rows: [19], bias: true, rank: 13 },
    { kind, epilogue: "add", k: 172, rows: [64], rank: 16 },
    { kind, epilogue: "add", k: 12, rows: [7], norm: true, bias: true },
    { kind, epilogue: "swiglu", k: 64, rows: [43, 43], norm: true },
    { kind, epilogue: "swiglu", k: 36, rows: [17, 17], norm: true, rank: 5 },
    // q: 3 heads of 6, k and v: one head: every block ends part-way.
    { kind, epilogue: "qkv", k: 24, rows: [18, 6, 6], norm: true, rope: "interleaved", headDim: 6 },
    { kind, epilogue: "qkv", k: 64, rows: [64, 32, 32], norm: true, rope: "half", headDim: 8 },
    {
      kind,
      epilogue: "qkv",
      k: 40,
      rows: [30, 10, 10],
      norm: true,
      bias: true,
      rank: 7,
      rope: "half",
      headDim: 10,
    },
    { kind, epilogue: "qkv", k: 16, rows: [12, 4, 4], rank: 3, headDim: 4 },
  ];
  return cases.flatMap((c) => c.rank ? [c, { ...c, loraH: true }] : [c]);
}

gpuTest("fused_matvec.wgsl f32 matches its twin, for every adapter class's tiles", async () => {
  const { registry } = await testGpu();
  const rng = seededRng("fused matvec f32");
  const cases = floatCases("f32");
  for (const tiles of Object.values(FUSED_TILES) as FusedTiles[]) {
    const op = await FusedMatvecOp.create(registry, variantsOf(cases), tiles);
    for (const c of cases) await runCase(op, rng, c);
  }
  // A shape no adapter class uses: more slots than invocations.
  const odd = await FusedMatvecOp.create(registry, variantsOf(cases), { wg: 4, rows: 10 });
  for (const c of cases) await runCase(odd, rng, c);
});

/** "qkv" into an f16 KV cache: RoPE pairs of both conventions, biases, an adapter, no RoPE. */
function f16KvCases(kind: FusedWeightKind): Case[] {
  const qkv = { kind, epilogue: "qkv", kvDtype: "f16" } as const;
  return [
    { ...qkv, k: 24, rows: [18, 6, 6], norm: true, rope: "interleaved", headDim: 6 },
    { ...qkv, k: 64, rows: [64, 32, 32], norm: true, rope: "half", headDim: 8 },
    { ...qkv, k: 40, rows: [32, 16, 16], bias: true, rank: 7, rope: "half", headDim: 8 },
    { ...qkv, k: 16, rows: [12, 4, 4], rank: 3, headDim: 4 },
  ];
}

gpuTest(
  "fused_matvec.wgsl appends to an f16 KV cache, for every adapter class's tiles",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("fused matvec f16 kv");
    for (const kind of ["f32", "f16", "Q8_0"] as const) {
      const cases = f16KvCases(kind).filter((c) => kind !== "Q8_0" || c.k % 32 === 0);
      for (const tiles of Object.values(FUSED_TILES) as FusedTiles[]) {
        const op = await FusedMatvecOp.create(registry, variantsOf(cases), tiles);
        for (const c of cases) await runCase(op, rng, c);
      }
    }
    // Ten slots a workgroup scatter a half-split word's rows over two: the op says so.
    const tiles = { wg: 4, rows: 10 };
    const cases = f16KvCases("f32");
    assert.ok(!FusedMatvecOp.kvF16Fits(tiles, "f32", "half", 8));
    assert.ok(FusedMatvecOp.kvF16Fits(tiles, "f32", "interleaved", 6));
    const odd = await FusedMatvecOp.create(registry, variantsOf(cases), tiles);
    for (const c of cases.filter((c) => c.rope !== "half")) await runCase(odd, rng, c);
    const half = cases[1];
    const weights = uploadFusedParts(
      gpu,
      "f32",
      half.k,
      half.rows.map((r) => rng.normals(r * half.k)),
      half.rows,
    );
    const x = uploadTensor(gpu, rng.normals(half.k), [half.k]);
    const q = createTensor(gpu, [64]);
    const kv = createTensor(gpu, [512], "f16");
    const norm = { weight: uploadTensor(gpu, rng.normals(half.k), [half.k]), eps: 1e-5 };
    const freqs = uploadTensor(gpu, ropeFrequencyTable(8, ROPE_BASE), [4, 4]);
    const rope = { freqs, pos: 3, headDim: 8, pairs: "half" as const };
    assert.throws(
      () =>
        odd.record(recorder, "qkv", { x, weights, y: q, norm, kv: { kv, kAt: 0, vAt: 256, rope } }),
      KernelUsageError,
    );
    for (const t of [weights.data, x, q, kv, norm.weight, freqs]) t.destroy();
  },
);

gpuTest("fused_matvec.wgsl f16 weights match the twin on f16-rounded weights", async () => {
  const { registry } = await testGpu();
  const rng = seededRng("fused matvec f16");
  const cases = floatCases("f16");
  const op = await FusedMatvecOp.create(registry, variantsOf(cases));
  for (const c of cases) await runCase(op, rng, c);
});

gpuTest("fused_matvec.wgsl over GGUF blocks matches the twin for every type", async () => {
  const { registry } = await testGpu();
  const rng = seededRng("fused matvec blocks");
  for (const kind of GGML_QUANT_TYPES as readonly GgmlQuantType[]) {
    const qk = GGML_TYPES[kind].blockElems;
    const cases: Case[] = [
      { kind, epilogue: "store", k: qk, rows: [1] },
      { kind, epilogue: "add", k: 3 * qk, rows: [37], norm: true, rank: 9 },
      { kind, epilogue: "add", k: 3 * qk, rows: [37], norm: true, rank: 9, loraH: true },
      { kind, epilogue: "swiglu", k: 2 * qk, rows: [13, 13], norm: true },
      { kind, epilogue: "qkv", k: qk, rows: [24, 8, 8], norm: true, rope: "half", headDim: 8 },
    ];
    const op = await FusedMatvecOp.create(registry, variantsOf(cases));
    for (const c of cases) await runCase(op, rng, c);
  }
  // Slots over blocks other than the float kernels' (more than the invocations), rows of an odd
  // number of blocks (blocks starting in either half of a word).
  for (const kind of ["Q8_0", "Q5_0", "Q4_0"] as const) {
    const cases: Case[] = [
      { kind, epilogue: "store", k: 96, rows: [29], bias: true },
      { kind, epilogue: "swiglu", k: 160, rows: [19, 19], norm: true },
      { kind, epilogue: "qkv", k: 96, rows: [24, 12, 12], rope: "interleaved", headDim: 6 },
    ];
    const op = await FusedMatvecOp.create(registry, variantsOf(cases), {
      wg: 4,
      rows: 2,
      quantRows: 10,
    });
    for (const c of cases) await runCase(op, rng, c);
  }
  // K-quant rows dotted in half blocks, more of them than invocations; Q6_K's 210-byte blocks
  // starting in either half of a word.
  for (const kind of ["Q4_K", "Q5_K", "Q6_K"] as const) {
    const cases: Case[] = [
      { kind, epilogue: "store", k: 768, rows: [29], bias: true },
      { kind, epilogue: "swiglu", k: 512, rows: [19, 19], norm: true },
      { kind, epilogue: "qkv", k: 768, rows: [24, 12, 12], rope: "interleaved", headDim: 6 },
    ];
    const op = await FusedMatvecOp.create(registry, variantsOf(cases), {
      wg: 4,
      rows: 2,
      quantRows: 10,
    });
    for (const c of cases) await runCase(op, rng, c);
  }
});

gpuTest("fused matvec equals rmsnorm then matvec bit for bit (same tiles)", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("fused matvec bitwise");
  const { WG, ROWS } = matvecTiling(gpu);
  const fused = await FusedMatvecOp.create(registry, [
    { kind: "f32", epilogue: "store", norm: true, bias: true },
  ], { wg: WG, rows: ROWS });
  const matvec = await MatvecOp.create(registry, { f16: false });
  const rmsnorm = await RmsNormOp.create(registry);
  for (const [n, k] of [[37, 260], [64, 64], [301, 576]]) {
    const wm = rng.normals(n * k);
    const w = uploadTensor(gpu, wm, [n, k]);
    const x = uploadTensor(gpu, rng.normals(k), [1, k]);
    const nw = uploadTensor(gpu, rng.normals(k), [k]);
    const b = uploadTensor(gpu, rng.normals(n), [n]);
    const h = createTensor(gpu, [1, k]);
    const y1 = poisoned(gpu, [n]);
    const y2 = poisoned(gpu, [n]);
    rmsnorm.recordForward(recorder, x, nw, h, 1e-5);
    matvec.record(recorder, w, h.reshape([k]), y1, { bias: b });
    fused.record(recorder, "store", {
      x: x.reshape([k]),
      weights: singlePart(w),
      y: y2,
      norm: { weight: nw, eps: 1e-5 },
      bias: { data: b, offsets: [0] },
    });
    recorder.submit();
    const a = new Uint32Array((await readWritten(gpu, y1, "unfused")).buffer);
    const c = new Uint32Array((await readWritten(gpu, y2, "fused")).buffer);
    assert.deepEqual(c, a, `[${n}, ${k}]`);
    for (const t of [w, x, nw, b, h, y1, y2]) t.destroy();
  }
});

gpuTest("fused matvec: parts share a buffer, each also a matrix of its own", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("fused parts");
  const rows = [5, 3, 9];
  const k = 8;
  const values = rows.map((r) => rng.normals(r * k));
  const parts = uploadFusedParts(gpu, "f32", k, values, rows);
  assert.deepEqual(parts.parts.map((p) => p.offset % 256), [0, 0, 0]);
  for (let i = 0; i < rows.length; i++) {
    const m = fusedPartMatrix(parts, i) as Tensor;
    assert.deepEqual(m.shape, [rows[i], k]);
    assertClose(await readF32(gpu, m), values[i], `part ${i}`, 1e-7);
  }
  // Argument checks: parts, sizes, variants not compiled.
  const op = await FusedMatvecOp.create(registry, [{ kind: "f32", epilogue: "store" }]);
  const x = createTensor(gpu, [k]);
  const y = createTensor(gpu, [rows[0]]);
  const one = { ...parts, parts: [parts.parts[0]] };
  assert.throws(() => op.record(recorder, "store", { x, weights: parts, y }), KernelUsageError);
  assert.throws(() => op.record(recorder, "add", { x, weights: one, y }), KernelUsageError);
  assert.throws(
    () => op.record(recorder, "store", { x: createTensor(gpu, [k + 4]), weights: one, y }),
    ShapeError,
  );
  const bad: FusedParts = { ...one, parts: [{ offset: 0, rows: 1000 }] };
  assert.throws(() => op.record(recorder, "store", { x, weights: bad, y }), ShapeError);
  parts.data.destroy();
});

gpuTest(
  "fused matvec: h computed ahead gives the in-kernel h's outputs bit for bit, for every adapter class's tiles",
  async () => {
    const { registry } = await testGpu();
    // SmolLM2-135M-like widths at rank 64 (the fallback tiles' budget refuses them in-kernel).
    const cases: Case[] = [
      {
        kind: "f32",
        epilogue: "qkv",
        k: 576,
        rows: [576, 192, 192],
        norm: true,
        rank: 64,
        rope: "half",
        headDim: 64,
      },
      { kind: "Q8_0", epilogue: "swiglu", k: 576, rows: [1536, 1536], rank: 64 },
      { kind: "f16", epilogue: "add", k: 1536, rows: [576], rank: 64 },
    ];
    const both = cases.flatMap((c) => [c, { ...c, loraH: true }]);
    for (const tiles of Object.values(FUSED_TILES) as FusedTiles[]) {
      const op = await FusedMatvecOp.create(registry, variantsOf(both), tiles);
      for (const c of cases) {
        // The same inputs for both runs.
        const seed = seededRng(`h ahead ${c.epilogue}`).int(2 ** 31);
        const inKernel = await runCase(op, new Rng(seed), c);
        const ahead = await runCase(op, new Rng(seed), { ...c, loraH: true });
        assert.deepEqual(
          ahead,
          inKernel,
          `${c.epilogue} ${c.kind}, tiles ${JSON.stringify(tiles)}`,
        );
      }
    }
  },
);

gpuTest("fused matvec: LoRA inside the product only where its h is cheap", async () => {
  const { registry } = await testGpu();
  const op = await FusedMatvecOp.create(registry, [], FUSED_TILES.fallback);
  // stories260K's q/k/v at rank 16: 16 workgroups of 64-wide h rows, well inside the budget.
  assert.ok(op.loraFits("qkv", [64, 32, 32], 64, 16));
  // SmolLM2-135M's at rank 64: 120 workgroups each computing 64 x 576 for 960 rows of weights.
  assert.ok(!op.loraFits("qkv", [576, 192, 192], 576, 64));
  assert.ok(op.loraFits("swiglu", [172, 172], 64, 16));
});

gpuTest("fused matvec: the RMSNorm inside the product only where the product is small", () => {
  const tiles = FUSED_TILES.fallback;
  // stories260K: q/k/v over 64 inputs in 16 workgroups, the LM head's 512 rows in 64.
  assert.ok(FusedMatvecOp.normFits(tiles, "qkv", [64, 32, 32], 64));
  assert.ok(FusedMatvecOp.normFits(tiles, "store", [512], 64));
  // SmolLM2-135M: 120 workgroups each normalising 576 inputs; the head's 6144.
  assert.ok(!FusedMatvecOp.normFits(tiles, "qkv", [576, 192, 192], 576));
  assert.ok(!FusedMatvecOp.normFits(tiles, "store", [49152], 576));
  return Promise.resolve();
});
