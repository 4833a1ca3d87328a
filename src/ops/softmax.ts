import ownSource from "../../shaders/softmax.wgsl" with { type: "text" };
import rowStats from "../../shaders/row_stats.wgsl" with { type: "text" };

import { ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** This op's shader with the shared row statistics appended. */
const source = `${ownSource}\n${rowStats}`;

const WG = 256;

/** Row-wise, max-subtracted softmax: probs[t, :] = softmax(logits[t, :]). */
export class SoftmaxOp {
  private constructor(private readonly kernel: Kernel) {}

  /** Compiles the kernel (cached by the registry). */
  static async create(registry: KernelRegistry): Promise<SoftmaxOp> {
    const kernel = await registry.get({
      file: "softmax.wgsl",
      source,
      entryPoint: "softmax_rows",
      constants: { WG },
    });
    return new SoftmaxOp(kernel);
  }

  /** Records probs = softmax(logits) along the last axis; both f32 [T, V]. */
  record(rec: Recorder, logits: Tensor, probs: Tensor): void {
    const [T, V] = rowsAndWidth(logits, "softmax logits");
    const [T2, V2] = rowsAndWidth(probs, "softmax probs");
    if (T !== T2 || V !== V2) {
      throw new ShapeError(`softmax: probs [${probs.shape}] do not match logits [${logits.shape}]`);
    }
    if (T === 0 || V === 0) return;
    const grid = rowGrid(rec, T);
    rec.dispatch(this.kernel, { logits, probs }, { V, rows: T, groupsX: grid[0] }, grid);
  }
}

/** [rows, width] of an f32 tensor of rank 1 (one row) or 2. */
export function rowsAndWidth(t: Tensor, what: string): [number, number] {
  if (t.dtype !== "f32") throw new ShapeError(`${what} must be f32, got ${t.dtype}`);
  if (t.shape.length === 1) return [1, t.shape[0]];
  if (t.shape.length === 2) return [t.shape[0], t.shape[1]];
  throw new ShapeError(`${what} must be [T, V] or [V], got [${t.shape}]`);
}

/** A grid with one workgroup per row; rows past the per-dimension limit spill into y. */
export function rowGrid(rec: Recorder, rows: number): [number, number] {
  const max = rec.gpu.limits.maxComputeWorkgroupsPerDimension;
  const x = Math.min(rows, max);
  return [x, Math.ceil(rows / x)];
}
