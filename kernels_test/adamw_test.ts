import {
  assertClose,
  gpuTest,
  poisoned,
  readWritten,
  relativeError,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { AdamWOp, biasCorrections } from "../src/ops/adamw.ts";
import { GradNormOp, STATS } from "../src/ops/grad_norm.ts";
import { readF32 } from "../src/gpu/readback.ts";
import { uploadTensor, writeTensor } from "../src/gpu/tensor.ts";
import { type AdamWState, type AdamWStepHyper, adamwStepRef } from "../src/reference/adamw.ts";
import { gradNormRef } from "../src/reference/grad_norm.ts";
import type { Rng } from "../src/core/random.ts";

const HYPER = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-7, weightDecay: 0.1 };

async function setup(rng: Rng, n: number) {
  const { gpu } = await testGpu();
  const p0 = rng.normals(n);
  const state: AdamWState = {
    params: Float64Array.from(p0),
    m: new Float64Array(n),
    v: new Float64Array(n),
  };
  const buffers = {
    params: uploadTensor(gpu, p0, [n]),
    grads: poisoned(gpu, [n]),
    m: uploadTensor(gpu, new Float32Array(n), [n]),
    v: uploadTensor(gpu, new Float32Array(n), [n]),
    stats: poisoned(gpu, [STATS.size]),
    corrections: poisoned(gpu, [8, 2]),
  };
  return { p0, state, buffers };
}

gpuTest("adamw.wgsl tracks the float64 twin for 100 steps of random gradients", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("adamw");
  const op = await AdamWOp.create(registry);
  const n = 12_345; // not a multiple of the workgroup size
  const { p0, state, buffers } = await setup(rng, n);
  for (let step = 1; step <= 100; step++) {
    const grads = rng.normals(n, 10 ** (rng.next() * 4 - 3));
    const clip = Math.fround(0.2 + 0.8 * rng.next());
    writeTensor(gpu, buffers.grads, grads);
    // t = step (stats[3]) is row t - firstStep of the table; the other rows are NaN.
    writeTensor(gpu, buffers.stats, new Float32Array([1, clip, 0, step]));
    const firstStep = Math.max(1, step - 3);
    const table = new Float32Array(16).fill(NaN);
    table.set(biasCorrections(HYPER, step, 1), 2 * (step - firstStep));
    writeTensor(gpu, buffers.corrections, table);
    const hyper: AdamWStepHyper = { ...HYPER, step };
    op.record(recorder, buffers, { ...HYPER, firstStep });
    recorder.submit();
    adamwStepRef(state, grads, hyper, clip);
    const params = await readWritten(gpu, buffers.params, `step ${step} params`);
    assertClose(params, state.params, `step ${step} params`);
    // The parameters barely move relative to their size; check the movement itself as well (this
    // also catches elements the kernel never wrote: one of 12345 is a 1e-2 error here).
    const moved = state.params.map((p, i) => p - p0[i]);
    assertClose(params.map((p, i) => p - p0[i]), moved, `step ${step} params - p0`, 1e-3);
  }
  assertClose(await readF32(gpu, buffers.m), state.m, "m after 100 steps");
  assertClose(await readF32(gpu, buffers.v), state.v, "v after 100 steps");
  for (const t of Object.values(buffers)) t.destroy();
});

gpuTest("adamw.wgsl with grad_norm.wgsl: clips by the global norm, skips non-finite", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("adamw + grad norm");
  const adamw = await AdamWOp.create(registry);
  const gradNorm = await GradNormOp.create(registry);
  const n = 3001;
  const maxNorm = 1;
  const { state, buffers } = await setup(rng, n);
  const steps: ("clip" | "nan" | "inf")[] = ["clip", "clip", "nan", "clip", "inf", "clip"];
  // One table for every t the run can reach; grad_norm.wgsl counts the steps applied from 0, so a
  // skipped step leaves t where it was and the next applied one takes the same row.
  writeTensor(gpu, buffers.stats, new Float32Array(STATS.size));
  const table = new Float32Array(16).fill(NaN);
  table.set(biasCorrections(HYPER, 1, steps.length));
  writeTensor(gpu, buffers.corrections, table);
  let applied = 0;
  for (const [i, kind] of steps.entries()) {
    const grads = rng.normals(n, 0.1); // norm about 5.5: clipping is active
    if (kind !== "clip") {
      grads[kind === "nan" ? rng.int(n) : n - 1] = kind === "nan" ? NaN : -Infinity;
    }
    writeTensor(gpu, buffers.grads, grads);
    const before = {
      params: await readF32(gpu, buffers.params),
      m: await readF32(gpu, buffers.m),
      v: await readF32(gpu, buffers.v),
    };
    gradNorm.record(recorder, buffers.grads, buffers.stats, maxNorm);
    adamw.record(recorder, buffers, { ...HYPER, firstStep: 1 });
    recorder.submit();
    const [, clip, flag] = gradNormRef(grads, maxNorm);
    if (flag === 0) applied++;
    const hyper: AdamWStepHyper = { ...HYPER, step: applied };
    adamwStepRef(state, grads, hyper, clip, flag !== 0);
    const stats = await readWritten(gpu, buffers.stats, "stats");
    if (stats[STATS.nonFinite] !== flag) throw new Error(`step ${i + 1}: flag ${stats[2]}`);
    if (stats[STATS.applied] !== applied) {
      throw new Error(`step ${i + 1}: ${stats[STATS.applied]} steps applied, not ${applied}`);
    }
    const after = {
      params: await readF32(gpu, buffers.params),
      m: await readF32(gpu, buffers.m),
      v: await readF32(gpu, buffers.v),
    };
    if (kind === "clip") {
      assertClose(after.params, state.params, `step ${i + 1} params`);
      assertClose(after.m, state.m, `step ${i + 1} m`);
      assertClose(after.v, state.v, `step ${i + 1} v`);
    } else {
      for (const key of ["params", "m", "v"] as const) {
        if (relativeError(after[key], before[key]) !== 0) {
          throw new Error(`step ${i + 1} (${kind}): ${key} changed although the step was skipped`);
        }
      }
    }
  }
  for (const t of Object.values(buffers)) t.destroy();
  gradNorm.destroy();
});
