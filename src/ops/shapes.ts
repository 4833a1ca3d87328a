/**
 * Argument checks and dispatch grids shared by the op wrappers in src/ops. Each kind of fault has
 * one error type:
 *
 * - {@link ShapeError}: a tensor does not fit: its dtype, rank or an extent is wrong for the op or
 *   next to the other tensors of the call. That includes a tensor smaller than the sizes the call
 *   implies (a KV cache shorter than past + tokens) and extents the kernels cannot take (a width
 *   that is not a multiple of 4).
 * - {@link KernelUsageError}: a number argument is outside its domain (not an integer, not a u32,
 *   negative, not finite), a window the caller chose (an offset and a count, a first row and a
 *   number of rows) runs past the tensor it indexes, or an op is used in a way it was not built
 *   for (f16 weights on an op compiled without them).
 * - {@link GpuLimitError}: a valid call needs more than the adapter gives one dispatch.
 *
 * Messages start with the op ("rmsnorm forward: "), name the tensor or argument, and say what was
 * expected and what came: `rmsnorm forward: weight must be f32 [64], got f32 [32]`.
 */
import { GpuLimitError, KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { DType, Tensor } from "../gpu/tensor.ts";

/** One dimension of an expected shape: the extent it must have, or a name for any extent. */
export type Dim = number | string;

/** The dtype a tensor must have, or the dtypes it may have. */
export type DTypes = DType | readonly DType[];

/** How messages show a tensor: `f32 [3, 64]`. */
export function describeTensor(t: Tensor): string {
  return `${t.dtype} [${t.shape.join(", ")}]`;
}

function dtypesText(dtype: DTypes): string {
  return typeof dtype === "string" ? dtype : dtype.join(" or ");
}

function hasDtype(t: Tensor, dtype: DTypes): boolean {
  return typeof dtype === "string" ? t.dtype === dtype : dtype.includes(t.dtype);
}

function shapeFault(op: string, name: string, expected: string, t: Tensor): ShapeError {
  return new ShapeError(`${op}: ${name} must be ${expected}, got ${describeTensor(t)}`);
}

/**
 * Checks that `t` has `dtype` and exactly the dimensions `dims`: a number must match, a name
 * matches any extent and labels it in the message. Returns the tensor's extents.
 */
export function expectShape(
  op: string,
  name: string,
  t: Tensor,
  dtype: DTypes,
  dims: readonly Dim[],
): readonly number[] {
  const fits = hasDtype(t, dtype) && t.shape.length === dims.length &&
    dims.every((d, i) => typeof d === "string" || t.shape[i] === d);
  if (!fits) throw shapeFault(op, name, `${dtypesText(dtype)} [${dims.join(", ")}]`, t);
  return t.shape;
}

/** Checks that `t` has `dtype` and `count` elements in any shape (a vector, or one row of one). */
export function expectSize(
  op: string,
  name: string,
  t: Tensor,
  dtype: DTypes,
  count: number,
): void {
  if (!hasDtype(t, dtype) || t.size !== count) {
    throw shapeFault(op, name, `${dtypesText(dtype)} with ${count} elements`, t);
  }
}

/**
 * `t` seen as [rows, width]: its last dimension is the width and the leading ones fold into rows
 * (a vector is one row). Checks the dtype and that `t` has at least one dimension.
 */
export function expectRows(op: string, name: string, t: Tensor, dtype: DTypes): [number, number] {
  if (!hasDtype(t, dtype) || t.shape.length === 0) {
    throw shapeFault(op, name, `${dtypesText(dtype)} [..., width]`, t);
  }
  const width = t.shape[t.shape.length - 1];
  return [width === 0 ? 0 : t.size / width, width];
}

/** Checks that `t` has `dtype`, whatever its shape. */
export function expectDtype(op: string, name: string, t: Tensor, dtype: DTypes): void {
  if (!hasDtype(t, dtype)) throw shapeFault(op, name, dtypesText(dtype), t);
}

/** Checks that `extent`, an extent of `t` called `extentName`, is at least 1. */
export function expectPositive(
  op: string,
  name: string,
  t: Tensor,
  extentName: string,
  extent: number,
): void {
  if (!(extent >= 1)) {
    throw new ShapeError(
      `${op}: ${name} ${describeTensor(t)}: ${extentName} = ${extent} must be positive`,
    );
  }
}

/** Checks that `extent`, an extent of `t` called `extentName`, is a multiple of `factor`. */
export function expectMultiple(
  op: string,
  name: string,
  t: Tensor,
  extentName: string,
  extent: number,
  factor: number,
): void {
  if (extent % factor !== 0) {
    throw new ShapeError(
      `${op}: ${name} ${describeTensor(t)}: ${extentName} = ${extent} must be a multiple of ` +
        `${factor}`,
    );
  }
}

/** Throws a {@link KernelUsageError} `op: name must be <requirement>, got <value>` unless `ok`. */
export function expectArgument(
  op: string,
  name: string,
  ok: boolean,
  requirement: string,
  value: unknown,
): void {
  if (!ok) throw new KernelUsageError(`${op}: ${name} must be ${requirement}, got ${value}`);
}

/** Whether `value` is an integer in [0, 2^32): what a u32 kernel parameter can hold. */
export function isU32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffffffff;
}

