import { LORA_WGSL as source } from "./shaders.generated.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { spanView, type Tensor, tensorsOverlap } from "../gpu/tensor.ts";
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

/** One adapted projection of a group that shares its input (a layer's q, k and v). */
export type LoraPart = Omit<LoraForwardArgs, "x" | "scale">;

/** Projections that share the input `x` and the scale: their forwards at once. */
export interface LoraGroupForwardArgs {
  /** [T, in] the input every part reads. */
  x: Tensor;
  /** Each part's matrices, h, output and dropout. */
  parts: LoraPart[];
  /** alpha / r. */
  scale: number;
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
  /** [T, r] written: scale * dY B (what {@link LoraOp.recordGradientA} reads). */
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

/** One part's A gradient: dA = dH^T dropout(x), from its dH and the forward's dropout. */
export type LoraGradientPart = Pick<LoraBackwardArgs, "dH" | "dA" | "dropout">;

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
    const { x, scale, ...part } = args;
    this.recordGroupForward(rec, { x, scale, parts: [part] });
  }

  /**
   * Records every part's h = dropout(x) A^T, in one dispatch where the parts' A and h lie in one
   * buffer each (an adapter's matrices do; see {@link groupable}), then each y += scale * h B^T.
   * Parts whose h share memory (one scratch for every projection) run one after another instead.
   */
  recordGroupForward(rec: Recorder, args: LoraGroupForwardArgs): void {
    const { x, parts, scale } = args;
    const dims = parts.map((p) => {
      const d = loraDims(x, p.a, p.b);
      expectShape(OP, "h", p.h, "f32", [d.tokens, d.rank]);
      expectShape(OP, "y", p.y, "f32", [d.tokens, d.outFeatures]);
      return d;
    });
    const ranks = dims.map((d) => d.rank);
    expectArgument(OP, "parts' ranks", ranks.every((r) => r === ranks[0]), "equal", ranks);
    const inputs = (group: number[]) => {
      const { tokens: t, inFeatures: inF, rank: r } = dims[group[0]];
      const problems = group.map((i) => ({ a: x, b: parts[i].a, c: parts[i].h }));
      this.#matmul(rec, problems, group.map((i) => parts[i].dropout), [t, inF, r], 1, {
        transA: false,
        transB: true,
        accumulate: false,
        drop: DROP_A,
      });
    };
    const outputs = (group: number[]) => {
      const { tokens: t, rank: r, outFeatures: outF } = dims[group[0]];
      const problems = group.map((i) => ({ a: parts[i].h, b: parts[i].b, c: parts[i].y }));
      this.#matmul(rec, problems, group.map(() => undefined), [t, r, outF], scale, {
        transA: false,
        transB: true,
        accumulate: true,
        drop: DROP_NONE,
      });
    };
    const all = parts.map((_, i) => i);
    if (overlap(parts.map((p) => p.h))) {
      for (const i of all) {
        inputs([i]);
        outputs([i]);
      }
      return;
    }
    inputs(all);
    for (const group of runs(dims.map((d) => shapeKey(d, scale)))) outputs(group);
  }

  /** Records dB, dH, dX += (dH A) * mask (when dX is given) and dA. */
  recordBackward(rec: Recorder, args: LoraBackwardArgs): void {
    this.recordOutputGradients(rec, [args]);
    if (args.dX) this.recordInputGradient(rec, args);
    this.recordGradientA(rec, args.x, [args]);
  }

  /**
   * Records each part's dB = scale dY^T h and dH = scale dY B, the dB of all parts in one dispatch
   * where their dY, h and dB lie in one buffer each, and so for dH. With
   * {@link LoraOp.recordInputGradient} and {@link LoraOp.recordGradientA} after, the backward of
   * projections sharing an input.
   */
  recordOutputGradients(rec: Recorder, parts: LoraBackwardArgs[]): void {
    const dims = parts.map((p) => {
      const d = loraDims(p.x, p.a, p.b);
      const { tokens: t, inFeatures: inF, rank: r, outFeatures: outF } = d;
      expectShape(OP, "h", p.h, "f32", [t, r]);
      expectShape(OP, "dY", p.dY, "f32", [t, outF]);
      expectShape(OP, "dH", p.dH, "f32", [t, r]);
      expectShape(OP, "dA", p.dA, "f32", [r, inF]);
      expectShape(OP, "dB", p.dB, "f32", [outF, r]);
      if (p.dX) expectShape(OP, "dX", p.dX, "f32", [t, inF]);
      return d;
    });
    const none = parts.map(() => undefined);
    const plain = { accumulate: false, drop: DROP_NONE };
    for (const group of runs(dims.map((d, i) => shapeKey(d, parts[i].scale)))) {
      const { tokens: t, rank: r, outFeatures: outF } = dims[group[0]];
      const scale = parts[group[0]].scale;
      const of = (f: (p: LoraBackwardArgs) => Problem) => group.map((i) => f(parts[i]));
      this.#matmul(rec, of((p) => ({ a: p.dY, b: p.h, c: p.dB })), none, [outF, t, r], scale, {
        ...plain,
        transA: true,
        transB: false,
      });
      this.#matmul(rec, of((p) => ({ a: p.dY, b: p.b, c: p.dH })), none, [t, outF, r], scale, {
        ...plain,
        transA: false,
        transB: false,
      });
    }
  }

  /** Records dX += (dH A) * mask from the dH {@link LoraOp.recordOutputGradients} wrote. */
  recordInputGradient(rec: Recorder, args: LoraBackwardArgs): void {
    const { tokens: t, inFeatures: inF, rank: r } = loraDims(args.x, args.a, args.b);
    expectShape(OP, "dH", args.dH, "f32", [t, r]);
    if (!args.dX) throw new KernelUsageError(`${OP}: recordInputGradient needs dX`);
    expectShape(OP, "dX", args.dX, "f32", [t, inF]);
    const problem = { a: args.dH, b: args.a, c: args.dX };
    this.#matmul(rec, [problem], [args.dropout], [t, r, inF], 1, {
      transA: false,
      transB: false,
      accumulate: true,
      drop: DROP_OUT,
    });
  }

  /**
   * Records dA = dH^T dropout(x) for parts sharing the input x: one dispatch where their dH and
   * dA lie in one buffer each (an adapter's gradients do), else one each.
   */
  recordGradientA(rec: Recorder, x: Tensor, parts: LoraGradientPart[]): void {
    const [t, inF] = expectShape(OP, "x", x, "f32", ["tokens", "in"]);
    const ranks = parts.map((p) => {
      const [, r] = expectShape(OP, "dH", p.dH, "f32", [t, "rank"]);
      expectShape(OP, "dA", p.dA, "f32", [r, inF]);
      return r;
    });
    expectArgument(OP, "parts' ranks", ranks.every((r) => r === ranks[0]), "equal", ranks);
    const problems = parts.map((p) => ({ a: p.dH, b: x, c: p.dA }));
    this.#matmul(rec, problems, parts.map((p) => p.dropout), [ranks[0], t, inF], 1, {
      transA: true,
      transB: false,
      accumulate: false,
      drop: DROP_B,
    });
  }

  /**
   * C (+)= alpha op(A) op(B) for each problem, [m, k] x [k, n]; `dropouts[i]` is problem i's
   * (variant.drop says where the mask applies; no dispatch draws one when none is given).
   * Problems that {@link groupable} allows run MAX_GROUP to a dispatch.
   */
  #matmul(
    rec: Recorder,
    problems: Problem[],
    dropouts: (LoraDropout | undefined)[],
    [m, k, n]: [number, number, number],
    alpha: number,
    variant: Variant,
  ): void {
    const drops = dropouts.map(dropoutParams);
    for (const group of groupable(problems, drops)) {
      const kind = { ...variant, drop: drops[group[0]].active ? variant.drop : DROP_NONE };
      let tile = tileFor(m, n);
      if (!this.kernels.has(key(kind, tile))) tile = SMALL; // a narrow side that is not the rank
      const kernel = this.kernels.get(key(kind, tile))!;
      const bound = {
        a: span(group.map((i) => problems[i].a)),
        b: span(group.map((i) => problems[i].b)),
        c: span(group.map((i) => problems[i].c)),
      };
      const params: Record<string, number> = {
        m,
        n,
        k,
        alpha,
        dropThreshold: drops[group[0]].threshold,
        keepScale: drops[group[0]].keepScale,
      };
      for (let z = 0; z < MAX_GROUP; z++) {
        const i = group[Math.min(z, group.length - 1)];
        params[`aAt${z}`] = bound.a.at(problems[i].a);
        params[`bAt${z}`] = bound.b.at(problems[i].b);
        params[`cAt${z}`] = bound.c.at(problems[i].c);
        params[`seedMix${z}`] = drops[i].seedMix;
      }
      const bindings = { a: bound.a.tensor, b: bound.b.tensor, c: bound.c.tensor };
      rec.dispatch(kernel, bindings, params, [
        Math.ceil(n / tile.BN),
        Math.ceil(m / tile.BM),
        group.length,
      ]);
    }
  }
}

