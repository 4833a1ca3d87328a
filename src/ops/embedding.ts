import source from "../../shaders/embedding.wgsl" with { type: "text" };
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";

const FILE = "embedding.wgsl";
const MAX_GROUPS = 4096;

/** Options for {@link EmbeddingOp.create}. */
export interface EmbeddingOptions {
  /** Invocations per workgroup (default 64). */
  workgroupSize?: number;
  /** Vocabulary rows one backward workgroup owns (default 32). */
  rowsPerGroup?: number;
}

/** Options for {@link EmbeddingOp.recordBackward}. */
export interface EmbeddingBackwardOptions {
  /** Token t's id is ids[offset + t] (default 0). */
  offset?: number;
  /** Add into dTable instead of overwriting it (default false). */
  accumulate?: boolean;
}

/**
 * Token embedding gather and its scatter-add backward (shaders/embedding.wgsl). Ids at or past
 * the vocabulary size are clamped to the last row, so they never read or write out of bounds.
 */
export class EmbeddingOp {
  private constructor(
    private readonly forward: Kernel,
    private readonly backward: Kernel,
    private readonly backwardAccumulate: Kernel,
    private readonly wg: number,
    private readonly rowsPerGroup: number,
  ) {}

  /** Compiles the gather and the two scatter-add kernels (overwrite and accumulate). */
  static async create(
    registry: KernelRegistry,
    options: EmbeddingOptions = {},
  ): Promise<EmbeddingOp> {
    const WG = options.workgroupSize ?? 64;
    const ROWS = options.rowsPerGroup ?? 32;
    const get = (entryPoint: string, constants: Record<string, number | boolean>) =>
      registry.get({ file: FILE, source, entryPoint, constants });
    const [forward, backward, backwardAccumulate] = await Promise.all([
      get("forward", { WG }),
      get("backward", { WG, ROWS, ACCUMULATE: false }),
      get("backward", { WG, ROWS, ACCUMULATE: true }),
    ]);
    return new EmbeddingOp(forward, backward, backwardAccumulate, WG, ROWS);
  }

  /**
   * Records out[t, :] = table[ids[offset + t], :] for every row t of `out`.
   * table [vocab, dim] f32, ids [n] u32 with offset + tokens <= n, out [tokens, dim] f32.
   */
  recordForward(rec: Recorder, table: Tensor, ids: Tensor, out: Tensor, offset = 0): void {
    const { vocab, dim, tokens } = checkShapes("embedding forward", table, ids, out, offset);
    const n4 = tokens * (dim / 4);
    const groups = Math.max(1, Math.min(MAX_GROUPS, Math.ceil(n4 / this.wg)));
    rec.dispatch(
      this.forward,
      { table, ids, out },
      { tokens, dim4: dim / 4, vocab, offset, stride: groups * this.wg },
      [groups],
    );
  }

  /**
   * Records dTable[v, :] = sum of dOut[t, :] over tokens t with ids[offset + t] == v (added to
   * dTable's contents with `accumulate`). dOut [tokens, dim], ids [n] u32, dTable [vocab, dim].
   */
  recordBackward(
    rec: Recorder,
    dOut: Tensor,
    ids: Tensor,
    dTable: Tensor,
    options: EmbeddingBackwardOptions = {},
  ): void {
    const offset = options.offset ?? 0;
    const { vocab, dim, tokens } = checkShapes("embedding backward", dTable, ids, dOut, offset);
    const dim4 = dim / 4;
    rec.dispatch(
      options.accumulate ? this.backwardAccumulate : this.backward,
      { dOut, ids, dTable },
      { tokens, dim4, vocab, offset, stride: 0 },
      [Math.ceil(vocab / this.rowsPerGroup), Math.ceil(dim4 / this.wg)],
    );
  }
}

function checkShapes(
  what: string,
  table: Tensor,
  ids: Tensor,
  rows: Tensor,
  offset: number,
): { vocab: number; dim: number; tokens: number } {
  if (table.shape.length !== 2 || table.dtype !== "f32") {
    throw new ShapeError(
      `${what}: table must be f32 [vocab, dim], got ${table.dtype} [${table.shape}]`,
    );
  }
  const [vocab, dim] = table.shape;
  if (vocab < 1 || dim % 4 !== 0 || dim === 0) {
    throw new ShapeError(
      `${what}: table [${table.shape}] needs vocab >= 1 and dim a multiple of 4`,
    );
  }
  if (rows.dtype !== "f32" || rows.shape.length !== 2 || rows.shape[1] !== dim) {
    throw new ShapeError(
      `${what}: rows must be f32 [tokens, ${dim}], got ${rows.dtype} [${rows.shape}]`,
    );
  }
  if (ids.dtype !== "u32") throw new ShapeError(`${what}: ids must be u32, got ${ids.dtype}`);
  const tokens = rows.shape[0];
  if (!Number.isInteger(offset) || offset < 0 || offset + tokens > ids.size) {
    throw new KernelUsageError(
      `${what}: ids[${offset} .. ${offset + tokens}) runs past the ${ids.size} ids given`,
    );
  }
  return { vocab, dim, tokens };
}
