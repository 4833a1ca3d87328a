import type { Gpu } from "../gpu/device.ts";
import { PORTABLE_OFFSET_ALIGNMENT } from "../gpu/recorder.ts";
import { createTensor, Tensor } from "../gpu/tensor.ts";
import type { ModelConfig } from "../formats/config.ts";

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
  /** Keys of each layer, f32 [capacity, nKvHeads, headDim] (RoPE applied). */
  readonly k: Tensor[];
  /** Values of each layer, f32 [capacity, nKvHeads, headDim]. */
  readonly v: Tensor[];
  /** Each layer's buffer holding k (from element 0) and v (from element {@link vOffset}). */
  readonly kv: Tensor[];
  /** Element of a layer's `kv` where its values start (a portable binding offset). */
  readonly vOffset: number;
  /** Rows filled. */
  length = 0;

  /** Allocates an empty cache of `capacity` positions for every layer of `config`'s model. */
  constructor(gpu: Gpu, config: ModelConfig, readonly capacity: number) {
    const shape = [capacity, config.nKvHeads, config.headDim];
    const elements = capacity * config.nKvHeads * config.headDim;
    const align = PORTABLE_OFFSET_ALIGNMENT / 4;
    this.vOffset = Math.ceil(elements / align) * align;
    this.k = [];
    this.v = [];
    this.kv = [];
    for (let l = 0; l < config.nLayers; l++) {
      const kv = createTensor(gpu, [this.vOffset + elements], "f32", `kv cache ${l}`);
      this.kv.push(kv);
      this.k.push(new Tensor(kv.buffer, shape, "f32", 0));
      this.v.push(new Tensor(kv.buffer, shape, "f32", 4 * this.vOffset));
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
