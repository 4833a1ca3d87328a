import type { Gpu } from "../gpu/device.ts";
import { createTensor, Tensor, writeTensor } from "../gpu/tensor.ts";
import type { ModelConfig } from "../formats/config.ts";
import { InvalidSettingError } from "../model/errors.ts";
import { LORA_TARGETS, type LoraTarget, projectionDims, projectionName } from "../core/lora.ts";
import { Rng } from "../core/random.ts";
import type { AdapterDerivative, ModelAdapter } from "../model/adapter.ts";
import { STATS } from "../ops/grad_norm.ts";

export { LORA_TARGETS, type LoraTarget, projectionDims };

/** The shape of a temporary adapter. */
export interface AdapterSettings {
  /** LoRA rank r. */
  rank: number;
  /** LoRA alpha; the update is scaled by alpha / r. */
  alpha: number;
  /** Projections that get an adapter (default: all seven). */
  targets: readonly LoraTarget[];
  /** Seed of A's random initialisation. */
  seed: number;
}

/** One adapted projection: views of A [r, in] and B [out, r] and of their gradients. */
export interface AdaptedProjection {
  /** Hugging Face name of the projection, e.g. "model.layers.0.self_attn.q_proj". */
  name: string;
  /** Layer index (0-based). */
  layer: number;
  /** Which projection of the layer. */
  target: LoraTarget;
  /** Input width of the projection. */
  inDim: number;
  /** Output width of the projection. */
  outDim: number;
  /** LoRA A, f32 [rank, inDim]: a view into the adapter's `params`. */
  a: Tensor;
  /** LoRA B, f32 [outDim, rank]: a view into the adapter's `params`. */
  b: Tensor;
  /** Gradient of A, f32 [rank, inDim]: a view into the adapter's `grads`. */
  dA: Tensor;
  /** Gradient of B, f32 [outDim, rank]: a view into the adapter's `grads`. */
  dB: Tensor;
}

/** Views are placed at multiples of 64 floats, so every one can be bound on any adapter. */
const ALIGN_FLOATS = 64;

/**
 * A LoRA adapter on chosen projections of every layer, with its gradients and AdamW moments.
 * Parameters, gradients and both moments are each one flat GPU buffer, so clipping and the
 * optimizer run as one dispatch over everything; each A and B is a view into them. A starts
 * random (uniform in ±1/sqrt(in), as PEFT's default), B at zero, so a fresh adapter changes
 * nothing.
 */
export class LoraAdapter implements ModelAdapter {
  /** Every A and B, f32 [n], each padded to a 64-float boundary. */
  readonly params: Tensor;
  /** Gradients, f32 [n], same layout as `params`. */
  readonly grads: Tensor;
  /** AdamW first moment, f32 [n], same layout as `params`. */
  readonly m: Tensor;
  /** AdamW second moment, f32 [n], same layout as `params`. */
  readonly v: Tensor;
  /** Gradient statistics, f32 [STATS.size]: norm, clip scale, non-finite flag, steps applied. */
  readonly stats: Tensor;
  /** The adapted projections, layer by layer in {@link LORA_TARGETS} order. */
  readonly projections: AdaptedProjection[];
  /** Scale of the LoRA update, alpha / rank. */
  readonly scale: number;
  /** Optimizer steps taken (skipped ones excluded). */
  steps = 0;
  /** What models derived from the parameters (see {@link ModelAdapter.derived}). */
  readonly derived: Map<string, AdapterDerivative> = new Map();
  #version = 0;
  #byKey = new Map<string, AdaptedProjection>();

