/**
 * Causal grouped-query attention: a prefill/training shape (128 tokens) and a decode shape (one
 * token after 1023 cached), 9 heads over 3 kv heads, head dim 64. Run with
 * `deno bench -A bench/attention_bench.ts`; every iteration records several dispatches, submits
 * once and waits once, and a table of milliseconds per call is printed at the end (with the
 * dispatches' GPU time where the adapter has timestamps; see harness.ts).
 */
import { gpu, gpuMilliseconds, recorder, registry } from "./harness.ts";
import { createTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { AttentionOp, type AttentionPath } from "../src/ops/attention.ts";
import { Rng } from "../src/core/random.ts";

const HEADS = 9;
const KV_HEADS = 3;
const HEAD_DIM = 64;
const REPS = 4;

const op = await AttentionOp.create(registry, HEAD_DIM);
const rng = new Rng(1234);

interface Measured {
  calls: number;
  ms: number;
  flops: number;
  /** GPU milliseconds per call (one profiled run), where the adapter has timestamps. */
  gpuMs?: number;
}
const results = new Map<string, Measured>();

function bench(name: string, flopsPerCall: number, recordOne: () => void): void {
  Deno.bench({
    name,
    group: "attention",
    n: 6,
    warmup: 1,
    async fn() {
      const start = performance.now();
      for (let i = 0; i < REPS; i++) recordOne();
      await recorder.flush();
      const ms = performance.now() - start;
      const total: Measured = results.get(name) ?? { calls: 0, ms: 0, flops: flopsPerCall };
      total.calls += REPS;
      total.ms += ms;
      if (total.gpuMs === undefined) {
        const gpuMs = await gpuMilliseconds(() => {
          for (let i = 0; i < REPS; i++) recordOne();
        });
        if (gpuMs !== undefined) total.gpuMs = gpuMs / REPS;
      }
      results.set(name, total);
    },
  });
}

function tensors(tokens: number, past: number) {
  const keys = past + tokens;
  const rows = (n: number, shape: number[]): Tensor => uploadTensor(gpu, rng.normals(n), shape);
  const qShape = [tokens, HEADS, HEAD_DIM];
  const kvShape = [keys, KV_HEADS, HEAD_DIM];
  return {
    q: rows(tokens * HEADS * HEAD_DIM, qShape),
    k: rows(keys * KV_HEADS * HEAD_DIM, kvShape),
    v: rows(keys * KV_HEADS * HEAD_DIM, kvShape),
    dOut: rows(tokens * HEADS * HEAD_DIM, qShape),
    out: createTensor(gpu, qShape),
    dQ: createTensor(gpu, qShape),
    dK: createTensor(gpu, kvShape),
    dV: createTensor(gpu, kvShape),
    lse: createTensor(gpu, [tokens, HEADS]),
    delta: createTensor(gpu, [tokens, HEADS]),
  };
}

/** Multiply-adds of q·k and p·v over the causal pairs, times 2. */
function forwardFlops(tokens: number, past: number): number {
  let pairs = 0;
  for (let t = 0; t < tokens; t++) pairs += past + t + 1;
  return 4 * pairs * HEADS * HEAD_DIM;
}

const prefill = tensors(128, 0);
const decode = tensors(1, 1023);
const forward = (x: typeof prefill, past: number, path: AttentionPath, lse = false) => () =>
  op.recordForward(recorder, { ...x, lse: lse ? x.lse : undefined, past, path });

bench("prefill T=128 forward", forwardFlops(128, 0), forward(prefill, 0, "auto"));
bench("prefill T=128 forward + lse", forwardFlops(128, 0), forward(prefill, 0, "auto", true));
bench("prefill T=128 backward", 3.5 * forwardFlops(128, 0), () => {
  op.recordBackward(recorder, { ...prefill, past: 0 });
});
bench("decode past=1023 forward", forwardFlops(1, 1023), forward(decode, 1023, "auto"));
bench("decode past=1023 forward (tiled)", forwardFlops(1, 1023), forward(decode, 1023, "tiled"));

globalThis.addEventListener("unload", () => {
  console.log(`\n${gpu.capabilities.description}, tiles ${JSON.stringify(op.tiles)}\n`);
  console.log("| call | ms per call | GFLOP/s | GPU ms per call | GFLOP/s of GPU time |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  const gflops = (m: Measured, ms: number) => (m.flops / ms / 1e6).toFixed(2);
  for (const [name, m] of results) {
    const ms = m.ms / m.calls;
    const onGpu = m.gpuMs ? `${m.gpuMs.toFixed(3)} | ${gflops(m, m.gpuMs)}` : " | ";
    console.log(`| ${name} | ${ms.toFixed(2)} | ${gflops(m, ms)} | ${onGpu} |`);
  }
});
