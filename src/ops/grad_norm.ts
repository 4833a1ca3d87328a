import { GRAD_NORM_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  type AdapterClass,
  adapterClass,
  expectArgument,
  expectDtype,
  expectPositive,
  expectSize,
  strideGrid,
} from "./shapes.ts";

const OP = "grad norm";

const WG = 256;
/**
 * Workgroups of the first pass, at most; the second pass merges their results in one workgroup.
 * On software adapters each workgroup's barrier tree costs far more than its loads (256 groups
 * took 7 ms for an adapter's 92k gradients on llvmpipe, 16 take 0.8 ms), so each invocation
 * there sums a longer run.
 */
const GROUPS: Readonly<Record<AdapterClass, number>> = {
  fallback: 16,
  integrated: 256,
  discrete: 256,
};
const MAX_GROUPS = Math.max(...Object.values(GROUPS));

/** Bytes of the op's scratch ([MAX_GROUPS, 4] f32 partial results). */
export const GRAD_NORM_SCRATCH_BYTES: number = MAX_GROUPS * 4 * 4;

/** Layout of the stats buffer {@link GradNormOp.record} writes and AdamW reads. */
export const STATS = {
  /** Global L2 norm of the finite gradient elements. */
  norm: 0,
  /** min(1, maxNorm / (norm + 1e-6)): the factor clipping multiplies gradients by. */
  clipScale: 1,
  /** 1 when any gradient element is NaN or infinite, else 0: the optimizer step is skipped. */
  nonFinite: 2,
  /**
   * Optimizer steps applied: each {@link GradNormOp.record} adds one when the gradients are
   * finite, so after it the count includes the step about to run (AdamW's t). The host sets it
   * before a run of steps.
   */
  applied: 3,
  /** Elements in the buffer. */
  size: 4,
} as const;

/**
 * Global gradient norm over the flat gradient buffer, with the clipping factor and a non-finite
 * flag, written on the GPU into a small stats tensor so clipping and skipping need no host round
 * trip; the host may read the stats later together with the loss.
 */
export class GradNormOp {
  private constructor(
    private readonly partialsKernel: Kernel,
    private readonly finishKernel: Kernel,
    /** [MAX_GROUPS, 4] per-workgroup (scale, sumsq, flag, 0), owned by this op. */
    private readonly scratch: Tensor,
    /** Workgroups of the first pass, at most (GROUPS of the adapter's class). */
    private readonly maxGroups: number,
  ) {}

  /** Compiles both passes and allocates the per-workgroup scratch buffer. */
  static async create(registry: KernelRegistry): Promise<GradNormOp> {
    const [partials, finish] = await Promise.all(
      ["partials", "finish"].map((entryPoint) =>
        registry.get({ file: "grad_norm.wgsl", source, entryPoint, constants: { WG } })
      ),
    );
    const scratch = createTensor(registry.gpu, [MAX_GROUPS, 4], "f32", "grad norm partials");
    return new GradNormOp(
      partials,
      finish,
      scratch,
      GROUPS[adapterClass(registry.gpu.capabilities)],
    );
  }

  /**
   * Records stats = [norm, clipScale, nonFinite] (see {@link STATS}) for grads [n] f32, and one
   * more applied step in stats[applied] when the gradients are finite.
   * `maxNorm` is the clipping threshold; Infinity turns clipping off (clipScale stays 1).
   */
  record(rec: Recorder, grads: Tensor, stats: Tensor, maxNorm: number): void {
    expectDtype(OP, "grads", grads, "f32");
    expectPositive(OP, "grads", grads, "size", grads.size);
    expectSize(OP, "stats", stats, "f32", STATS.size);
    expectArgument(OP, "maxNorm", maxNorm > 0, "> 0", maxNorm);
    const n = grads.size;
    const { groups, stride } = strideGrid(n, WG, this.maxGroups);
    const params = { n, stride, groups, maxNorm: Math.min(maxNorm, 3e38) };
    rec.dispatch(this.partialsKernel, { grads, partial: this.scratch }, params, [groups]);
    rec.dispatch(this.finishKernel, { partial: this.scratch, stats }, params, [1]);
  }

  /** Bytes of GPU memory the op holds (its scratch buffer). */
  get bytes(): number {
    return this.scratch.byteLength;
  }

  /** Frees the scratch buffer. */
  destroy(): void {
    this.scratch.destroy();
  }
}
