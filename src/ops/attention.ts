import { ATTENTION_WGSL as source } from "./shaders.generated.ts";
import { ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  type AdapterClass,
  adapterClass,
  describeTensor,
  expectArgument,
  expectPositive,
  expectShape,
} from "./shapes.ts";

const OP = "attention";
const FILE = "attention.wgsl";
const WG = 64;
/** Largest head dim the kernels take (the rows kernel needs headDim / 4 <= WG). */
export const MAX_HEAD_DIM = 256;
/** Workgroup memory the tile chooser plans for at most, whatever the adapter allows. */
const STORAGE_BUDGET = 16384;
/** Up to this many query tokens, "auto" runs the rows kernel (a workgroup per token and group). */
const ROWS_MAX_TOKENS = 4;
/** Heads of one kv group the rows kernel serves per workgroup (they share the key reads). */
const ROWS_HEADS = 4;

/**
 * Query rows (bq) and key rows (bk) of one tile. The forward and dQ kernels run bq invocations
 * (one per query row) and stream K/V tiles of bk rows; the dK/dV kernel runs bk invocations (one
 * per key row) and streams query tiles of bq rows.
 */
export interface AttentionTiles {
  /** Query rows per tile. */
  bq: number;
  /** Key rows per tile. */
  bk: number;
}

/** Tile sizes per kernel; whatever is omitted is chosen from the head dim and the adapter. */
export interface AttentionOptions {
  /** Tiles of the prefill forward kernel. */
  forward?: AttentionTiles;
  /** Tiles of the dQ backward kernel. */
  backwardDq?: AttentionTiles;
  /** Tiles of the dK/dV backward kernel. */
  backwardDkdv?: AttentionTiles;
  /** forward rows kernel: keys each of its 64 invocations scores per chunk. */
  rowsKeysPerThread?: number;
  /**
   * Tiled kernels: rows each invocation owns (query rows; key rows in dK/dV), so that every tile
   * element read from workgroup memory serves that many rows. Divides every tile's bq and bk.
   */
  rowsPerInvocation?: number;
  /** Element type of the keys and values the kernels read (default "f32"; see KvCache). */
  kvDtype?: "f32" | "f16";
}

/** Which forward kernel runs: "rows" (decode-shaped), "tiled" (prefill), or chosen by size. */
export type AttentionPath = "auto" | "tiled" | "rows";

/** Tensors and sizes of one forward call. All f32, but k and v of the op's kvDtype. */
export interface AttentionForwardArgs {
  /** [tokens, nHeads, headDim]: queries at positions past .. past + tokens - 1. */
  q: Tensor;
  /** [capacity, nKvHeads, headDim], rows 0 .. past + tokens - 1 already written. */
  k: Tensor;
  /** [capacity, nKvHeads, headDim], like k. */
  v: Tensor;
  /** [tokens, nHeads, headDim]. */
  out: Tensor;
  /** Cache rows before this step's tokens. */
  past: number;
  /** [tokens, nHeads]: when given, the logsumexp of every row's scores is saved for backward. */
  lse?: Tensor;
  /** Score scale, 1 / sqrt(headDim) by default. */
  scale?: number;
  /** Forward kernel to use (default "auto"). */
  path?: AttentionPath;
}

/** Tensors and sizes of one backward call (keys = past + tokens). All f32, but k and v as in forward. */
export interface AttentionBackwardArgs {
  /** [tokens, nHeads, headDim]: gradient of the forward output. */
  dOut: Tensor;
  /** [tokens, nHeads, headDim]. */
  q: Tensor;
  /** [>= keys, nKvHeads, headDim]. */
  k: Tensor;
  /** [>= keys, nKvHeads, headDim]. */
  v: Tensor;
  /** [tokens, nHeads, headDim]: the forward output. */
  out: Tensor;
  /** [tokens, nHeads]: the logsumexp the forward saved. */
  lse: Tensor;
  /** [tokens, nHeads] scratch: receives dOut_t·out_t per row between the two dispatches. */
  delta: Tensor;
  /** [tokens, nHeads, headDim], overwritten. */
  dQ: Tensor;
  /** [keys, nKvHeads, headDim], overwritten (sums over the heads sharing a kv head). */
  dK: Tensor;
  /** [keys, nKvHeads, headDim], overwritten. */
  dV: Tensor;
  /** Keys before the first query row (0 for a training example that starts at position 0). */
  past: number;
  /** The scale the forward used, 1 / sqrt(headDim) by default. */
  scale?: number;
}

interface Sizes {
  tokens: number;
  nHeads: number;
  nKvHeads: number;
}

/** Rows per workgroup of the row-per-invocation kernels. */
const ROWS_PER_GROUP = 32;
/** Streamed tile rows the chooser tries, largest first. */
const STREAM_ROWS = [32, 16, 8, 4, 2, 1];

/** Rows of a streamed tile pair (K and V, or Q and dOut) that fit the workgroup memory budget. */
function streamRows(hd4: number, budget: number): number {
  return STREAM_ROWS.find((n) => 2 * 16 * hd4 * n + 8 * n <= budget) ?? 1;
}

