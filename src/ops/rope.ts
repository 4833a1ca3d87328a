import { ROPE_WGSL as source } from "./shaders.generated.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { spanView, type Tensor, tensorsOverlap, uploadTensor } from "../gpu/tensor.ts";
import type { RopePairs } from "../core/rope.ts";
import { expectArgument, expectShape, expectWindow, strideGrid } from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";

export type { RopePairs } from "../core/rope.ts";

const FILE = "rope.wgsl";
const MAX_GROUPS = 4096;
/** Positions must stay below 2^24, where the angle reduction is exact (and f32 counts exactly). */
const MAX_POSITION = 2 ** 24;

/** Options for {@link RopeOp.create}. */
export interface RopeOptions {
  /** Elements per head (even). */
  headDim: number;
  /** Theta base (default 10000; Llama 3 uses 500000, some models 1e6). */
  base?: number;
  /** Pair convention (default "interleaved", llama2.c; Hugging Face checkpoints use "half"). */
  pairs?: RopePairs;
  /**
   * Per-pair divisors of the frequency (headDim / 2 positive values; default none): Llama 3's
   * rope_freqs / rope scaling, and linear position scaling (every divisor the factor).
   */
  frequencyDivisors?: ArrayLike<number>;
  /** Invocations per workgroup (default 64). */
  workgroupSize?: number;
}

/** Where one RoPE application reads and writes. */
export interface RopePlacement {
  /** Position of the first token; token t sits at pos0 + t. */
  pos0: number;
  /** First row of the source to read (default 0). */
  srcRow?: number;
  /** First row of the destination to write (default 0), e.g. `past` in a KV cache. */
  dstRow?: number;
  /** Tokens to rotate (default: the source rows from srcRow on). */
  tokens?: number;
}

/** Where an in-place RoPE application works. */
export interface RopeInPlacePlacement {
  /** Position of the first rotated row; row + t sits at pos0 + t. */
  pos0: number;
  /** First row rotated (default 0). */
  row?: number;
  /** Tokens to rotate (default: every row from `row` on). */
  tokens?: number;
}

/** Keeps the top 8 significant bits of an f32 (sign, exponent and 7 stored mantissa bits). */
function top8Bits(value: number): number {
  const bits = new Uint32Array(new Float32Array([value]).buffer);
  bits[0] &= 0xffff0000;
  return new Float32Array(bits.buffer)[0];
}

/**
 * Per-pair frequencies in turns per position, base^(-2i/headDim) / (2 pi), each split into
 * (hi, mid, lo, 0) with hi + mid + lo equal to it to about 2^-40 relative and hi, mid short
 * enough that q * hi and q * mid are exact in f32 for q < 2^16 (see shaders/rope.wgsl).
 */
export function ropeFrequencyTable(
  headDim: number,
  base: number,
  divisors?: ArrayLike<number>,
): Float32Array {
  const table = new Float32Array(headDim * 2);
  for (let i = 0; i < headDim / 2; i++) {
    const turns = Math.pow(base, (-2 * i) / headDim) / (2 * Math.PI) / (divisors?.[i] ?? 1);
    const hi = top8Bits(turns);
    const mid = top8Bits(turns - hi);
    table.set([hi, mid, Math.fround(turns - hi - mid), 0], 4 * i);
  }
  return table;
}

/**
 * Rotary position embedding on [rows, heads, headDim] tensors (shaders/rope.wgsl), for one head
 * size, theta base and pair convention. Holds a small frequency table: call {@link destroy}.
 * Angles are reduced accurately (to about 1e-7 turns) for every position below 2^24.
 */
export class RopeOp {
  private constructor(
    private readonly kernels: Record<string, Kernel>,
    private readonly freqs: Tensor,
    readonly headDim: number,
    private readonly wg: number,
    /** The pair convention. */
    readonly pairs: RopePairs,
  ) {}

  /** The frequency table ([headDim / 2, 4], see {@link ropeFrequencyTable}), for fused kernels. */
  get frequencies(): Tensor {
    return this.freqs;
  }

  /** Compiles the kernels for one pair convention and uploads the frequency table. */
  static async create(registry: KernelRegistry, options: RopeOptions): Promise<RopeOp> {
    const { headDim, base = 10000, pairs = "interleaved" } = options;
    const WG = options.workgroupSize ?? 64;
    const even = Number.isInteger(headDim) && headDim >= 2 && headDim % 2 === 0;
    expectArgument("rope", "headDim", even, "a positive even number", headDim);
    expectArgument("rope", "base", base > 1, "> 1", base);
    const constants = { WG, INTERLEAVED: pairs === "interleaved" };
    const entries = [
      "forward",
      "forward_f16",
      "backward",
      "forward_in_place",
      "backward_in_place",
      "forward_qkv",
      "backward_in_place_qk",
    ];
    const kernels: Record<string, Kernel> = {};
    await Promise.all(entries.map(async (entryPoint) => {
      kernels[entryPoint] = await registry.get({
        file: FILE,
        source,
        includes: SHADER_SNIPPETS,
        entryPoint,
        constants,
      });
    }));
    const divisors = options.frequencyDivisors;
    if (divisors) {
      const fine = divisors.length === headDim / 2 &&
        Array.from(divisors).every((d) => d > 0 && Number.isFinite(d));
      expectArgument(
        "rope",
        "frequencyDivisors",
        fine,
        `${headDim / 2} positive numbers`,
        divisors,
      );
    }
    const table = ropeFrequencyTable(headDim, base, divisors);
    const freqs = uploadTensor(registry.gpu, table, [headDim / 2, 4], "f32", "rope frequencies");
    return new RopeOp(kernels, freqs, headDim, WG, pairs);
  }