  /**
   * Allocates the adapter for `config`'s model on `gpu` and initialises it (A random, B zero;
   * `initialise: false` leaves the buffers as allocated, for planning or a restore that follows).
   * Throws {@link InvalidSettingError} on a bad rank, alpha or target list.
   */
  constructor(
    gpu: Gpu,
    readonly config: ModelConfig,
    readonly settings: AdapterSettings,
    options: { initialise?: boolean } = {},
  ) {
    const { rank, alpha, targets } = settings;
    if (!Number.isInteger(rank) || rank < 1) {
      throw new InvalidSettingError(`LoRA rank must be an integer >= 1, got ${rank}`);
    }
    if (!(alpha > 0)) throw new InvalidSettingError(`LoRA alpha must be > 0, got ${alpha}`);
    if (!targets.length || targets.some((t) => !LORA_TARGETS.includes(t))) {
      throw new InvalidSettingError(
        `LoRA targets must be a non-empty subset of ${LORA_TARGETS.join(", ")}; got ${targets}`,
      );
    }
    this.scale = alpha / rank;
    const layout: {
      layer: number;
      target: LoraTarget;
      inDim: number;
      outDim: number;
      at: number;
    }[] = [];
    let n = 0;
    const take = (count: number) => {
      const at = n;
      n += Math.ceil(count / ALIGN_FLOATS) * ALIGN_FLOATS;
      return at;
    };
    for (let layer = 0; layer < config.nLayers; layer++) {
      for (const target of LORA_TARGETS) {
        if (!targets.includes(target)) continue;
        const [inDim, outDim] = projectionDims(config, target);
        const at = take(rank * inDim);
        take(outDim * rank);
        layout.push({ layer, target, inDim, outDim, at });
      }
    }
    const make = (label: string) => createTensor(gpu, [n], "f32", label);
    this.params = make("lora params");
    this.grads = make("lora grads");
    this.m = make("adamw m");
    this.v = make("adamw v");
    this.stats = createTensor(gpu, [STATS.size], "f32", "grad stats");

    const view = (t: Tensor, at: number, shape: number[]) =>
      new Tensor(t.buffer, shape, "f32", at * 4);
    this.projections = layout.map(({ layer, target, inDim, outDim, at }) => {
      const bAt = at + Math.ceil(rank * inDim / ALIGN_FLOATS) * ALIGN_FLOATS;
      return {
        name: projectionName(layer, target),
        layer,
        target,
        inDim,
        outDim,
        a: view(this.params, at, [rank, inDim]),
        b: view(this.params, bAt, [outDim, rank]),
        dA: view(this.grads, at, [rank, inDim]),
        dB: view(this.grads, bAt, [outDim, rank]),
      };
    });
    for (const p of this.projections) this.#byKey.set(`${p.layer}:${p.target}`, p);
    if (options.initialise ?? true) this.reset(gpu);
  }

  /** LoRA rank r. */
  get rank(): number {
    return this.settings.rank;
  }

  /** Moves on with every change of the parameters ({@link changed}). */
  get version(): number {
    return this.#version;
  }

  /**
   * Says the parameters have changed or will with work already recorded (an optimizer step):
   * what models derived from them is rebuilt before it is used again.
   */
  changed(): void {
    this.#version++;
  }

  /** Writes every parameter (the flat layout of {@link params}) from host values. */
  writeParams(gpu: Gpu, values: Float32Array): void {
    writeTensor(gpu, this.params, values);
    this.changed();
  }

  /** The adapter of one layer's projection, if it has one. */
  get(layer: number, target: LoraTarget): AdaptedProjection | undefined {
    return this.#byKey.get(`${layer}:${target}`);
  }

  /** Re-initialises: A random, B, gradients and moments zero, step count zero. */
  reset(gpu: Gpu): void {
    const rng = new Rng(this.settings.seed);
    const params = new Float32Array(this.params.size);
    for (const p of this.projections) {
      const bound = 1 / Math.sqrt(p.inDim);
      const start = p.a.byteOffset / 4;
      for (let i = 0; i < p.a.size; i++) params[start + i] = bound * (2 * rng.next() - 1);
    }
    this.writeParams(gpu, params);
    const zeros = new Float32Array(this.params.size);
    for (const t of [this.grads, this.m, this.v]) writeTensor(gpu, t, zeros);
    writeTensor(gpu, this.stats, new Float32Array(STATS.size));
    this.steps = 0;
  }

  /** Bytes the adapter, its optimizer state and what models derived from it hold on the GPU. */
  get bytes(): number {
    let derived = 0;
    for (const d of this.derived.values()) derived += d.bytes;
    return 4 * this.params.byteLength + this.stats.byteLength + derived;
  }

  /** Number of trainable parameters (padding excluded). */
  get parameterCount(): number {
    return this.projections.reduce((sum, p) => sum + p.a.size + p.b.size, 0);
  }

  /** Frees the adapter's GPU buffers. */
  destroy(): void {
    for (const t of [this.params, this.grads, this.m, this.v, this.stats]) t.destroy();
    for (const d of this.derived.values()) d.destroy();
    this.derived.clear();
  }
}
