import type { Gpu } from "./device.ts";
import { KernelUsageError } from "./errors.ts";

/** Dispatches one query set times before the profiler takes another. */
const DISPATCHES_PER_SET = 1024;

/** GPU time of one kernel, summed over its dispatches. */
export interface KernelTime {
  /** The kernel's label (its file, entry point and specialisation). */
  label: string;
  /** Dispatches of it that were timed. */
  dispatches: number;
  /** Their GPU time in total, in milliseconds. */
  milliseconds: number;
  /** The longest of them, in milliseconds (far above the mean: a one-off such as a first use). */
  slowest: number;
}

interface QueryBatch {
  set: GPUQuerySet;
  labels: string[];
  resolved?: GPUBuffer;
  readback?: GPUBuffer;
}

/**
 * Times every dispatch a {@link Recorder} records, with `timestamp-query` (a pass per dispatch,
 * timestamps at its start and end), and sums the times by kernel. Set it as the recorder's
 * `profiler`, run the work, then {@link read}. For finding where time goes, not for production:
 * a pass per dispatch costs a little on every adapter.
 */
export class DispatchProfiler {
  #batches: QueryBatch[] = [];
  #current: QueryBatch | undefined;

  /** A profiler for work on `gpu`; throws when its device has no `timestamp-query`. */
  constructor(readonly gpu: Gpu) {
    if (!gpu.capabilities.timestampQuery) {
      throw new KernelUsageError(
        `the adapter "${gpu.capabilities.description}" has no timestamp-query: dispatches cannot be timed`,
      );
    }
  }

  /** The timestamp writes for the pass of the next dispatch, of the kernel `label`. */
  passTimestamps(label: string): GPUComputePassTimestampWrites {
    let batch = this.#current;
    if (!batch || batch.labels.length === DISPATCHES_PER_SET) {
      const set = this.gpu.device.createQuerySet({
        type: "timestamp",
        count: 2 * DISPATCHES_PER_SET,
        label: "dispatch timestamps",
      });
      batch = this.#current = { set, labels: [] };
      this.#batches.push(batch);
    }
    const index = batch.labels.length;
    batch.labels.push(label);
    return {
      querySet: batch.set,
      beginningOfPassWriteIndex: 2 * index,
      endOfPassWriteIndex: 2 * index + 1,
    };
  }

  /** Records, at the end of a submission, the copies that bring its timestamps back. */
  resolve(encoder: GPUCommandEncoder): void {
    for (const batch of this.#batches) {
      if (batch.readback || batch.labels.length === 0) continue;
      const bytes = batch.labels.length * 16; // [dispatches, 2] u64 timestamps
      const resolved = batch.resolved = this.gpu.memory.create(
        bytes,
        GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
        "resolved timestamps",
      );
      batch.readback = this.gpu.memory.create(
        bytes,
        GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        "timestamps readback",
      );
      encoder.resolveQuerySet(batch.set, 0, 2 * batch.labels.length, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, batch.readback, 0, bytes);
    }
    this.#current = undefined;
  }

  /**
   * Waits for the submitted work and returns GPU time by kernel, largest first, then starts
   * afresh. Work recorded but not yet submitted is not counted.
   */
  async read(): Promise<KernelTime[]> {
    const done = this.#batches.filter((b) => b.readback);
    this.#batches = this.#batches.filter((b) => !b.readback);
    const byLabel = new Map<string, KernelTime>();
    for (const batch of done) {
      const readback = batch.readback!;
      await readback.mapAsync(GPUMapMode.READ);
      const stamps = new BigUint64Array(readback.getMappedRange().slice(0));
      readback.unmap();
      this.gpu.memory.destroy(readback);
      this.gpu.memory.destroy(batch.resolved!);
      batch.set.destroy();
      batch.labels.forEach((label, i) => {
        const ns = Number(stamps[2 * i + 1] - stamps[2 * i]);
        const entry = byLabel.get(label) ?? { label, dispatches: 0, milliseconds: 0, slowest: 0 };
        const ms = Math.max(0, ns) / 1e6;
        entry.dispatches++;
        entry.milliseconds += ms;
        entry.slowest = Math.max(entry.slowest, ms);
        byLabel.set(label, entry);
      });
    }
    return [...byLabel.values()].sort((a, b) => b.milliseconds - a.milliseconds);
  }

  /** Frees what the profiler holds. */
  destroy(): void {
    for (const batch of this.#batches) {
      batch.set.destroy();
      if (batch.readback) this.gpu.memory.destroy(batch.readback);
      if (batch.resolved) this.gpu.memory.destroy(batch.resolved);
    }
    this.#batches = [];
    this.#current = undefined;
  }
}
