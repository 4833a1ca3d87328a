import { QUANT_EMBEDDING_WGSL as source } from "./shaders.generated.ts";
import type { GgmlQuantType } from "../core/quant.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { qtypeConstant, QUANT_SNIPPETS, type QuantMatrix, resolveTypes } from "./quant_weight.ts";
import { expectDtype, expectShape, expectWindow, strideGrid } from "./shapes.ts";
import { checkPart, type VocabularyPart } from "./embedding.ts";

const OP = "quant embedding";
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
            includes: QUANT_SNIPPETS,
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
   * With `part` (a table split by rows), as EmbeddingOp's: only the tokens whose row it holds.
   */
  recordForward(
    rec: Recorder,
    table: QuantMatrix,
    ids: Tensor,
    out: Tensor,
    offset = 0,
    part?: VocabularyPart,
  ): void {
    const { rows, cols: dim } = table;
    const { first, vocab } = checkPart(OP, rows, part);
    const [tokens] = expectShape(OP, "out", out, "f32", ["tokens", dim]);
    expectDtype(OP, "ids", ids, "u32");
    expectWindow(OP, "ids", offset, tokens, ids.size, "ids");
    const kernel = this.kernels.get(table.type);
    if (!kernel) {
      throw new KernelUsageError(
        `${OP}: table is ${table.type}, which this op was not created for`,
      );
    }
    const { groups, stride } = strideGrid(tokens * (dim / 4), WG, MAX_GROUPS);
    rec.dispatch(
      kernel,
      { ids, qweight: table.data, out },
      {
        tokens,
        dim4: dim / 4,
        vocab,
        offset,
        stride,
        rowBytes: table.rowBytes,
        first,
        count: rows,
      },
      [groups],
    );
  }
}
