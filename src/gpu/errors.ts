import { TemploraError } from "../core/errors.ts";

export { TemploraError };

/** No WebGPU in this runtime, or no adapter could be had. */
export class GpuUnavailableError extends TemploraError {}

/** A request went past what the adapter allows (buffer size, binding size, workgroup size). */
export class GpuLimitError extends TemploraError {}

/** A WGSL shader failed to compile or a pipeline failed validation. */
export class ShaderCompileError extends TemploraError {}

/** A kernel was dispatched with bindings or parameters that do not match its declaration. */
export class KernelUsageError extends TemploraError {}

/** Shapes or dtypes that do not fit together. */
export class ShapeError extends TemploraError {}
