import assert from "node:assert/strict";
import { gpuTest } from "../../kernels_test/helpers.ts";
import { acquireGpu } from "./device.ts";
import { GpuDeviceLostError } from "./errors.ts";
import { KernelRegistry } from "./kernel.ts";
import { readF32 } from "./readback.ts";
import { uploadTensor } from "./tensor.ts";

const SOURCE = `
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  out[id.x] = f32(id.x);
}`;

gpuTest("a lost device rejects every pending and later call with GpuDeviceLostError", async () => {
  const gpu = await acquireGpu({ onWarning: false });
  const registry = new KernelRegistry(gpu);
  const tensor = uploadTensor(gpu, new Float32Array(1 << 16).fill(1), [1 << 16]);
  // Calls in flight when the device goes: each either finished before the loss was known, or
  // rejects with GpuDeviceLostError; none is left waiting.
  const watch = (work: Promise<unknown>) =>
    work.then(() => ({ fulfilledBeforeLoss: gpu.lostReason === undefined, error: undefined }))
      .catch((error: unknown) => ({ fulfilledBeforeLoss: false, error }));
  const pending = [
    watch(readF32(gpu, tensor)),
    watch(gpu.sync()),
    watch(registry.get({ file: "lost.wgsl", source: SOURCE })),
  ];
  gpu.device.destroy();
  for (const [i, outcome] of (await Promise.all(pending)).entries()) {
    if (outcome.fulfilledBeforeLoss) continue;
    assert.ok(outcome.error instanceof GpuDeviceLostError, `pending call ${i}: ${outcome.error}`);
  }
  assert.ok(gpu.lostReason);
  // And calls made afterwards.
  await assert.rejects(gpu.sync(), GpuDeviceLostError);
  await assert.rejects(readF32(gpu, tensor), GpuDeviceLostError);
  await assert.rejects(
    registry.get({ file: "lost.wgsl", source: SOURCE, entryPoint: "main", constants: {} }),
    GpuDeviceLostError,
  );
  gpu.memory.destroyAll();
});
