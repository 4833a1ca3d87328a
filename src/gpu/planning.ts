import { Gpu } from "./device.ts";

/** Limits a planning device reports; unset ones are WebGPU's defaults or generous. */
export type PlanningLimits = Partial<
  Pick<GPUSupportedLimits, "maxBufferSize" | "maxStorageBufferBindingSize">
>;

/**
 * A device that allocates nothing: buffers are placeholders of the asked size, writes are
 * dropped, and its memory accounting counts what the same code would allocate on a real device.
 * Used to plan memory for models too large to build here; no kernel can run on it.
 */
export function planningGpu(limits: PlanningLimits = {}): Gpu {
  const all = {
    maxBufferSize: 2 ** 52,
    maxStorageBufferBindingSize: 2 ** 52,
    ...limits,
  };
  const device = {
    limits: all,
    lost: new Promise<never>(() => {}),
    createBuffer: ({ size, usage, label }: GPUBufferDescriptor) => ({
      size,
      usage,
      label: label ?? "",
      destroy() {},
    }),
    queue: { writeBuffer() {}, submit() {}, onSubmittedWorkDone: () => Promise.resolve() },
    destroy() {},
  } as unknown as GPUDevice;
  return new Gpu(device, {
    description: "planning (allocates nothing)",
    vendor: "",
    architecture: "",
    isFallbackAdapter: false,
    backend: "unknown",
    shaderF16: false,
    timestampQuery: false,
    subgroupMinSize: 0,
    subgroupMaxSize: 0,
  });
}
