import { QUANT_MATVEC_WGSL as source } from "./shaders.generated.ts";
import type { GgmlQuantType } from "../core/quant.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { qtypeConstant, QUANT_SNIPPETS, type QuantMatrix, resolveTypes } from "./quant_weight.ts";
import { expectSize, splitGrid } from "./shapes.ts";

const OP = "quant matvec";

/** Threads per workgroup (a power of two) and rows per workgroup. */
export interface QuantMatvecTiles {
  /** Invocations per workgroup. */
  wg: number;
  /** Output rows per workgroup. */
  rows: number;
}

/**
 * On llvmpipe a workgroup runs on one CPU thread as 8-wide SIMD and barriers cost coroutine
 * switches, so one SIMD group is fastest there (as for the f32 matvec); and every storage load
 * costs about as much per 32-bit word as another (lavapipe loads each lane's word on its own), so
 * many rows per workgroup pay: each x load serves all of them (32 rows reads Q8_0 at about 1.3x
 * the speed of 8, bench/RESULTS.md). On GPUs a wider group keeps loads coalesced.
 */
export function quantMatvecTiles(gpu: Gpu): QuantMatvecTiles {
  return gpu.capabilities.isFallbackAdapter ? { wg: 8, rows: 32 } : { wg: 64, rows: 4 };
}

/** Options of {@link QuantMatvecOp.create}. */
export interface QuantMatvecCreateOptions {
  /** Block types to compile for (default: every quantized type). */
  types?: readonly GgmlQuantType[];
  /** Workgroup shape (default: by adapter). */
  tiles?: QuantMatvecTiles;
}

/** Options of {@link QuantMatvecOp.record}. */
export interface QuantMatvecOptions {
  /** [N] added to every output row. */
  bias?: Tensor;
  /** Add into y instead of overwriting it. */
  accumulate?: boolean;
}

/**
 * Matrix-vector product for decode over quantized weights (shaders/quant_matvec.wgsl),
 * y[N] = W[N, K] x[K] (+ bias) (+ y), with W kept in its GGUF blocks and dequantized in
 * registers. Memory-bandwidth bound: each weight byte is read once.
 */
export class QuantMatvecOp {
  private constructor(
    private readonly kernels: Map<string, Kernel>,
    /** Workgroup shape the kernels were compiled with. */
    readonly tiles: QuantMatvecTiles,
  ) {}

  /** Compiles, for each type, the kernels with and without bias and accumulation. */
  static async create(
    registry: KernelRegistry,
    options: QuantMatvecCreateOptions = {},
  ): Promise<QuantMatvecOp> {
    const tiles = options.tiles ?? quantMatvecTiles(registry.gpu);
    const { wg, rows } = tiles;
    if (!Number.isInteger(Math.log2(wg)) || !Number.isInteger(rows) || rows < 1) {
      throw new KernelUsageError(`quant matvec: bad tiles ${JSON.stringify(tiles)}`);
    }
    const kernels = new Map<string, Kernel>();
    const jobs = [];
    for (const type of resolveTypes(options.types)) {
      for (const entryPoint of ["main", "main_bias"]) {
        for (const accumulate of [false, true]) {
          jobs.push(
            registry.get({
              file: "quant_matvec.wgsl",
              source,
              includes: QUANT_SNIPPETS,
              entryPoint,
              constants: { QTYPE: qtypeConstant(type), WG: wg, ROWS: rows, ACCUMULATE: accumulate },
            }).then((k) => kernels.set(`${type}:${entryPoint}:${accumulate}`, k)),
          );
        }
      }
    }
    await Promise.all(jobs);
    return new QuantMatvecOp(kernels, tiles);
  }

  /** Records y = W x (+ bias) (+ y). W quantized [N, K], x [K] f32, y [N] f32, bias [N] f32. */
  record(
    rec: Recorder,
    w: QuantMatrix,
    x: Tensor,
    y: Tensor,
    options: QuantMatvecOptions = {},
  ): void {
    const { rows: n, cols: k } = w;
    expectSize(OP, "x", x, "f32", k);
    expectSize(OP, "y", y, "f32", n);
    if (options.bias) expectSize(OP, "bias", options.bias, "f32", n);
    const entry = options.bias ? "main_bias" : "main";
    const kernel = this.kernels.get(`${w.type}:${entry}:${options.accumulate ?? false}`);
    if (!kernel) {
      throw new KernelUsageError(`${OP}: W is ${w.type}, which this op was not created for`);
    }
    const grid = splitGrid(rec, Math.ceil(n / this.tiles.rows));
    const bindings: Record<string, Tensor> = { qweight: w.data, x, y };
    if (options.bias) bindings.bias = options.bias;
    rec.dispatch(kernel, bindings, { rows: n, k, rowBytes: w.rowBytes, groupsX: grid[0] }, grid);
  }
}
