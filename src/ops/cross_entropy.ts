import ownSource from "../../shaders/cross_entropy.wgsl" with { type: "text" };
import rowStats from "../../shaders/row_stats.wgsl" with { type: "text" };

import { ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { rowGrid, rowsAndWidth } from "./softmax.ts";

/** This op's shader with the shared row statistics appended. */
const source = `${ownSource}\n${rowStats}`;

const WG = 256;
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

  /** Compiles the three kernels (cached by the registry). */
  static async create(registry: KernelRegistry): Promise<CrossEntropyOp> {
    const get = (entryPoint: string) =>
      registry.get({ file: FILE, source, entryPoint, constants: { WG, COLS } });
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
    checkShape(loss, [T], "f32", "cross-entropy loss");
    checkShape(stats, [T, 2], "f32", "cross-entropy stats");
    if (T === 0) return;
    if (V === 0) throw new ShapeError("cross-entropy over an empty vocabulary");
    const grid = rowGrid(rec, T);
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
    checkShape(loss, [T], "f32", "cross-entropy loss");
    checkShape(mask, [T], "f32", "cross-entropy mask");
    checkShape(totals, [2], "f32", "cross-entropy totals");
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
    checkShape(stats, [T, 2], "f32", "cross-entropy stats");
    checkShape(dLogits, logits.shape, "f32", "cross-entropy dLogits");
    if (!Number.isFinite(gradScale)) {
      throw new ShapeError(`cross-entropy gradScale must be finite, got ${gradScale}`);
    }
    if (T === 0 || V === 0) return;
    const [rowGroups, rowLayers] = rowGrid(rec, T);
    rec.dispatch(
      this.backward,
      { logits, targets, mask, statsIn: stats, dLogits },
      { V, rows: T, rowGroups, gradScale },
      [Math.ceil(V / COLS), rowGroups, rowLayers],
    );
  }
}

function checkRows(logits: Tensor, targets: Tensor, mask: Tensor): [number, number] {
  const [T, V] = rowsAndWidth(logits, "cross-entropy logits");
  checkShape(targets, [T], "u32", "cross-entropy targets");
  checkShape(mask, [T], "f32", "cross-entropy mask");
  return [T, V];
}

function checkShape(t: Tensor, shape: readonly number[], dtype: string, what: string): void {
  const size = shape.reduce((a, b) => a * b, 1);
  if (t.dtype !== dtype || t.size !== size || (shape.length === 2 && t.shape.length !== 2)) {
    throw new ShapeError(`${what} must be ${dtype} [${shape}], got ${t.dtype} [${t.shape}]`);
  }
}
