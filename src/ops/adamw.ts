import { ADAMW_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { STATS } from "./grad_norm.ts";
import { expectArgument, expectShape, expectSize, strideGrid } from "./shapes.ts";

const OP = "adamw";

/** AdamW hyperparameters (the step count t comes from the GPU: see {@link AdamWBuffers}). */
export interface AdamWHyper {
  /** Learning rate. */
  lr: number;
  /** Decay of the first moment (0.9). */
  beta1: number;
  /** Decay of the second moment (0.999). */
  beta2: number;
  /** Added to sqrt(v-hat) in the denominator. */
  eps: number;
  /** Decoupled weight decay: p -= lr * weightDecay * p. */
  weightDecay: number;
  /** The step whose bias corrections are row 0 of `corrections` (1-based). */
  firstStep: number;
}

/**
 * The table {@link AdamWBuffers.corrections} holds: (1 - beta1^t, 1 - beta2^t) for t = firstStep
 * .. firstStep + count - 1, computed in float64 and rounded once, [count, 2] f32.
 */
export function biasCorrections(
  hyper: Pick<AdamWHyper, "beta1" | "beta2">,
  firstStep: number,
  count: number,
): Float32Array {
  const table = new Float32Array(2 * count);
  for (let i = 0; i < count; i++) {
    table[2 * i] = 1 - hyper.beta1 ** (firstStep + i);
    table[2 * i + 1] = 1 - hyper.beta2 ** (firstStep + i);
  }
  return table;
}

const WG = 256;
const MAX_GROUPS = 1024;

/** The flat buffers AdamW updates; every adapter tensor is a view into each of them. */
export interface AdamWBuffers {
  /** [n] adapter parameters, updated in place. */
  params: Tensor;
  /** [n] gradients. */
  grads: Tensor;
  /** [n] first moment, updated in place (starts at zero). */
  m: Tensor;
  /** [n] second moment, updated in place (starts at zero). */
  v: Tensor;
  /**
   * [4] from {@link GradNormOp}: the clip factor, the non-finite flag and the steps applied,
   * this one included (t).
   */
  stats: Tensor;
  /**
   * [k, 2] {@link biasCorrections} from `firstStep`: the kernel takes row t - firstStep, which
   * the caller keeps inside the table.
   */
  corrections: Tensor;
}

/** AdamW with decoupled weight decay over all adapter tensors in one dispatch. */
export class AdamWOp {
  private constructor(private readonly kernel: Kernel) {}

  /** Compiles the kernel. */
  static async create(registry: KernelRegistry): Promise<AdamWOp> {
    return new AdamWOp(await registry.get({ file: "adamw.wgsl", source, constants: { WG } }));
  }

  /**
   * Records one optimizer step, at the step count t the GPU holds in stats (a step skipped for
   * non-finite gradients writes nothing and does not advance t).
   */
  record(rec: Recorder, buffers: AdamWBuffers, hyper: AdamWHyper): void {
    const { params, grads, m, v, stats, corrections } = buffers;
    const n = params.size;
    for (const [name, t] of [["params", params], ["grads", grads], ["m", m], ["v", v]] as const) {
      expectSize(OP, name, t, "f32", n);
    }
    expectSize(OP, "stats", stats, "f32", STATS.size);
    expectShape(OP, "corrections", corrections, "f32", ["k", 2]);
    const first = hyper.firstStep;
    expectArgument(
      OP,
      "firstStep",
      Number.isInteger(first) && first >= 1,
      "an integer >= 1",
      first,
    );
    if (n === 0) return;
    const { groups, stride } = strideGrid(n, WG, MAX_GROUPS);
    rec.dispatch(this.kernel, {
      param: params,
      grad: grads,
      moment1: m,
      moment2: v,
      stats,
      corrections,
    }, {
      n,
      stride,
      lr: hyper.lr,
      beta1: hyper.beta1,
      beta2: hyper.beta2,
      eps: hyper.eps,
      weightDecay: hyper.weightDecay,
      firstStep: first,
    }, [groups]);
  }
}
