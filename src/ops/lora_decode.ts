import { LORA_DECODE_WGSL as source } from "./shaders.generated.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import { PORTABLE_OFFSET_ALIGNMENT, type Recorder } from "../gpu/recorder.ts";
import { describeTensor, expectShape, expectSize } from "./shapes.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";
import { Tensor } from "../gpu/tensor.ts";

const OP = "lora decode";

const OUT_PER_WG = 512;
const RANK_BLOCK = 16;

/** Largest rank the one-dispatch LoRA decode handles (it sizes the kernel's h). */
export const LORA_DECODE_MAX_RANK = 64;

/**
 * LoRA for a single token in one dispatch: y += scale · (x·Aᵀ)·Bᵀ, with A and B read from views
 * of one flat parameter buffer (the adapter's). Decode uses it instead of the two tiled products
 * of {@link LoraOp}, halving the adapter's dispatches per token. Ranks up to 64.
 */
export class LoraDecodeOp {
  private constructor(private readonly kernel: Kernel) {}

  /**
   * Compiles the kernel: on llvmpipe, where a workgroup runs as one 8-wide SIMD group and every
   * barrier is a coroutine switch, eight invocations; elsewhere 64.
   */
  static async create(registry: KernelRegistry): Promise<LoraDecodeOp> {
    const WG = registry.gpu.capabilities.isFallbackAdapter ? 8 : 64;
    return new LoraDecodeOp(
      await registry.get({
        file: "lora_decode.wgsl",
        source,
        includes: SHADER_SNIPPETS,
        constants: { WG, OUT_PER_WG, MAX_RANK: LORA_DECODE_MAX_RANK, RANK_BLOCK },
      }),
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
    }, [Math.ceil(outDim / OUT_PER_WG)]);
  }
}