  /**
   * Records dst[dstRow + t] = rotate(src[srcRow + t], pos0 + t); both [rows, heads, headDim], src
   * f32, dst f32 or f16 (an f16 KV cache: each value rounded to nearest half, starting at a u32
   * word).
   */
  recordForward(rec: Recorder, src: Tensor, dst: Tensor, placement: RopePlacement): void {
    this.#recordCopy(rec, dst.dtype === "f16" ? "forward_f16" : "forward", src, dst, placement);
  }

  /** Records dX[dstRow + t] = R^T dOut[srcRow + t]: the backward of {@link recordForward}. */
  recordBackward(rec: Recorder, dOut: Tensor, dX: Tensor, placement: RopePlacement): void {
    this.#recordCopy(rec, "backward", dOut, dX, placement);
  }

  /** Rotates rows row .. row + tokens - 1 of x [rows, heads, headDim] in place. */
  recordForwardInPlace(rec: Recorder, x: Tensor, placement: RopeInPlacePlacement): void {
    this.#recordInPlace(rec, "forward_in_place", x, placement);
  }

  /** The backward of {@link recordForwardInPlace}, in place on the gradient. */
  recordBackwardInPlace(rec: Recorder, grad: Tensor, placement: RopeInPlacePlacement): void {
    this.#recordInPlace(rec, "backward_in_place", grad, placement);
  }

