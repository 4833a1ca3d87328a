import { RMSNORM_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import {
  expectArgument,
  expectMultiple,
  expectPositive,
  expectShape,
  splitGrid,
} from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";

const FILE = "rmsnorm.wgsl";
const BACKWARD = "rmsnorm backward";

/** Options for {@link RmsNormOp.create}. */
export interface RmsNormOptions {
  /** Invocations per workgroup, a power of two (default: {@link rowLanes} of `widestRow`). */
  workgroupSize?: number;
  /** The widest rows the op will normalise, in values (default: wide enough for 64 lanes). */
  widestRow?: number;
}

/** The most invocations a row's workgroup gets. */
const MAX_LANES = 64;

/**
 * Invocations per workgroup for rows of up to `widestRow` values: one per vec4, as a power of two,
 * up to 64. Lanes past a row's last vec4 would only add zeros to the tree, so the sums are those of
 * 64 lanes bit for bit (what the fused decode kernels' norms reproduce), with fewer idle lanes and
 * barrier levels: on llvmpipe stories260K's 64-wide rows took 0.8 ms a pass at 64 lanes and 0.3 ms
 * at 16.
 */
export function rowLanes(widestRow: number): number {
  const vec4s = Math.max(1, Math.ceil(widestRow / 4));
  return Math.min(MAX_LANES, 2 ** Math.ceil(Math.log2(vec4s)));
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
    const WG = options.workgroupSize ?? rowLanes(options.widestRow ?? 4 * MAX_LANES);
    const powerOfTwo = Number.isInteger(Math.log2(WG));
    expectArgument("rmsnorm", "workgroupSize", powerOfTwo, "a power of two", WG);
    const specs: [string, string, boolean][] = [
      ["forward", "forward", false],
      ["forwardSave", "forward_save", false],
      ["forwardSaveCopy", "forward_save_copy", false],
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
        includes: SHADER_SNIPPETS,
        entryPoint,
        constants: { WG, ACCUMULATE },
      });
    }));
    return new RmsNormOp(kernels, WG);
  }

  /**
   * Records out = rmsnorm(x) * weight. x, out [rows, dim]; weight [dim]. With `rstd` [rows] the
   * per-row 1 / rms is saved for {@link recordBackwardInput} / {@link recordBackwardWeight}; with
   * `copy` [rows, dim] as well, x is also copied there (in the same dispatch).
   */
  recordForward(
    rec: Recorder,
    x: Tensor,
    weight: Tensor,
    out: Tensor,
    eps: number,
    rstd?: Tensor,
    copy?: Tensor,
  ): void {
    const op = "rmsnorm forward";
    const { rows, dim } = rowsOf(op, x);
    expectShape(op, "weight", weight, "f32", [dim]);
    expectShape(op, "out", out, "f32", [rows, dim]);
    expectArgument(op, "eps", eps >= 0, ">= 0", eps);
    const grid = splitGrid(rec, rows);
    const params = { rows, dim4: dim / 4, eps, groupsX: grid[0] };
    if (copy) {
      if (!rstd) throw new KernelUsageError(`${op}: a copy of x is made only with rstd saved`);
      expectShape(op, "rstd", rstd, "f32", [rows]);
      expectShape(op, "copy", copy, "f32", [rows, dim]);
      const bindings = { x, weight, out, rstdOut: rstd, xCopy: copy };
      rec.dispatch(this.kernels.forwardSaveCopy, bindings, params, grid);
    } else if (rstd) {
      expectShape(op, "rstd", rstd, "f32", [rows]);
      rec.dispatch(this.kernels.forwardSave, { x, weight, out, rstdOut: rstd }, params, grid);
    } else {
      rec.dispatch(this.kernels.forward, { x, weight, out }, params, grid);
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
    const { rows, dim } = backwardRows(x, rstd, dOut);
    expectShape(BACKWARD, "weight", weight, "f32", [dim]);
    expectShape(BACKWARD, "dX", dX, "f32", [rows, dim]);
    const grid = splitGrid(rec, rows);
    rec.dispatch(
      options.accumulate ? this.kernels.backwardInputAccumulate : this.kernels.backwardInput,
      { x, weight, rstd, dOut, dX },
      { rows, dim4: dim / 4, eps: 0, groupsX: grid[0] },
      grid,
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
    const { rows, dim } = backwardRows(x, rstd, dOut);
    expectShape(BACKWARD, "dWeight", dWeight, "f32", [dim]);
    rec.dispatch(
      options.accumulate ? this.kernels.backwardWeightAccumulate : this.kernels.backwardWeight,
      { x, rstd, dOut, dWeight },
      { rows, dim4: dim / 4, eps: 0, groupsX: 0 },
      [Math.ceil(dim / 4 / this.wg)],
    );
  }
}

/** x [rows, dim] f32 with dim a positive multiple of 4. */
function rowsOf(op: string, x: Tensor): { rows: number; dim: number } {
  const [rows, dim] = expectShape(op, "x", x, "f32", ["rows", "dim"]);
  expectPositive(op, "x", x, "dim", dim);
  expectMultiple(op, "x", x, "dim", dim, 4);
  return { rows, dim };
}

/** The backward's x and dOut [rows, dim] and rstd [rows]. */
function backwardRows(x: Tensor, rstd: Tensor, dOut: Tensor): { rows: number; dim: number } {
  const sizes = rowsOf(BACKWARD, x);
  expectShape(BACKWARD, "rstd", rstd, "f32", [sizes.rows]);
  expectShape(BACKWARD, "dOut", dOut, "f32", [sizes.rows, sizes.dim]);
  return sizes;
}
