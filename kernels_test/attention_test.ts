import { deepStrictEqual as assertEquals, rejects, throws as assertThrows } from "node:assert";
import { KernelUsageError } from "../src/gpu/errors.ts";
import {
  assertClose,
  gpuTest,
  poisoned,
  readWritten,
  seededRng,
  type TestGpu,
  testGpu,
} from "./helpers.ts";
import {
  AttentionOp,
  type AttentionOp as Op,
  type AttentionOptions,
  type AttentionPath,
} from "../src/ops/attention.ts";
import {
  attentionBackward,
  attentionForward,
  type AttentionShape,
  kvCacheValues,
} from "../src/reference/attention.ts";
import { type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { f32ArrayToF16 } from "../src/formats/tensor_data.ts";
import { ShapeError } from "../src/gpu/errors.ts";
import type { Rng } from "../src/core/random.ts";

/** [tokens, past, nHeads, nKvHeads, headDim] */
type Case = [number, number, number, number, number];

const FORWARD_CASES: Case[] = [
  [1, 0, 8, 4, 8], // first token of a sequence
  [1, 37, 8, 4, 8], // decode, tiny model
  [1, 1023, 9, 3, 64], // decode, long cache
  [37, 0, 8, 4, 8], // prefill
  [37, 5, 8, 4, 64],
  [37, 11, 9, 3, 64],
  [20, 3, 4, 4, 128], // multi-head (nKvHeads = nHeads)
  [9, 2, 2, 1, 256],
  [13, 4, 3, 1, 5], // head dim not a multiple of 4
  [3, 300, 4, 2, 128],
  [130, 0, 2, 1, 64],
];

const BACKWARD_CASES: Case[] = [
  [37, 0, 8, 4, 8],
  [37, 0, 9, 3, 64],
  [1, 5, 8, 4, 8],
  [20, 7, 4, 4, 128],
  [13, 3, 3, 1, 5],
  [6, 0, 2, 1, 256],
  [70, 0, 2, 1, 64],
];

/** Tiles smaller than any case, so every kernel walks many ragged tiles and chunks. */
const SMALL_TILES: AttentionOptions = {
  forward: { bq: 4, bk: 8 },
  backwardDq: { bq: 8, bk: 4 },
  backwardDkdv: { bq: 4, bk: 8 },
  rowsKeysPerThread: 1,
};

/** Cases of an f16 cache (nKvHeads * headDim even): decode and prefill, head dims of 5 and 6. */
const F16_FORWARD_CASES: Case[] = [
  [1, 37, 8, 4, 8],
  [1, 300, 9, 3, 64],
  [37, 11, 9, 3, 64],
  [13, 4, 4, 2, 5], // odd head dim: rows start mid-word
  [6, 9, 4, 2, 6], // a multiple of 2, not of 4
  [20, 3, 4, 4, 128],
];

const F16_BACKWARD_CASES: Case[] = [[37, 0, 9, 3, 64], [13, 3, 4, 2, 5], [1, 5, 8, 4, 8]];

interface Inputs {
  shape: AttentionShape;
  q: Float32Array;
  /**
   * Cache-sized, as the cache holds them (halves for f16): rows past the valid ones hold NaN, so
   * reading one shows.
   */
  k: Float32Array;
  v: Float32Array;
  capacity: number;
}

function makeInputs(
  rng: Rng,
  [tokens, past, nHeads, nKvHeads, headDim]: Case,
  kvDtype: "f32" | "f16" = "f32",
): Inputs {
  const shape = { tokens, past, nHeads, nKvHeads, headDim, scale: 1 / Math.sqrt(headDim) };
  const capacity = past + tokens + 3;
  const valid = (past + tokens) * nKvHeads * headDim;
  const cache = () => {
    const c = new Float32Array(capacity * nKvHeads * headDim).fill(NaN);
    c.set(kvCacheValues(rng.normals(valid), kvDtype));
    return c;
  };
  return {
    shape,
    q: rng.normals(tokens * nHeads * headDim, 1.5),
    k: cache(),
    v: cache(),
    capacity,
  };
}

const opCache = new Map<string, Promise<Op>>();
function opFor(g: TestGpu, headDim: number, options: AttentionOptions = {}): Promise<Op> {
  const key = `${headDim}:${JSON.stringify(options)}`;
  let op = opCache.get(key);
  if (!op) opCache.set(key, op = AttentionOp.create(g.registry, headDim, options));
  return op;
}

function describe(c: Case, kvDtype: "f32" | "f16" = "f32"): string {
  return `T=${c[0]} past=${c[1]} heads=${c[2]}/${c[3]} hd=${c[4]} kv=${kvDtype}`;
}

/** A cache tensor [capacity, nKvHeads, headDim] of values already representable in `dtype`. */
function uploadCache(
  gpu: Gpu,
  values: Float32Array,
  shape: number[],
  dtype: "f32" | "f16",
): Tensor {
  return dtype === "f16"
    ? uploadTensor(gpu, f32ArrayToF16(values), shape, "f16")
    : uploadTensor(gpu, values, shape);
}

async function checkForward(
  g: TestGpu,
  rng: Rng,
  c: Case,
  path: AttentionPath,
  options?: AttentionOptions,
): Promise<void> {
  const { gpu, recorder } = g;
  const op = await opFor(g, c[4], options);
  const kvDtype = options?.kvDtype ?? "f32";
  const inp = makeInputs(rng, c, kvDtype);
  const { tokens, nHeads, nKvHeads, headDim } = inp.shape;
  const what = `attention forward ${path} ${describe(c, kvDtype)}`;
  const ref = attentionForward(inp.q, inp.k, inp.v, inp.shape);
  const q = uploadTensor(gpu, inp.q, [tokens, nHeads, headDim]);
  const k = uploadCache(gpu, inp.k, [inp.capacity, nKvHeads, headDim], kvDtype);
  const v = uploadCache(gpu, inp.v, [inp.capacity, nKvHeads, headDim], kvDtype);
  for (const saveLse of [false, true]) {
    const out = poisoned(gpu, [tokens, nHeads, headDim]);
    const lse = saveLse ? poisoned(gpu, [tokens, nHeads]) : undefined;
    op.recordForward(recorder, { q, k, v, out, lse, past: inp.shape.past, path });
    recorder.submit();
    assertClose(await readWritten(gpu, out, what), ref.out, `${what} out`);
    if (lse) assertClose(await readWritten(gpu, lse, what), ref.logsumexp, `${what} lse`);
    out.destroy();
    lse?.destroy();
  }
  for (const t of [q, k, v]) t.destroy();
}

async function checkBackward(
  g: TestGpu,
  rng: Rng,
  c: Case,
  options?: AttentionOptions,
): Promise<void> {
  const { gpu, recorder } = g;
  const op = await opFor(g, c[4], options);
  const kvDtype = options?.kvDtype ?? "f32";
  const inp = makeInputs(rng, c, kvDtype);
  const { tokens, past, nHeads, nKvHeads, headDim } = inp.shape;
  const keys = past + tokens;
  const what = `attention backward ${describe(c, kvDtype)}`;
  const dOutData = rng.normals(tokens * nHeads * headDim);
  const ref = attentionBackward(dOutData, inp.q, inp.k, inp.v, inp.shape);
  const qShape = [tokens, nHeads, headDim];
  const kvShape = [keys, nKvHeads, headDim];
  const q = uploadTensor(gpu, inp.q, qShape);
  const k = uploadCache(gpu, inp.k, [inp.capacity, nKvHeads, headDim], kvDtype);
  const v = uploadCache(gpu, inp.v, [inp.capacity, nKvHeads, headDim], kvDtype);
  const dOut = uploadTensor(gpu, dOutData, qShape);
  const out = poisoned(gpu, qShape);
  const lse = poisoned(gpu, [tokens, nHeads]);
  const delta = poisoned(gpu, [tokens, nHeads]);
  const dQ = poisoned(gpu, qShape);
  const dK = poisoned(gpu, kvShape);
  const dV = poisoned(gpu, kvShape);
  op.recordForward(recorder, { q, k, v, out, lse, past, path: "tiled" });
  op.recordBackward(recorder, { dOut, q, k, v, out, lse, delta, dQ, dK, dV, past });
  recorder.submit();
  assertClose(await readWritten(gpu, dQ, what), ref.dQ, `${what} dQ`);
  assertClose(await readWritten(gpu, dK, what), ref.dK, `${what} dK`);
  assertClose(await readWritten(gpu, dV, what), ref.dV, `${what} dV`);
  for (const t of [q, k, v, dOut, out, lse, delta, dQ, dK, dV]) t.destroy();
}

gpuTest("attention.wgsl forward (tiled and per-row) matches float64, with logsumexp", async () => {
  const g = await testGpu();
  const rng = seededRng("attention forward");
  for (const c of FORWARD_CASES) {
    for (const path of ["tiled", "rows"] as const) await checkForward(g, rng, c, path);
  }
});

gpuTest("attention.wgsl forward with small tiles and chunks", async () => {
  const g = await testGpu();
  const rng = seededRng("attention forward small tiles");
  const cases: Case[] = [[37, 11, 9, 3, 64], [1, 200, 6, 2, 5], [13, 4, 3, 1, 5]];
  for (const c of cases) {
    for (const path of ["tiled", "rows"] as const) await checkForward(g, rng, c, path, SMALL_TILES);
  }
});

gpuTest("attention.wgsl backward (dQ, dK, dV) matches float64", async () => {
  const g = await testGpu();
  const rng = seededRng("attention backward");
  for (const c of BACKWARD_CASES) await checkBackward(g, rng, c);
  for (const c of [[37, 6, 9, 3, 64], [13, 3, 3, 1, 5]] as Case[]) {
    await checkBackward(g, rng, c, SMALL_TILES);
  }
});

gpuTest(
  "attention.wgsl tiled kernels give each row the same sums whatever rows an invocation owns",
  async () => {
    const g = await testGpu();
    const { gpu, recorder } = g;
    const rng = seededRng("attention rows per invocation");
    const cases: Case[] = [[37, 0, 8, 4, 8], [70, 3, 9, 3, 64], [13, 4, 3, 1, 5]];
    for (const c of cases) {
      const inp = makeInputs(rng, c, "f32");
      const { tokens, past, nHeads, nKvHeads, headDim } = inp.shape;
      const keys = past + tokens;
      const qShape = [tokens, nHeads, headDim];
      const kvShape = [keys, nKvHeads, headDim];
      const q = uploadTensor(gpu, inp.q, qShape);
      const k = uploadTensor(gpu, inp.k, [inp.capacity, nKvHeads, headDim]);
      const v = uploadTensor(gpu, inp.v, [inp.capacity, nKvHeads, headDim]);
      const dOut = uploadTensor(gpu, rng.normals(tokens * nHeads * headDim), qShape);
      const results: Float32Array[][] = [];
      for (const rowsPerInvocation of [1, 2, 4]) {
        const op = await opFor(g, headDim, { ...SMALL_TILES, rowsPerInvocation });
        const out = poisoned(gpu, qShape);
        const lse = poisoned(gpu, [tokens, nHeads]);
        const delta = poisoned(gpu, [tokens, nHeads]);
        const dQ = poisoned(gpu, qShape);
        const dK = poisoned(gpu, kvShape);
        const dV = poisoned(gpu, kvShape);
        op.recordForward(recorder, { q, k, v, out, lse, past, path: "tiled" });
        op.recordBackward(recorder, { dOut, q, k, v, out, lse, delta, dQ, dK, dV, past });
        recorder.submit();
        const what = `${describe(c)} rows per invocation ${rowsPerInvocation}`;
        const tensors = { out, lse, delta, dQ, dK, dV };
        const read = [];
        for (const [name, t] of Object.entries(tensors)) {
          read.push(
            await readWritten(gpu, t, `${what} ${name}`),
          );
        }
        results.push(read);
        for (const t of Object.values(tensors)) t.destroy();
      }
      assertEquals(results[1], results[0], `${describe(c)}: 2 rows an invocation against 1`);
      assertEquals(results[2], results[0], `${describe(c)}: 4 rows an invocation against 1`);
      for (const t of [q, k, v, dOut]) t.destroy();
    }
  },
);

gpuTest("attention op refuses rows per invocation that do not divide its tiles", async () => {
  const g = await testGpu();
  await rejects(
    () => AttentionOp.create(g.registry, 8, { ...SMALL_TILES, rowsPerInvocation: 8 }),
    (e: Error) => e instanceof KernelUsageError && /rowsPerInvocation/.test(e.message),
  );
});

gpuTest(
  "attention.wgsl over an f16 KV cache (forward both paths, backward) matches float64",
  async () => {
    const g = await testGpu();
    const rng = seededRng("attention f16 cache");
    const f16: AttentionOptions = { kvDtype: "f16" };
    for (const c of F16_FORWARD_CASES) {
      for (const path of ["tiled", "rows"] as const) await checkForward(g, rng, c, path, f16);
    }
    for (const c of [[37, 11, 9, 3, 64], [1, 200, 6, 2, 6]] as Case[]) {
      for (const path of ["tiled", "rows"] as const) {
        await checkForward(g, rng, c, path, { ...SMALL_TILES, ...f16 });
      }
    }
    for (const c of F16_BACKWARD_CASES) await checkBackward(g, rng, c, f16);
  },
);

gpuTest("attention op over an f16 cache rejects an f32 one, and the other way round", async () => {
  const g = await testGpu();
  const { gpu, recorder } = g;
  const [op32, op16] = await Promise.all([opFor(g, 8), opFor(g, 8, { kvDtype: "f16" })]);
  const q = poisoned(gpu, [1, 8, 8]);
  const out = poisoned(gpu, [1, 8, 8]);
  const k32 = poisoned(gpu, [4, 4, 8]);
  const k16 = poisoned(gpu, [4, 4, 8], "f16");
  assertThrows(() => op16.recordForward(recorder, { q, k: k32, v: k32, out, past: 0 }), ShapeError);
  assertThrows(() => op32.recordForward(recorder, { q, k: k16, v: k16, out, past: 0 }), ShapeError);
  for (const t of [q, out, k32, k16]) t.destroy();
});

/** sum(w ⊙ out) as a function of q, k, v, for finite differences. */
function weightedLoss(
  w: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  shape: AttentionShape,
): number {
  const { out } = attentionForward(q, k, v, shape);
  let loss = 0;
  for (let i = 0; i < out.length; i++) loss += w[i] * out[i];
  return loss;
}

/** Central differences of f with respect to every element of x (x is restored). */
function numericGradient(x: Float64Array, f: () => number, h = 1e-5): Float64Array {
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const keep = x[i];
    x[i] = keep + h;
    const up = f();
    x[i] = keep - h;
    const down = f();
    x[i] = keep;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

Deno.test("attention float64 twin: backward matches central finite differences", () => {
  const rng = seededRng("attention finite differences");
  const cases: Case[] = [[5, 3, 4, 2, 3], [4, 0, 3, 3, 2], [1, 6, 2, 1, 4]];
  for (const [tokens, past, nHeads, nKvHeads, headDim] of cases) {
    const shape = { tokens, past, nHeads, nKvHeads, headDim, scale: 0.3 + rng.next() };
    const keys = past + tokens;
    const q = Float64Array.from(rng.normals(tokens * nHeads * headDim));
    const k = Float64Array.from(rng.normals(keys * nKvHeads * headDim));
    const v = Float64Array.from(rng.normals(keys * nKvHeads * headDim));
    const w = Float64Array.from(rng.normals(tokens * nHeads * headDim));
    const grads = attentionBackward(w, q, k, v, shape);
    const loss = () => weightedLoss(w, q, k, v, shape);
    const what = `attention twin T=${tokens} past=${past} heads=${nHeads}/${nKvHeads}`;
    assertClose(grads.dQ, numericGradient(q, loss), `${what} dQ`, 1e-7);
    assertClose(grads.dK, numericGradient(k, loss), `${what} dK`, 1e-7);
    assertClose(grads.dV, numericGradient(v, loss), `${what} dV`, 1e-7);
  }
});

gpuTest("attention op rejects mismatched shapes", async () => {
  const g = await testGpu();
  const { gpu, recorder } = g;
  const op = await opFor(g, 8);
  const q = poisoned(gpu, [4, 8, 8]);
  const k = poisoned(gpu, [10, 4, 8]);
  const out = poisoned(gpu, [4, 8, 8]);
  const bad = poisoned(gpu, [4, 3, 8]);
  const fwd = (args: Partial<Parameters<Op["recordForward"]>[1]>) => () =>
    op.recordForward(recorder, { q, k, v: k, out, past: 0, ...args });
  assertThrows(fwd({ past: 7 }), ShapeError); // cache too short
  assertThrows(fwd({ k: bad }), ShapeError); // 3 kv heads do not divide 8 heads
  assertThrows(fwd({ out: bad }), ShapeError);
  assertThrows(fwd({ lse: out }), ShapeError);
  assertThrows(fwd({ q: poisoned(gpu, [4, 8, 16]) }), ShapeError);
  for (const t of [q, k, out, bad]) t.destroy();
});
