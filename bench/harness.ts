/**
 * Shared plumbing for the GPU benchmarks: one device, and `gpuBench`, which registers a
 * `Deno.bench` whose iteration records `repeat` copies of some GPU work into one submission and
 * waits for it, so a host round trip (about 12 ms on llvmpipe) does not swamp the kernels. At the
 * end of the run a table gives each case's median time per repetition and its GFLOP/s or GB/s.
 */
import { acquireGpu, type Gpu } from "../src/gpu/device.ts";
import { KernelRegistry } from "../src/gpu/kernel.ts";
import { Recorder } from "../src/gpu/recorder.ts";

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
  const row: Row = { ...c, samples: [] };
  rows.push(row);
  let warm = false;
  Deno.bench({
    name: c.name,
    group: c.group,
    n: c.iterations ?? 5,
    warmup: 1,
    async fn(b) {
      b.start();
      const t0 = performance.now();
      for (let i = 0; i < c.repeat; i++) c.record(recorder);
      await recorder.flush();
      const ms = (performance.now() - t0) / c.repeat;
      b.end();
      if (warm) row.samples.push(ms);
      warm = true;
    },
  });
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
    "| group | case | median ms | GFLOP/s | GB/s |",
    "| --- | --- | ---: | ---: | ---: |",
  ];
  for (const r of measured) {
    const ms = median(r.samples);
    const gflops = r.flops ? (r.flops / ms / 1e6).toFixed(2) : "";
    const gbs = r.bytes ? (r.bytes / ms / 1e6).toFixed(2) : "";
    lines.push(`| ${r.group} | ${r.name} | ${ms.toFixed(3)} | ${gflops} | ${gbs} |`);
  }
  console.log(lines.join("\n"));
}

globalThis.addEventListener("unload", report);
