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
  /**
   * Moves on whenever the matrices' values may have changed (an optimizer step recorded, a
   * reset, a write of the parameters): what the model derived from older values is rebuilt.
   */
  readonly version: number;
  /**
   * What models derived from the adapter's values (decode weights with its update merged in),
   * by the deriving model's key; the adapter frees them with itself and counts their bytes.
   */
  readonly derived: Map<string, AdapterDerivative>;
}

/** GPU memory a model derives from an adapter's values and keeps with the adapter. */
export interface AdapterDerivative {
  /** The adapter's {@link ModelAdapter.version} it holds the values of. */
  readonly version: number;
  /** Bytes it holds on the GPU. */
  readonly bytes: number;
  /** Frees its buffers. */
  destroy(): void;
}
