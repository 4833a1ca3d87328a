/**
 * Decode matrix-vector throughput over quantized weights (quant_matvec.wgsl) next to the f32 and
 * f16 matvec, at SmolLM2-135M's projection shapes: [1536, 576] (gate/up, K = 576) and [576, 1536]
 * (down, K = 1536; the only one of the two whose rows are whole 256-value K-quant blocks). Run
 * with `deno bench -A bench/quant_matvec_bench.ts`. Every iteration records many dispatches over
 * distinct weight copies (so caches do not flatter small matrices), submits once and waits once;
 * a table at the end gives GB/s of weight bytes read and billions of weights per second (the
 * figure that sets decode speed, whatever the bytes per weight), with the plain read kernel
 * (bench/read_bandwidth.wgsl) measured in the same run as the yardstick, and the quantized kernels
 * also with the tiles of before (8 rows per workgroup) where the adapter's default has more.
 */
import process from "node:process";
import { acquireGpu } from "../src/gpu/device.ts";
import { KernelRegistry } from "../src/gpu/kernel.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, type Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import { MatvecOp } from "../src/ops/matvec.ts";
import { QuantMatvecOp } from "../src/ops/quant_matvec.ts";
import { type QuantMatrix, uploadQuantMatrix } from "../src/ops/quant_weight.ts";
import { GGML_QUANT_TYPES, GGML_TYPES } from "../src/core/quant.ts";
import { Rng } from "../src/core/random.ts";
import { quantizeRandom } from "../src/reference/quant.ts";
import { toF16 } from "../src/reference/matvec.ts";
import readSource from "./read_bandwidth.wgsl" with { type: "text" };

const gpu = await acquireGpu();
const registry = new KernelRegistry(gpu);
const recorder = new Recorder(gpu);
const matvec = await MatvecOp.create(registry);
const quant = await QuantMatvecOp.create(registry);
const eightRows = quant.tiles.rows === 8
  ? undefined
  : await QuantMatvecOp.create(registry, { tiles: { wg: quant.tiles.wg, rows: 8 } });
const readKernel = await registry.get({
  file: "read_bandwidth.wgsl",
  source: readSource,
  constants: { WG: 256 },
});
const rng = new Rng(1234);

/** Weight bytes read per iteration, spread over as many distinct copies as that takes. */
const BYTES_PER_ITERATION = 32 * 2 ** 20;
/** [N, K] = [out, in]. */
const SHAPES: [number, number][] = [[1536, 576], [576, 1536]];

interface Measured {
  bytes: number;
  weights: number;
  ms: number;
  cpuMs: number;
  runs: number;
}
const results = new Map<string, Measured>();

function bench(
  name: string,
  bytesPerDispatch: number,
  weightsPerDispatch: number,
  recordOne: (rep: number) => void,
): void {
  const reps = Math.max(1, Math.ceil(BYTES_PER_ITERATION / bytesPerDispatch));
  let warm = false;
  Deno.bench({
    name,
    n: 6,
    warmup: 1,
    async fn() {
      const cpu0 = process.cpuUsage();
      const start = performance.now();
      for (let i = 0; i < reps; i++) recordOne(i);
      await recorder.flush();
      const ms = performance.now() - start;
      const cpu = process.cpuUsage(cpu0);
      if (!warm) return void (warm = true); // the first run pays for first use of the pipeline
      const total = results.get(name) ?? { bytes: 0, weights: 0, ms: 0, cpuMs: 0, runs: 0 };
      total.bytes += reps * bytesPerDispatch;
      total.weights += reps * weightsPerDispatch;
      total.ms += ms;
      total.cpuMs += (cpu.user + cpu.system) / 1000;
      total.runs++;
      results.set(name, total);
    },
  });
}

/** Distinct copies of one weight matrix, enough to fill an iteration, each with its x and y. */
function copies<W>(bytes: number, n: number, k: number, upload: () => W) {
  const sets: { w: W; x: Tensor; y: Tensor }[] = [];
  for (let i = 0; i < Math.ceil(BYTES_PER_ITERATION / bytes); i++) {
    sets.push({
      w: upload(),
      x: uploadTensor(gpu, rng.normals(k), [k]),
      y: createTensor(gpu, [n]),
    });
  }
  return sets;
}

{
  const big = uploadTensor(gpu, rng.uniforms(BYTES_PER_ITERATION / 4), [BYTES_PER_ITERATION / 4]);
  const sums = createTensor(gpu, [1024 * 256]);
  bench("read kernel", BYTES_PER_ITERATION, BYTES_PER_ITERATION / 4, () => {
    recorder.dispatch(readKernel, { src: big, dst: sums }, {
      n4: BYTES_PER_ITERATION / 16,
      stride: 1024 * 256,
    }, [1024]);
  });
}

for (const [n, k] of SHAPES) {
  const shape = `${n}x${k}`;
  const values = rng.normals(n * k, 0.05);
  const plain = copies(n * k * 4, n, k, () => uploadTensor(gpu, values, [n, k]));
  bench(`f32 ${shape}`, n * k * 4, n * k, (rep) => {
    const { w, x, y } = plain[rep % plain.length];
    matvec.record(recorder, w, x, y);
  });
  if (matvec.f16) {
    const bits = toF16(values).bits;
    const half = copies(n * k * 2, n, k, () => uploadTensor(gpu, bits, [n, k], "f16"));
    bench(`f16 ${shape}`, n * k * 2, n * k, (rep) => {
      const { w, x, y } = half[rep % half.length];
      matvec.record(recorder, w, x, y);
    });
  }
  for (const type of GGML_QUANT_TYPES) {
    const { blockElems, blockBytes } = GGML_TYPES[type];
    if (k % blockElems !== 0) continue;
    const bytes = quantizeRandom(type, rng, n, k);
    const size = (n * k / blockElems) * blockBytes;
    const sets = copies<QuantMatrix>(size, n, k, () => uploadQuantMatrix(gpu, bytes, type, n, k));
    bench(`${type} ${shape}`, size, n * k, (rep) => {
      const { w, x, y } = sets[rep % sets.length];
      quant.record(recorder, w, x, y);
    });
    if (eightRows) {
      bench(`${type}(8-rows) ${shape}`, size, n * k, (rep) => {
        const { w, x, y } = sets[rep % sets.length];
        eightRows.record(recorder, w, x, y);
      });
    }
  }
}

globalThis.addEventListener("unload", () => {
  console.log(
    `\n${gpu.capabilities.description} (fallback: ${gpu.capabilities.isFallbackAdapter})`,
  );
  console.log(`quant matvec tiles ${JSON.stringify(quant.tiles)}\n`);
  const read = results.get("read kernel");
  const readRate = read ? read.bytes / (read.cpuMs / 1000) : NaN;
  console.log(
    "| kernel | weights | GB/s read | Gweights/s | GB per CPU-s | % of read kernel per CPU-s | runs |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const [name, m] of results) {
    const seconds = m.ms / 1000;
    const [type, shape = ""] = name.split(" ");
    const perCpu = m.bytes / (m.cpuMs / 1000);
    console.log(
      `| ${type} | ${shape} | ${(m.bytes / seconds / 1e9).toFixed(2)} | ` +
        `${(m.weights / seconds / 1e9).toFixed(2)} | ${(perCpu / 1e9).toFixed(2)} | ` +
        `${(100 * perCpu / readRate).toFixed(0)}% | ${m.runs} |`,
    );
  }
});
