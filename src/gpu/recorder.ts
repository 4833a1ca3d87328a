import type { Gpu } from "./device.ts";
import { GpuLimitError, KernelUsageError } from "./errors.ts";
import type { Kernel } from "./kernel.ts";
import type { DispatchProfiler } from "./profiler.ts";
import type { Tensor } from "./tensor.ts";

/** Bytes in one uniform slab; a recording that needs more takes another. */
const SLAB_BYTES = 1 << 16;
/** Bind groups kept before the cache is cleared (they are cheap to remake). */
const BIND_GROUP_CACHE_LIMIT = 8192;

/**
 * Storage bindings must start at a multiple of the adapter's minStorageBufferOffsetAlignment;
 * 256 is WebGPU's default and what most GPUs require, so views are held to it everywhere and code
 * tested on a lenient adapter (llvmpipe allows 32) still runs on a strict one.
 */
export const PORTABLE_OFFSET_ALIGNMENT = 256;

/** What a recorder has recorded since it was made (submits do not reset these). */
export interface RecorderTotals {
  /** Dispatches recorded. */
  dispatches: number;
  /**
   * Bytes of weights the recorded work reads, as its recorders declare them with
   * {@link Recorder.countWeightBytes} (each weight counted once per dispatch that reads it).
   */
  weightBytes: number;
}

/** Per-dispatch uniform values, by field name of the kernel's parameter struct. */
export type Params = Record<string, number>;

interface Slab {
  buffer: GPUBuffer;
  host: ArrayBuffer;
  u32: Uint32Array;
  i32: Int32Array;
  f32: Float32Array;
  used: number;
}

let nextBufferId = 1;
const bufferIds = new WeakMap<GPUBuffer, number>();
function bufferId(buffer: GPUBuffer): number {
  let id = bufferIds.get(buffer);
  if (id === undefined) bufferIds.set(buffer, id = nextBufferId++);
  return id;
}

/**
 * Records many dispatches into one command encoder and submits them at once. Kernel parameters
 * go into uniform slabs owned by the recorder and reused on every recording, so a steady loop
 * allocates nothing; bind groups are cached by the buffers and ranges they bind.
 */
export class Recorder {
  #encoder: GPUCommandEncoder | undefined;
  #pass: GPUComputePassEncoder | undefined;
  #slabs: Slab[] = [];
  #slabIndex = 0;
  #bindGroups = new Map<string, GPUBindGroup>();
  #alignment: number;
  #dispatches = 0;
  #totals: RecorderTotals = { dispatches: 0, weightBytes: 0 };
  /** When set, every dispatch runs in its own pass and is timed (see {@link DispatchProfiler}). */
  profiler: DispatchProfiler | undefined;

  /** A recorder submitting to `gpu`'s queue. */
  constructor(readonly gpu: Gpu) {
    this.#alignment = Math.max(16, gpu.limits.minUniformBufferOffsetAlignment);
  }

  /** Dispatches recorded since the last submit. */
  get pending(): number {
    return this.#dispatches;
  }

  /** Running totals since the recorder was made; take differences to count a piece of work. */
  get totals(): Readonly<RecorderTotals> {
    return { ...this.#totals };
  }

  /** Declares that the work just recorded reads `bytes` of weights (see {@link totals}). */
  countWeightBytes(bytes: number): void {
    this.#totals.weightBytes += bytes;
  }

  /** Bytes of GPU memory the recorder holds (its parameter slabs). */
  get bytes(): number {
    return this.#slabs.length * SLAB_BYTES;
  }

  /**
   * Records one dispatch. `bindings` names every storage binding the entry point uses; `params`
   * every field of its uniform struct; `workgroups` the grid size.
   */
  dispatch(
    kernel: Kernel,
    bindings: Record<string, Tensor>,
    params: Params | undefined,
    workgroups: readonly [number, number?, number?],
  ): void {
    const [x, y = 1, z = 1] = workgroups;
    const max = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    for (const n of [x, y, z]) {
      if (!Number.isInteger(n) || n < 0) {
        throw new KernelUsageError(`${kernel.label}: bad workgroup count ${n}`);
      }
      if (n > max) {
        throw new GpuLimitError(`${kernel.label}: ${n} workgroups exceed this adapter's ${max}`);
      }
    }
    if (x * y * z === 0) return;

    const entries: GPUBindGroupEntry[] = [];
    let key = `${kernel.id}`;
    for (const decl of kernel.storage) {
      const t = bindings[decl.name];
      if (!t) throw new KernelUsageError(`${kernel.label}: binding "${decl.name}" not given`);
      if (t.byteOffset % PORTABLE_OFFSET_ALIGNMENT !== 0) {
        throw new KernelUsageError(
          `${kernel.label}: "${decl.name}" is bound at byte ${t.byteOffset}, not a multiple of ` +
            `${PORTABLE_OFFSET_ALIGNMENT}; pass the row offset as a kernel parameter instead`,
        );
      }
      entries.push({
        binding: decl.binding,
        resource: { buffer: t.buffer, offset: t.byteOffset, size: t.bindingSize },
      });
      key += `|${bufferId(t.buffer)}@${t.byteOffset}+${t.bindingSize}`;
    }
    if (Object.keys(bindings).length !== kernel.storage.length) {
      const known = new Set(kernel.storage.map((b) => b.name));
      const extra = Object.keys(bindings).filter((n) => !known.has(n));
      throw new KernelUsageError(`${kernel.label}: unknown bindings ${extra.join(", ")}`);
    }

    const offsets: number[] = [];
    if (kernel.uniform) {
      const { slab, offset } = this.#writeParams(kernel, params ?? {});
      entries.push({
        binding: kernel.uniform.binding,
        resource: { buffer: slab.buffer, offset: 0, size: kernel.paramBytes },
      });
      key += `|u${bufferId(slab.buffer)}+${kernel.paramBytes}`;
      offsets.push(offset);
    } else if (params && Object.keys(params).length) {
      throw new KernelUsageError(`${kernel.label} takes no parameters`);
    }

    let group = this.#bindGroups.get(key);
    if (!group) {
      if (this.#bindGroups.size >= BIND_GROUP_CACHE_LIMIT) this.#bindGroups.clear();
      group = this.gpu.device.createBindGroup({ layout: kernel.layout, entries });
      this.#bindGroups.set(key, group);
    }
    if (this.profiler) {
      this.#endPass();
      this.#pass = this.#commandEncoder().beginComputePass({
        timestampWrites: this.profiler.passTimestamps(kernel.label),
      });
    }
    const pass = this.#computePass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, group, offsets);
    pass.dispatchWorkgroups(x, y, z);
    if (this.profiler) this.#endPass();
    this.#dispatches++;
    this.#totals.dispatches++;
  }

