import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { LORA_BLOCKS, LoraOp } from "../src/ops/lora.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
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
