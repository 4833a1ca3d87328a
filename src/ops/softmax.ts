import { SOFTMAX_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { adapterClass, expectRows, expectShape, ROW_WORKGROUP, splitGrid } from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";

const OP = "softmax";

/** Row-wise, max-subtracted softmax: probs[t, :] = softmax(logits[t, :]). */
export class SoftmaxOp {
  private constructor(private readonly kernel: Kernel) {}

  /**
   * Compiles the kernel (cached by the registry) with `workgroupSize` invocations per row
   * (a power of two; default: the adapter class's {@link ROW_WORKGROUP}).
   */
  static async create(
    registry: KernelRegistry,
    workgroupSize: number = ROW_WORKGROUP[adapterClass(registry.gpu.capabilities)],
  ): Promise<SoftmaxOp> {
    const kernel = await registry.get({
      file: "softmax.wgsl",
      source,
      includes: SHADER_SNIPPETS,
      entryPoint: "softmax_rows",
      constants: { WG: workgroupSize },
    });
    return new SoftmaxOp(kernel);
  }

  /** Records probs = softmax(logits) along the last axis; logits [T, V] (or [V]) f32, probs alike. */
  record(rec: Recorder, logits: Tensor, probs: Tensor): void {
    const [T, V] = expectRows(OP, "logits", logits, "f32");
    expectShape(OP, "probs", probs, "f32", logits.shape);
    if (T === 0 || V === 0) return;
    const grid = splitGrid(rec, T);
    rec.dispatch(this.kernel, { logits, probs }, { V, rows: T, groupsX: grid[0] }, grid);
  }
}
