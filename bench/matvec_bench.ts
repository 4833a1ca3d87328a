/**
 * Decode matrix-vector throughput in GB/s of weights read, next to the vec4 copy kernel's GB/s as
 * the memory-bandwidth yardstick. Run with `deno bench -A bench/matvec_bench.ts`; every iteration
 * records many dispatches, submits once and waits once, and a GB/s table is printed at the end
 * (with GB/s of the dispatches' GPU time where the adapter has timestamps; see harness.ts).
 */
import { gpu, gpuMilliseconds, recorder, registry } from "./harness.ts";
import { createTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { MatvecOp } from "../src/ops/matvec.ts";
import { Rng } from "../src/core/random.ts";
import { toF16 } from "../src/reference/matvec.ts";

const matvec = await MatvecOp.create(registry);
const copy = await CopyOp.create(registry);
const rng = new Rng(1234);

/**
 * Weight bytes read per iteration. Small matrices get several distinct copies, read in turn, so
 * the measurement is of memory and not of a cache that a single layer's weights would fit in.
 */
const BYTES_PER_ITERATION = 64 * 2 ** 20;
const SHAPES: [number, number][] = [[576, 576], [1536, 576], [576, 1536], [49152, 576]];

interface Measured {
  bytes: number;
  ms: number;
  runs: number;
  /** GB/s of the dispatches' GPU time (one profiled run), where the adapter has timestamps. */
  gpuGBs?: number;
}
const results = new Map<string, Measured>();

function bench(name: string, bytesPerDispatch: number, recordOne: (rep: number) => void): void {
  const reps = Math.max(1, Math.ceil(BYTES_PER_ITERATION / bytesPerDispatch));
  let warm = false;
  Deno.bench({
    name,
    group: "matvec",
    baseline: name.startsWith("copy"),
    n: 8,
    warmup: 1,
    async fn() {
      const start = performance.now();
      for (let i = 0; i < reps; i++) recordOne(i);
      await recorder.flush();
      const ms = performance.now() - start;
      if (!warm) return void (warm = true); // the first run pays for first use of the pipeline
      const total = results.get(name) ?? { bytes: 0, ms: 0, runs: 0 };
      total.bytes += reps * bytesPerDispatch;
      total.ms += ms;
      total.runs++;
      if (total.gpuGBs === undefined) {
        const gpuMs = await gpuMilliseconds(() => {
          for (let i = 0; i < reps; i++) recordOne(i);
        });
        if (gpuMs) total.gpuGBs = reps * bytesPerDispatch / (gpuMs / 1000) / 1e9;
      }
      results.set(name, total);
    },
  });
}

/** Random values repeated to fill the weights; their values do not matter to the timing. */
const POOL = rng.normals(1 << 16, 0.05);
const POOL16 = toF16(POOL).bits;

function tiled<T extends Float32Array | Uint16Array>(pool: T, out: T): T {
  for (let at = 0; at < out.length; at += pool.length) {
    out.set(pool.subarray(0, Math.min(pool.length, out.length - at)), at);
  }
  return out;
}

/** Enough distinct weight matrices to fill one iteration, each with its own x and y. */
function inputs(n: number, k: number, dtype: "f32" | "f16"): { w: Tensor; x: Tensor; y: Tensor }[] {
  const bytes = n * k * (dtype === "f16" ? 2 : 4);
  const values = dtype === "f16"
    ? tiled(POOL16, new Uint16Array(n * k))
    : tiled(POOL, new Float32Array(n * k));
  const sets = [];
  for (let i = 0; i < Math.ceil(BYTES_PER_ITERATION / bytes); i++) {
    const w = uploadTensor(gpu, values, [n, k], dtype);
    sets.push({ w, x: uploadTensor(gpu, rng.normals(k), [k]), y: createTensor(gpu, [n]) });
  }
  return sets;
}

const copyElements = BYTES_PER_ITERATION / 4;
const copySrc = uploadTensor(gpu, tiled(POOL, new Float32Array(copyElements)), [copyElements]);
const copyDst = createTensor(gpu, [copyElements]);
bench(`copy ${copyElements * 4 / 2 ** 20} MiB (bytes read)`, copyElements * 4, () => {
  copy.record(recorder, copySrc, copyDst);
});

for (const dtype of matvec.f16 ? ["f32", "f16"] as const : ["f32"] as const) {
  for (const [n, k] of SHAPES) {
    const sets = inputs(n, k, dtype);
    bench(`matvec ${dtype} ${n}x${k}`, sets[0].w.byteLength, (rep) => {
      const { w, x, y } = sets[rep % sets.length];
      matvec.record(recorder, w, x, y);
    });
  }
}

globalThis.addEventListener("unload", () => {
  console.log(`\n${gpu.capabilities.description}\n`);
  console.log("| kernel | GB/s read | % of copy | timed runs | GB/s of GPU time | % of copy's |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  const gbps = (m: Measured) => m.bytes / (m.ms / 1000) / 1e9;
  const copy = [...results.values()][0];
  const copyRate = gbps(copy);
  for (const [name, m] of results) {
    const rate = gbps(m);
    const onGpu = m.gpuGBs && copy.gpuGBs
      ? `${m.gpuGBs.toFixed(2)} | ${(100 * m.gpuGBs / copy.gpuGBs).toFixed(0)}%`
      : " | ";
    console.log(
      `| ${name} | ${rate.toFixed(2)} | ${(100 * rate / copyRate).toFixed(0)}% | ${m.runs} | ` +
        `${onGpu} |`,
    );
  }
});
