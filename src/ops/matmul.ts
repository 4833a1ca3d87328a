import { MATMUL_WGSL as source } from "./shaders.generated.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";
import { type AdapterClass, adapterClass, describeTensor, expectRows } from "./shapes.ts";

const OP = "matmul";

/**
 * Workgroup shape of the matmul kernels (specialisation constants). Each thread computes a
 * tm x tn block of C, so a workgroup covers (tm wgY) x (tn wgX).
 */
export interface MatmulTiles {
  /** Threads along N. */
  wgX: number;
  /** Threads along M. */
  wgY: number;
  /** Depth of one workgroup tile along K. */
  tk: number;
  /** Rows of C per thread, a multiple of 4. */
  tm: number;
  /** Columns of C per thread, a multiple of 4. */
  tn: number;
}

/**
 * Tiles per adapter class. On llvmpipe a workgroup's eight threads along N are one SIMD group
 * sharing their rows of A, and a larger block per thread does more multiply-adds per tile load
 * (the loads, not the FMAs, bound it there): 16 x 16 a thread in 8 x 8 threads ran 1.25-1.35x the
 * 8 x 8 blocks in 16 x 16 threads at prefill, input-gradient and training shapes (bench/RESULTS.md).
 * GPUs keep the 8 x 8 blocks in 16 x 16 threads until measured (kernels_bench times candidates).
 */
export const MATMUL_TILES: Readonly<Record<AdapterClass, MatmulTiles>> = {
  fallback: { wgX: 8, wgY: 8, tk: 16, tm: 16, tn: 16 },
  integrated: { wgX: 16, wgY: 16, tk: 16, tm: 8, tn: 8 },
  discrete: { wgX: 16, wgY: 16, tk: 16, tm: 8, tn: 8 },
};

/**
 * Throws {@link KernelUsageError} unless `tiles` are positive integers with the block a thread
 * holds whole vec4s of rows and columns (tm and tn multiples of 4), and TK a multiple of `tkStep`.
 */
export function checkMatmulTiles(op: string, tiles: MatmulTiles, tkStep = 1): void {
  const { wgX, wgY, tk, tm, tn } = tiles;
  const whole = (n: number, step: number) => Number.isInteger(n) && n >= step && n % step === 0;
  if (!whole(wgX, 1) || !whole(wgY, 1) || !whole(tk, tkStep) || !whole(tm, 4) || !whole(tn, 4)) {
    throw new KernelUsageError(
      `${op}: tiles ${JSON.stringify(tiles)} need tm and tn multiples of 4` +
        (tkStep > 1 ? ` and tk a multiple of ${tkStep}` : ""),
    );
  }
}

/** The matmul tiles of a device's adapter class. */
export function matmulTiles(capabilities: Parameters<typeof adapterClass>[0]): MatmulTiles {
  return MATMUL_TILES[adapterClass(capabilities)];
}

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
 * The tiles a product of at most {@link SHORT_ROWS} rows runs on: `tiles` with SHORT_ROWS rows of
 * C a workgroup, so a short prompt or a training tile of a few tokens does not compute 128-row
 * blocks for them. Each element is the same sum in the same order on either.
 */
export function shortTiles(tiles: MatmulTiles): MatmulTiles {
  return { ...tiles, wgY: Math.max(1, Math.min(tiles.wgY, Math.floor(SHORT_ROWS / tiles.tm))) };
}

/**
 * The tiles a product of more than {@link SHORT_ROWS} rows and at most half a block's columns
 * (N <= tn wgX / 2) runs on: `tiles` with half the columns a workgroup, so a narrow product (a
 * small model's projections, the input gradient of a 64-wide layer) does not compute a block twice
 * its width in half as many workgroups. Halved are the threads along N down to 8 (on llvmpipe a
 * SIMD group, whose threads then share their rows of A), then each thread's columns (to at most
 * half, whole vec4s). Each element is the same sum in the same order on either.
 */
export function narrowTiles(tiles: MatmulTiles): MatmulTiles {
  if (tiles.wgX > 8) return { ...tiles, wgX: Math.floor(tiles.wgX / 2) };
  return tiles.tn > 4 ? { ...tiles, tn: Math.max(4, Math.floor(tiles.tn / 8) * 4) } : tiles;
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

  /**
   * Compiles the kernels for one form and tile shape (default: the adapter class's), and their
   * f16-B twins unless TRANS_A.
   */
  static async create(
    registry: KernelRegistry,
    form: MatmulForm = {},
    tiles: MatmulTiles = matmulTiles(registry.gpu.capabilities),
  ): Promise<MatmulOp> {
    checkMatmulTiles(OP, tiles);
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
        TM: t.tm,
        TN: t.tn,
      };
      const [kernel, kernelF16B] = await Promise.all(
        entries.map((entryPoint) =>
          registry.get({
            file: "matmul.wgsl",
            source,
            includes: SHADER_SNIPPETS,
            entryPoint,
            constants,
          })
        ),
      );
      return { tiles: t, kernel, kernelF16B };
    };
    const [shortVariant, fullVariant, narrowVariant] = await Promise.all([
      short.wgY < tiles.wgY ? compile(short) : undefined,
      compile(tiles),
      narrow.wgX * narrow.tn < tiles.wgX * tiles.tn ? compile(narrow) : undefined,
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
    return 2 * n <= this.tiles.tn * this.tiles.wgX ? this.variants.narrow : this.variants.full;
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
    const { wgX, wgY, tm, tn } = variant.tiles;
    const kernel = bF16 ? variant.kernelF16B! : variant.kernel;
    const bindings: Record<string, Tensor> = bF16 ? { a, b16: b, c } : { a, b, c };
    const grid: [number, number] = [Math.ceil(n / (tn * wgX)), Math.ceil(m / (tm * wgY))];
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
 * product; the loops inside that are unrolled), each one more time than it iterates (the exit
 * test); each of the block's tm tn / 4 vec4 stores loops 5 times.
 */
export function maxDispatchDepth(tiles: MatmulTiles): number {
  const { wgX, wgY, tk, tm, tn } = tiles;
  const threads = wgX * wgY;
  const fill = (vec4s: number) => Math.ceil(vec4s / threads) + 1;
  const perStep = 1 + fill(tk * (tm / 4) * wgY) + fill(tk * (tn / 4) * wgX) + tk + 1;
  const stores = (tm * tn / 4) * 5;
  const margin = 256;
  return Math.floor((LOOP_ITERATION_LIMIT - stores - margin) / perStep) * tk;
}
