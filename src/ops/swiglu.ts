import { SWIGLU_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { expectMultiple, expectShape, strideGrid } from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";

const FILE = "swiglu.wgsl";
const MAX_GROUPS = 4096;

/** Options for {@link SwiGluOp.create}. */
export interface SwiGluOptions {
  /** Invocations per workgroup (default 64). */
  workgroupSize?: number;
}

/**
 * The SwiGLU gate of the MLP (shaders/swiglu.wgsl): out = silu(gate) * up elementwise, and its
 * backward. All tensors are f32 of one shape (usually [tokens, hidden]) with a size divisible by 4.
 */
export class SwiGluOp {
  private constructor(
    private readonly forward: Kernel,
    private readonly backward: Kernel,
    private readonly wg: number,
  ) {}

  /** Compiles the forward and backward kernels. */
  static async create(registry: KernelRegistry, options: SwiGluOptions = {}): Promise<SwiGluOp> {
    const WG = options.workgroupSize ?? 64;
    const [forward, backward] = await Promise.all(
      ["forward", "backward"].map((entryPoint) =>
        registry.get({
          file: FILE,
          source,
          includes: SHADER_SNIPPETS,
          entryPoint,
          constants: { WG },
        })
      ),
    );
    return new SwiGluOp(forward, backward, WG);
  }

  /** Records out = silu(gate) * up. */
  recordForward(rec: Recorder, gate: Tensor, up: Tensor, out: Tensor): void {
    const params = this.#params("swiglu forward", { gate, up, out });
    rec.dispatch(this.forward, { gate, up, out }, params, [params.stride / this.wg]);
  }

  /** Records dGate = dOut * up * silu'(gate) and dUp = dOut * silu(gate). */
  recordBackward(
    rec: Recorder,
    dOut: Tensor,
    gate: Tensor,
    up: Tensor,
    dGate: Tensor,
    dUp: Tensor,
  ): void {
    const bindings = { dOut, gate, up, dGate, dUp };
    const params = this.#params("swiglu backward", bindings);
    rec.dispatch(this.backward, bindings, params, [params.stride / this.wg]);
  }

  /** Every tensor f32 of gate's shape, its size a multiple of 4. */
  #params(op: string, tensors: Record<string, Tensor>): { n4: number; stride: number } {
    const { gate } = tensors;
    for (const [name, t] of Object.entries(tensors)) expectShape(op, name, t, "f32", gate.shape);
    expectMultiple(op, "gate", gate, "size", gate.size, 4);
    const n4 = gate.size / 4;
    return { n4, stride: strideGrid(n4, this.wg, MAX_GROUPS).stride };
  }
}
