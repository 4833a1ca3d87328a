import { LORA_WGSL as source } from "./shaders.generated.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";
import { ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { dropoutSeedMix, dropoutThreshold } from "../core/lora.ts";
import {
  type AdapterClass,
  adapterClass,
  describeTensor,
  expectArgument,
  expectShape,
  expectU32,
} from "./shapes.ts";

const OP = "lora";

/**
 * Tile shapes (outputs per workgroup BM x BN, depth BK). The large one measured about 2x the small
 * one on llvmpipe for T = 512, in = out = 576, r = 64; the small one wastes less when a side of
 * the product is a rank of 8..32, and the narrow ones, where a side is a rank of at most 16, run
 * 2-3x faster than the small one there (bench/RESULTS.md): the small tile would compute half its
 * rows or columns for nothing in half as many workgroups.
 */
const LARGE = { BM: 64, BN: 64, BK: 16 };
const SMALL = { BM: 32, BN: 32, BK: 16 };
const NARROW_M = { BM: 16, BN: 32, BK: 16 };
const NARROW_N = { BM: 32, BN: 16, BK: 16 };
type Tile = typeof LARGE;

/**
 * The square block of C each thread holds (matmul_block.wgsl's TM = TN), at most a tile's side,
 * per adapter class. On llvmpipe 8 x 8 (64 threads to a 64 x 64 tile, so fewer SIMD groups switch
 * at each barrier) ran 1.1-1.3x the 4 x 4 blocks at stories260K's products, forward and backward,
 * and 3x in the backward of its 64-wide projections (bench/RESULTS.md); GPUs keep 4 x 4.
 */
export const LORA_BLOCKS: Readonly<Record<AdapterClass, number>> = {
  fallback: 8,
  integrated: 4,
  discrete: 4,
};
const NARROW = 16;
const tileFor = (m: number, n: number): Tile =>
  m >= 64 && n >= 64 ? LARGE : m <= NARROW ? NARROW_M : n <= NARROW ? NARROW_N : SMALL;

/** Dropout of the LoRA input: probability `p` in [0, 1), mask drawn from `seed`. */
export interface LoraDropout {
  /** Probability of dropping an element, in [0, 1); kept elements are scaled by 1 / (1 - p). */
  p: number;
  /** Any u32; use a different seed per layer and per step. Backward must get the same one. */
  seed: number;
}

/** Tensors and settings of one LoRA forward. */
export interface LoraForwardArgs {
  /** [T, in] layer input. */
  x: Tensor;
  /** [r, in] lora_A.weight. */
  a: Tensor;
  /** [out, r] lora_B.weight. */
  b: Tensor;
  /** [T, r] written: dropout(x) A^T, kept for backward. */
  h: Tensor;
  /** [T, out] the base layer's output; scale * h B^T is added to it. */
  y: Tensor;
  /** alpha / r. */
  scale: number;
  /** Dropout of x; none when omitted. */
  dropout?: LoraDropout;
}

/** Tensors and settings of one LoRA backward; the forward's x, a, b, h, scale and dropout. */
export interface LoraBackwardArgs {
  /** [T, in] the forward's layer input. */
  x: Tensor;
  /** [r, in] lora_A.weight. */
  a: Tensor;
  /** [out, r] lora_B.weight. */
  b: Tensor;
  /** [T, r] the forward's h. */
  h: Tensor;
  /** [T, out] gradient of the layer output. */
  dY: Tensor;
  /** [T, r] scratch, written: scale * dY B. */
  dH: Tensor;
  /** [r, in] written (not accumulated): dH^T dropout(x). */
  dA: Tensor;
  /** [out, r] written (not accumulated): scale * dY^T h. */
  dB: Tensor;
  /** [T, in] the base path's input gradient, to which (dH A) * mask is added; omit to skip. */
  dX?: Tensor;
  /** alpha / r, as in the forward. */
  scale: number;
  /** The forward's dropout, same p and seed: the mask is recomputed, not stored. */
  dropout?: LoraDropout;
}

type Drop = 0 | 1 | 2 | 3;
const DROP_NONE: Drop = 0;
const DROP_A: Drop = 1;
const DROP_B: Drop = 2;
const DROP_OUT: Drop = 3;

interface Variant {
  transA: boolean;
  transB: boolean;
  accumulate: boolean;
  drop: Drop;
}

const key = (v: Variant, t: Tile) =>
  `${v.transA}|${v.transB}|${v.accumulate}|${v.drop}|${t.BM}x${t.BN}x${t.BK}`;

/**
 * Every (transpose, accumulate, dropout) combination forward and backward use, with the narrow
 * tiles for the products in which it has the adapter's rank as a side.
 */
const VARIANTS: (Variant & { narrow: Tile[] })[] = [
  // h = dropout(x) A^T
  { transA: false, transB: true, accumulate: false, drop: DROP_NONE, narrow: [NARROW_N] },
  { transA: false, transB: true, accumulate: false, drop: DROP_A, narrow: [NARROW_N] },
  // y += scale h B^T
  { transA: false, transB: true, accumulate: true, drop: DROP_NONE, narrow: [] },
  // dB = scale dY^T h (rank columns); dA = dH^T x without dropout (rank rows)
  { transA: true, transB: false, accumulate: false, drop: DROP_NONE, narrow: [NARROW_N, NARROW_M] },
  // dH = scale dY B
  { transA: false, transB: false, accumulate: false, drop: DROP_NONE, narrow: [NARROW_N] },
  // dA = dH^T dropout(x)
  { transA: true, transB: false, accumulate: false, drop: DROP_B, narrow: [NARROW_M] },
  // dX += (dH A) * mask
  { transA: false, transB: false, accumulate: true, drop: DROP_NONE, narrow: [] },
  { transA: false, transB: false, accumulate: true, drop: DROP_OUT, narrow: [] },
];

/**
 * LoRA on a linear layer: forward y += scale * (dropout(x) A^T) B^T and its backward to A, B and
 * x. The adapter matrices are small (r = 8..64), so every product runs through one
 * workgroup-tiled kernel with transposes, accumulation and dropout as specialisation constants.
 * Output tensors must not share a buffer with the inputs of the same product (WebGPU forbids a
 * buffer bound writable and readable in one dispatch).
 */
export class LoraOp {
  private constructor(private readonly kernels: Map<string, Kernel>) {}

  /**
   * Compiles every kernel variant forward and backward use, with threads holding `block` x
   * `block` of C (default: the adapter class's; 4 or 8).
   */
  static async create(
    registry: KernelRegistry,
    block: number = LORA_BLOCKS[adapterClass(registry.gpu.capabilities)],
  ): Promise<LoraOp> {
    expectArgument(OP, "block", block === 4 || block === 8, "4 or 8", block);
    const kernels = new Map<string, Kernel>();
    await Promise.all(VARIANTS.flatMap((v) =>
      [LARGE, SMALL, ...v.narrow].map(async (tile) => {
        const kernel = await registry.get({
          file: "lora.wgsl",
          source,
          includes: SHADER_SNIPPETS,
          constants: {
            ...tile,
            TM: Math.min(block, tile.BM),
            TN: Math.min(block, tile.BN),
            TRANS_A: v.transA,
            TRANS_B: v.transB,
            ACCUMULATE: v.accumulate,
            DROP: v.drop,
          },
        });
        kernels.set(key(v, tile), kernel);
      })
    ));
    return new LoraOp(kernels);
  }

  /** Records h = dropout(x) A^T and y += scale * h B^T. */
  recordForward(rec: Recorder, args: LoraForwardArgs): void {
    const { x, a, b, h, y, scale } = args;
    const dims = loraDims(x, a, b);
    const { tokens: t, inFeatures: inF, rank: r, outFeatures: outF } = dims;
    expectShape(OP, "h", h, "f32", [t, r]);
    expectShape(OP, "y", y, "f32", [t, outF]);
    const drop = dropoutParams(args.dropout);
    this.#matmul(rec, { a: x, b: a, c: h }, [t, inF, r], 1, {
      transA: false,
      transB: true,
      accumulate: false,
      drop: drop.active ? DROP_A : DROP_NONE,
    }, drop);
    this.#matmul(rec, { a: h, b, c: y }, [t, r, outF], scale, {
      transA: false,
      transB: true,
      accumulate: true,
      drop: DROP_NONE,
    }, drop);
  }

  /** Records dB, dH, dA and (when given) dX += (dH A) * mask, in that order. */
  recordBackward(rec: Recorder, args: LoraBackwardArgs): void {
    const { x, a, b, h, dY, dH, dA, dB, dX, scale } = args;
    const dims = loraDims(x, a, b);
    const { tokens: t, inFeatures: inF, rank: r, outFeatures: outF } = dims;
    expectShape(OP, "h", h, "f32", [t, r]);
    expectShape(OP, "dY", dY, "f32", [t, outF]);
    expectShape(OP, "dH", dH, "f32", [t, r]);
    expectShape(OP, "dA", dA, "f32", [r, inF]);
    expectShape(OP, "dB", dB, "f32", [outF, r]);
    if (dX) expectShape(OP, "dX", dX, "f32", [t, inF]);
    const drop = dropoutParams(args.dropout);
    const plain = { accumulate: false, drop: DROP_NONE };
    this.#matmul(rec, { a: dY, b: h, c: dB }, [outF, t, r], scale, {
      ...plain,
      transA: true,
      transB: false,
    }, drop);
    this.#matmul(rec, { a: dY, b, c: dH }, [t, outF, r], scale, {
      ...plain,
      transA: false,
      transB: false,
    }, drop);
    this.#matmul(rec, { a: dH, b: x, c: dA }, [r, t, inF], 1, {
      transA: true,
      transB: false,
      accumulate: false,
      drop: drop.active ? DROP_B : DROP_NONE,
    }, drop);
    if (dX) {
      this.#matmul(rec, { a: dH, b: a, c: dX }, [t, r, inF], 1, {
        transA: false,
        transB: false,
        accumulate: true,
        drop: drop.active ? DROP_OUT : DROP_NONE,
      }, drop);
    }
  }

  #matmul(
    rec: Recorder,
    bindings: { a: Tensor; b: Tensor; c: Tensor },
    [m, k, n]: [number, number, number],
    alpha: number,
    variant: Variant,
    drop: DropoutParams,
  ): void {
    let tile = tileFor(m, n);
    if (!this.kernels.has(key(variant, tile))) tile = SMALL; // a narrow side that is not the rank
    const kernel = this.kernels.get(key(variant, tile))!;
    const params = {
      m,
      n,
      k,
      alpha,
      seedMix: drop.seedMix,
      dropThreshold: drop.threshold,
      keepScale: drop.keepScale,
    };
    rec.dispatch(kernel, bindings, params, [Math.ceil(n / tile.BN), Math.ceil(m / tile.BM)]);
  }
}