  /**
   * Rotates q [tokens, heads, headDim] in place, k [tokens, kvHeads, headDim] into rows dstRow..
   * of an f32 KV cache's kDst, token t at position pos0 + t, and copies v (k's shape) into the
   * same rows of vDst: recordForwardInPlace(q), recordForward(k, kDst) and a copy of v in one
   * dispatch where k and v lie in one buffer, and so do kDst and vDst (each after the other).
   * Returns whether it copied the values; where it did not, the caller copies them.
   */
  recordForwardQKV(
    rec: Recorder,
    qkv: { q: Tensor; k: Tensor; v: Tensor; kDst: Tensor; vDst: Tensor },
    placement: { pos0: number; dstRow: number },
  ): boolean {
    const op = "rope forward_qkv";
    const { q, k, v, kDst, vDst } = qkv;
    const heads = this.#heads(op, "q", q);
    const tokens = q.shape[0];
    const heads2 = this.#heads(op, "k", k);
    for (const [name, t] of [["k", k], ["v", v]] as const) {
      expectShape(op, name, t, "f32", [tokens, heads2, this.headDim]);
    }
    const { pos0, dstRow } = placement;
    for (const [name, t] of [["k destination", kDst], ["v destination", vDst]] as const) {
      expectShape(op, name, t, "f32", ["rows", heads2, this.headDim]);
      expectWindow(op, `${name} rows`, dstRow, tokens, t.shape[0], "rows");
    }
    checkPositions(op, pos0, tokens);
    const together = follows(k, v) && follows(kDst, vDst);
    const src = together ? spanView([k, v]) : k;
    const dst = together ? spanView([kDst, vDst]) : kDst;
    const values = together
      ? { vSrc: (v.byteOffset - k.byteOffset) / 4, vDst: (vDst.byteOffset - kDst.byteOffset) / 4 }
      : { vSrc: 0, vDst: 0 };
    const bindings = { freqs: this.freqs, data: q, src, dst };
    this.#dispatch(rec, "forward_qkv", bindings, tokens, heads, { pos0, srcRow: 0, dstRow }, {
      heads2,
      at2: 0,
      values: together,
      ...values,
    });
    return together;
  }

  /**
   * The backward of the rotations of {@link recordForwardQKV} on the gradients dQ and dK, each in
   * place: one dispatch where they lie in one buffer (dK after dQ), else one each.
   */
  recordBackwardInPlaceQK(rec: Recorder, dQ: Tensor, dK: Tensor, pos0: number): void {
    const op = "rope backward_in_place_qk";
    const heads = this.#heads(op, "dQ", dQ);
    const tokens = dQ.shape[0];
    const heads2 = this.#heads(op, "dK", dK);
    expectShape(op, "dK", dK, "f32", [tokens, heads2, this.headDim]);
    if (!follows(dQ, dK)) {
      this.recordBackwardInPlace(rec, dQ, { pos0 });
      this.recordBackwardInPlace(rec, dK, { pos0 });
      return;
    }
    checkPositions(op, pos0, tokens);
    const at2 = (dK.byteOffset - dQ.byteOffset) / 4;
    const bindings = { freqs: this.freqs, data: spanView([dQ, dK]) };
    this.#dispatch(rec, "backward_in_place_qk", bindings, tokens, heads, {
      pos0,
      srcRow: 0,
      dstRow: 0,
    }, { heads2, at2, values: false, vSrc: 0, vDst: 0 });
  }

  /** Frees the frequency table. */
  destroy(): void {
    this.freqs.destroy();
  }

  #recordCopy(
    rec: Recorder,
    entry: string,
    src: Tensor,
    dst: Tensor,
    placement: RopePlacement,
  ): void {
    const op = `rope ${entry}`;
    const heads = this.#heads(op, "source", src);
    const f16 = entry === "forward_f16";
    expectShape(op, "destination", dst, f16 ? "f16" : "f32", ["rows", heads, this.headDim]);
    if (f16 && dst.byteOffset % 4 !== 0) {
      throw new KernelUsageError(`${op}: an f16 destination must start at a whole u32 word`);
    }
    const { pos0, srcRow = 0, dstRow = 0 } = placement;
    const tokens = placement.tokens ?? src.shape[0] - srcRow;
    expectWindow(op, "source rows", srcRow, tokens, src.shape[0], "rows");
    expectWindow(op, "destination rows", dstRow, tokens, dst.shape[0], "rows");
    checkPositions(op, pos0, tokens);
    if (tensorsOverlap(src, dst)) {
      throw new KernelUsageError(`${op}: source and destination overlap; use the in-place form`);
    }
    const out: Record<string, Tensor> = f16 ? { dst16: dst } : { dst };
    this.#dispatch(rec, entry, { freqs: this.freqs, src, ...out }, tokens, heads, {
      pos0,
      srcRow,
      dstRow,
    });
  }

  #recordInPlace(rec: Recorder, entry: string, data: Tensor, placement: RopeInPlacePlacement) {
    const op = `rope ${entry}`;
    const heads = this.#heads(op, "data", data);
    const { pos0, row = 0 } = placement;
    const tokens = placement.tokens ?? data.shape[0] - row;
    expectWindow(op, "rows", row, tokens, data.shape[0], "rows");
    checkPositions(op, pos0, tokens);
    this.#dispatch(rec, entry, { freqs: this.freqs, data }, tokens, heads, {
      pos0,
      srcRow: row,
      dstRow: 0,
    });
  }

  #dispatch(
    rec: Recorder,
    entry: string,
    bindings: Record<string, Tensor>,
    tokens: number,
    heads: number,
    rows: { pos0: number; srcRow: number; dstRow: number },
    second: Second = NO_SECOND,
  ): void {
    const half = this.headDim / 2;
    const pairs = tokens * heads * half;
    const pairs2 = tokens * second.heads2 * half;
    const { values, ...offsets } = second;
    const valuePairs = values ? pairs2 : 0;
    const { groups, stride } = strideGrid(pairs + pairs2 + valuePairs, this.wg, MAX_GROUPS);
    const params = { pairs, heads, half, ...rows, stride, pairs2, valuePairs, ...offsets };
    rec.dispatch(this.kernels[entry], bindings, params, [groups]);
  }

  /** The heads of a [rows, heads, headDim] f32 tensor. */
  #heads(op: string, name: string, t: Tensor): number {
    return expectShape(op, name, t, "f32", ["rows", "heads", this.headDim])[1];
  }
}

/**
 * A dispatch's second tensor (the *_qk entries): its heads, its element offset in data, and
 * whether values follow it (forward_qkv) from vSrc in src to vDst in dst.
 */
interface Second {
  heads2: number;
  at2: number;
  values: boolean;
  vSrc: number;
  vDst: number;
}

const NO_SECOND: Second = { heads2: 0, at2: 0, values: false, vSrc: 0, vDst: 0 };

/** Whether `b` lies in `a`'s buffer after `a`'s last element. */
function follows(a: Tensor, b: Tensor): boolean {
  return a.buffer === b.buffer && b.byteOffset >= a.byteOffset + a.byteLength;
}

/** Positions pos0 .. pos0 + tokens - 1 must be integers in [0, 2^24). */
function checkPositions(op: string, pos0: number, tokens: number): void {
  expectArgument(
    op,
    `positions ${pos0}..${pos0 + tokens - 1}`,
    Number.isInteger(pos0) && pos0 >= 0 && pos0 + tokens <= MAX_POSITION,
    "integers in [0, 2^24)",
    `pos0 = ${pos0}`,
  );
}
