import ownSource from "../../shaders/quant_embedding.wgsl" with { type: "text" };
import type { GgmlQuantType } from "../core/quant.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  qtypeConstant,
  type QuantMatrix,
  resolveTypes,
  withBlockDecoding,
} from "./quant_weight.ts";

const source = withBlockDecoding(ownSource);
const WG = 64;
const MAX_GROUPS = 4096;

/**
 * Token embedding gather from a quantized table [vocab, dim] (shaders/quant_embedding.wgsl):
 * each token's row is dequantized as it is read, so a tied Q6_K or Q8_0 embedding stays packed.
 * Ids at or past the vocabulary size are clamped to the last row. The table is frozen: there is
 * no backward.
 */
export class QuantEmbeddingOp {
  private constructor(private readonly kernels: Map<GgmlQuantType, Kernel>) {}

  /** Compiles the gather for each type (default: every quantized type). */
  static async create(
    registry: KernelRegistry,
    options: { types?: readonly GgmlQuantType[] } = {},
  ): Promise<QuantEmbeddingOp> {
    const kernels = new Map<GgmlQuantType, Kernel>();
    await Promise.all(
      resolveTypes(options.types).map(async (type) => {
        const constants = { QTYPE: qtypeConstant(type), WG };
        kernels.set(
          type,
          await registry.get({
            file: "quant_embedding.wgsl",
            source,
            entryPoint: "forward",
            constants,
          }),
        );
      }),
    );
    return new QuantEmbeddingOp(kernels);
  }

  /**
   * Records out[t, :] = dequantized table[ids[offset + t], :] for every row t of `out`.
   * table quantized [vocab, dim], ids [n] u32 with offset + tokens <= n, out [tokens, dim] f32.
   */
  recordForward(
    rec: Recorder,
    table: QuantMatrix,
    ids: Tensor,
    out: Tensor,
    offset = 0,
  ): void {
    const { rows: vocab, cols: dim } = table;
    if (out.dtype !== "f32" || out.shape.length !== 2 || out.shape[1] !== dim) {
      throw new ShapeError(
        `quant embedding: out must be f32 [tokens, ${dim}], got ${out.dtype} [${out.shape}]`,
      );
    }
    if (ids.dtype !== "u32") {
      throw new ShapeError(`quant embedding: ids must be u32, got ${ids.dtype}`);
    }
    const tokens = out.shape[0];
    if (!Number.isInteger(offset) || offset < 0 || offset + tokens > ids.size) {
      throw new KernelUsageError(
        `quant embedding: ids[${offset} .. ${offset + tokens}) runs past the ${ids.size} ids given`,
      );
    }
    const kernel = this.kernels.get(table.type);
    if (!kernel) {
      throw new KernelUsageError(
        `quant embedding: not compiled for ${table.type} (see create's types)`,
      );
    }
    const dim4 = dim / 4;
    const groups = Math.max(1, Math.min(MAX_GROUPS, Math.ceil((tokens * dim4) / WG)));
    rec.dispatch(
      kernel,
      { ids, qweight: table.data, out },
      { tokens, dim4, vocab, offset, stride: groups * WG, rowBytes: table.rowBytes },
      [groups],
    );
  }
}
