/**
 * Shared plumbing for the GPU benchmarks: one device, and `gpuBench`, which registers a
 * `Deno.bench` whose iteration records `repeat` copies of some GPU work into one submission and
 * waits for it, so a host round trip (about 12 ms on llvmpipe) does not swamp the kernels. At the
 * end of the run a table gives each case's median time per repetition and its GFLOP/s or GB/s,
 * from wall-clock time and from the process's CPU time: llvmpipe runs its threads inside this
 * process, so on a shared, busy machine the CPU-time figures (work per CPU-second) stay
 * comparable where wall-clock ones do not. Where the adapter has `timestamp-query`, each case
 * also runs its repetitions once under a DispatchProfiler: the GPU time of its dispatches, which
 * on a fast GPU is far below the wall time of a submission (an H200 spent about 3 ms a round trip
 * whatever the work), gives the GPU columns.
 */
import process from "node:process";
import { acquireGpu, type Gpu } from "../src/gpu/device.ts";
import { KernelRegistry } from "../src/gpu/kernel.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { DispatchProfiler } from "../src/gpu/profiler.ts";

export const gpu: Gpu = await acquireGpu();
export const registry: KernelRegistry = new KernelRegistry(gpu);
export const recorder: Recorder = new Recorder(gpu);

interface Row {
  group: string;
  name: string;
  flops?: number;
  bytes?: number;
  repeat: number;
  samples: number[];
  /** Process CPU milliseconds per repetition (llvmpipe's threads run in this process). */
  cpuSamples: number[];
  /** GPU milliseconds per repetition from timestamps (one profiled run), if the adapter has them. */
  gpuMs?: number;
}

const rows: Row[] = [];

export interface GpuBenchCase {
  group: string;
  name: string;
  /** Floating-point operations of one repetition (2 per multiply-add). */
  flops?: number;
  /** Bytes one repetition must move to or from memory, for GB/s. */
  bytes?: number;
  /** Repetitions recorded per submission. */
  repeat: number;
  /** Timed iterations (after one warm-up). */
  iterations?: number;
  /** Records one repetition. */
  record: (rec: Recorder) => void;
}

/** Registers a GPU benchmark case; see the module comment. */
export function gpuBench(c: GpuBenchCase): void {
  const row: Row = { ...c, samples: [], cpuSamples: [] };
  rows.push(row);
  let warm = false;
  Deno.bench({
    name: c.name,
    group: c.group,
    n: c.iterations ?? 5,
    warmup: 1,
    async fn(b) {
      b.start();
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < c.repeat; i++) c.record(recorder);
      await recorder.flush();
      const ms = (performance.now() - t0) / c.repeat;
      const cpu = process.cpuUsage(cpu0);
      b.end();
      if (warm) {
        row.samples.push(ms);
        row.cpuSamples.push((cpu.user + cpu.system) / 1000 / c.repeat);
        if (row.gpuMs === undefined) {
          const ms = await gpuMilliseconds(() => {
            for (let i = 0; i < c.repeat; i++) c.record(recorder);
          });
          if (ms !== undefined) row.gpuMs = ms / c.repeat;
        }
      }
      warm = true;
    },
  });
}

/**
 * GPU milliseconds of the dispatches `record` records on {@link recorder} (submitted and waited
 * for here), summed from their timestamps; undefined where the adapter has no timestamp-query.
 */
export async function gpuMilliseconds(record: () => void): Promise<number | undefined> {
  if (!gpu.capabilities.timestampQuery) return undefined;
  const profiler = new DispatchProfiler(gpu);
  recorder.profiler = profiler;
  try {
    record();
    await recorder.flush();
    const times = await profiler.read();
    return times.reduce((sum, t) => sum + t.milliseconds, 0);
  } finally {
    recorder.profiler = undefined;
    profiler.destroy();
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function report(): void {
  const measured = rows.filter((r) => r.samples.length);
  if (!measured.length) return;
  const lines = [
    `\nadapter: ${gpu.capabilities.description} (fallback: ${gpu.capabilities.isFallbackAdapter})`,
    `load average at the end: ${
      Deno.loadavg()[0].toFixed(2)
    } on ${navigator.hardwareConcurrency} cores`,
    "| group | case | median ms | GFLOP/s | GB/s | CPU ms | GFLOP/s per CPU-s | GB/s per CPU-s " +
    "| GPU ms | GFLOP/s of GPU time | GB/s of GPU time |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of measured) {
    const ms = median(r.samples);
    const cpu = median(r.cpuSamples);
    const rate = (amount: number | undefined, t: number) =>
      amount ? (amount / t / 1e6).toFixed(2) : "";
    lines.push(
      `| ${r.group} | ${r.name} | ${ms.toFixed(3)} | ${rate(r.flops, ms)} | ${
        rate(r.bytes, ms)
      } | ` +
        `${cpu.toFixed(1)} | ${rate(r.flops, cpu)} | ${rate(r.bytes, cpu)} | ` +
        (r.gpuMs
          ? `${r.gpuMs.toFixed(3)} | ${rate(r.flops, r.gpuMs)} | ${rate(r.bytes, r.gpuMs)} |`
          : " |  |  |"),
    );
  }
  console.log(lines.join("\n"));
}

globalThis.addEventListener("unload", report);