  /** Records a buffer-to-buffer copy of a whole tensor (sizes must match). */
  copy(source: Tensor, destination: Tensor): void {
    if (source.byteLength !== destination.byteLength) {
      throw new KernelUsageError(
        `copy of ${source.byteLength} bytes into a ${destination.byteLength}-byte tensor`,
      );
    }
    this.#endPass();
    this.#commandEncoder().copyBufferToBuffer(
      source.buffer,
      source.byteOffset,
      destination.buffer,
      destination.byteOffset,
      source.bindingSize,
    );
  }

  /** Records zeroing a whole tensor (whole 4-byte words: WebGPU clears no less). */
  clear(tensor: Tensor): void {
    if (tensor.byteOffset % 4 !== 0 || tensor.byteLength % 4 !== 0) {
      throw new KernelUsageError(
        `clear of ${tensor.byteLength} bytes at byte ${tensor.byteOffset}: not whole 4-byte words`,
      );
    }
    if (tensor.byteLength === 0) return;
    this.#endPass();
    this.#commandEncoder().clearBuffer(tensor.buffer, tensor.byteOffset, tensor.byteLength);
  }

  /** Writes the parameter slabs and submits everything recorded, in one queue submission. */
  submit(): void {
    this.#endPass();
    const queue = this.gpu.device.queue;
    for (let i = 0; i <= this.#slabIndex && i < this.#slabs.length; i++) {
      const slab = this.#slabs[i];
      if (slab.used) queue.writeBuffer(slab.buffer, 0, slab.host, 0, slab.used);
      slab.used = 0;
    }
    this.#slabIndex = 0;
    if (this.#encoder) {
      this.profiler?.resolve(this.#encoder);
      queue.submit([this.#encoder.finish()]);
    }
    this.#encoder = undefined;
    this.#dispatches = 0;
  }

  /** Submits and waits until the GPU has finished. */
  async flush(): Promise<void> {
    this.submit();
    await this.gpu.sync();
  }

  /** Frees the parameter slabs. The recorder must not be used afterwards. */
  destroy(): void {
    this.#encoder = undefined;
    this.#pass = undefined;
    for (const slab of this.#slabs) this.gpu.memory.destroy(slab.buffer);
    this.#slabs = [];
    this.#bindGroups.clear();
  }

  #writeParams(kernel: Kernel, params: Params): { slab: Slab; offset: number } {
    let slab = this.#slabs[this.#slabIndex];
    if (slab && slab.used + kernel.paramBytes > SLAB_BYTES) {
      slab = this.#slabs[++this.#slabIndex];
    }
    if (!slab) {
      const host = new ArrayBuffer(SLAB_BYTES);
      slab = {
        buffer: this.gpu.memory.create(
          SLAB_BYTES,
          GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
          "params slab",
        ),
        host,
        u32: new Uint32Array(host),
        i32: new Int32Array(host),
        f32: new Float32Array(host),
        used: 0,
      };
      this.#slabs[this.#slabIndex] = slab;
    }
    const offset = slab.used;
    const base = offset / 4;
    kernel.params.forEach((field, i) => {
      const value = params[field.name];
      if (typeof value !== "number" || Number.isNaN(value) && field.type !== "f32") {
        throw new KernelUsageError(`${kernel.label}: parameter "${field.name}" not given`);
      }
      if (field.type === "f32") slab.f32[base + i] = value;
      else if (field.type === "i32") slab.i32[base + i] = value;
      else {
        if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
          throw new KernelUsageError(`${kernel.label}: ${field.name} = ${value} is not a u32`);
        }
        slab.u32[base + i] = value;
      }
    });
    if (Object.keys(params).length !== kernel.params.length) {
      const known = new Set(kernel.params.map((f) => f.name));
      const extra = Object.keys(params).filter((n) => !known.has(n));
      throw new KernelUsageError(`${kernel.label}: unknown parameters ${extra.join(", ")}`);
    }
    slab.used += Math.ceil(kernel.paramBytes / this.#alignment) * this.#alignment;
    return { slab, offset };
  }

  #commandEncoder(): GPUCommandEncoder {
    return this.#encoder ??= this.gpu.device.createCommandEncoder();
  }

  #computePass(): GPUComputePassEncoder {
    return this.#pass ??= this.#commandEncoder().beginComputePass();
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = undefined;
  }
}
