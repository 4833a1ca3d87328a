import type { Gpu } from "../gpu/device.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import type { ModelConfig } from "../formats/config.ts";

/**
 * Keys and values of every layer for up to `capacity` positions. Position p of the text so far
 * lives in row p; RoPE has been applied to the keys at that position. `length` counts the rows
 * filled. The cache never slides by itself: when it is full, the owner rebuilds it from the most
 * recent tokens at positions starting again from 0 (see `Generator`), so no position ever exceeds
 * the capacity, and the capacity never exceeds the model's trained length.
 */
export class KvCache {
  /** Keys of each layer, f32 [capacity, nKvHeads, headDim] (RoPE applied). */
  readonly k: Tensor[];
  /** Values of each layer, f32 [capacity, nKvHeads, headDim]. */
  readonly v: Tensor[];
  /** Rows filled. */
  length = 0;

  /** Allocates an empty cache of `capacity` positions for every layer of `config`'s model. */
  constructor(gpu: Gpu, config: ModelConfig, readonly capacity: number) {
    const shape = [capacity, config.nKvHeads, config.headDim];
    this.k = [];
    this.v = [];
    for (let l = 0; l < config.nLayers; l++) {
      this.k.push(createTensor(gpu, shape, "f32", `k cache ${l}`));
      this.v.push(createTensor(gpu, shape, "f32", `v cache ${l}`));
    }
  }

  /** Rows still free. */
  get free(): number {
    return this.capacity - this.length;
  }

  /** Bytes the cache holds on the GPU. */
  get bytes(): number {
    return this.k.reduce((sum, t) => sum + 2 * t.byteLength, 0);
  }

  /** Frees the cache's GPU buffers. */
  destroy(): void {
    for (const t of [...this.k, ...this.v]) t.destroy();
  }
}
