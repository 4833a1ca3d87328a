import type { Gpu } from "./device.ts";
import { GpuDeviceLostError } from "./errors.ts";
import type { Tensor } from "./tensor.ts";

const STAGING_USAGE = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;

/**
 * How long a failed readback waits for the device's `lost` promise: on a device that has just
 * been lost, mapping fails first and the promise settles a moment later.
 */
const LOST_GRACE_MS = 250;

/**
 * Copies a tensor's bytes to the host. One host round trip: batch work before calling it.
 * Throws {@link GpuDeviceLostError} when the device is lost (before or while reading).
 */
export async function readBytes(gpu: Gpu, tensor: Tensor): Promise<ArrayBuffer> {
  if (gpu.lostReason) throw new GpuDeviceLostError(gpu.lostReason);
  const size = tensor.bindingSize;
  const staging = gpu.memory.acquire(size, STAGING_USAGE, "readback staging");
  try {
    const encoder = gpu.device.createCommandEncoder();
    encoder.copyBufferToBuffer(tensor.buffer, tensor.byteOffset, staging, 0, size);
    gpu.device.queue.submit([encoder.finish()]);
    await gpu.guard(staging.mapAsync(GPUMapMode.READ, 0, size));
    const copy = staging.getMappedRange(0, size).slice(0, tensor.byteLength);
    staging.unmap();
    return copy;
  } catch (error) {
    throw await lostOr(gpu, error);
  } finally {
    gpu.memory.release(staging);
  }
}

/** A {@link GpuDeviceLostError} when the failure came from losing the device, else `error`. */
async function lostOr(gpu: Gpu, error: unknown): Promise<unknown> {
  if (!gpu.lostReason) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      gpu.device.lost,
      new Promise((resolve) => timer = setTimeout(resolve, LOST_GRACE_MS)),
    ]);
    clearTimeout(timer);
  }
  return gpu.lostReason ? new GpuDeviceLostError(gpu.lostReason, { cause: error }) : error;
}

/** Reads an f32 tensor. */
export async function readF32(gpu: Gpu, tensor: Tensor): Promise<Float32Array> {
  return new Float32Array(await readBytes(gpu, tensor));
}

/** Reads a u32 tensor. */
export async function readU32(gpu: Gpu, tensor: Tensor): Promise<Uint32Array> {
  return new Uint32Array(await readBytes(gpu, tensor));
}
