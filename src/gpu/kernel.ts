import type { Gpu } from "./device.ts";
import {
  GpuDeviceLostError,
  KernelUsageError,
  ShaderCompileError,
  type ShaderDiagnostic,
} from "./errors.ts";
import {
  type BindingDecl,
  bindingsUsedBy,
  type ConstantValue,
  describeLine,
  type ExpandedSource,
  expandIncludes,
  type ParamField,
  parseParamStruct,
  specialise,
} from "./wgsl_parse.ts";
import { unrollLoops } from "./wgsl_unroll.ts";

/** What identifies a compiled kernel: a shader file, an entry point and its constants. */
export interface KernelSpec {
  /** Name of the shader file, for messages and the cache key (e.g. "matmul.wgsl"). */
  file: string;
  /** WGSL source, usually a text import of shaders/<file>. */
  source: string;
  /**
   * Shader files its `//!include "name"` lines may name, by name (the ops' shared snippets). The
   * cache key does not see them: one file name stands for one source and one set of includes.
   */
  includes?: Readonly<Record<string, string>>;
  /** Entry point name (default "main"). */
  entryPoint?: string;
  /** Values for the shader's `override` declarations (tile sizes, workgroup sizes, flags). */
  constants?: Record<string, ConstantValue>;
}

/**
 * A compiled compute pipeline with an explicit layout: its storage bindings by name, and an
 * optional uniform parameter struct bound with a dynamic offset into the recorder's slab.
 */
export class Kernel {
  /** Cache key, used as the pipeline label and in messages. */
  readonly label: string;
  /** Storage bindings the entry point uses. */
  readonly storage: BindingDecl[];
  /** The uniform parameter binding, if any. */
  readonly uniform: BindingDecl | undefined;
  /** Fields of the uniform parameter struct, in order. */
  readonly params: ParamField[];
  /** Bytes of the uniform struct, rounded up to 16. */
  readonly paramBytes: number;

  /** Made by {@link KernelRegistry.get}. */
  constructor(
    readonly id: number,
    readonly pipeline: GPUComputePipeline,
    readonly layout: GPUBindGroupLayout,
    bindings: BindingDecl[],
    params: ParamField[],
    label: string,
  ) {
    this.label = label;
    this.storage = bindings.filter((b) => b.kind !== "uniform");
    this.uniform = bindings.find((b) => b.kind === "uniform");
    this.params = params;
    this.paramBytes = Math.max(16, Math.ceil(params.length * 4 / 16) * 16);
  }
}

/** Compiles kernels once and caches them by (file, entry point, constants). */
export class KernelRegistry {
  #cache = new Map<string, Promise<Kernel>>();
  #nextId = 1;

  /** A registry compiling for `gpu`. */
  constructor(readonly gpu: Gpu) {}

  /** Number of distinct kernels compiled so far. */
  get size(): number {
    return this.#cache.size;
  }

  /**
   * The compiled kernel for a spec; compile errors reject with {@link ShaderCompileError}, and
   * every call once the device is lost with {@link GpuDeviceLostError}.
   */
  get(spec: KernelSpec): Promise<Kernel> {
    if (this.gpu.lostReason) return Promise.reject(new GpuDeviceLostError(this.gpu.lostReason));
    const entryPoint = spec.entryPoint ?? "main";
    const constants = spec.constants ?? {};
    const key = `${spec.file}#${entryPoint}#${
      Object.keys(constants).sort().map((k) => `${k}=${constants[k]}`).join(",")
    }`;
    let kernel = this.#cache.get(key);
    if (!kernel) {
      kernel = this.#compile(spec, entryPoint, constants, key);
      this.#cache.set(key, kernel);
      kernel.catch(() => this.#cache.delete(key));
    }
    return kernel;
  }

  async #compile(
    spec: KernelSpec,
    entryPoint: string,
    constants: Record<string, ConstantValue>,
    label: string,
  ): Promise<Kernel> {
    const { file } = spec;
    const expanded = expandIncludes(file, spec.source, spec.includes);
    const code = unrollLoops(specialise(expanded.code, constants, file), file);
    const bindings = bindingsUsedBy(code, entryPoint, file);
    const uniforms = bindings.filter((b) => b.kind === "uniform");
    if (uniforms.length > 1) throw new KernelUsageError(`${label}: at most one uniform binding`);
    const params = uniforms.length ? parseParamStruct(code, uniforms[0].type, file) : [];
    const device = this.gpu.device;
    // The scope is popped before anything is awaited, so that kernels compiled concurrently never
    // see each other's errors; the pipeline is made asynchronously (what browsers prefer: no
    // stall while the driver compiles) and reports its own errors by rejecting.
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code, label });
    const layout = device.createBindGroupLayout({
      label,
      entries: bindings.map((b) => ({
        binding: b.binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: b.kind === "uniform"
          ? { type: "uniform", hasDynamicOffset: true, minBindingSize: params.length * 4 }
          : { type: b.kind },
      })),
    });
    const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [layout] });
    const scope = device.popErrorScope();
    let pipeline: GPUComputePipeline | undefined;
    let pipelineError: unknown;
    try {
      pipeline = await this.gpu.guard(
        device.createComputePipelineAsync({
          label,
          layout: pipelineLayout,
          compute: { module, entryPoint },
        }),
      );
    } catch (e) {
      if (e instanceof GpuDeviceLostError) throw e;
      pipelineError = e;
    }
    const error = await this.gpu.guard(scope);
    if (error || pipelineError || !pipeline) {
      const info = await this.gpu.guard(module.getCompilationInfo());
      const diagnostics = info.messages.map((m) => diagnosticOf(m, expanded, code));
      const reason = error?.message ??
        (pipelineError instanceof Error ? pipelineError.message : String(pipelineError));
      throw new ShaderCompileError(
        `${label} failed to compile: ${
          diagnostics.length ? diagnostics.map(formatDiagnostic).join("\n") : reason
        }`,
        diagnostics,
      );
    }
    return new Kernel(this.#nextId++, pipeline, layout, bindings, params, label);
  }
}

/** A compiler message, placed in the file and line it is about. */
function diagnosticOf(
  message: GPUCompilationMessage,
  expanded: ExpandedSource,
  code: string,
): ShaderDiagnostic {
  const origin = expanded.origins[message.lineNum - 1];
  const sourceLine = code.split("\n")[message.lineNum - 1] ?? "";
  return {
    file: origin?.file ?? "?",
    line: origin?.line ?? message.lineNum,
    column: message.linePos,
    type: message.type,
    message: firstLine(message.message),
    where: origin ? describeLine(origin, message.linePos) : `?:${message.lineNum}`,
    sourceLine,
    length: message.length,
  };
}

/**
 * The compiler's own words without its rendering of the code (naga draws the offending line with
 * line numbers of the expanded text, which would point at the wrong file): the first non-blank line.
 */
function firstLine(text: string): string {
  return text.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? "";
}

function formatDiagnostic(d: ShaderDiagnostic): string {
  const caret = " ".repeat(Math.max(0, d.column - 1)) + "^".repeat(Math.max(1, d.length ?? 1));
  return `\n  ${d.where} ${d.type}: ${d.message}\n    ${d.sourceLine}\n    ${caret}`;
}
