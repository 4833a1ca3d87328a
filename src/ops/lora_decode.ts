import source from "../../shaders/lora_decode.wgsl" with { type: "text" };
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { Tensor } from "../gpu/tensor.ts";

const WG = 64;
const OUT_PER_WG = 512;

/** Largest rank the one-dispatch LoRA decode handles: one invocation per rank row of a workgroup. */
export const LORA_DECODE_MAX_RANK: number = WG;

/**
 * LoRA for a single token in one dispatch: y += scale · (x·Aᵀ)·Bᵀ, with A and B read from views
 * of one flat parameter buffer (the adapter's). Decode uses it instead of the two tiled products
 * of {@link LoraOp}, halving the adapter's dispatches per token. Ranks up to 64.
 */
export class LoraDecodeOp {
  private constructor(private readonly kernel: Kernel) {}

  /** Compiles the kernel. */
  static async create(registry: KernelRegistry): Promise<LoraDecodeOp> {
    return new LoraDecodeOp(
      await registry.get({ file: "lora_decode.wgsl", source, constants: { WG, OUT_PER_WG } }),
    );
  }

  /**
   * Records y[out] += scale · (x[in]·Aᵀ)·Bᵀ. `a` [rank, in] and `b` [out, rank] must be views
   * of the same buffer (the adapter's flat parameters), x and y one token each.
   */
  record(rec: Recorder, x: Tensor, a: Tensor, b: Tensor, y: Tensor, scale: number): void {
    const [rank, inDim] = a.shape;
    const [outDim, rankB] = b.shape;
    if (a.shape.length !== 2 || b.shape.length !== 2 || rankB !== rank) {
      throw new ShapeError(`lora decode: A [${a.shape}] and B [${b.shape}] do not fit`);
    }
    if (x.size !== inDim || y.size !== outDim) {
      throw new ShapeError(
        `lora decode: x has ${x.size} values for in ${inDim}, y ${y.size} for out ${outDim}`,
      );
    }
    if (rank > LORA_DECODE_MAX_RANK) {
      throw new KernelUsageError(
        `lora decode handles ranks up to ${LORA_DECODE_MAX_RANK}, got ${rank}`,
      );
    }
    if (a.buffer !== b.buffer || a.byteOffset % 4 || b.byteOffset % 4) {
      throw new KernelUsageError("lora decode: A and B must be views of one f32 parameter buffer");
    }
    // Bind the span holding both, starting at a portable (256-byte) offset.
    const start = Math.floor(Math.min(a.byteOffset, b.byteOffset) / 256) * 256;
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
