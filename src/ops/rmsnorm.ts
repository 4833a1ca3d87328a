import source from "../../shaders/rmsnorm.wgsl" with { type: "text" };
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";

const FILE = "rmsnorm.wgsl";
const MAX_ROW_GROUPS = 65535;

/** Options for {@link RmsNormOp.create}. */
export interface RmsNormOptions {
  /** Invocations per workgroup, a power of two (default 64). */
  workgroupSize?: number;
}

/** Options of the backward recordings. */
export interface RmsNormBackwardOptions {
  /** Add into the gradient tensor instead of overwriting it (default false). */
  accumulate?: boolean;
}

/**
 * RMSNorm over the rows of [rows, dim] (shaders/rmsnorm.wgsl): out = x * rstd * weight with
 * rstd = 1 / sqrt(mean(x^2) + eps). The training forward saves rstd [rows] for the backward.
 * `dim` must be a multiple of 4.
 */
export class RmsNormOp {
  private constructor(
    private readonly kernels: Record<string, Kernel>,
    private readonly wg: number,
  ) {}

  /** Compiles the forward (plain and rstd-saving) and backward kernels. */
  static async create(registry: KernelRegistry, options: RmsNormOptions = {}): Promise<RmsNormOp> {
    const WG = options.workgroupSize ?? 64;
    if (!Number.isInteger(Math.log2(WG))) {
      throw new KernelUsageError(`rmsnorm workgroup size must be a power of two, got ${WG}`);
    }
    const specs: [string, string, boolean][] = [
      ["forward", "forward", false],
      ["forwardSave", "forward_save", false],
      ["backwardInput", "backward_input", false],
      ["backwardInputAccumulate", "backward_input", true],
      ["backwardWeight", "backward_weight", false],
      ["backwardWeightAccumulate", "backward_weight", true],
    ];
    const kernels: Record<string, Kernel> = {};
    await Promise.all(specs.map(async ([name, entryPoint, ACCUMULATE]) => {
      kernels[name] = await registry.get({
        file: FILE,
        source,
        entryPoint,
        constants: { WG, ACCUMULATE },
      });
    }));
    return new RmsNormOp(kernels, WG);
  }

  /**
   * Records out = rmsnorm(x) * weight. x, out [rows, dim]; weight [dim]. With `rstd` [rows] the
   * per-row 1 / rms is saved for {@link recordBackwardInput} / {@link recordBackwardWeight}.
   */
  recordForward(
    rec: Recorder,
    x: Tensor,
    weight: Tensor,
    out: Tensor,
    eps: number,
    rstd?: Tensor,
  ): void {
    const { rows, dim } = rowsOf("rmsnorm forward x", x);
    expectShape("rmsnorm forward weight", weight, [dim]);
    expectShape("rmsnorm forward out", out, [rows, dim]);
    if (!(eps >= 0)) throw new KernelUsageError(`rmsnorm eps must be >= 0, got ${eps}`);
    const params = { rows, dim4: dim / 4, eps };
    const groups = [Math.min(rows, MAX_ROW_GROUPS)] as const;
    if (rstd) {
      expectShape("rmsnorm forward rstd", rstd, [rows]);
      rec.dispatch(this.kernels.forwardSave, { x, weight, out, rstdOut: rstd }, params, groups);
    } else {
      rec.dispatch(this.kernels.forward, { x, weight, out }, params, groups);
    }
  }

  /** Records dX from dOut, x, weight and the saved rstd. x, dOut, dX [rows, dim]; rstd [rows]. */
  recordBackwardInput(
    rec: Recorder,
    x: Tensor,
    weight: Tensor,
    rstd: Tensor,
    dOut: Tensor,
    dX: Tensor,
    options: RmsNormBackwardOptions = {},
  ): void {
    const { rows, dim } = rowsOf("rmsnorm backward x", x);
    expectShape("rmsnorm backward weight", weight, [dim]);
    expectShape("rmsnorm backward rstd", rstd, [rows]);
    expectShape("rmsnorm backward dOut", dOut, [rows, dim]);
    expectShape("rmsnorm backward dX", dX, [rows, dim]);
    rec.dispatch(
      options.accumulate ? this.kernels.backwardInputAccumulate : this.kernels.backwardInput,
      { x, weight, rstd, dOut, dX },
      { rows, dim4: dim / 4, eps: 0 },
      [Math.min(rows, MAX_ROW_GROUPS)],
    );
  }

  /** Records dWeight [dim] = sum over rows of dOut * x * rstd. x, dOut [rows, dim]; rstd [rows]. */
  recordBackwardWeight(
    rec: Recorder,
    x: Tensor,
    rstd: Tensor,
    dOut: Tensor,
    dWeight: Tensor,
    options: RmsNormBackwardOptions = {},
  ): void {
    const { rows, dim } = rowsOf("rmsnorm backward x", x);
    expectShape("rmsnorm backward rstd", rstd, [rows]);
    expectShape("rmsnorm backward dOut", dOut, [rows, dim]);
    expectShape("rmsnorm backward dWeight", dWeight, [dim]);
    rec.dispatch(
      options.accumulate ? this.kernels.backwardWeightAccumulate : this.kernels.backwardWeight,
      { x, rstd, dOut, dWeight },
      { rows, dim4: dim / 4, eps: 0 },
      [Math.ceil(dim / 4 / this.wg)],
    );
  }
}

function rowsOf(what: string, x: Tensor): { rows: number; dim: number } {
  if (x.dtype !== "f32" || x.shape.length !== 2) {
    throw new ShapeError(`${what} must be f32 [rows, dim], got ${x.dtype} [${x.shape}]`);
  }
  const [rows, dim] = x.shape;
  if (dim === 0 || dim % 4 !== 0) {
    throw new ShapeError(`${what} [${x.shape}]: dim must be a positive multiple of 4`);
  }
  return { rows, dim };
}

function expectShape(what: string, t: Tensor, shape: readonly number[]): void {
  if (
    t.dtype !== "f32" || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])
  ) {
    throw new ShapeError(`${what} must be f32 [${shape}], got ${t.dtype} [${t.shape}]`);
  }
}
