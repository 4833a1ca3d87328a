import type { LoraTarget } from "../core/lora.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** One adapted projection's LoRA matrices, as the forward reads them. */
export interface AdapterMatrices {
  /** LoRA A, f32 [rank, in]. */
  a: Tensor;
  /** LoRA B, f32 [out, rank]. */
  b: Tensor;
}

/**
 * What the forward pass needs of a LoRA adapter: its rank, the scale of its update, and the
 * matrices of each adapted projection. src/templora's `LoraAdapter` implements it; the model
 * knows nothing else about adapters.
 */
export interface ModelAdapter {
  /** LoRA rank r (rows of every A). */
  readonly rank: number;
  /** Scale of the update, alpha / r. */
  readonly scale: number;
  /** The matrices of layer `layer`'s projection `target`, if it is adapted. */
  get(layer: number, target: LoraTarget): AdapterMatrices | undefined;
}
