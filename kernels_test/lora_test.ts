import {
  assertClose,
  gpuTest,
  poisoned,
  poisonedSlots,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { LORA_BLOCKS, LoraOp } from "../src/ops/lora.ts";
import { uploadTensor, writeTensor } from "../src/gpu/tensor.ts";
import { deepStrictEqual as assertEquals } from "node:assert";
import {
  dropoutFactor,
  loraBackwardRef,
  type LoraDims,
  loraForwardRef,
} from "../src/reference/lora.ts";
import type { Rng } from "../src/core/random.ts";

// Ranks and sizes that are not multiples of the tiles, a single token, a full-size rank, and
// ranks of at most 16 (the narrow tiles: h, dH and dB have the rank as columns, dA as rows).
const CASES: LoraDims[] = [
  { tokens: 1, inFeatures: 20, rank: 8, outFeatures: 12 },
  { tokens: 37, inFeatures: 70, rank: 13, outFeatures: 45 },
  { tokens: 70, inFeatures: 33, rank: 16, outFeatures: 80 },
  { tokens: 67, inFeatures: 96, rank: 64, outFeatures: 130 },
];

async function checkCase(op: LoraOp, rng: Rng, dims: LoraDims, p: number): Promise<void> {
  const { gpu, recorder } = await testGpu();
  const { tokens: t, inFeatures: inF, rank: r, outFeatures: outF } = dims;
  const what = `lora T=${t} in=${inF} r=${r} out=${outF} p=${p}`;
  const scale = 16 / r;
  const seed = rng.int(2 ** 32);
  const host = {
    x: rng.normals(t * inF),
    a: rng.normals(r * inF, 0.2),
    b: rng.normals(outF * r, 0.2),
    y: rng.normals(t * outF),
    dY: rng.normals(t * outF),
    dX: rng.normals(t * inF),
  };
  const x = uploadTensor(gpu, host.x, [t, inF]);
  const a = uploadTensor(gpu, host.a, [r, inF]);
  const b = uploadTensor(gpu, host.b, [outF, r]);
  const y = uploadTensor(gpu, host.y, [t, outF]);
  const dY = uploadTensor(gpu, host.dY, [t, outF]);
  const dX = uploadTensor(gpu, host.dX, [t, inF]);
  const h = poisoned(gpu, [t, r]);
  const dH = poisoned(gpu, [t, r]);
  const dA = poisoned(gpu, [r, inF]);
  const dB = poisoned(gpu, [outF, r]);
  const dropout = { p, seed };
  op.recordForward(recorder, { x, a, b, h, y, scale, dropout });
  op.recordBackward(recorder, { x, a, b, h, dY, dH, dA, dB, dX, scale, dropout });
  recorder.submit();

  const fwd = loraForwardRef(dims, host.x, host.a, host.b, scale, p, seed);
  const bwd = loraBackwardRef(dims, host.x, host.a, host.b, fwd.h, host.dY, scale, p, seed);
  const plus = (base: Float32Array, delta: Float64Array) => delta.map((d, i) => base[i] + d);
  assertClose(await readWritten(gpu, h, `${what} h`), fwd.h, `${what} h`);
  // The base output dominates y; check the adapter's part on its own scale too.
  const yOut = await readWritten(gpu, y, `${what} y`);
  assertClose(yOut, plus(host.y, fwd.delta), `${what} y`);
  assertClose(yOut.map((v, i) => v - host.y[i]), fwd.delta, `${what} y - base`, 1e-3);
  assertClose(await readWritten(gpu, dH, `${what} dH`), bwd.dH, `${what} dH`);
  assertClose(await readWritten(gpu, dA, `${what} dA`), bwd.dA, `${what} dA`);
  assertClose(await readWritten(gpu, dB, `${what} dB`), bwd.dB, `${what} dB`);
  const dXOut = await readWritten(gpu, dX, `${what} dX`);
  assertClose(dXOut, plus(host.dX, bwd.dXDelta), `${what} dX`);
  assertClose(dXOut.map((v, i) => v - host.dX[i]), bwd.dXDelta, `${what} dX - base`, 1e-3);
  for (const tensor of [x, a, b, y, dY, dX, h, dH, dA, dB]) tensor.destroy();
}

for (const p of [0, 0.05]) {
  gpuTest(
    `lora.wgsl forward and backward match the float64 twin, dropout ${p}, every class's blocks`,
    async () => {
      const { registry } = await testGpu();
      const rng = seededRng(`lora p=${p}`);
      for (const block of new Set(Object.values(LORA_BLOCKS))) {
        const op = await LoraOp.create(registry, block);
        for (const dims of CASES) await checkCase(op, rng, dims, p);
      }
    },
  );
}

Deno.test("lora backward twin matches central finite differences of the forward twin", () => {
  const rng = seededRng("lora finite differences");
  const dims = { tokens: 3, inFeatures: 7, rank: 2, outFeatures: 5 };
  const { tokens: t, inFeatures: inF, rank: r, outFeatures: outF } = dims;
  const scale = 1.5;
  const p = 0.3; // high enough that a 21-element x surely has dropped elements
  const seed = rng.int(2 ** 32);
  const x = Float64Array.from(rng.normals(t * inF));
  const a = Float64Array.from(rng.normals(r * inF));
  const b = Float64Array.from(rng.normals(outF * r));
  const w = Float64Array.from(rng.normals(t * outF));
  // loss = sum(w * y) with y = the adapter's output, so dL/dy = w.
  const loss = () => {
    const { delta } = loraForwardRef(dims, x, a, b, scale, p, seed);
    return delta.reduce((s, v, i) => s + v * w[i], 0);
  };
  const fd = (v: Float64Array) =>
    v.map((_, i) => {
      const eps = 1e-5;
      const saved = v[i];
      v[i] = saved + eps;
      const up = loss();
      v[i] = saved - eps;
      const down = loss();
      v[i] = saved;
      return (up - down) / (2 * eps);
    });
  const { h } = loraForwardRef(dims, x, a, b, scale, p, seed);
  const grads = loraBackwardRef(dims, x, a, b, h, w, scale, p, seed);
  assertClose(grads.dA, fd(a), "dA vs finite differences", 1e-7);
  assertClose(grads.dB, fd(b), "dB vs finite differences", 1e-7);
  assertClose(grads.dXDelta, fd(x), "dX vs finite differences", 1e-7);
  let dropped = 0;
  for (let i = 0; i < t * inF; i++) if (dropoutFactor(seed, i, p) === 0) dropped++;
  if (dropped === 0) throw new Error("no element was dropped; the dropout path went untested");
});

Deno.test("dropout mask keeps about 1 - p and depends on the seed", () => {
  const n = 200_000;
  for (const p of [0, 0.05, 0.5]) {
    let kept = 0;
    let same = 0;
    for (let i = 0; i < n; i++) {
      const f = dropoutFactor(7, i, p);
      if (f !== 0) kept++;
      if ((f !== 0) === (dropoutFactor(8, i, p) !== 0)) same++;
    }
    const expected = n * (1 - p);
    if (Math.abs(kept - expected) > 5 * Math.sqrt(n * p * (1 - p)) + 1) {
      throw new Error(`p=${p}: kept ${kept} of ${n}, expected about ${expected}`);
    }
    const agree = p * p + (1 - p) * (1 - p);
    if (Math.abs(same / n - agree) > 0.01) {
      throw new Error(`p=${p}: masks of seeds 7 and 8 agree on ${same / n}, expected ${agree}`);
    }
  }
});

gpuTest(
  "lora.wgsl grouped: projections sharing x, their products at once where buffers allow, as the float64 twin",
  async () => {
    const { gpu, recorder, registry } = await testGpu();
    const rng = seededRng("lora grouped");
    for (const block of new Set(Object.values(LORA_BLOCKS))) {
      const op = await LoraOp.create(registry, block);
      for (const p of [0, 0.05]) {
        const [t, inF, r] = [45, 40, 12];
        const outs = [40, 20, 20];
        const scale = 16 / r;
        const seeds = outs.map(() => rng.int(2 ** 32));
        const hostX = rng.normals(t * inF);
        const x = uploadTensor(gpu, hostX, [t, inF]);
        const hostA = outs.map(() => rng.normals(r * inF, 0.2));
        const hostB = outs.map((o) => rng.normals(o * r, 0.2));
        const matrices = outs.flatMap((o) => [[r, inF], [o, r]]);
        const params = poisonedSlots(gpu, matrices);
        const grads = poisonedSlots(gpu, matrices);
        const hs = poisonedSlots(gpu, outs.map(() => [t, r]));
        const dHs = poisonedSlots(gpu, outs.map(() => [t, r]));
        const hostY = outs.map((o) => rng.normals(t * o));
        const hostDY = outs.map((o) => rng.normals(t * o));
        const hostDX = rng.normals(t * inF);
        const dX = uploadTensor(gpu, hostDX, [t, inF]);
        // k's and v's outputs and their gradients share a buffer (as a layer's gate and up do), so
        // their y, dB and dH run at once too; q's (another shape) on its own.
        const kvShapes = [[t, outs[1]], [t, outs[2]]];
        const kv = [poisonedSlots(gpu, kvShapes), poisonedSlots(gpu, kvShapes)];
        const output = (i: number, which: 0 | 1, host: Float32Array) => {
          const tensor = i === 0 ? poisoned(gpu, [t, outs[0]]) : kv[which].views[i - 1];
          writeTensor(gpu, tensor, host);
          return tensor;
        };
        const parts = outs.map((_, i) => {
          const a = params.views[2 * i];
          const b = params.views[2 * i + 1];
          writeTensor(gpu, a, hostA[i]);
          writeTensor(gpu, b, hostB[i]);
          return {
            x,
            a,
            b,
            h: hs.views[i],
            y: output(i, 0, hostY[i]),
            dY: output(i, 1, hostDY[i]),
            dH: dHs.views[i],
            dA: grads.views[2 * i],
            dB: grads.views[2 * i + 1],
            dX,
            scale,
            dropout: { p, seed: seeds[i] },
          };
        });
        const counted = (record: () => void) => {
          const before = recorder.totals.dispatches;
          record();
          return recorder.totals.dispatches - before;
        };
        const dispatches = [
          counted(() => op.recordGroupForward(recorder, { x, scale, parts })),
          counted(() => op.recordOutputGradients(recorder, parts)),
          counted(() => parts.forEach((part) => op.recordInputGradient(recorder, part))),
          counted(() => op.recordGradientA(recorder, x, parts)),
        ];
        recorder.submit();
        // h: one; y: q, then k and v; dB and dH: q's, then k's and v's; dX: one each; dA: one.
        assertEquals(dispatches, [3, 4, 3, 1]);

        const dXRef = Float64Array.from(hostDX);
        for (const [i, o] of outs.entries()) {
          const what = `lora grouped block ${block} p=${p} part ${i}`;
          const dims = { tokens: t, inFeatures: inF, rank: r, outFeatures: o };
          const fwd = loraForwardRef(dims, hostX, hostA[i], hostB[i], scale, p, seeds[i]);
          const bwd = loraBackwardRef(
            dims,
            hostX,
            hostA[i],
            hostB[i],
            fwd.h,
            hostDY[i],
            scale,
            p,
            seeds[i],
          );
          bwd.dXDelta.forEach((d, j) => dXRef[j] += d);
          const part = parts[i];
          assertClose(await readWritten(gpu, part.h, `${what} h`), fwd.h, `${what} h`);
          const y = await readWritten(gpu, part.y, `${what} y`);
          assertClose(y.map((v, j) => v - hostY[i][j]), fwd.delta, `${what} y - base`, 1e-3);
          assertClose(await readWritten(gpu, part.dH, `${what} dH`), bwd.dH, `${what} dH`);
          assertClose(await readWritten(gpu, part.dA, `${what} dA`), bwd.dA, `${what} dA`);
          assertClose(await readWritten(gpu, part.dB, `${what} dB`), bwd.dB, `${what} dB`);
          if (i === 0) part.y.destroy();
        }
        const what = `lora grouped block ${block} p=${p} dX`;
        assertClose(await readWritten(gpu, dX, what), dXRef, what);
        const buffers = [params, grads, hs, dHs, ...kv].map((s) => s.buffer);
        for (const tensor of [x, dX, ...buffers]) {
          tensor.destroy();
        }
      }
    }
  },
);
