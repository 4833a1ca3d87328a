/** Base class of every error templora throws on purpose. */
export class TemploraError extends Error {
  /** Same as `Error`'s; the name is the subclass's. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

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
