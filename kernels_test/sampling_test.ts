import {
  assertClose,
  gpuTest,
  poisoned,
  readWritten,
  readWrittenU32,
  seededRng,
  type TestGpu,
  testGpu,
} from "./helpers.ts";
import type { Rng } from "../src/core/random.ts";
import { type SampleOptions, SamplingOp } from "../src/ops/sampling.ts";
import { readF32 } from "../src/gpu/readback.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import {
  argmax,
  keptDistribution,
  repetitionPenalty,
  sampleToken,
  type SamplingSettings,
  uniform01,
} from "../src/reference/sampling.ts";

const settingsOf = (o: SampleOptions): SamplingSettings => ({
  temperature: o.temperature,
  topK: o.topK ?? 0,
  topP: o.topP ?? 1,
});

gpuTest("sampling.wgsl random numbers equal the TypeScript formula bit for bit", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("sampling uniforms");
  const op = await SamplingOp.create(registry);
  for (const [seed, step] of [[rng.int(2 ** 32), rng.int(2 ** 20)], [0, 0], [0xffffffff, 7]]) {
    const n = 1537;
    const randoms = poisoned(gpu, [n]);
    op.recordRandomUniforms(recorder, randoms, seed, step);
    recorder.submit();
    const out = await readWritten(gpu, randoms, `uniforms seed=${seed}`);
    let mean = 0;
    for (let i = 0; i < n; i++) {
      const want = uniform01(seed, step + i);
      if (out[i] !== want) {
        throw new Error(`seed=${seed} counter=${step + i}: ${out[i]} vs ${want}`);
      }
      mean += want / n;
    }
    if (Math.abs(mean - 0.5) > 0.05) throw new Error(`uniforms have mean ${mean}`);
    randoms.destroy();
  }
});

gpuTest("sampling.wgsl argmax picks the lowest index among ties, per draw slot", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("sampling argmax");
  const op = await SamplingOp.create(registry);
  for (const V of [1, 7, 513, 32003, 151_936]) {
    const R = 3;
    const single = rng.normals(V, 3);
    const rows = rng.normals(R * V, 3);
    // Row 1 ties its maximum at three places, row 2 at the last index only.
    if (V > 1) {
      const row1 = rows.subarray(V, 2 * V);
      const at = [rng.int(V), rng.int(V), rng.int(V)];
      for (const i of at) row1[i] = 100;
      rows[3 * V - 1] = 100;
    }
    const tokens = poisoned(gpu, [2 + R], "u32");
    const a = uploadTensor(gpu, single, [V]);
    const b = uploadTensor(gpu, rows, [R, V]);
    op.recordArgmax(recorder, a, { tokens, step: 0 });
    op.recordArgmax(recorder, b, { tokens, step: 1 });
    // Temperature 0 means greedy.
    op.recordSample(recorder, a, { tokens, step: 1 + R }, { temperature: 0, topK: 5, seed: 1 });
    recorder.submit();
    const got = Array.from(await readWrittenU32(gpu, tokens, `argmax V=${V}`));
    const perRow = [0, 1, 2].map((r) => argmax(rows.subarray(r * V, r * V + V)));
    const want = [argmax(single), ...perRow, argmax(single)];
    if (got.join() !== want.join()) throw new Error(`argmax V=${V}: got [${got}], want [${want}]`);
    for (const t of [tokens, a, b]) t.destroy();
  }
});

gpuTest("sampling.wgsl repetition penalty applies once per distinct id", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("sampling repetition penalty");
  const op = await SamplingOp.create(registry);
  for (const [V, n] of [[1, 3], [7, 20], [513, 300], [32003, 700]]) {
    const data = rng.normals(V, 2);
    // Ids from a small range, so most repeat, and a few outside the vocabulary.
    const history = new Uint32Array(n + 5);
    for (let i = 0; i < history.length; i++) {
      history[i] = rng.next() < 0.05 ? V + rng.int(10) : rng.int(Math.min(V, 60));
    }
    const first = 5;
    const penalty = 1.3;
    const logits = uploadTensor(gpu, data, [V]);
    const hist = uploadTensor(gpu, history, [history.length]);
    op.recordRepetitionPenalty(recorder, logits, hist, { first, count: n }, penalty);
    recorder.submit();
    const out = await readF32(gpu, logits);
    const ref = repetitionPenalty(data, history.subarray(first, first + n), penalty);
    assertClose(out, ref, `repetition penalty V=${V} n=${n}`, 1e-6);
    logits.destroy();
    hist.destroy();
  }
});

/** Logits whose top-k/top-p cut is far from flipping, so float32 and float64 agree on it. */
function clearCut(make: () => Float32Array, settings: SamplingSettings): Float32Array {
  for (let tries = 0; tries < 500; tries++) {
    const logits = make();
    if (keptDistribution(logits, settings).cutMargin > 3e-5) return logits;
  }
  throw new Error(`no logits with a clear cut for ${JSON.stringify(settings)}`);
}

const DRAW_OPTIONS: SampleOptions[] = [
  { temperature: 0.7 },
  { temperature: 1, topK: 40 },
  { temperature: 1.3, topP: 0.9 },
  { temperature: 0.8, topK: 50, topP: 0.6 },
  { temperature: 1, topK: 1 },
  { temperature: 2, topP: 1e-6 },
];

