import { MATMUL_WGSL as source } from "./shaders.generated.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { describeTensor, expectRows } from "./shapes.ts";

const OP = "matmul";

/**
 * Workgroup shape of the matmul kernel (specialisation constants). Each thread computes an 8 x 8
 * block of C, so a workgroup covers (8 wgY) x (8 wgX).
 */
export interface MatmulTiles {
  /** Threads along N. */
  wgX: number;
  /** Threads along M. */
  wgY: number;
  /** Depth of one workgroup tile along K. */
  tk: number;
}

/** Tiles that measured best on llvmpipe (see bench/RESULTS.md); other adapters may differ. */
export const DEFAULT_TILES: MatmulTiles = { wgX: 16, wgY: 16, tk: 16 };

/** Which operands are stored transposed, and whether the result adds onto C. */
export interface MatmulForm {
  /** A is stored [K, M] (as in a weight gradient dW = dY^T X). */
  transA?: boolean;
  /** B is stored [N, K] (weights stored [out, in], as checkpoints keep them). */
  transB?: boolean;
  /** C += alpha * op(A) op(B) instead of C = alpha * op(A) op(B). */
  accumulate?: boolean;
}

/**
 * Column windows (for a matrix split by rows, whose parts each fill a range of columns of a
 * product): op(A) is A's columns [a, a + K) (A stored [M, width] untransposed), and C is C's
 * columns [c, c + N) (C stored [M, width]); K and N come from B. Absent: the operand is dense.
 */
export interface MatmulColumns {
  /** First column of A that op(A) starts at. */
  a?: number;
  /** First column of C that the product is written to. */
  c?: number;
}

/**
 * C = alpha * op(A) · op(B), optionally accumulated, for one fixed form and tile shape. Unless A
 * is transposed, B may also be an f16 tensor (weights stored as float16 [out, in]: read
 * transposed for a projection's forward, as stored for its input gradient).
 */
export class MatmulOp {
  private constructor(
    private readonly kernel: Kernel,
    /** The f16-B entry point (forms without TRANS_A). */
    private readonly kernelF16B: Kernel | undefined,
    readonly form: Required<MatmulForm>,
    readonly tiles: MatmulTiles,
  ) {}

  /** Compiles the kernel for one form and tile shape (and its f16-B twin unless TRANS_A). */
  static async create(
    registry: KernelRegistry,
    form: MatmulForm = {},
    tiles: MatmulTiles = DEFAULT_TILES,
  ): Promise<MatmulOp> {
    const full = {
      transA: form.transA ?? false,
      transB: form.transB ?? false,
      accumulate: form.accumulate ?? false,
    };
    const constants = {
      TRANS_A: full.transA,
      TRANS_B: full.transB,
      ACCUMULATE: full.accumulate,
      WG_X: tiles.wgX,
      WG_Y: tiles.wgY,
      TK: tiles.tk,
    };
    const entries = full.transA ? ["main"] : ["main", "main_f16b"];
    const [kernel, kernelF16B] = await Promise.all(
      entries.map((entryPoint) =>
        registry.get({ file: "matmul.wgsl", source, entryPoint, constants })
      ),
    );
    return new MatmulOp(kernel, kernelF16B, full, tiles);
  }

  /**
   * Records C[M, N] (=|+=) alpha * op(A)[M, K] · op(B)[K, N]; shapes are checked. A and C are f32;
   * B is f32, or f16 unless A is transposed. With `columns`, op(A) or C is a window of a wider A or C.
   */
  record(
    rec: Recorder,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    alpha = 1,
    columns: MatmulColumns = {},
  ): void {
    const [ar, ac] = expectRows(OP, "A", a, "f32");
    const [br, bc] = expectRows(OP, "B", b, ["f32", "f16"]);
    const bF16 = b.dtype === "f16";
    if (bF16 && !this.kernelF16B) {
      throw new KernelUsageError("matmul: an f16 B is only read with A untransposed");
    }
    const [kb, n] = this.form.transB ? [bc, br] : [br, bc];
    if (columns.a !== undefined && this.form.transA) {
      throw new KernelUsageError("matmul: a column window of A needs A untransposed ([M, K])");
    }
    const aFrom = columns.a ?? 0;
    const [m, k] = this.form.transA ? [ac, ar] : [ar, columns.a === undefined ? ac : kb];
    const [cm, cn] = expectRows(OP, "C", c, "f32");
    const cFrom = columns.c ?? 0;
    const window = (from: number, count: number, width: number) =>
      Number.isInteger(from) && from >= 0 && from + count <= width;
    if (k !== kb || (columns.a !== undefined && !window(aFrom, k, ac))) {
      throw new ShapeError(
        `matmul: op(A) is [${m}, ${k}] from column ${aFrom} but op(B) is [${kb}, ${n}] ` +
          `(A ${describeTensor(a)}, B ${describeTensor(b)})`,
      );
    }
    if (cm !== m || (columns.c === undefined ? cn !== n : !window(cFrom, n, cn))) {
      throw new ShapeError(
        `matmul: C must be f32 [${m}, ${n}] or fold to it` +
          (columns.c === undefined ? "" : ` (columns ${cFrom}.. of a wider C)`) +
          `, got ${describeTensor(c)}`,
      );
    }
    const { wgX, wgY } = this.tiles;
    const bindings: Record<string, Tensor> = bF16 ? { a, b16: b, c } : { a, b, c };
    const params = { m, n, k, alpha, lda: ac, ldc: cn, aOffset: aFrom, cOffset: cFrom };
    rec.dispatch(bF16 ? this.kernelF16B! : this.kernel, bindings, params, [
      Math.ceil(n / (8 * wgX)),
      Math.ceil(m / (8 * wgY)),
    ]);
  }
}
