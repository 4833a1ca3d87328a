import { GpuDeviceLostError, GpuLimitError, GpuUnavailableError } from "./errors.ts";
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
  /**
   * The graphics API under WebGPU: "primary" for Vulkan, Metal or Direct3D 12, "gl" for the
   * OpenGL fallback (its shaders compile far more slowly), "unknown" where it cannot be told
   * (outside Deno, without permission to read and set environment variables, or when
   * DENO_WEBGPU_BACKEND names several kinds).
   */
  backend: GpuBackend;
  /** `shader-f16` was requested and a shader using `f16` actually compiled. */
  shaderF16: boolean;
  /** `timestamp-query` is enabled, so dispatches can be timed (see `DispatchProfiler`). */
  timestampQuery: boolean;
  /** Smallest subgroup size (0 when unknown). */
  subgroupMinSize: number;
  /** Largest subgroup size (0 when unknown). */
  subgroupMaxSize: number;
}

/** The kind of graphics API a WebGPU adapter runs on; see {@link GpuCapabilities.backend}. */
export type GpuBackend = "primary" | "gl" | "unknown";

/** Options for {@link acquireGpu}. */
export interface AcquireGpuOptions {
  /** Passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /** Request `shader-f16` when the adapter has it (default true). */
  f16?: boolean;
  /**
   * Refuse an OpenGL fallback adapter and software adapters (Mesa's llvmpipe) with a
   * {@link GpuUnavailableError} instead of running on them (default false).
   */
  requireGpu?: boolean;
  /**
   * Receives the one-line warning given when only an OpenGL fallback adapter is found. By
   * default it is printed on stderr, once per process; false drops it.
   */
  onWarning?: ((message: string) => void) | false;
}

/** A WebGPU device with the limits templora asked for, its capabilities and its memory accounting. */
export class Gpu {
  /** Accounting of every buffer made on this device. */
  readonly memory: GpuMemory;
  #lostReason: string | undefined;
  /** Rejects with a GpuDeviceLostError when the device is lost (never resolves). */
  readonly #lost: Promise<never>;

  /** Wraps an opened device; use {@link acquireGpu} to get one. */
  constructor(
    readonly device: GPUDevice,
    readonly capabilities: GpuCapabilities,
  ) {
    this.memory = new GpuMemory(device);
    this.#lost = device.lost.then((info) => {
      this.#lostReason = `${info.reason}: ${info.message}`;
      throw new GpuDeviceLostError(this.#lostReason);
    });
    this.#lost.catch(() => {}); // observed through guard(); never an unhandled rejection
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

