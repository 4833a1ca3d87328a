import { GpuLimitError, GpuUnavailableError } from "./errors.ts";
import { GpuMemory } from "./memory.ts";

/** What the adapter and device can do, read once at acquisition. */
export interface GpuCapabilities {
  /** Adapter description as the driver reports it (for example "llvmpipe (LLVM 15.0.6, 256 bits)"). */
  description: string;
  /** Vendor as the adapter reports it. */
  vendor: string;
  /** Architecture as the adapter reports it (often empty). */
  architecture: string;
  /** True for software adapters such as Mesa's llvmpipe. */
  isFallbackAdapter: boolean;
  /** `shader-f16` was requested and a shader using `f16` actually compiled. */
  shaderF16: boolean;
  /** Subgroup size range the adapter reports (0 when unknown). */
  /** Smallest subgroup size (0 when unknown). */
  subgroupMinSize: number;
  /** Largest subgroup size (0 when unknown). */
  subgroupMaxSize: number;
}

/** Options for {@link acquireGpu}. */
export interface AcquireGpuOptions {
  /** Passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /** Request `shader-f16` when the adapter has it (default true). */
  f16?: boolean;
}

/** A WebGPU device with the limits templora asked for, its capabilities and its memory accounting. */
export class Gpu {
  /** Accounting of every buffer made on this device. */
  readonly memory: GpuMemory;
  #lostReason: string | undefined;

  /** Wraps an opened device; use {@link acquireGpu} to get one. */
  constructor(
    readonly device: GPUDevice,
    readonly capabilities: GpuCapabilities,
  ) {
    this.memory = new GpuMemory(device);
    device.lost.then((info) => {
      this.#lostReason = `${info.reason}: ${info.message}`;
    });
  }

  /** The device's limits (raised to the adapter's maxima by {@link acquireGpu}). */
  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Why the device was lost, or undefined while it is alive. */
  get lostReason(): string | undefined {
    return this.#lostReason;
  }

  /** Throws {@link GpuLimitError} when a buffer of `bytes` cannot be bound as one storage binding. */
  checkBindingSize(bytes: number, what: string): void {
    const max = this.limits.maxStorageBufferBindingSize;
    if (bytes > max) {
      throw new GpuLimitError(
        `${what} needs a ${bytes}-byte storage binding; this adapter allows at most ${max} bytes`,
      );
    }
  }

  /** Waits until every submitted command has finished. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
  }

  /** Frees the device; every buffer made from it becomes invalid. */
  destroy(): void {
    this.memory.destroyAll();
    this.device.destroy();
  }
}

const HOW_TO_GET_ONE = "templora needs WebGPU. Use Deno 2.x; on a machine without a GPU, install " +
  "Mesa's software Vulkan driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`).";

/** Limits templora raises to whatever the adapter allows. */
const RAISED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
] as const;

const F16_PROBE = `
enable f16;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn main() { let h: f16 = f16(1.5); out[0] = f32(h * h); }`;

async function probeF16(device: GPUDevice): Promise<boolean> {
  device.pushErrorScope("validation");
  try {
    const module = device.createShaderModule({ code: F16_PROBE });
    device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  } catch {
    await device.popErrorScope();
    return false;
  }
  return (await device.popErrorScope()) === null;
}

/**
 * Finds a WebGPU adapter and opens a device with the limits raised to the adapter's maxima.
 * Throws {@link GpuUnavailableError}, saying how to get one, when there is none.
 */
export async function acquireGpu(options: AcquireGpuOptions = {}): Promise<Gpu> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new GpuUnavailableError(`navigator.gpu is not available. ${HOW_TO_GET_ONE}`);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference });
  } catch (cause) {
    throw new GpuUnavailableError(`requesting a WebGPU adapter failed. ${HOW_TO_GET_ONE}`, {
      cause,
    });
  }
  if (!adapter) throw new GpuUnavailableError(`no WebGPU adapter was found. ${HOW_TO_GET_ONE}`);

  // Read the adapter's info before requestDevice: some runtimes empty it afterwards.
  const info = adapter.info as GPUAdapterInfo & {
    isFallbackAdapter?: boolean;
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
  };
  const description = info.description || info.device || "unknown adapter";
  const isFallbackAdapter = Boolean(
    info.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
  );

  const requiredLimits: Record<string, number> = {};
  const adapterLimits = adapter.limits as unknown as Record<string, number>;
  for (const name of RAISED_LIMITS) {
    const value = adapterLimits[name];
    if (typeof value === "number") requiredLimits[name] = value;
  }
  const wantF16 = (options.f16 ?? true) && adapter.features.has("shader-f16");
  const requiredFeatures: GPUFeatureName[] = [];
  if (wantF16) requiredFeatures.push("shader-f16");

  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  } catch (cause) {
    throw new GpuUnavailableError(`the adapter "${description}" refused to open a device`, {
      cause,
    });
  }
  const shaderF16 = wantF16 && await probeF16(device);
  return new Gpu(device, {
    description,
    vendor: info.vendor,
    architecture: info.architecture,
    isFallbackAdapter,
    shaderF16,
    subgroupMinSize: info.subgroupMinSize ?? 0,
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
  });
}