/**
 * The widest head (in vec4s) given several rows an invocation. Head dim 128 gained as much, but its
 * kernels took 3.5 s to compile instead of 0.8 s, and the test suite's cold compiles minutes more.
 */
const MAX_RPI_HD4 = 16;

/**
 * Rows per invocation of the tiled kernels: on software adapters a workgroup-memory read costs a
 * load per SIMD lane, so each tile element read serves four rows there (on llvmpipe, at head dims
 * 8, 64 and 128: forward 1.6-1.8x and backward 1.4-2.7x faster than one row; two and eight rows
 * were slower). GPUs keep one row per invocation and more invocations per workgroup.
 */
function rowsPerInvocation(hd4: number, adapter: AdapterClass): number {
  return adapter === "fallback" && hd4 <= MAX_RPI_HD4 ? 4 : 1;
}

function defaultTiles(
  hd4: number,
  budget: number,
  adapter: AdapterClass,
): Required<AttentionOptions> {
  const stream = streamRows(hd4, budget);
  return {
    forward: { bq: ROWS_PER_GROUP, bk: stream },
    backwardDq: { bq: ROWS_PER_GROUP, bk: stream },
    backwardDkdv: { bq: stream, bk: ROWS_PER_GROUP },
    rowsKeysPerThread: 4,
    kvDtype: "f32",
    rowsPerInvocation: Math.min(stream, rowsPerInvocation(hd4, adapter)),
  };
}

/**
 * Causal grouped-query attention over a KV cache for one head dim: forward (online softmax,
 * optionally saving logsumexp) and a FlashAttention-style backward that recomputes the
 * probabilities from the saved logsumexp. The backward takes any `past` (keys = past + tokens).
 * Keys and values are f32 or f16 (`kvDtype`, one per op: the model's KV cache).
 */
export class AttentionOp {
  private constructor(
    readonly headDim: number,
    readonly tiles: Required<AttentionOptions>,
    private readonly kernels: Record<
      "tiled" | "tiledLse" | "rows" | "rowsLse" | "dq" | "dkdv",
      Kernel
    >,
  ) {}

  /** Compiles the forward and backward kernels for one head dim. */
  static async create(
    registry: KernelRegistry,
    headDim: number,
    options: AttentionOptions = {},
  ): Promise<AttentionOp> {
    const fits = Number.isInteger(headDim) && headDim >= 1 && headDim <= MAX_HEAD_DIM;
    expectArgument(OP, "headDim", fits, `an integer in 1..${MAX_HEAD_DIM}`, headDim);
    const hd4 = Math.ceil(headDim / 4);
    const budget = Math.min(STORAGE_BUDGET, registry.gpu.limits.maxComputeWorkgroupStorageSize);
    const adapter = adapterClass(registry.gpu.capabilities);
    const tiles = { ...defaultTiles(hd4, budget, adapter), ...options };
    const rpi = tiles.rowsPerInvocation;
    const divides = [tiles.forward, tiles.backwardDq, tiles.backwardDkdv]
      .every((t) => t.bq % rpi === 0 && t.bk % rpi === 0);
    expectArgument(
      OP,
      "rowsPerInvocation",
      Number.isInteger(rpi) && rpi >= 1 && divides,
      "a positive integer dividing every tile's bq and bk",
      rpi,
    );
    expectArgument(
      OP,
      "kvDtype",
      ["f32", "f16"].includes(tiles.kvDtype),
      "f32 or f16",
      tiles.kvDtype,
    );
    const get = (entryPoint: string, t: AttentionTiles, RPI = rpi) =>
      registry.get({
        file: FILE,
        source,
        entryPoint,
        constants: {
          HD: headDim,
          BQ: t.bq,
          BK: t.bk,
          WG,
          KPT: tiles.rowsKeysPerThread,
          GR: ROWS_HEADS,
          KV_F16: tiles.kvDtype === "f16",
          RPI,
        },
      });
    const rowTiles = { bq: 1, bk: 1 };
    const [tiled, tiledLse, rows, rowsLse, dq, dkdv] = await Promise.all([
      get("forward_tiled", tiles.forward),
      get("forward_tiled_lse", tiles.forward),
      get("forward_rows", rowTiles, 1),
      get("forward_rows_lse", rowTiles, 1),
      get("backward_dq", tiles.backwardDq),
      get("backward_dkdv", tiles.backwardDkdv),
    ]);
    return new AttentionOp(headDim, tiles, { tiled, tiledLse, rows, rowsLse, dq, dkdv });
  }

