/**
 * What LoRA adapts: the seven projections of a Llama-family layer, their Hugging Face names and
 * their shapes (right when heads × head_dim differs from the model width, as in Qwen3), and the
 * dropout hash shared bit for bit by shaders/lora.wgsl and the float64 twins.
 */

/** The seven projections LoRA can adapt. */
export type LoraTarget = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

/** Every projection, in a fixed order (the order of an adapter's tensors). */
export const LORA_TARGETS: readonly LoraTarget[] = ["q", "k", "v", "o", "gate", "up", "down"];

/** The sizes a projection's shape depends on. */
export interface ProjectionSizes {
  /** Model width d. */
  dim: number;
  /** MLP width. */
  hiddenDim: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads. */
  nKvHeads: number;
  /** Width of one head (not always dim / nHeads). */
  headDim: number;
}

/** Hugging Face name of a layer's projection ("model.layers.0.self_attn.q_proj"). */
export function projectionName(layer: number, target: LoraTarget): string {
  const group = target === "gate" || target === "up" || target === "down" ? "mlp" : "self_attn";
  return `model.layers.${layer}.${group}.${target}_proj`;
}

/** Input and output width of a projection: the weight is [out, in]. */
export function projectionDims(sizes: ProjectionSizes, target: LoraTarget): [number, number] {
  const q = sizes.nHeads * sizes.headDim;
  const kv = sizes.nKvHeads * sizes.headDim;
  switch (target) {
    case "q":
      return [sizes.dim, q];
    case "k":
    case "v":
      return [sizes.dim, kv];
    case "o":
      return [q, sizes.dim];
    case "gate":
    case "up":
      return [sizes.dim, sizes.hiddenDim];
    case "down":
      return [sizes.hiddenDim, sizes.dim];
  }
}

/** lowbias32 (Chris Wellons): the integer hash of shaders/lora.wgsl, bit for bit. */
export function hash32(value: number): number {
  let x = value >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The per-seed word the dropout kernel XORs into every element index before hashing. */
export function dropoutSeedMix(seed: number): number {
  return hash32(seed >>> 0);
}

/** Hash values at or above this are kept: a fraction 1 - p of them. */
export function dropoutThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout probability ${p} is not in [0, 1)`);
  return Math.min(0xffffffff, Math.round(p * 2 ** 32));
}

/**
 * The dropout seed of one projection in one training step: every projection of every layer
 * draws its own mask from the step's seed.
 */
export function projectionDropoutSeed(stepSeed: number, layer: number, target: LoraTarget): number {
  return (stepSeed + layer * 131 + LORA_TARGETS.indexOf(target) * 17) >>> 0;
}
