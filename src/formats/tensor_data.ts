import type { GgmlQuantType } from "../core/quant.ts";
import type { ModelConfig } from "./config.ts";

/** Element types of stored weights: float32, or raw float16 / bfloat16 bits. */
export type WeightDtype = "F32" | "F16" | "BF16";

/** One named weight on the host: F32 as floats, F16 and BF16 as their raw 16-bit patterns. */
export type TensorData =
  | { dtype: "F32"; shape: number[]; data: Float32Array }
  | { dtype: "F16" | "BF16"; shape: number[]; data: Uint16Array };

/** A model as loaded from disk: config plus tensors under Hugging Face Llama names. */
export interface ModelWeights {
  /** Hyperparameters the tensors were made for. */
  config: ModelConfig;
  /** Tensor name (e.g. "model.layers.0.self_attn.q_proj.weight") -> data. */
  tensors: Map<string, TensorData>;
}

/** A block-quantized weight as a GGUF file stores it: its packed blocks, row after row. */
export interface PackedTensorData {
  /** The block type. */
  dtype: GgmlQuantType;
  /** Row-major shape ([out, in] for a matrix); each row is whole blocks. */
  shape: number[];
  /** The blocks' bytes. */
  data: Uint8Array;
}

/** Any stored weight: floats, or packed quantized blocks. */
export type StoredTensor = TensorData | PackedTensorData;

/** Whether a stored weight is block-quantized. */
export function isPacked(t: StoredTensor): t is PackedTensorData {
  return t.data instanceof Uint8Array;
}

/**
 * A model's tensors under Hugging Face Llama names, read one at a time when asked, so a file
 * larger than host memory can still be uploaded tensor by tensor.
 */
export interface WeightSource {
  /** Hyperparameters the tensors were made for. */
  config: ModelConfig;
  /** Names of the tensors the source holds. */
  names(): Iterable<string>;
  /** Row-major shape of a tensor, undefined when the source lacks it. */
  shape(name: string): readonly number[] | undefined;
  /** The tensor's data, read now. */
  read(name: string): Promise<StoredTensor>;
}

/** The in-memory weights as a source. */
export function weightSourceOf(weights: ModelWeights): WeightSource {
  return {
    config: weights.config,
    names: () => weights.tensors.keys(),
    shape: (name) => weights.tensors.get(name)?.shape,
    read: (name) => {
      const t = weights.tensors.get(name);
      if (!t) throw new RangeError(`no tensor ${name}`);
      return Promise.resolve(t);
    },
  };
}

/** Bytes per element of a weight dtype. */
export function dtypeBytes(dtype: WeightDtype): number {
  return dtype === "F32" ? 4 : 2;
}

/** Number of elements of a shape (1 for a scalar). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Exact float16 -> float32 of one bit pattern (subnormals, infinities and NaN payloads kept). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) {
    if (frac === 0) return sign * Infinity;
    u32Scratch[0] = ((h & 0x8000) << 16) | 0x7f800000 | (frac << 13);
    return f32Scratch[0];
  }
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** Exact bfloat16 -> float32 of one bit pattern. */
export function bf16BitsToF32(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0];
}

/** float32 -> float16 bits, round to nearest even; overflow gives infinity, NaN stays NaN. */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  // Rebias from 127 to 15; e is the float16 exponent field if the value were normal.
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal (or zero) in float16: shift the 24-bit significand right by 14 - e.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const sig = mant | 0x800000;
    const shift = 14 - e;
    let half = sig >>> shift;
    const rest = sig & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (half & 1))) half++;
    return sign | half;
  }
  let out = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (out & 1))) out++; // may carry into exponent / inf
  return sign | out;
}

/** float32 -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN. */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Float32 copy of raw float16 bits. */
export function f16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f16BitsToF32(src[i]);
  return out;
}

/** Float32 copy of raw bfloat16 bits (a shift per element). */
export function bf16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** Float16 bits of every element, round to nearest even. */
export function f32ArrayToF16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16Bits(src[i]);
  return out;
}

/** Bfloat16 bits of every element, round to nearest even. */
export function f32ArrayToBf16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16Bits(src[i]);
  return out;
}

/** The tensor as float32: the stored array itself for F32, a converted copy otherwise. */
export function tensorToF32(t: TensorData): Float32Array {
  if (t.dtype === "F32") return t.data;
  return t.dtype === "F16" ? f16ArrayToF32(t.data) : bf16ArrayToF32(t.data);
}

/** The tensor converted to `dtype` (the same object when it already has it). */
export function convertTensor(t: TensorData, dtype: WeightDtype): TensorData {
  if (t.dtype === dtype) return t;
  const f32 = tensorToF32(t);
  const shape = [...t.shape];
  if (dtype === "F32") return { dtype, shape, data: f32 };
  return { dtype, shape, data: dtype === "F16" ? f32ArrayToF16(f32) : f32ArrayToBf16(f32) };
}
