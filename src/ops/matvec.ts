import { MATVEC_WGSL as source } from "./shaders.generated.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { expectMultiple, expectPositive, expectShape, expectSize, splitGrid } from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";

const OP = "matvec";

/**
 * Threads per workgroup (a power of two) and rows per workgroup. On llvmpipe a workgroup runs on
 * one CPU thread as 8-wide SIMD and every barrier costs a coroutine switch, so one SIMD group with
 * more rows is fastest there (measured: about 2x the GPU-style shape); on real GPUs a wide group
 * striding over K keeps loads coalesced.
 */
export function matvecTiling(gpu: Gpu): { WG: number; ROWS: number } {
  return gpu.capabilities.isFallbackAdapter ? { WG: 8, ROWS: 8 } : { WG: 64, ROWS: 4 };
}

/** Options of {@link MatvecOp.record}. */
export interface MatvecOptions {
  /** [N] added to every output row. */
  bias?: Tensor;
  /** Add into y instead of overwriting it. */
  accumulate?: boolean;
}

type Variant = "main" | "main_bias" | "main_f16" | "main_f16_bias";

/**
 * Matrix-vector product for decode, y[N] = W[N, K] x[K] (+ bias) (+ y), with W in f32 or f16
 * and K a multiple of 4. Memory-bandwidth bound: each weight is read exactly once.
 */
export class MatvecOp {
  private constructor(
    private readonly kernels: Map<string, Kernel>,
    private readonly rowsPerGroup: number,
    /** Whether f16 weights are accepted. */
    readonly f16: boolean,
  ) {}

  /**
   * Compiles every variant: with and without bias and accumulation, and the f16-weight ones when
   * `f16` (default: the device's `shader-f16`). The f16 kernels read halves packed in u32 words
   * through `unpack2x16float`, which is core WGSL, so `f16: true` also works without the feature;
   * on llvmpipe this measured faster than `enable f16` with `array<vec4<f16>>`.
   */
  static async create(
    registry: KernelRegistry,
    options: { f16?: boolean } = {},
  ): Promise<MatvecOp> {
    const f16 = options.f16 ?? registry.gpu.capabilities.shaderF16;
    const entries: Variant[] = ["main", "main_bias"];
    if (f16) entries.push("main_f16", "main_f16_bias");
    const kernels = new Map<string, Kernel>();
    const { WG, ROWS } = matvecTiling(registry.gpu);
    await Promise.all(
      entries.flatMap((entryPoint) =>
        [false, true].map(async (accumulate) => {
          const kernel = await registry.get({
            file: "matvec.wgsl",
            source,
            includes: SHADER_SNIPPETS,
            entryPoint,
            constants: { WG, ROWS, ACCUMULATE: accumulate },
          });
          kernels.set(`${entryPoint}:${accumulate}`, kernel);
        })
      ),
    );
    return new MatvecOp(kernels, ROWS, f16);
  }

  /** Records y = W x (+ bias) (+ y). W [N, K] f32 or f16, x [K] f32, y [N] f32, bias [N] f32. */
  record(rec: Recorder, w: Tensor, x: Tensor, y: Tensor, options: MatvecOptions = {}): void {
    const [n, k] = expectShape(OP, "W", w, ["f32", "f16"], ["N", "K"]);
    expectPositive(OP, "W", w, "N", n);
    expectPositive(OP, "W", w, "K", k);
    expectMultiple(OP, "W", w, "K", k, 4); // vec4 loads: pad W and x
    expectSize(OP, "x", x, "f32", k);
    expectSize(OP, "y", y, "f32", n);
    if (options.bias) expectSize(OP, "bias", options.bias, "f32", n);
    if (w.dtype === "f16" && !this.f16) {
      throw new KernelUsageError("matvec: f16 weights need an op created with f16 (shader-f16)");
    }

    const entry = (w.dtype === "f16" ? "main_f16" : "main") + (options.bias ? "_bias" : "");
    const kernel = this.kernels.get(`${entry}:${options.accumulate ?? false}`)!;
    const grid = splitGrid(rec, Math.ceil(n / this.rowsPerGroup));
    const bindings: Record<string, Tensor> = { x, y };
    bindings[w.dtype === "f16" ? "weight16" : "weight"] = w;
    if (options.bias) bindings.bias = options.bias;
    rec.dispatch(kernel, bindings, { rows: n, k4: k / 4, groupsX: grid[0] }, grid);
  }
}
