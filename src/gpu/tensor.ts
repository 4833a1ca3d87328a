import { ShapeError } from "./errors.ts";
import type { Gpu } from "./device.ts";
import { PORTABLE_OFFSET_ALIGNMENT } from "./recorder.ts";

/** Element types a tensor can hold. */
export type DType = "f32" | "f16" | "u32" | "i32";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, u32: 4, i32: 4 };

/** Usage every tensor buffer gets: bindable as storage, copyable both ways. */
export const TENSOR_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** Number of elements of a shape. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`bad dimension ${d} in [${shape}]`);
    n *= d;
  }
  return n;
}

/**
 * A typed, shaped view of a GPU buffer: row-major, contiguous, starting at `byteOffset`.
 * A tensor that owns its buffer frees it in {@link Tensor.destroy}; a view never does.
 */
export class Tensor {
  /** Number of elements. */
  readonly size: number;

  /** Wraps `buffer` from `byteOffset`; pass `owner` to let {@link Tensor.destroy} free it. */
  constructor(
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType = "f32",
    readonly byteOffset = 0,
    readonly owner?: Gpu,
  ) {
    this.size = elementCount(shape);
    if (byteOffset + this.byteLength > buffer.size) {
      throw new ShapeError(
        `tensor [${shape}] ${dtype} at byte ${byteOffset} overruns its ${buffer.size}-byte buffer`,
      );
    }
  }

  /** Bytes the elements occupy (f16 data is padded to whole 4-byte words when bound). */
  get byteLength(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  /** Bytes to bind: the element bytes rounded up to a multiple of 4, at least 4. */
  get bindingSize(): number {
    return Math.max(4, Math.ceil(this.byteLength / 4) * 4);
  }

  /** A view of the same elements with another shape. */
  reshape(shape: readonly number[]): Tensor {
    if (elementCount(shape) !== this.size) {
      throw new ShapeError(`cannot reshape [${this.shape}] to [${shape}]`);
    }
    return new Tensor(this.buffer, shape, this.dtype, this.byteOffset);
  }

  /** A view of rows [start, start + count) along the first dimension. */
  rows(start: number, count: number): Tensor {
    const [n, ...rest] = this.shape;
    if (start < 0 || count < 0 || start + count > n) {
      throw new ShapeError(`rows [${start}, ${start + count}) out of range for [${this.shape}]`);
    }
    const rowBytes = elementCount(rest) * DTYPE_BYTES[this.dtype];
    return new Tensor(
      this.buffer,
      [count, ...rest],
      this.dtype,
      this.byteOffset + start * rowBytes,
    );
  }

  /** Frees the buffer if this tensor owns it. */
  destroy(): void {
    this.owner?.memory.destroy(this.buffer);
  }
}

/** Elements of an f32 tensor of `shape`, rounded up to the portable binding alignment. */
function paddedElements(shape: readonly number[]): number {
  const align = PORTABLE_OFFSET_ALIGNMENT / DTYPE_BYTES.f32;
  return Math.ceil(elementCount(shape) / align) * align;
}

/**
 * Elements a buffer of f32 tensors of `shapes` takes, one after another, each starting on the
 * portable binding alignment. Each can then be bound on its own, and a kernel can reach several
 * through one binding (lora.ts runs the products of a layer's projections so).
 */
export function slotElements(shapes: readonly (readonly number[])[]): number {
  return shapes.reduce((sum, shape) => sum + paddedElements(shape), 0);
}

/** The tensors of `shapes` in `whole` (at least slotElements(shapes) elements), in order. */
export function slotViews(whole: Tensor, shapes: readonly (readonly number[])[]): Tensor[] {
  let at = whole.byteOffset;
  return shapes.map((shape) => {
    const view = new Tensor(whole.buffer, shape, "f32", at);
    at += paddedElements(shape) * DTYPE_BYTES.f32;
    return view;
  });
}

/** Whether two tensors share bytes (of one buffer). */
export function tensorsOverlap(a: Tensor, b: Tensor): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.bindingSize &&
    b.byteOffset < a.byteOffset + a.bindingSize;
}

/**
 * One f32 view of a buffer from the first byte of `tensors` to their last (all of them in that
 * buffer): a binding through which a kernel reaches each of them at its own element offset.
 */
export function spanView(tensors: readonly Tensor[]): Tensor {
  const start = Math.min(...tensors.map((t) => t.byteOffset));
  const end = Math.max(...tensors.map((t) => t.byteOffset + t.bindingSize));
  if (tensors.some((t) => t.buffer !== tensors[0].buffer)) {
    throw new ShapeError("a span of tensors must lie in one buffer");
  }
  return new Tensor(tensors[0].buffer, [(end - start) / 4], "f32", start);
}

/** Makes a tensor with its own buffer, contents undefined (zero on WebGPU). */
export function createTensor(
  gpu: Gpu,
  shape: readonly number[],
  dtype: DType = "f32",
  label?: string,
): Tensor {
  const bytes = elementCount(shape) * DTYPE_BYTES[dtype];
  gpu.checkBindingSize(bytes, label ?? `tensor [${shape}]`);
  const buffer = gpu.memory.create(bytes, TENSOR_USAGE, label);
  return new Tensor(buffer, shape, dtype, 0, gpu);
}

/** Host data a tensor can be filled from (f16 as raw Uint16 bits). */
export type HostArray = Float32Array | Uint32Array | Int32Array | Uint16Array;

/** Makes a tensor and fills it from host data (f16 data is given as raw Uint16 bits). */
export function uploadTensor(
  gpu: Gpu,
  data: HostArray,
  shape: readonly number[],
  dtype: DType = data instanceof Uint32Array
    ? "u32"
    : data instanceof Int32Array
    ? "i32"
    : data instanceof Uint16Array
    ? "f16"
    : "f32",
  label?: string,
): Tensor {
  if (data.length !== elementCount(shape)) {
    throw new ShapeError(`${data.length} values do not fill shape [${shape}]`);
  }
  const tensor = createTensor(gpu, shape, dtype, label);
  writeTensor(gpu, tensor, data);
  return tensor;
}

/** Overwrites a tensor's elements with host data (queued; ordered before later submits). */
export function writeTensor(gpu: Gpu, tensor: Tensor, data: HostArray): void {
  if (data.byteLength !== tensor.byteLength) {
    throw new ShapeError(`${data.byteLength} bytes do not fill tensor [${tensor.shape}]`);
  }
  let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength) as Uint8Array<
    ArrayBuffer
  >;
  if (bytes.byteLength % 4 !== 0) {
    const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
    padded.set(bytes);
    bytes = padded;
  }
  gpu.device.queue.writeBuffer(tensor.buffer, tensor.byteOffset, bytes);
}
