import type { Gpu } from "./device.ts";
import type { Tensor } from "./tensor.ts";

const STAGING_USAGE = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;

/** Copies a tensor's bytes to the host. One host round trip: batch work before calling it. */
export async function readBytes(gpu: Gpu, tensor: Tensor): Promise<ArrayBuffer> {
  const size = tensor.bindingSize;
  const staging = gpu.memory.acquire(size, STAGING_USAGE, "readback staging");
  try {
    const encoder = gpu.device.createCommandEncoder();
    encoder.copyBufferToBuffer(tensor.buffer, tensor.byteOffset, staging, 0, size);
    gpu.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ, 0, size);
    const copy = staging.getMappedRange(0, size).slice(0, tensor.byteLength);
    staging.unmap();
    return copy;
  } finally {
    gpu.memory.release(staging);
  }
}

/** Reads an f32 tensor. */
export async function readF32(gpu: Gpu, tensor: Tensor): Promise<Float32Array> {
  return new Float32Array(await readBytes(gpu, tensor));
}

/** Reads a u32 tensor. */
export async function readU32(gpu: Gpu, tensor: Tensor): Promise<Uint32Array> {
  return new Uint32Array(await readBytes(gpu, tensor));
}
