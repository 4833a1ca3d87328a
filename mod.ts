/**
 * templora: long text with Temp-Lora on WebGPU. This module exports the runtime (device, tensors,
 * kernel registry, recorder, readback) and the WGSL ops the model is built from.
 *
 * ```ts
 * import { acquireGpu, KernelRegistry, MatmulOp, Recorder, readF32, uploadTensor, createTensor } from "./mod.ts";
 * const gpu = await acquireGpu();
 * const registry = new KernelRegistry(gpu);
 * const rec = new Recorder(gpu);
 * const a = uploadTensor(gpu, new Float32Array([1, 2, 3, 4]), [2, 2]);
 * const c = createTensor(gpu, [2, 2]);
 * (await MatmulOp.create(registry)).record(rec, a, a, c);
 * rec.submit();
 * console.log(await readF32(gpu, c)); // [7, 10, 15, 22]
 * ```
 * @module
 */
export * from "./src/gpu/errors.ts";
export { acquireGpu, type AcquireGpuOptions, Gpu, type GpuCapabilities } from "./src/gpu/device.ts";
export { GpuMemory } from "./src/gpu/memory.ts";
export {
  createTensor,
  type DType,
  DTYPE_BYTES,
  elementCount,
  type HostArray,
  Tensor,
  TENSOR_USAGE,
  uploadTensor,
  writeTensor,
} from "./src/gpu/tensor.ts";
export { Kernel, KernelRegistry, type KernelSpec } from "./src/gpu/kernel.ts";
export type { BindingDecl, ConstantValue, ParamField } from "./src/gpu/wgsl_parse.ts";
export { type Params, Recorder } from "./src/gpu/recorder.ts";
export { readBytes, readF32, readU32 } from "./src/gpu/readback.ts";
export { CopyOp } from "./src/ops/copy.ts";
export { DEFAULT_TILES, type MatmulForm, MatmulOp, type MatmulTiles } from "./src/ops/matmul.ts";
export * from "./src/ops/attention.ts";
export * from "./src/ops/embedding.ts";
export * from "./src/ops/rmsnorm.ts";
export * from "./src/ops/rope.ts";
export * from "./src/ops/swiglu.ts";
