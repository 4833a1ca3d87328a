import { LORA_DECODE_WGSL as source } from "./shaders.generated.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import { PORTABLE_OFFSET_ALIGNMENT, type Recorder } from "../gpu/recorder.ts";
import {
  type AdapterClass,
  adapterClass,
  describeTensor,
  expectShape,
  expectSize,
} from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";
import { Tensor } from "../gpu/tensor.ts";

const OP = "lora decode";

/** The kernel's shape per adapter class (see shaders/lora_decode.wgsl). */
export interface LoraDecodeTiles {
  /** Invocations per workgroup. */
  wg: number;
  /** Outputs each workgroup writes (it computes h for them first). */
  outPerWg: number;
  /** Rank rows whose partial sums are reduced at once. */
  rankBlock: number;
  /** Invocations per output of B·h. */
  bLanes: number;
}

/**
 * On llvmpipe a workgroup runs as one 8-wide SIMD group and every barrier is a coroutine switch:
 * few workgroups, each output on one lane. On a GPU a dispatch this small takes about the longest
 * chain of dependent loads one invocation runs (an H200 took 0.34 ms a dispatch at 64 invocations,
 * 512 outputs a workgroup and one lane an output: about 1,100 loads an invocation), so there the
 * work is spread over more invocations and workgroups (about 200 loads an invocation at rank 64).
 */
export const LORA_DECODE_TILES: Readonly<Record<AdapterClass, LoraDecodeTiles>> = {
  fallback: { wg: 8, outPerWg: 512, rankBlock: 16, bLanes: 1 },
  integrated: { wg: 256, outPerWg: 64, rankBlock: 8, bLanes: 4 },
  discrete: { wg: 256, outPerWg: 64, rankBlock: 8, bLanes: 4 },
};

/** Largest rank the one-dispatch LoRA decode handles (it sizes the kernel's h). */
export const LORA_DECODE_MAX_RANK = 64;

/**
 * LoRA for a single token in one dispatch: y += scale · (x·Aᵀ)·Bᵀ, with A and B read from views
 * of one flat parameter buffer (the adapter's). Decode uses it instead of the two tiled products
 * of {@link LoraOp}, halving the adapter's dispatches per token. Ranks up to 64.
 */
export class LoraDecodeOp {
  private constructor(private readonly kernel: Kernel, readonly tiles: LoraDecodeTiles) {}

  /** Compiles the kernel with `tiles` (by default {@link LORA_DECODE_TILES} for the adapter). */
  static async create(
    registry: KernelRegistry,
    tiles: LoraDecodeTiles = LORA_DECODE_TILES[adapterClass(registry.gpu.capabilities)],
  ): Promise<LoraDecodeOp> {
    const { wg, outPerWg, rankBlock, bLanes } = tiles;
    const valid = wg > 0 && (wg & (wg - 1)) === 0 && bLanes > 0 && wg % bLanes === 0 &&
      (bLanes & (bLanes - 1)) === 0 && outPerWg > 0 && rankBlock > 0;
    if (!valid) {
      throw new KernelUsageError(
        `${OP}: tiles ${JSON.stringify(tiles)}: wg and bLanes must be powers of two, ` +
          "bLanes dividing wg, outPerWg and rankBlock positive",
      );
    }
    return new LoraDecodeOp(
      await registry.get({
        file: "lora_decode.wgsl",
        source,
        includes: SHADER_SNIPPETS,
        constants: {
          WG: wg,
          OUT_PER_WG: outPerWg,
          MAX_RANK: LORA_DECODE_MAX_RANK,
          RANK_BLOCK: rankBlock,
          B_LANES: bLanes,
        },
      }),
      tiles,
    );
  }

  /**
   * Records y[out] += scale · (x[in]·Aᵀ)·Bᵀ. `a` [rank, in] and `b` [out, rank] must be views
   * of the same buffer (the adapter's flat parameters), x and y one token each.
   */
  record(rec: Recorder, x: Tensor, a: Tensor, b: Tensor, y: Tensor, scale: number): void {
    const [rank, inDim] = expectShape(OP, "A", a, "f32", ["rank", "in"]);
    const [outDim] = expectShape(OP, "B", b, "f32", ["out", rank]);
    expectSize(OP, "x", x, "f32", inDim);
    expectSize(OP, "y", y, "f32", outDim);
    if (rank > LORA_DECODE_MAX_RANK) {
      throw new ShapeError(
        `${OP}: A ${describeTensor(a)}: rank = ${rank} must be at most ${LORA_DECODE_MAX_RANK}`,
      );
    }
    if (a.buffer !== b.buffer || a.byteOffset % 4 || b.byteOffset % 4) {
      throw new KernelUsageError(`${OP}: A and B must be views of one f32 parameter buffer`);
    }
    // Bind the span holding both, starting at a portable offset.
    const align = PORTABLE_OFFSET_ALIGNMENT;
    const start = Math.floor(Math.min(a.byteOffset, b.byteOffset) / align) * align;
    const end = Math.max(a.byteOffset + a.byteLength, b.byteOffset + b.byteLength);
    const adapter = new Tensor(a.buffer, [(end - start) / 4], "f32", start);
    rec.dispatch(this.kernel, { adapter, x, y }, {
      inDim,
      outDim,
      rank,
      aOffset: (a.byteOffset - start) / 4,
      bOffset: (b.byteOffset - start) / 4,
      scale,
    }, [Math.ceil(outDim / this.tiles.outPerWg)]);
  }
}
