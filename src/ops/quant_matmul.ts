import { QUANT_MATMUL_WGSL as source } from "./shaders.generated.ts";
import type { GgmlQuantType } from "../core/quant.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { checkMatmulTiles, type MatmulTiles, matmulTiles, maxDispatchDepth } from "./matmul.ts";
import { qtypeConstant, QUANT_SNIPPETS, type QuantMatrix, resolveTypes } from "./quant_weight.ts";
import { describeTensor, expectRows } from "./shapes.ts";

const FILE = "quant_matmul.wgsl";
const OP = "quant matmul";

/** Options of {@link QuantMatmulOp.create}. */
export interface QuantMatmulCreateOptions {
  /** Block types to compile for (default: every quantized type). */
  types?: readonly GgmlQuantType[];
  /** Workgroup tiles, as for the f32 matmul (tk must be a multiple of 4). */
  tiles?: MatmulTiles;
}

/** Options of the record methods. */
export interface QuantMatmulOptions {
  /** Add into the output instead of overwriting it. */
  accumulate?: boolean;
  /**
   * The [T, out] operand (Y of the forward, dY of the input gradient) is columns
   * [columns, columns + out) of a wider [T, width] tensor (a matrix split by rows).
   */
  columns?: number;
}

type Entry = "forward" | "backward_input";

/**
 * Tiled matmuls against a quantized weight W [out, in] (shaders/quant_matmul.wgsl), for prefill
 * and training: Y = X·Wᵀ, and the input gradient dX = dY·W that backpropagation through a frozen
 * base layer needs. W stays in its GGUF blocks; each workgroup dequantizes the tiles it loads.
 */
export class QuantMatmulOp {
  private constructor(
    private readonly kernels: Map<string, Kernel>,
    /** Workgroup tiles the kernels were compiled with. */
    readonly tiles: MatmulTiles,
  ) {}

  /** Compiles both forms, overwriting and accumulating, for each type. */
  static async create(
    registry: KernelRegistry,
    options: QuantMatmulCreateOptions = {},
  ): Promise<QuantMatmulOp> {
    const tiles = options.tiles ?? matmulTiles(registry.gpu.capabilities);
    checkMatmulTiles(OP, tiles, 4);
    const kernels = new Map<string, Kernel>();
    const jobs = [];
    for (const type of resolveTypes(options.types)) {
      for (const entryPoint of ["forward", "backward_input"] as const) {
        for (const accumulate of [false, true]) {
          const constants = {
            QTYPE: qtypeConstant(type),
            ACCUMULATE: accumulate,
            WG_X: tiles.wgX,
            WG_Y: tiles.wgY,
            TK: tiles.tk,
            TM: tiles.tm,
            TN: tiles.tn,
          };
          jobs.push(
            registry.get({ file: FILE, source, includes: QUANT_SNIPPETS, entryPoint, constants })
              .then((k) => kernels.set(`${type}:${entryPoint}:${accumulate}`, k)),
          );
        }
      }
    }
    await Promise.all(jobs);
    return new QuantMatmulOp(kernels, tiles);
  }

  /**
   * Records Y (=|+=) X·Wᵀ. X [T, in] f32 (leading dimensions fold into T), W quantized
   * [out, in], Y [T, out] f32.
   */
  recordForward(
    rec: Recorder,
    x: Tensor,
    w: QuantMatrix,
    y: Tensor,
    options: QuantMatmulOptions = {},
  ): void {
    const [t, k] = expectRows(`${OP} forward`, "X", x, "f32");
    if (k !== w.cols) throw fault("forward", "X", `f32 [T, ${w.cols}]`, x);
    const [ty, width] = expectRows(`${OP} forward`, "Y", y, "f32");
    const from = options.columns ?? 0;
    if (ty !== t || !fits(from, w.rows, width, options.columns === undefined)) {
      throw fault("forward", "Y", `f32 [${t}, ${w.rows}]${windowText(options)}`, y);
    }
    this.#dispatch(rec, "forward", x, w, y, t, w.rows, k, options, {
      lda: k,
      ldc: width,
      aOffset: 0,
      cOffset: from,
      wRow0: 0,
    });
  }

  /**
   * Records dX (=|+=) dY·W, the input gradient of Y = X·Wᵀ. dY [T, out] f32, W quantized
   * [out, in], dX [T, in] f32.
   */
  recordInputGrad(
    rec: Recorder,
    dy: Tensor,
    w: QuantMatrix,
    dx: Tensor,
    options: QuantMatmulOptions = {},
  ): void {
    const [t, width] = expectRows(`${OP} input grad`, "dY", dy, "f32");
    const from = options.columns ?? 0;
    if (!fits(from, w.rows, width, options.columns === undefined)) {
      throw fault("input grad", "dY", `f32 [T, ${w.rows}]${windowText(options)}`, dy);
    }
    const [tx, n] = expectRows(`${OP} input grad`, "dX", dx, "f32");
    if (tx !== t || n !== w.cols) throw fault("input grad", "dX", `f32 [${t}, ${w.cols}]`, dx);
    // K (W's rows: a vocabulary, for the LM head) in windows short enough for llvmpipe's loop
    // limit, every window after the first adding onto dX.
    const depth = maxDispatchDepth(this.tiles);
    for (let k0 = 0; k0 === 0 || k0 < w.rows; k0 += depth) {
      const accumulate = k0 > 0 || (options.accumulate ?? false);
      this.#dispatch(rec, "backward_input", dy, w, dx, t, n, Math.min(depth, w.rows - k0), {
        accumulate,
      }, { lda: width, ldc: n, aOffset: from + k0, cOffset: 0, wRow0: k0 });
    }
  }

  #dispatch(
    rec: Recorder,
    entry: Entry,
    a: Tensor,
    w: QuantMatrix,
    c: Tensor,
    m: number,
    n: number,
    k: number,
    options: QuantMatmulOptions,
    strides: { lda: number; ldc: number; aOffset: number; cOffset: number; wRow0: number },
  ): void {
    const kernel = this.kernels.get(`${w.type}:${entry}:${options.accumulate ?? false}`);
    if (!kernel) {
      throw new KernelUsageError(`${OP}: W is ${w.type}, which this op was not created for`);
    }
    const { wgX, wgY, tm, tn } = this.tiles;
    rec.dispatch(kernel, { a, qweight: w.data, c }, { m, n, k, rowBytes: w.rowBytes, ...strides }, [
      Math.ceil(n / (tn * wgX)),
      Math.ceil(m / (tm * wgY)),
    ]);
  }
}

function fault(form: string, name: string, expected: string, t: Tensor): ShapeError {
  return new ShapeError(`${OP} ${form}: ${name} must be ${expected}, got ${describeTensor(t)}`);
}

/** Whether `count` columns from `from` lie in rows of `width` (exactly fill them when dense). */
function fits(from: number, count: number, width: number, dense: boolean): boolean {
  if (dense) return count === width;
  return Number.isInteger(from) && from >= 0 && from + count <= width;
}

function windowText(options: QuantMatmulOptions): string {
  return options.columns === undefined ? "" : ` at columns ${options.columns}.. of a wider tensor`;
}