gpuTest("sampling.wgsl draws the same token as the float64 twin", async () => {
  const g = await testGpu();
  const op = await SamplingOp.create(g.registry);
  await checkDraws(g, op, seededRng("sampling draws"), [1, 7, 513, 32003, 151_936], DRAW_OPTIONS);
});

gpuTest("sampling.wgsl at other workgroup sizes", async () => {
  const g = await testGpu();
  const rng = seededRng("sampling workgroups");
  for (const wg of [16, 64]) {
    const op = await SamplingOp.create(g.registry, wg);
    await checkDraws(g, op, rng, [7, 513, 32003], DRAW_OPTIONS.slice(0, 4));
  }
});

/** Draws from R random rows of each size, and R times from the first row, against the twin. */
async function checkDraws(
  { gpu, recorder }: TestGpu,
  op: SamplingOp,
  rng: Rng,
  sizes: number[],
  options: SampleOptions[],
): Promise<void> {
  let compared = 0;
  let skipped = 0;
  for (const V of sizes) {
    // The largest vocabulary only with a top-k cut: its pure top-p cuts are never clear of ties.
    for (const o of V > 100_000 ? [options[3]] : options) {
      const settings = settingsOf(o);
      const R = 4;
      const rows = new Float32Array(R * V);
      for (let r = 0; r < R; r++) {
        rows.set(clearCut(() => rng.normals(V, V > 1000 ? 5 : 2.5), settings), r * V);
      }
      const seed = rng.int(2 ** 32);
      const step = rng.int(1000);
      const tokens = poisoned(gpu, [step + 2 * R], "u32");
      const logits = uploadTensor(gpu, rows, [R, V]);
      const row0 = logits.rows(0, 1).reshape([V]);
      op.recordSample(recorder, logits, { tokens, step }, { ...o, seed });
      // The same row drawn R times with successive counters.
      op.recordSample(recorder, row0, { tokens, step: step + R, draws: R }, { ...o, seed });
      recorder.submit();
      const what = `sample V=${V} ${JSON.stringify(o)} seed=${seed}`;
      const got = await readU32Slots(gpu, tokens, step, 2 * R, what);
      for (let d = 0; d < 2 * R; d++) {
        const r = d < R ? d : 0;
        const u = uniform01(seed, step + d);
        const ref = sampleToken(rows.subarray(r * V, r * V + V), settings, u);
        if (ref.margin < 5e-6) {
          skipped++;
          continue;
        }
        compared++;
        if (got[d] !== ref.token) throw new Error(`${what} draw ${d}: ${got[d]} vs ${ref.token}`);
      }
      tokens.destroy();
      logits.destroy();
    }
  }
  console.log(`  ${compared} draws compared, ${skipped} skipped as near ties`);
  if (skipped > compared / 10) throw new Error(`${skipped} near-tie draws skipped of ${compared}`);
}

gpuTest("sampling.wgsl draws follow the renormalised top-k/top-p distribution", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("sampling distribution");
  // 16 invocations for 11 logits: 16,000 draws of 256 mostly idle invocations each took minutes
  // on SwiftShader; the default width is checked draw by draw against the twin above.
  const op = await SamplingOp.create(registry, 16);
  const N = 4000;
  const V = 11;
  const cases: SampleOptions[] = [
    { temperature: 0.9 },
    { temperature: 1.2, topK: 6 },
    { temperature: 0.8, topP: 0.8 },
    { temperature: 1.1, topK: 7, topP: 0.85 },
  ];
  for (const o of cases) {
    const settings = settingsOf(o);
    // Every kept token expected at least 40 times: a sound chi-square approximation.
    let logits: Float32Array;
    do logits = clearCut(() => rng.normals(V, 1.2), settings); while (
      Math.min(...keptDistribution(logits, settings).probs.filter((p) => p > 0)) * N < 40
    );
    const { probs } = keptDistribution(logits, settings);
    const seed = rng.int(2 ** 32);
    const tokens = poisoned(gpu, [N], "u32");
    const input = uploadTensor(gpu, logits, [V]);
    op.recordSample(recorder, input, { tokens, step: 0, draws: N }, { ...o, seed });
    recorder.submit();
    const what = `distribution ${JSON.stringify(o)} seed=${seed}`;
    const drawn = await readWrittenU32(gpu, tokens, what);
    const counts = new Array(V).fill(0);
    for (const t of drawn) counts[t]++;
    let chi2 = 0;
    let kept = 0;
    for (let i = 0; i < V; i++) {
      if (probs[i] === 0) {
        if (counts[i]) throw new Error(`${what}: token ${i} drawn ${counts[i]} times, not kept`);
        continue;
      }
      kept++;
      chi2 += (counts[i] - N * probs[i]) ** 2 / (N * probs[i]);
    }
    // With at most 10 degrees of freedom, P(chi2 > 80) < 1e-12 for a correct sampler.
    if (chi2 > 80) throw new Error(`${what}: chi-square ${chi2.toFixed(1)} over ${kept} tokens`);
    console.log(`  ${JSON.stringify(o)}: chi-square ${chi2.toFixed(1)}, ${kept - 1} dof`);
    tokens.destroy();
    input.destroy();
  }
});

async function readU32Slots(
  gpu: Awaited<ReturnType<typeof testGpu>>["gpu"],
  tokens: Parameters<typeof readWrittenU32>[1],
  step: number,
  count: number,
  what: string,
): Promise<Uint32Array> {
  return await readWrittenU32(gpu, tokens.rows(step, count), what);
}
