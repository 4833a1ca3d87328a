import { EMBEDDING_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  expectArgument,
  expectDtype,
  expectMultiple,
  expectPositive,
  expectShape,
  expectWindow,
  strideGrid,
} from "./shapes.ts";

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
 * Which rows of a vocabulary a table holds when the vocabulary is split by rows (a table larger
 * than one storage binding): rows [first, first + the table's rows) of `vocab`.
 */
export interface VocabularyPart {
  /** The vocabulary row the table's first row is. */
  first: number;
  /** Rows of the whole vocabulary (ids at or past it are clamped to its last row). */
  vocab: number;
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
   * With `part`, the table is rows part.first.. of a larger vocabulary, and only the tokens whose
   * row it holds are written (each part of a split table is gathered by its own call).
   */
  recordForward(
    rec: Recorder,
    table: Tensor,
    ids: Tensor,
    out: Tensor,
    offset = 0,
    part?: VocabularyPart,
  ): void {
    const op = "embedding forward";
    const { vocab: rows, dim, tokens } = checkShapes(op, table, ids, out, offset);
    const { first, vocab } = checkPart(op, rows, part);
    const { groups, stride } = strideGrid(tokens * (dim / 4), this.wg, MAX_GROUPS);
    rec.dispatch(
      this.forward,
      { table, ids, out },
      { tokens, dim4: dim / 4, vocab, offset, stride, first, count: rows },
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
    const { vocab, dim, tokens } = checkShapes("embedding backward", dTable, ids, dOut, offset, [
      "dTable",
      "dOut",
    ]);
    const dim4 = dim / 4;
    rec.dispatch(
      options.accumulate ? this.backwardAccumulate : this.backward,
      { dOut, ids, dTable },
      { tokens, dim4, vocab, offset, stride: 0, first: 0, count: vocab },
      [Math.ceil(vocab / this.rowsPerGroup), Math.ceil(dim4 / this.wg)],
    );
  }
}

/**
 * Checks the table [vocab >= 1, dim] and the rows [tokens, dim] (f32, dim a multiple of 4; `names`
 * says what the call calls them) and the ids window ids[offset .. offset + tokens).
 */
function checkShapes(
  op: string,
  table: Tensor,
  ids: Tensor,
  rows: Tensor,
  offset: number,
  [tableName, rowsName]: readonly [string, string] = ["table", "out"],
): { vocab: number; dim: number; tokens: number } {
  const [vocab, dim] = expectShape(op, tableName, table, "f32", ["vocab", "dim"]);
  expectPositive(op, tableName, table, "vocab", vocab);
  expectPositive(op, tableName, table, "dim", dim);
  expectMultiple(op, tableName, table, "dim", dim, 4);
  const [tokens] = expectShape(op, rowsName, rows, "f32", ["tokens", dim]);
  expectDtype(op, "ids", ids, "u32");
  expectWindow(op, "ids", offset, tokens, ids.size, "ids");
  return { vocab, dim, tokens };
}

/** The part a table of `rows` rows is (the whole vocabulary without `part`), checked. */
export function checkPart(op: string, rows: number, part?: VocabularyPart): VocabularyPart {
  if (!part) return { first: 0, vocab: rows };
  const { first, vocab } = part;
  const ok = Number.isInteger(first) && first >= 0 && Number.isInteger(vocab) &&
    first + rows <= vocab;
  expectArgument(
    op,
    "part",
    ok,
    `{ first, vocab } with first + ${rows} <= vocab`,
    JSON.stringify(part),
  );
  return part;
}
