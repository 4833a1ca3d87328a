import { ADAMW_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { STATS } from "./grad_norm.ts";
import { expectArgument, expectSize, strideGrid } from "./shapes.ts";

const OP = "adamw";

/** AdamW hyperparameters; `step` t counts from 1 and sets the bias corrections. */
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
  /** 1-based step count t; bias corrections are 1 - beta^t. */
  step: number;
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
  /** [3] from {@link GradNormOp}: the clip factor (stats[1]) and the non-finite flag (stats[2]). */
  stats: Tensor;
}

/** AdamW with decoupled weight decay over all adapter tensors in one dispatch. */
export class AdamWOp {
  private constructor(private readonly kernel: Kernel) {}

  /** Compiles the kernel. */
  static async create(registry: KernelRegistry): Promise<AdamWOp> {
    return new AdamWOp(await registry.get({ file: "adamw.wgsl", source, constants: { WG } }));
  }

  /**
   * Records one optimizer step. `hyper.step` is the 1-based step count t for the bias
   * corrections; a step skipped on the GPU for non-finite gradients still counts on the host.
   */
  record(rec: Recorder, buffers: AdamWBuffers, hyper: AdamWHyper): void {
    const { params, grads, m, v, stats } = buffers;
    const n = params.size;
    for (const [name, t] of [["params", params], ["grads", grads], ["m", m], ["v", v]] as const) {
      expectSize(OP, name, t, "f32", n);
    }
    expectSize(OP, "stats", stats, "f32", STATS.size);
    const step = hyper.step;
    expectArgument(OP, "step", Number.isInteger(step) && step >= 1, "an integer >= 1", step);
    if (n === 0) return;
    const { groups, stride } = strideGrid(n, WG, MAX_GROUPS);
    rec.dispatch(this.kernel, { param: params, grad: grads, moment1: m, moment2: v, stats }, {
      n,
      stride,
      lr: hyper.lr,
      beta1: hyper.beta1,
      beta2: hyper.beta2,
      eps: hyper.eps,
      weightDecay: hyper.weightDecay,
      bc1: 1 - hyper.beta1 ** hyper.step,
      bc2: 1 - hyper.beta2 ** hyper.step,
    }, [groups]);
  }
}