/** Checks that `value` is a u32 (an integer in [0, 2^32)). */
export function expectU32(op: string, name: string, value: number): void {
  expectArgument(op, name, isU32(value), "a u32", value);
}

/**
 * Checks a window the caller chose: `start` and `count` non-negative integers with
 * start + count <= length, the `length` elements (or rows: `unit`) of what it indexes.
 */
export function expectWindow(
  op: string,
  name: string,
  start: number,
  count: number,
  length: number,
  unit: string,
): void {
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0) {
    throw new KernelUsageError(`${op}: ${name} starts at ${start} with ${count} ${unit}`);
  }
  if (start + count > length) {
    throw new KernelUsageError(
      `${op}: ${name} [${start}, ${start + count}) runs past the ${length} ${unit}`,
    );
  }
}

/**
 * The grid for `groups` workgroups in a row: x up to the adapter's per-dimension limit, the rest
 * spilling into y. A shader gets the flat index back as `wid.y * x + wid.x` (x passed as a
 * parameter) and skips indexes past `groups`, a workgroup-uniform early return.
 */
export function splitGrid(rec: Recorder, groups: number): [number, number] {
  const max = rec.gpu.limits.maxComputeWorkgroupsPerDimension;
  const x = Math.max(1, Math.min(groups, max));
  const y = Math.ceil(groups / x);
  if (y > max) {
    throw new GpuLimitError(`${groups} workgroups exceed this adapter's ${max} x ${max} grid`);
  }
  return [x, y];
}

/** A 1-D grid-stride dispatch over `items`: its workgroup count and the stride between passes. */
export interface StrideGrid {
  /** Workgroups, between 1 and the cap. */
  groups: number;
  /** Invocations in the whole grid: each handles items i, i + stride, i + 2 stride, ... */
  stride: number;
}

/** The grid-stride dispatch for `items` with `workgroupSize` invocations a group, at most `maxGroups`. */
export function strideGrid(items: number, workgroupSize: number, maxGroups: number): StrideGrid {
  const groups = Math.max(1, Math.min(maxGroups, Math.ceil(items / workgroupSize)));
  return { groups, stride: groups * workgroupSize };
}

/**
 * The kind of adapter a kernel's tile and workgroup sizes are chosen for: "fallback" for software
 * adapters (llvmpipe, SwiftShader: a workgroup is one CPU thread's SIMD loop and a barrier a
 * coroutine switch), "integrated" for GPUs that share the CPU's memory (by vendor: Intel, Apple,
 * Arm, Qualcomm, Imagination), "discrete" for the rest.
 */
export type AdapterClass = "fallback" | "integrated" | "discrete";

/** The {@link AdapterClass} of a device, from what its adapter reported. */
export function adapterClass(capabilities: {
  isFallbackAdapter: boolean;
  vendor: string;
  architecture: string;
  description: string;
}): AdapterClass {
  if (capabilities.isFallbackAdapter) return "fallback";
  const text = `${capabilities.vendor} ${capabilities.architecture} ${capabilities.description}`;
  return /intel|apple|arm|mali|qualcomm|adreno|imagination|powervr/i.test(text)
    ? "integrated"
    : "discrete";
}

/**
 * Invocations per workgroup of the kernels that give each row one workgroup and reduce it in a
 * barrier tree: softmax and cross-entropy. On software adapters a workgroup
 * runs on one CPU thread and every barrier is a coroutine switch per SIMD group, so a narrow
 * workgroup that loops longer over its row wastes less (SwiftShader ran the softmax test's short
 * rows in 4m42s at 256 and 19 s at 64); GPUs want the width to cover a row's loads.
 */
export const ROW_WORKGROUP: Readonly<Record<AdapterClass, number>> = {
  fallback: 64,
  integrated: 256,
  discrete: 256,
};