interface DropoutParams {
  active: boolean;
  seedMix: number;
  threshold: number;
  keepScale: number;
}

function dropoutParams(dropout: LoraDropout | undefined): DropoutParams {
  const p = dropout?.p ?? 0;
  expectArgument(OP, "dropout p", p >= 0 && p < 1, "in [0, 1)", p);
  const seed = dropout?.seed ?? 0;
  expectU32(OP, "dropout seed", seed);
  return {
    active: p > 0,
    seedMix: dropoutSeedMix(seed),
    threshold: dropoutThreshold(p),
    keepScale: 1 / (1 - p),
  };
}

/** x [tokens, in], A [rank, in], B [out, rank], all f32. */
function loraDims(x: Tensor, a: Tensor, b: Tensor) {
  const [tokens, inFeatures] = expectShape(OP, "x", x, "f32", ["tokens", "in"]);
  const [rank] = expectShape(OP, "A", a, "f32", ["rank", inFeatures]);
  const [outFeatures] = expectShape(OP, "B", b, "f32", ["out", rank]);
  if (tokens * inFeatures >= 2 ** 32) {
    throw new ShapeError(
      `lora: x ${describeTensor(x)} has too many elements for u32 dropout indices`,
    );
  }
  return { tokens, inFeatures, rank, outFeatures };
}
