import { GpuLimitError } from "./errors.ts";

/**
 * Every GPU buffer templora makes goes through here, so bytes in use and the peak are known, and
 * buffers that are released can be reused by (size, usage) instead of reallocated.
 */
export class GpuMemory {
  #live = new Set<GPUBuffer>();
  #free = new Map<string, GPUBuffer[]>();
  #bytesInUse = 0;
  #peakBytes = 0;
  #highestBytes = 0;

  /** Accounts for buffers made on `device`. */
  constructor(readonly device: GPUDevice) {}

  /** Bytes held by live buffers, pooled ones included. */
  get bytesInUse(): number {
    return this.#bytesInUse;
  }

  /** The highest {@link bytesInUse} seen since creation or the last {@link resetPeak}. */
  get peakBytes(): number {
    return this.#peakBytes;
  }

  /** The highest {@link bytesInUse} since creation ({@link resetPeak} does not touch it). */
  get highestBytes(): number {
    return this.#highestBytes;
  }

  /** Starts a new peak measurement from the bytes in use now. */
  resetPeak(): void {
    this.#peakBytes = this.#bytesInUse;
  }

  /** Makes a new buffer. Sizes are rounded up to a multiple of 4 bytes. */
  create(size: number, usage: GPUBufferUsageFlags, label?: string): GPUBuffer {
    const bytes = Math.max(4, Math.ceil(size / 4) * 4);
    const max = this.device.limits.maxBufferSize;
    if (bytes > max) {
      throw new GpuLimitError(
        `buffer "${label ?? "unnamed"}" needs ${bytes} bytes; this adapter allows at most ${max}`,
      );
    }
    const buffer = this.device.createBuffer({ size: bytes, usage, label });
    this.#live.add(buffer);
    this.#bytesInUse += bytes;
    this.#peakBytes = Math.max(this.#peakBytes, this.#bytesInUse);
    this.#highestBytes = Math.max(this.#highestBytes, this.#bytesInUse);
    return buffer;
  }

  /** Takes a buffer of exactly this size and usage from the pool, or makes one. */
  acquire(size: number, usage: GPUBufferUsageFlags, label?: string): GPUBuffer {
    const bytes = Math.max(4, Math.ceil(size / 4) * 4);
    const pooled = this.#free.get(`${bytes}:${usage}`)?.pop();
    return pooled ?? this.create(bytes, usage, label);
  }

  /** Returns a buffer from {@link acquire} to the pool for reuse. */
  release(buffer: GPUBuffer): void {
    if (!this.#live.has(buffer)) return;
    const key = `${buffer.size}:${buffer.usage}`;
    const list = this.#free.get(key);
    if (list) list.push(buffer);
    else this.#free.set(key, [buffer]);
  }

  /** Frees a buffer now. */
  destroy(buffer: GPUBuffer): void {
    if (!this.#live.delete(buffer)) return;
    this.#bytesInUse -= buffer.size;
    const list = this.#free.get(`${buffer.size}:${buffer.usage}`);
    const at = list?.indexOf(buffer) ?? -1;
    if (list && at >= 0) list.splice(at, 1);
    buffer.destroy();
  }

  /** Frees every pooled (released) buffer. */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const buffer of list.splice(0)) this.destroy(buffer);
    }
  }

  /** Frees everything this accountant made. */
  destroyAll(): void {
    for (const buffer of [...this.#live]) this.destroy(buffer);
    this.#free.clear();
  }
}
