import type { Gpu } from "../gpu/device.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import { PORTABLE_OFFSET_ALIGNMENT } from "../gpu/recorder.ts";
import { createTensor, DTYPE_BYTES, Tensor } from "../gpu/tensor.ts";
import type { ModelConfig } from "../formats/config.ts";

/**
 * How the cache stores keys and values: "f32", or "f16" (half the memory and half the bytes
 * attention reads, each value rounded to nearest half). f16 pairs are packed two to a u32 word
 * (element 2i in the low half), so the kernels need no `shader-f16`.
 */
export type KvCacheDtype = "f32" | "f16";

/** The cache element types. */
export const KV_CACHE_DTYPES: readonly KvCacheDtype[] = ["f32", "f16"];

/**
 * Keys and values of every layer for up to `capacity` positions. Position p of the text so far
 * lives in row p; RoPE has been applied to the keys at that position. `length` counts the rows
 * filled. The cache never slides by itself: when it is full, the owner rebuilds it from the most
 * recent tokens at positions starting again from 0 (see `Generator`), so no position ever exceeds
 * the capacity, and the capacity never exceeds the model's trained length.
 *
 * A layer's keys and values share one buffer (`kv`: the keys, then the values from `vOffset`), so
 * the fused decode kernel appends both through one binding; `k` and `v` are views of it.
 */
export class KvCache {
  /** Keys of each layer, [capacity, nKvHeads, headDim] of `dtype` (RoPE applied). */
  readonly k: Tensor[];
  /** Values of each layer, [capacity, nKvHeads, headDim] of `dtype`. */
  readonly v: Tensor[];
  /** Each layer's buffer holding k (from element 0) and v (from element {@link vOffset}). */
  readonly kv: Tensor[];
  /** Element of a layer's `kv` where its values start (a portable binding offset). */
  readonly vOffset: number;
  /** Rows filled. */
  length = 0;

  /**
   * Allocates an empty cache of `capacity` positions for every layer of `config`'s model. An f16
   * cache needs nKvHeads * headDim even (every row whole u32 words).
   */
  constructor(
    gpu: Gpu,
    config: ModelConfig,
    readonly capacity: number,
    readonly dtype: KvCacheDtype = "f32",
  ) {
    if (!KV_CACHE_DTYPES.includes(dtype)) {
      throw new KernelUsageError(`KV cache dtype ${JSON.stringify(dtype)}: expected f32 or f16`);
    }
    const kvDim = config.nKvHeads * config.headDim;
    if (dtype === "f16" && kvDim % 2 !== 0) {
      throw new ShapeError(
        `an f16 KV cache needs nKvHeads * headDim even, got ${config.nKvHeads} * ${config.headDim}`,
      );
    }
    const shape = [capacity, config.nKvHeads, config.headDim];
    const elements = capacity * kvDim;
    const align = PORTABLE_OFFSET_ALIGNMENT / DTYPE_BYTES[dtype];
    this.vOffset = Math.ceil(elements / align) * align;
    this.k = [];
    this.v = [];
    this.kv = [];
    const bytes = DTYPE_BYTES[dtype];
    for (let l = 0; l < config.nLayers; l++) {
      const kv = createTensor(gpu, [this.vOffset + elements], dtype, `kv cache ${l}`);
      this.kv.push(kv);
      this.k.push(new Tensor(kv.buffer, shape, dtype, 0));
      this.v.push(new Tensor(kv.buffer, shape, dtype, bytes * this.vOffset));
    }
  }

  /** Rows still free. */
  get free(): number {
    return this.capacity - this.length;
  }

  /** Bytes the cache holds on the GPU. */
  get bytes(): number {
    return this.kv.reduce((sum, t) => sum + t.byteLength, 0);
  }

  /** Frees the cache's GPU buffers. */
  destroy(): void {
    for (const t of this.kv) t.destroy();
  }
}
