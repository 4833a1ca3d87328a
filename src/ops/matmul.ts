import source from "../../shaders/matmul.wgsl" with { type: "text" };
import { ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";

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

/** C = alpha * op(A) · op(B), optionally accumulated, for one fixed form and tile shape. */
export class MatmulOp {
  private constructor(
    private readonly kernel: Kernel,
    readonly form: Required<MatmulForm>,
    readonly tiles: MatmulTiles,
  ) {}

  /** Compiles the kernel for one form and tile shape. */
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
    const kernel = await registry.get({
      file: "matmul.wgsl",
      source,
      constants: {
        TRANS_A: full.transA,
        TRANS_B: full.transB,
        ACCUMULATE: full.accumulate,
        WG_X: tiles.wgX,
        WG_Y: tiles.wgY,
        TK: tiles.tk,
      },
    });
    return new MatmulOp(kernel, full, tiles);
  }

  /** Records C[M, N] (=|+=) alpha * op(A)[M, K] · op(B)[K, N]; shapes are checked. */
  record(rec: Recorder, a: Tensor, b: Tensor, c: Tensor, alpha = 1): void {
    const [ar, ac] = matrixShape(a, "A");
    const [br, bc] = matrixShape(b, "B");
    const [m, k] = this.form.transA ? [ac, ar] : [ar, ac];
    const [kb, n] = this.form.transB ? [bc, br] : [br, bc];
    if (k !== kb) {
      throw new ShapeError(`matmul: op(A) is [${m}, ${k}] but op(B) is [${kb}, ${n}]`);
    }
    const [cm, cn] = matrixShape(c, "C");
    if (cm !== m || cn !== n) {
      throw new ShapeError(`matmul: C is [${cm}, ${cn}], need [${m}, ${n}]`);
    }
    const { wgX, wgY } = this.tiles;
    rec.dispatch(this.kernel, { a, b, c }, { m, n, k, alpha }, [
      Math.ceil(n / (8 * wgX)),
      Math.ceil(m / (8 * wgY)),
    ]);
  }
}

/** A tensor seen as a matrix: leading dimensions fold into rows. */
function matrixShape(t: Tensor, name: string): [number, number] {
  if (t.dtype !== "f32") throw new ShapeError(`matmul: ${name} must be f32, got ${t.dtype}`);
  if (t.shape.length === 0) throw new ShapeError(`matmul: ${name} is a scalar`);
  const cols = t.shape[t.shape.length - 1];
  return [cols === 0 ? 0 : t.size / cols, cols];
}
