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

/** Rows of C up to which a product runs on the short tiles ({@link shortTiles}). */
export const SHORT_ROWS = 16;

/**
 * The tiles a product of at most {@link SHORT_ROWS} rows runs on: `tiles` with two rows of
 * threads, so a short prompt or a training tile of a few tokens does not compute 128-row blocks
 * for them. Each element is the same sum in the same order on either.
 */
export function shortTiles(tiles: MatmulTiles): MatmulTiles {
  return { ...tiles, wgY: Math.min(tiles.wgY, SHORT_ROWS / 8) };
}

/**
 * The tiles a product of more than {@link SHORT_ROWS} rows and at most half a block's columns
 * (N <= 4 wgX) runs on: `tiles` with half the columns of threads, so a narrow product (a small
 * model's projections, the input gradient of a 64-wide layer) does not compute a block twice its
 * width in half as many workgroups. Each element is the same sum in the same order on either.
 */
export function narrowTiles(tiles: MatmulTiles): MatmulTiles {
  return { ...tiles, wgX: Math.max(1, Math.floor(tiles.wgX / 2)) };
}

interface Variant {
  tiles: MatmulTiles;
  kernel: Kernel;
  /** The f16-B entry point (forms without TRANS_A). */
  kernelF16B: Kernel | undefined;
}

/**
 * C = alpha * op(A) · op(B), optionally accumulated, for one fixed form and tile shape (and its
 * {@link shortTiles} for products of few rows, {@link narrowTiles} for narrow ones). Unless A is
 * transposed, B may also be an f16 tensor (weights stored as float16 [out, in]: read transposed
 * for a projection's forward, as stored for its input gradient).
 */
export class MatmulOp {
  private constructor(
    /** The short, full and narrow tiles' variants (the full one where the others are the same). */
    private readonly variants: { short: Variant; full: Variant; narrow: Variant },
    readonly form: Required<MatmulForm>,
    readonly tiles: MatmulTiles,
  ) {}

  /** Compiles the kernels for one form and tile shape (and their f16-B twins unless TRANS_A). */
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
    const short = shortTiles(tiles);
    const narrow = narrowTiles(tiles);
    const entries = full.transA ? ["main"] : ["main", "main_f16b"];
    const compile = async (t: MatmulTiles): Promise<Variant> => {
      const constants = {
        TRANS_A: full.transA,
        TRANS_B: full.transB,
        WG_X: t.wgX,
        WG_Y: t.wgY,
        TK: t.tk,
      };
      const [kernel, kernelF16B] = await Promise.all(
        entries.map((entryPoint) =>
          registry.get({ file: "matmul.wgsl", source, entryPoint, constants })
        ),
      );
      return { tiles: t, kernel, kernelF16B };
    };
    const [shortVariant, fullVariant, narrowVariant] = await Promise.all([
      short.wgY < tiles.wgY ? compile(short) : undefined,
      compile(tiles),
      narrow.wgX < tiles.wgX ? compile(narrow) : undefined,
    ]);
    return new MatmulOp(
      {
        short: shortVariant ?? fullVariant,
        full: fullVariant,
        narrow: narrowVariant ?? fullVariant,
      },
      full,
      tiles,
    );
  }

  /** The tiles a product of `m` rows and `n` columns runs on. */
  tilesFor(m: number, n = Infinity): MatmulTiles {
    return this.#variant(m, n).tiles;
  }

  #variant(m: number, n: number): Variant {
    if (m <= SHORT_ROWS) return this.variants.short;
    return 2 * n <= 8 * this.tiles.wgX ? this.variants.narrow : this.variants.full;
  }

  /**
   * Records C[M, N] (=|+=) alpha * op(A)[M, K] · op(B)[K, N]; shapes are checked. A and C are f32;
   * B is f32, or f16 unless A is transposed. With `columns`, op(A) or C is a window of a wider A or C.
   * A K longer than the tiles' {@link maxDispatchDepth} is summed in windows of that depth, one dispatch each.
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
    if (bF16 && this.form.transA) {
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
    const variant = this.#variant(m, n);
    const { wgX, wgY } = variant.tiles;
    const kernel = bF16 ? variant.kernelF16B! : variant.kernel;
    const bindings: Record<string, Tensor> = bF16 ? { a, b16: b, c } : { a, b, c };
    const grid: [number, number] = [Math.ceil(n / (8 * wgX)), Math.ceil(m / (8 * wgY))];
    const depth = maxDispatchDepth(variant.tiles);
    // Windows of K one after another: A's columns (rows if transposed), B's rows (columns if
    // transposed); every window after the first adds onto C.
    for (let k0 = 0; k0 === 0 || k0 < k; k0 += depth) {
      const params = {
        m,
        n,
        k: Math.min(depth, k - k0),
        alpha,
        lda: ac,
        ldc: cn,
        aOffset: aFrom + (this.form.transA ? k0 * ac : k0),
        cOffset: cFrom,
        ldb: bc,
        bOffset: this.form.transB ? k0 : k0 * bc,
        accumulate: this.form.accumulate || k0 > 0 ? 1 : 0,
      };
      rec.dispatch(kernel, bindings, params, grid);
    }
  }
}

/**
 * Loop iterations one invocation may run on Mesa's llvmpipe and lavapipe, every loop of the
 * shader counted together (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS): past it every loop exits at
 * once and the kernel goes on with what it has, so a long sum comes out short without an error.
 */
export const LOOP_ITERATION_LIMIT = 65535;

/**
 * The most of K one matmul dispatch with `tiles` walks, so that an invocation stays within
 * {@link LOOP_ITERATION_LIMIT}; a longer K runs as several dispatches, each adding onto C. Per
 * step of TK the kernel runs the K loop once and its three inner loops (two tile fills, the tile
 * product), each one more time than it iterates (the exit test); the block's stores loop 16 x 5.
 */
export function maxDispatchDepth(tiles: MatmulTiles): number {
  const { wgX, wgY, tk } = tiles;
  const threads = wgX * wgY;
  const fill = (vec4s: number) => Math.ceil(vec4s / threads) + 1;
  const perStep = 1 + fill(tk * 2 * wgY) + fill(tk * 2 * wgX) + tk + 1;
  const stores = 16 * 5;
  const margin = 256;
  return Math.floor((LOOP_ITERATION_LIMIT - stores - margin) / perStep) * tk;
}
