import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { GradNormOp, STATS } from "../src/ops/grad_norm.ts";
import { uploadTensor, writeTensor } from "../src/gpu/tensor.ts";
import { gradNormRef } from "../src/reference/grad_norm.ts";

async function stats(op: GradNormOp, grads: Float32Array, maxNorm: number, what: string) {
  const { gpu, recorder } = await testGpu();
  const g = uploadTensor(gpu, grads, [grads.length]);
  const out = poisoned(gpu, [STATS.size]);
  // The steps applied so far: the op adds one where the gradients are finite.
  writeTensor(gpu, out.reshape([STATS.size, 1]).rows(STATS.applied, 1), new Float32Array([41]));
  op.record(recorder, g, out, maxNorm);
  recorder.submit();
  const result = await readWritten(gpu, out, what);
  g.destroy();
  out.destroy();
  return result;
}

/** Below f32's smallest normal number WGSL lets an implementation flush a result to zero. */
const F32_MIN_NORMAL = 2 ** -126;

function checkStats(out: Float32Array, grads: Float32Array, maxNorm: number, what: string): void {
  const [norm, clip, flag] = gradNormRef(grads, maxNorm);
  assertClose([out[STATS.norm]], [norm], `${what} norm`);
  // A clip factor that is subnormal in f32 (a norm past 2^126) may come back flushed to zero.
  if (!(Math.abs(clip) < F32_MIN_NORMAL && out[STATS.clipScale] === 0)) {
    assertClose([out[STATS.clipScale]], [clip], `${what} clipScale`);
  }
  if (out[STATS.nonFinite] !== flag) {
    throw new Error(`${what}: non-finite flag ${out[STATS.nonFinite]}, expected ${flag}`);
  }
  if (out[STATS.applied] !== (flag ? 41 : 42)) {
    throw new Error(`${what}: ${out[STATS.applied]} steps applied after 41 (flag ${flag})`);
  }
}

// One element, fewer than a workgroup, more than the first pass's grid covers in one stride.
const SIZES = [1, 5, 257, 256 * 256 * 3 + 7];

gpuTest("grad_norm.wgsl norm and clip scale match the twin", async () => {
  const { registry } = await testGpu();
  const rng = seededRng("grad norm");
  const op = await GradNormOp.create(registry);
  for (const n of SIZES) {
    for (const [scale, maxNorm] of [[1e-3, 1], [1, 1], [1, Infinity], [1e-30, 1]]) {
      const grads = rng.normals(n, scale);
      const what = `grad norm n=${n} scale=${scale} maxNorm=${maxNorm}`;
      checkStats(await stats(op, grads, maxNorm, what), grads, maxNorm, what);
    }
  }
  const zeros = new Float32Array(1000);
  const out = await stats(op, zeros, 1, "zero grads");
  if (out[0] !== 0 || out[1] !== 1 || out[2] !== 0 || out[3] !== 42) {
    throw new Error(`zero grads: stats ${out}`);
  }
});

gpuTest("grad_norm.wgsl flags NaN, +Inf and -Inf anywhere, and nothing else", async () => {
  const { registry } = await testGpu();
  const rng = seededRng("grad norm non-finite");
  const op = await GradNormOp.create(registry);
  for (const n of [1, 257, 256 * 256 + 3]) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const at of new Set([0, n - 1, rng.int(n)])) {
        const grads = rng.normals(n);
        grads[at] = bad;
        const what = `n=${n} grads[${at}] = ${bad}`;
        checkStats(await stats(op, grads, 1, what), grads, 1, what);
      }
    }
  }
});

gpuTest("grad_norm.wgsl keeps large finite gradients finite and unflagged", async () => {
  const { registry } = await testGpu();
  const rng = seededRng("grad norm large");
  const op = await GradNormOp.create(registry);
  const n = 256 * 256 + 3;
  const grads = rng.normals(n);
  for (let i = 0; i < 20; i++) grads[rng.int(n)] = (rng.next() < 0.5 ? -1 : 1) * 1e30;
  grads[n - 1] = 1e30;
  checkStats(await stats(op, grads, 1, "1e30 grads"), grads, 1, "1e30 grads");
  const huge = rng.normals(999, 1e36); // |g| up to a few 1e36: squares far past f32's max
  checkStats(await stats(op, huge, 1, "1e36 grads"), huge, 1, "1e36 grads");
  const one = new Float32Array([3.4e38]);
  checkStats(await stats(op, one, 1, "f32 max"), one, 1, "f32 max");
});