  /**
   * `work` (a pending WebGPU call: a map, a pipeline, a queue wait), or a
   * {@link GpuDeviceLostError} as soon as the device is lost, whichever comes first: a lost
   * device never leaves a caller waiting on a promise that will not settle.
   */
  guard<T>(work: Promise<T>): Promise<T> {
    if (this.#lostReason) {
      work.catch(() => {});
      return Promise.reject(new GpuDeviceLostError(this.#lostReason));
    }
    return Promise.race([work, this.#lost]);
  }

  /** Waits until every submitted command has finished (GpuDeviceLostError if the device is lost). */
  async sync(): Promise<void> {
    await this.guard(this.device.queue.onSubmittedWorkDone());
  }

  /** Frees the device; every buffer made from it becomes invalid. */
  destroy(): void {
    this.memory.destroyAll();
    this.device.destroy();
  }
}

const HOW_TO_GET_ONE = typeof Deno === "undefined"
  ? "templora needs WebGPU: use a browser that has it (Chrome or Edge 113 and later, Safari 26), " +
    "on a page served over https or from localhost."
  : "templora needs WebGPU. Use Deno 2.x; on a machine without a GPU, install " +
    "Mesa's software Vulkan driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`).";

const INSTALL_VULKAN = "install the GPU's Vulkan driver, or on a machine without a GPU Mesa's " +
  "software one (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)";

/** The backends Deno's WebGPU is asked for first (wgpu's names, as DENO_WEBGPU_BACKEND takes). */
const PRIMARY_BACKENDS = "vulkan,metal,dx12";

/** The kind DENO_WEBGPU_BACKEND selects, as wgpu reads its comma-separated list. */
export function backendOfSetting(setting: string): GpuBackend {
  const names = setting.toLowerCase().split(",").map((n) => n.trim()).filter(Boolean);
  const primary = names.filter((n) =>
    ["vulkan", "vk", "metal", "mtl", "dx12", "d3d12"].includes(n)
  );
  const gl = names.filter((n) => ["gl", "gles", "opengl"].includes(n));
  if (primary.length > 0 && gl.length === 0) return "primary";
  if (gl.length > 0 && primary.length === 0) return "gl";
  return "unknown";
}

/** Runs in a worker: is there an adapter on the backends DENO_WEBGPU_BACKEND names? */
const PROBE_WORKER = `
const adapter = await navigator.gpu?.requestAdapter().catch(() => null);
self.postMessage(Boolean(adapter));
self.close();`;

/** Whether a worker (its own WebGPU instance) finds an adapter; null when it cannot tell. */
async function workerFindsAdapter(): Promise<boolean | null> {
  let url: string | undefined;
  let worker: Worker | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    url = URL.createObjectURL(new Blob([PROBE_WORKER], { type: "application/javascript" }));
    const w = worker = new Worker(url, { type: "module" });
    return await new Promise<boolean | null>((resolve) => {
      w.onmessage = (event) => resolve(event.data === true);
      w.onerror = (event) => {
        event.preventDefault();
        resolve(null);
      };
      timer = setTimeout(() => resolve(null), 20_000);
    });
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
    worker?.terminate();
    if (url) URL.revokeObjectURL(url);
  }
}

function envGranted(): boolean {
  try {
    return Deno.permissions.querySync({ name: "env" }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Prepares the environment for an adapter request and says which backend it will use. Deno
 * reads DENO_WEBGPU_BACKEND once, when its instance is made, so on the first request a worker
 * (which gets an instance of its own) asks whether Vulkan, Metal or Direct3D 12 has an adapter:
 * if so the main instance is limited to those, else it is left to fall back to OpenGL; later
 * requests get the same answer. XDG_RUNTIME_DIR, when unset, points at a private empty folder
 * during every request (adapters are enumerated again after a device is lost): the Wayland
 * support of Mesa's Vulkan driver looks for a display there and otherwise prints "error:
 * XDG_RUNTIME_DIR is invalid or not set" twice on stderr. `restore` puts both variables back and
 * removes the folder.
 */
async function prepareRequest(): Promise<{ backend: GpuBackend; restore: () => void }> {
  if (typeof Deno === "undefined" || !envGranted()) return { backend: "unknown", restore() {} };
  const undo: (() => void)[] = [];
  const restore = () => undo.reverse().forEach((f) => f());
  if (!Deno.env.get("XDG_RUNTIME_DIR")) {
    try {
      const dir = Deno.makeTempDirSync({ prefix: "templora-runtime-" });
      Deno.env.set("XDG_RUNTIME_DIR", dir);
      undo.push(() => {
        Deno.env.delete("XDG_RUNTIME_DIR");
        try {
          Deno.removeSync(dir, { recursive: true });
        } catch { /* already gone */ }
      });
    } catch { /* no write permission: the notice stays */ }
  }
  instanceBackend ??= await chooseBackend(undo);
  return { backend: instanceBackend, restore };
}

/** The backend of this module's first request, once known. */
let instanceBackend: GpuBackend | undefined;

/** See {@link prepareRequest}; what must be undone afterwards is pushed on `undo`. */
async function chooseBackend(undo: (() => void)[]): Promise<GpuBackend> {
  const chosen = Deno.env.get("DENO_WEBGPU_BACKEND");
  if (chosen) return backendOfSetting(chosen);
  Deno.env.set("DENO_WEBGPU_BACKEND", PRIMARY_BACKENDS);
  undo.push(() => Deno.env.delete("DENO_WEBGPU_BACKEND"));
  const primary = await workerFindsAdapter();
  if (primary === true) return "primary";
  // No Vulkan, Metal or Direct3D 12 adapter (or no way to tell): let every backend answer.
  Deno.env.delete("DENO_WEBGPU_BACKEND");
  return primary === false ? "gl" : "unknown";
}

let warned = false;

function warnOnce(message: string): void {
  if (warned) return;
  warned = true;
  console.error(`templora: warning: ${message}`);
}

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
  const module = device.createShaderModule({ code: F16_PROBE });
  const moduleError = device.popErrorScope();
  try {
    await device.createComputePipelineAsync({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
  } catch {
    await moduleError;
    return false;
  }
  return (await moduleError) === null;
}

/** What adapters report about themselves (older browsers have `requestAdapterInfo()` instead). */
type AdapterInfo = Partial<GPUAdapterInfo> & {
  isFallbackAdapter?: boolean;
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
};

async function adapterInfo(adapter: GPUAdapter): Promise<AdapterInfo> {
  const withInfo = adapter as GPUAdapter & {
    info?: AdapterInfo;
    requestAdapterInfo?: () => Promise<AdapterInfo>;
  };
  if (withInfo.info) return withInfo.info;
  try {
    return (await withInfo.requestAdapterInfo?.()) ?? {};
  } catch {
    return {};
  }
}

/**
 * Finds a WebGPU adapter and opens a device with the limits raised to the adapter's maxima.
 * In Deno an adapter on Vulkan, Metal or Direct3D 12 is preferred; when only the OpenGL fallback
 * has one, it is used with a warning (see {@link AcquireGpuOptions.onWarning}), or refused with
 * `requireGpu`. Throws {@link GpuUnavailableError}, saying how to get one, when there is none.
 */
export async function acquireGpu(options: AcquireGpuOptions = {}): Promise<Gpu> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new GpuUnavailableError(`navigator.gpu is not available. ${HOW_TO_GET_ONE}`);
  let adapter: GPUAdapter | null;
  const instance = await prepareRequest();
  try {
    adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference });
  } catch (cause) {
    throw new GpuUnavailableError(`requesting a WebGPU adapter failed. ${HOW_TO_GET_ONE}`, {
      cause,
    });
  } finally {
    instance.restore();
  }
  if (!adapter) throw new GpuUnavailableError(`no WebGPU adapter was found. ${HOW_TO_GET_ONE}`);

  // Read the adapter's info before requestDevice: some runtimes empty it afterwards.
  const info = await adapterInfo(adapter);
  const description = info.description || info.device ||
    [info.vendor, info.architecture].filter(Boolean).join(" ") || "unknown adapter";
  const isFallbackAdapter = Boolean(
    info.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
  );
  const { backend } = instance;
  if (backend === "gl") {
    const found = `only an OpenGL adapter was found ("${description}")`;
    if (options.requireGpu) {
      throw new GpuUnavailableError(
        `${found}, not a GPU through Vulkan, Metal or Direct3D 12; install the GPU's driver ` +
          "for one of those",
      );
    }
    const warning = `${found}: through OpenGL, shaders compile far more slowly than through ` +
      `Vulkan (a first run can stall for minutes until Mesa's shader cache holds them) and ` +
      `without f16; ${INSTALL_VULKAN}`;
    if (options.onWarning) options.onWarning(warning);
    else if (options.onWarning !== false) warnOnce(warning);
  } else if (options.requireGpu && isFallbackAdapter) {
    throw new GpuUnavailableError(
      `only a software adapter was found ("${description}", which runs on the CPU), not a GPU; ` +
        "install the GPU's Vulkan, Metal or Direct3D 12 driver",
    );
  }

  const requiredLimits: Record<string, number> = {};
  const adapterLimits = adapter.limits as unknown as Record<string, number>;
  for (const name of RAISED_LIMITS) {
    const value = adapterLimits[name];
    if (typeof value === "number") requiredLimits[name] = value;
  }
  const wantF16 = (options.f16 ?? true) && adapter.features.has("shader-f16");
  const requiredFeatures: GPUFeatureName[] = [];
  if (wantF16) requiredFeatures.push("shader-f16");
  // Timing dispatches (DispatchProfiler) needs it; asking for it costs nothing where it exists.
  const timestampQuery = adapter.features.has("timestamp-query");
  if (timestampQuery) requiredFeatures.push("timestamp-query");

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
    vendor: info.vendor ?? "",
    architecture: info.architecture ?? "",
    isFallbackAdapter,
    backend,
    shaderF16,
    timestampQuery,
    subgroupMinSize: info.subgroupMinSize ?? 0,
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
  });
}