/** The operands of one product of a dispatch. */
interface Problem {
  a: Tensor;
  b: Tensor;
  c: Tensor;
}

/** Products one dispatch runs at most (lora.wgsl's problems 0..2: a layer's q, k and v). */
const MAX_GROUP = 3;

/**
 * Problems in dispatch groups, in order: consecutive problems share a dispatch while each of
 * their operands lies in the buffer the group's first does, their outputs do not overlap, and
 * their dropout probabilities agree.
 */
function groupable(problems: Problem[], drops: DropoutParams[]): number[][] {
  const groups: number[][] = [];
  for (let i = 0; i < problems.length; i++) {
    const group = groups.at(-1);
    const first = group && problems[group[0]];
    const p = problems[i];
    const joins = first && group.length < MAX_GROUP &&
      p.a.buffer === first.a.buffer && p.b.buffer === first.b.buffer &&
      p.c.buffer === first.c.buffer && drops[i].threshold === drops[group[0]].threshold &&
      !overlap([...group.map((j) => problems[j].c), p.c]);
    if (joins) group.push(i);
    else groups.push([i]);
  }
  return groups;
}

/** Indices of `keys` in runs of consecutive equal keys (what one dispatch may run together). */
function runs(keys: string[]): number[][] {
  const out: number[][] = [];
  keys.forEach((key, i) => {
    const run = out.at(-1);
    if (run && keys[run[0]] === key) run.push(i);
    else out.push([i]);
  });
  return out;
}

/** A product shape and scale as a key for {@link runs}. */
const shapeKey = (d: LoraDims, scale: number) =>
  `${d.tokens} ${d.inFeatures} ${d.rank} ${d.outFeatures} ${scale}`;

/** Whether any two of the tensors share bytes. */
function overlap(tensors: Tensor[]): boolean {
  return tensors.some((t, i) => tensors.slice(i + 1).some((u) => tensorsOverlap(t, u)));
}

/** One binding covering tensors of one buffer (spanView), and each tensor's element offset in it. */
function span(tensors: Tensor[]): { tensor: Tensor; at: (t: Tensor) => number } {
  const tensor = spanView(tensors);
  return { tensor, at: (t) => (t.byteOffset - tensor.byteOffset) / 4 };
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

/** Sizes of one adapted projection's products. */
interface LoraDims {
  tokens: number;
  inFeatures: number;
  rank: number;
  outFeatures: number;
}

/** x [tokens, in], A [rank, in], B [out, rank], all f32. */
function loraDims(x: Tensor, a: Tensor, b: Tensor): LoraDims {
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
