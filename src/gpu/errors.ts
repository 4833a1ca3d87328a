import { TemploraError } from "../core/errors.ts";

export { TemploraError };

/** No WebGPU in this runtime, or no adapter could be had. */
export class GpuUnavailableError extends TemploraError {}

/** A request went past what the adapter allows (buffer size, binding size, workgroup size). */
export class GpuLimitError extends TemploraError {}

/** One compiler message about a shader, placed in the file and line it is about. */
export interface ShaderDiagnostic {
  /** The shader file the message is about: the kernel's own, or a file it includes. */
  file: string;
  /** 1-based line in that file. */
  line: number;
  /** 1-based column (in UTF-16 code units, as WebGPU reports it). */
  column: number;
  /** "error", "warning" or "info". */
  type: string;
  /** The compiler's message, first line. */
  message: string;
  /** `file:line:column`, with the include chain: "reduce.wgsl:9:3 (included from rmsnorm.wgsl:19)". */
  where: string;
  /** The offending line as compiled (after specialisation). */
  sourceLine: string;
  /** Length of the offending span, when the compiler says. */
  length?: number;
}

/**
 * A WGSL shader failed to compile or a pipeline failed validation; `diagnostics` has the compiler's
 * messages, placed in the shader files (an included file's own name and lines, not the spliced text).
 */
export class ShaderCompileError extends TemploraError {
  /** Creates the error; `diagnostics` are empty for problems found before compiling. */
  constructor(message: string, readonly diagnostics: readonly ShaderDiagnostic[] = []) {
    super(message);
  }
}

/** A kernel was dispatched with bindings or parameters that do not match its declaration. */
export class KernelUsageError extends TemploraError {}

/** Shapes or dtypes that do not fit together. */
export class ShapeError extends TemploraError {}

/**
 * The GPU device was lost (a driver reset, the GPU taken away, or the device destroyed):
 * everything on it is gone, and only a newly acquired device can run work again.
 */
export class GpuDeviceLostError extends TemploraError {
  /** `reason`: what the device's `lost` promise said. */
  constructor(readonly reason: string, options?: ErrorOptions) {
    super(`the GPU device was lost (${reason})`, options);
  }
}