  /** Records out = softmax(scale · q kᵀ, causal) v, and lse when given. */
  recordForward(rec: Recorder, args: AttentionForwardArgs): void {
    const { q, k, v, out, lse, past } = args;
    const sizes = this.#checkQuery(q, past);
    expectShape(OP, "out", out, "f32", q.shape);
    this.#checkCache(k, sizes, past, "k");
    this.#checkCache(v, sizes, past, "v");
    if (lse) this.#checkRows(lse, sizes, "lse");
    const params = this.#params(sizes, past, args.scale);
    const path = args.path ?? "auto";
    const rows = path === "rows" || (path === "auto" && sizes.tokens <= ROWS_MAX_TOKENS);
    const bindings: Record<string, Tensor> = lse ? { q, k, v, out, lse } : { q, k, v, out };
    if (rows) {
      const kernel = lse ? this.kernels.rowsLse : this.kernels.rows;
      const blocks = sizes.nKvHeads * Math.ceil(params.group / ROWS_HEADS);
      rec.dispatch(kernel, bindings, params, [sizes.tokens, blocks]);
    } else {
      const kernel = lse ? this.kernels.tiledLse : this.kernels.tiled;
      const groups = Math.ceil(sizes.tokens / this.tiles.forward.bq);
      rec.dispatch(kernel, bindings, params, [groups, sizes.nHeads]);
    }
  }

  /** Records dQ, dK, dV (two dispatches; `delta` passes between them). */
  recordBackward(rec: Recorder, args: AttentionBackwardArgs): void {
    const { dOut, q, k, v, out, lse, delta, dQ, dK, dV, past } = args;
    const sizes = this.#checkQuery(q, past);
    for (const [t, name] of [[dOut, "dOut"], [out, "out"], [dQ, "dQ"]] as const) {
      expectShape(OP, name, t, "f32", q.shape);
    }
    this.#checkCache(k, sizes, past, "k");
    this.#checkCache(v, sizes, past, "v");
    this.#checkRows(lse, sizes, "lse");
    this.#checkRows(delta, sizes, "delta");
    const keys = past + sizes.tokens;
    for (const [t, name] of [[dK, "dK"], [dV, "dV"]] as const) {
      expectShape(OP, name, t, "f32", [keys, sizes.nKvHeads, this.headDim]);
    }
    const params = this.#params(sizes, past, args.scale);
    const { backwardDq: tq, backwardDkdv: tk } = this.tiles;
    rec.dispatch(
      this.kernels.dq,
      { q, k, v, dOut, outFwd: out, lseFwd: lse, delta, dQ },
      params,
      [Math.ceil(sizes.tokens / tq.bq), sizes.nHeads],
    );
    rec.dispatch(
      this.kernels.dkdv,
      { q, k, v, dOut, lseFwd: lse, delta, dK, dV },
      params,
      [Math.ceil(keys / tk.bk), sizes.nKvHeads],
    );
  }

  #params(sizes: Sizes, past: number, scale: number | undefined) {
    const s = scale ?? 1 / Math.sqrt(this.headDim);
    expectArgument(OP, "scale", Number.isFinite(s), "finite", s);
    return {
      tokens: sizes.tokens,
      past,
      keys: past + sizes.tokens,
      nHeads: sizes.nHeads,
      nKvHeads: sizes.nKvHeads,
      group: sizes.nHeads / sizes.nKvHeads,
      scale: s,
    };
  }

  /** q [tokens >= 1, nHeads, headDim], and `past` a cache row count. */
  #checkQuery(q: Tensor, past: number): Sizes {
    expectArgument(OP, "past", Number.isInteger(past) && past >= 0, "a non-negative integer", past);
    const [tokens, nHeads] = expectShape(OP, "q", q, "f32", ["tokens", "nHeads", this.headDim]);
    expectPositive(OP, "q", q, "tokens", tokens);
    return { tokens, nHeads, nKvHeads: 0 };
  }

  /**
   * Checks a cache [rows >= past + tokens, nKvHeads, headDim] of the op's kvDtype with nKvHeads
   * dividing nHeads and the same for every cache tensor of the call; records nKvHeads in `sizes`.
   * An f16 cache starts at a whole u32 word.
   */
  #checkCache(t: Tensor, sizes: Sizes, past: number, name: string): void {
    const kvHeads = sizes.nKvHeads || "nKvHeads";
    const dtype = this.tiles.kvDtype;
    const [rows, nKv] = expectShape(OP, name, t, dtype, ["rows", kvHeads, this.headDim]);
    if (nKv < 1 || sizes.nHeads % nKv !== 0) {
      throw new ShapeError(
        `${OP}: ${name} ${
          describeTensor(t)
        }: nKvHeads = ${nKv} must divide nHeads = ${sizes.nHeads}`,
      );
    }
    sizes.nKvHeads = nKv;
    if (dtype === "f16" && t.byteOffset % 4 !== 0) {
      throw new ShapeError(`${OP}: ${name} ${describeTensor(t)} must start at a whole u32 word`);
    }
    if (rows < past + sizes.tokens) {
      throw new ShapeError(
        `${OP}: ${name} ${describeTensor(t)} has ${rows} rows; past ${past} + ${sizes.tokens} ` +
          `tokens need more`,
      );
    }
  }

  /** lse or delta [tokens, nHeads]. */
  #checkRows(t: Tensor, sizes: Sizes, name: string): void {
    expectShape(OP, name, t, "f32", [sizes.tokens, sizes.nHeads]);
  }
}
