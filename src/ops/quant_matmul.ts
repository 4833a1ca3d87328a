import ownSource from "../../shaders/quant_matmul.wgsl" with { type: "text" };
import type { GgmlQuantType } from "../core/quant.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { DEFAULT_TILES, type MatmulTiles } from "./matmul.ts";
import {
  qtypeConstant,
  type QuantMatrix,
  resolveTypes,
  withBlockDecoding,
} from "./quant_weight.ts";

const source = withBlockDecoding(ownSource);
const FILE = "quant_matmul.wgsl";

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
    const tiles = options.tiles ?? DEFAULT_TILES;
    if (tiles.tk % 4 !== 0 || tiles.tk < 4) {
      throw new KernelUsageError(`quant matmul: tk = ${tiles.tk} must be a multiple of 4`);
    }
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
          };
          jobs.push(
            registry.get({ file: FILE, source, entryPoint, constants })
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
    const [t, k] = matrixShape(x, "X");
    const [ty, n] = matrixShape(y, "Y");
    if (k !== w.cols || ty !== t || n !== w.rows) {
      throw new ShapeError(
        `quant matmul: X [${t}, ${k}] · Wᵀ with W [${w.rows}, ${w.cols}] cannot give Y [${ty}, ${n}]`,
      );
    }
    this.#dispatch(rec, "forward", x, w, y, t, n, k, options);
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
    const [t, k] = matrixShape(dy, "dY");
    const [tx, n] = matrixShape(dx, "dX");
    if (k !== w.rows || tx !== t || n !== w.cols) {
      throw new ShapeError(
        `quant matmul: dY [${t}, ${k}] · W with W [${w.rows}, ${w.cols}] cannot give dX [${tx}, ${n}]`,
      );
    }
    this.#dispatch(rec, "backward_input", dy, w, dx, t, n, k, options);
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
  ): void {
    const kernel = this.kernels.get(`${w.type}:${entry}:${options.accumulate ?? false}`);
    if (!kernel) {
      throw new KernelUsageError(`quant matmul: not compiled for ${w.type} (see create's types)`);
    }
    const { wgX, wgY } = this.tiles;
    rec.dispatch(kernel, { a, qweight: w.data, c }, { m, n, k, rowBytes: w.rowBytes }, [
      Math.ceil(n / (8 * wgX)),
      Math.ceil(m / (8 * wgY)),
    ]);
  }
}

/** An f32 tensor seen as a matrix: leading dimensions fold into rows. */
function matrixShape(t: Tensor, name: string): [number, number] {
  if (t.dtype !== "f32") throw new ShapeError(`quant matmul: ${name} must be f32, got ${t.dtype}`);
  if (t.shape.length === 0) throw new ShapeError(`quant matmul: ${name} is a scalar`);
  const cols = t.shape[t.shape.length - 1];
  return [cols === 0 ? 0 : t.size / cols, cols];
}
