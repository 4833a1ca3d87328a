import { CROSS_ENTROPY_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  adapterClass,
  expectArgument,
  expectPositive,
  expectRows,
  expectShape,
  expectSize,
  ROW_WORKGROUP,
  splitGrid,
} from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";

const OP = "cross-entropy";
/** Columns of a row one backward workgroup writes. */
const COLS = 1024;
const FILE = "cross_entropy.wgsl";

/** Tensors of the forward pass. */
export interface CrossEntropyForwardArgs {
  /** f32 [T, V]. */
  logits: Tensor;
  /** u32 [T]; read only where the mask is non-zero. */
  targets: Tensor;
  /** f32 [T]: 1 = scored, 0 = not (other values weight the token). */
  mask: Tensor;
  /** f32 [T] output: mask * (logsumexp - logit of the target), exactly 0 where unmasked. */
  loss: Tensor;
  /** f32 [T, 2] output: per row (max, log sum exp(x - max)); the backward reads it. */
  stats: Tensor;
}

/** Tensors of the backward pass. */
export interface CrossEntropyBackwardArgs {
  /** f32 [T, V], as given to the forward. */
  logits: Tensor;
  /** u32 [T], as given to the forward. */
  targets: Tensor;
  /** f32 [T], as given to the forward. */
  mask: Tensor;
  /** f32 [T, 2] as written by the forward on the same logits. */
  stats: Tensor;
  /** f32 [T, V] output: (softmax - onehot(target)) * mask * gradScale. */
  dLogits: Tensor;
}

/**
 * Softmax cross-entropy with a per-token loss mask: per-token losses, their masked sum and count
 * (a second small pass, no float atomics), and the gradient with respect to the logits.
 */
export class CrossEntropyOp {
  private constructor(
    private readonly forward: Kernel,
    private readonly reduce: Kernel,
    private readonly backward: Kernel,
  ) {}

  /**
   * Compiles the three kernels (cached by the registry) with `workgroupSize` invocations per row
   * (a power of two; default: the adapter class's {@link ROW_WORKGROUP}).
   */
  static async create(
    registry: KernelRegistry,
    workgroupSize: number = ROW_WORKGROUP[adapterClass(registry.gpu.capabilities)],
  ): Promise<CrossEntropyOp> {
    const get = (entryPoint: string) =>
      registry.get({
        file: FILE,
        source,
        includes: SHADER_SNIPPETS,
        entryPoint,
        constants: { WG: workgroupSize, COLS },
      });
    const [forward, reduce, backward] = await Promise.all([
      get("ce_forward"),
      get("ce_reduce"),
      get("ce_backward"),
    ]);
    return new CrossEntropyOp(forward, reduce, backward);
  }

  /** Records the per-token losses and row statistics. */
  recordForward(rec: Recorder, args: CrossEntropyForwardArgs): void {
    const { logits, targets, mask, loss, stats } = args;
    const [T, V] = checkRows(logits, targets, mask);
    expectSize(OP, "loss", loss, "f32", T);
    expectShape(OP, "stats", stats, "f32", [T, 2]);
    if (T === 0) return;
    expectPositive(OP, "logits", logits, "V", V);
    const grid = splitGrid(rec, T);
    rec.dispatch(
      this.forward,
      { logits, targets, mask, loss, stats },
      { V, rows: T, rowGroups: grid[0], gradScale: 0 },
      grid,
    );
  }

  /** Records totals = [sum(loss), sum(mask)] (the scored-token count for a 0/1 mask). */
  recordTotals(rec: Recorder, loss: Tensor, mask: Tensor, totals: Tensor): void {
    const T = loss.size;
    expectSize(OP, "loss", loss, "f32", T);
    expectSize(OP, "mask", mask, "f32", T);
    expectSize(OP, "totals", totals, "f32", 2);
    rec.dispatch(
      this.reduce,
      { lossIn: loss, mask, totals },
      { V: 0, rows: T, rowGroups: 1, gradScale: 0 },
      [1],
    );
  }

  /** Records dLogits = (softmax(logits) - onehot(targets)) * mask * gradScale. */
  recordBackward(rec: Recorder, args: CrossEntropyBackwardArgs, gradScale: number): void {
    const { logits, targets, mask, stats, dLogits } = args;
    const [T, V] = checkRows(logits, targets, mask);
    expectShape(OP, "stats", stats, "f32", [T, 2]);
    expectShape(OP, "dLogits", dLogits, "f32", logits.shape);
    expectArgument(OP, "gradScale", Number.isFinite(gradScale), "finite", gradScale);
    if (T === 0 || V === 0) return;
    const [rowGroups, rowLayers] = splitGrid(rec, T);
    rec.dispatch(
      this.backward,
      { logits, targets, mask, statsIn: stats, dLogits },
      { V, rows: T, rowGroups, gradScale },
      [Math.ceil(V / COLS), rowGroups, rowLayers],
    );
  }
}

function checkRows(logits: Tensor, targets: Tensor, mask: Tensor): [number, number] {
  const [T, V] = expectRows(OP, "logits", logits, "f32");
  expectSize(OP, "targets", targets, "u32", T);
  expectSize(OP, "mask", mask, "f32", T);
  return [T, V];
}
