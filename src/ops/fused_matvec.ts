import { FUSED_MATVEC_WGSL as source } from "./shaders.generated.ts";
import type { GgmlQuantType } from "../core/quant.ts";
import { GpuLimitError, KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import { PORTABLE_OFFSET_ALIGNMENT, type Recorder } from "../gpu/recorder.ts";
import type { Gpu } from "../gpu/device.ts";
import { createTensor, DTYPE_BYTES, Tensor } from "../gpu/tensor.ts";
import { foldConstantBranches } from "../gpu/wgsl_parse.ts";
import type { KvCacheDtype } from "../model/kv_cache.ts";
import {
  qtypeConstant,
  QUANT_SNIPPETS,
  type QuantMatrix,
  quantMatrix,
  quantRowBytes,
} from "./quant_weight.ts";
import {
  type AdapterClass,
  adapterClass,
  describeTensor,
  expectArgument,
  expectSize,
  splitGrid,
} from "./shapes.ts";

const OP = "fused matvec";

/** Largest LoRA rank the kernels take (it sizes their workgroup copy of h). */
export const FUSED_MAX_RANK = 64;

/** How matrices of one fused product are stored: f32, f16, or GGUF blocks of one type. */
export type FusedWeightKind = "f32" | "f16" | GgmlQuantType;

/**
 * The matrices one fused product reads, back to back in one buffer: part p is a [rows_p, cols]
 * matrix (row-major, [out, in]) starting at byte `offset_p`, in `kind`'s layout.
 */
export interface FusedParts {
  /** The buffer: f32 or f16 elements, or u32 words of blocks. */
  data: Tensor;
  /** Storage of every part. */
  kind: FusedWeightKind;
  /** Input width K of every part. */
  cols: number;
  /** Each part's first byte in `data` and its rows. */
  parts: readonly { offset: number; rows: number }[];
}

/** Workgroup shape: invocations (a power of two) and row slots (even) per workgroup. */
export interface FusedTiles {
  /** Invocations per workgroup. */
  wg: number;
  /** Row slots per workgroup. */
  rows: number;
  /** Row slots per workgroup of the kernels over GGUF blocks (even; default `rows`). */
  quantRows?: number;
}

/** The row slots per workgroup of the kernels over `kind`'s weights. */
export function fusedRows(tiles: FusedTiles, kind: FusedWeightKind): number {
  return kind === "f32" || kind === "f16" ? tiles.rows : tiles.quantRows ?? tiles.rows;
}

/**
 * Tiles per adapter class. On llvmpipe one SIMD group of eight with eight rows, as matvec.wgsl
 * (barriers are coroutine switches there), and 32 over blocks as quant_matvec.wgsl (each x load
 * then serves 32 rows: see quantMatvecTiles); on GPUs a wider group striding over K keeps loads
 * coalesced, wider still on discrete ones where a workgroup's share of a row is short.
 */
export const FUSED_TILES: Readonly<Record<AdapterClass, FusedTiles>> = {
  fallback: { wg: 8, rows: 8, quantRows: 32 },
  integrated: { wg: 64, rows: 4 },
  discrete: { wg: 128, rows: 4 },
};

/** What one kernel variant does (its specialisation constants). */
export interface FusedVariant {
  /** Storage of the weights. */
  kind: FusedWeightKind;
  /** "store" y = v; "add" y += v; "qkv" RoPE and the KV cache; "swiglu" silu(gate) * up. */
  epilogue: "store" | "add" | "qkv" | "swiglu";
  /** RMS-normalise the input first. */
  norm?: boolean;
  /** Add a LoRA adapter's update. */
  lora?: boolean;
  /** With `lora`: h = A·x computed ahead by a dispatch of its own ({@link FusedLora.h}). */
  loraH?: boolean;
  /** Add a bias. */
  bias?: boolean;
  /** RoPE on q and k ("qkv" only): the pair convention, or none. */
  rope?: "interleaved" | "half";
  /** The KV cache's element type ("qkv" only; default "f32"). */
  kvDtype?: KvCacheDtype;
}

const EPILOGUES = { store: 0, add: 1, qkv: 2, swiglu: 3 } as const;

function variantKey(v: FusedVariant): string {
  return [
    v.kind,
    v.epilogue,
    v.norm ?? false,
    v.lora ?? false,
    v.loraH ?? false,
    v.bias ?? false,
    v.rope ?? "none",
    v.kvDtype ?? "f32",
  ].join("|");
}

/** The RMSNorm applied to the input on its way in. */
export interface FusedNorm {
  /** [K] the norm's weight. */
  weight: Tensor;
  /** Added to the mean square. */
  eps: number;
}

/** A LoRA adapter on the parts: A [rank, K] and B [rows_p, rank] per part, views of `params`. */
export interface FusedLora {
  /** Per part, in part order. */
  parts: readonly { a: Tensor; b: Tensor }[];
  /** alpha / rank. */
  scale: number;
  /**
   * [parts × rank] f32 scratch: when given, every part's h = A·x is computed ahead into it by a
   * dispatch of its own, spread over workgroups, and the product's workgroups read it instead of
   * each computing all of it (for adapters {@link FusedMatvecOp.loraFits} says are too large).
   */
  h?: Tensor;
}

/** Where "qkv" puts the token's key and value, and its rotation. */
export interface FusedKvTarget {
  /** The layer's KV buffer (keys and values), f32 or f16 (the variant's kvDtype). */
  kv: Tensor;
  /** Element of kv where the token's key row starts. */
  kAt: number;
  /** Element of kv where the token's value row starts. */
  vAt: number;
  /**
   * RoPE of q and k, when the layer rotates: the frequency table (src/ops/rope.ts's
   * ropeFrequencyTable, [headDim / 2, 4]), the token's position, the head size and pair convention.
   */
  rope?: { freqs: Tensor; pos: number; headDim: number; pairs: "interleaved" | "half" };
}

/** One fused product. */
export interface FusedArgs {
  /** [K] f32 input. */
  x: Tensor;
  /** The matrices. */
  weights: FusedParts;
  /** Output: [rows_0] ("store", "add": the residual), q ("qkv"), [hidden] ("swiglu"). */
  y: Tensor;
  /** RMSNorm of x first. */
  norm?: FusedNorm;
  /** Biases of the parts in one f32 tensor, part p's at element offsets[p]. */
  bias?: { data: Tensor; offsets: readonly number[] };
  /** A LoRA adapter. */
  lora?: FusedLora;
  /** "qkv": the KV cache target. */
  kv?: FusedKvTarget;
}

/**
 * Decode's matrix-vector products with their neighbours fused (shaders/fused_matvec.wgsl): the
 * RMSNorm before a projection, Q, K and V as one product whose epilogue applies RoPE and appends
 * to the KV cache, gate and up as one product with SwiGLU in its epilogue, the residual add after
 * o and down, and the adapter's forward inside the product. Weights f32, f16 or GGUF blocks, K a
 * multiple of 4 (of the block size for blocks). Variants are compiled up front ({@link create}).
 */
export class FusedMatvecOp {
  private constructor(
    private readonly kernels: Map<string, Kernel>,
    /** The workgroup shape the kernels were compiled with. */
    readonly tiles: FusedTiles,
  ) {}

  /**
   * Compiles `variants` with `tiles` (default: the adapter class's). Throws
   * {@link GpuLimitError} when the adapter binds fewer storage buffers per stage than a variant
   * uses (at most 8, WebGPU's default).
   */
  static async create(
    registry: KernelRegistry,
    variants: readonly FusedVariant[],
    tiles: FusedTiles = FUSED_TILES[adapterClass(registry.gpu.capabilities)],
  ): Promise<FusedMatvecOp> {
    const even = (r: number) => Number.isInteger(r) && r >= 2 && r % 2 === 0;
    const okTiles = Number.isInteger(Math.log2(tiles.wg)) && even(tiles.rows) &&
      even(tiles.quantRows ?? tiles.rows);
    expectArgument(OP, "tiles", okTiles, "wg a power of two, rows even", JSON.stringify(tiles));
    const kernels = new Map<string, Kernel>();
    const storage = registry.gpu.limits.maxStorageBuffersPerShaderStage;
    const hKernels = new Map<boolean, Promise<Kernel>>();
    const hKernel = (norm: boolean) => {
      if (!hKernels.has(norm)) hKernels.set(norm, compileLoraH(registry, tiles, norm));
      return hKernels.get(norm)!;
    };
    await Promise.all(variants.map(async (v) => {
      const key = variantKey(v);
      if (kernels.has(key)) return;
      if (v.loraH && !v.lora) {
        throw new KernelUsageError(`${OP}: variant ${key} computes LoRA's h ahead without LoRA`);
      }
      const quant = v.kind !== "f32" && v.kind !== "f16";
      const constants = {
        WG: tiles.wg,
        ROWS: fusedRows(tiles, v.kind),
        NORM: v.norm ?? false,
        WTYPE: quant ? 2 : v.kind === "f16" ? 1 : 0,
        QTYPE: quant ? qtypeConstant(v.kind as GgmlQuantType) : 8,
        EPI: EPILOGUES[v.epilogue],
        LORA: v.lora ?? false,
        LORA_H: v.loraH ?? false,
        BIAS: v.bias ?? false,
        ROPE: v.rope !== undefined,
        INTERLEAVED: v.rope !== "half",
        MAX_RANK: FUSED_MAX_RANK,
        KV_F16: v.kvDtype === "f16",
      };
      // The branches the flags decide go before compiling (see foldConstantBranches), so the
      // variant's layout holds only the buffers it reads.
      const kernel = await registry.get({
        file: "fused_matvec.wgsl",
        source: foldConstantBranches(source, constants),
        includes: QUANT_SNIPPETS,
        constants,
      });
      if (kernel.storage.length > storage) {
        // h computed ahead is one buffer more; without it the caller takes the unfused kernels.
        if (v.loraH) return;
        throw new GpuLimitError(
          `${OP} ${key}: ${kernel.storage.length} storage buffers; this adapter binds ${storage}`,
        );
      }
      if (v.loraH) kernels.set(hKernelKey(v.norm ?? false), await hKernel(v.norm ?? false));
      kernels.set(key, kernel);
    }));
    return new FusedMatvecOp(kernels, tiles);
  }

  /**
   * Whether an adapter of `rank` is worth computing inside this product: every workgroup computes
   * its own h = A·x (rank x K multiply-adds), which beside the product's weights costs little for a
   * small model and a lot for a large one, where the caller is better off with the unfused
   * kernels. The budget per dispatch is about what a dispatch costs on its own: small on llvmpipe,
   * where h runs on CPU threads, larger on GPUs.
   */
  static loraFits(
    tiles: FusedTiles,
    epilogue: FusedVariant["epilogue"],
    rows: readonly number[],
    k: number,
    rank: number,
  ): boolean {
    const R = tiles.rows;
    const groups = epilogue === "swiglu"
      ? Math.ceil(rows[0] / (R / 2))
      : rows.reduce((sum, n) => sum + Math.ceil(n / R), 0);
    const parts = epilogue === "swiglu" ? 2 : 1;
    return groups * parts * rank * k <= FusedMatvecOp.loraBudget(tiles);
  }

  /** {@link FusedMatvecOp.loraFits} with this op's tiles. */
  loraFits(
    epilogue: FusedVariant["epilogue"],
    rows: readonly number[],
    k: number,
    rank: number,
  ): boolean {
    return FusedMatvecOp.loraFits(this.tiles, epilogue, rows, k, rank);
  }

  /**
   * Whether the RMSNorm before a product is worth doing inside it with these tiles: every
   * workgroup reduces the whole input again (K values and the norm's tree), which beside a few
   * rows of weights costs little when the product is small and more than the separate norm's
   * dispatch when it is large (measured on llvmpipe: a SmolLM2-sized model decoded about 10%
   * slower per CPU-second with every norm fused).
   */
  static normFits(
    tiles: FusedTiles,
    epilogue: FusedVariant["epilogue"],
    rows: readonly number[],
    k: number,
  ): boolean {
    const groups = epilogue === "swiglu"
      ? Math.ceil(rows[0] / (tiles.rows / 2))
      : rows.reduce((sum, n) => sum + Math.ceil(n / tiles.rows), 0);
    return groups * k <= (tiles.wg <= 8 ? 2 ** 16 : 2 ** 22);
  }

  /**
   * Whether the "qkv" epilogue can append to an f16 KV cache with these tiles: each u32 word's
   * two rows must land in one workgroup, which half-split RoPE pairs scatter to slots s and s + 2.
   */
  static kvF16Fits(
    tiles: FusedTiles,
    kind: FusedWeightKind,
    rope: "interleaved" | "half" | undefined,
    headDim: number,
  ): boolean {
    return rope !== "half" || (fusedRows(tiles, kind) % 4 === 0 && headDim % 4 === 0);
  }

  /** {@link FusedMatvecOp.normFits} with this op's tiles. */
  normFits(epilogue: FusedVariant["epilogue"], rows: readonly number[], k: number): boolean {
    return FusedMatvecOp.normFits(this.tiles, epilogue, rows, k);
  }

  /** Multiply-adds of in-kernel LoRA h per dispatch that {@link loraFits} allows. */
  static loraBudget(tiles: FusedTiles): number {
    return tiles.wg <= 8 ? 2 ** 18 : 2 ** 22;
  }

  /** Whether `variant` was compiled. */
  has(variant: FusedVariant): boolean {
    return this.kernels.has(variantKey(variant));
  }

  /** Records y = W·x with the variant's prologue and epilogue (see {@link FusedArgs}). */
  record(rec: Recorder, epilogue: FusedVariant["epilogue"], args: FusedArgs): void {
    const { x, weights: w, y, norm, bias, lora, kv } = args;
    const k = w.cols;
    const nParts = w.parts.length;
    const want = epilogue === "qkv" ? 3 : epilogue === "swiglu" ? 2 : 1;
    expectArgument(OP, `${epilogue} parts`, nParts === want, `${want}`, nParts);
    const quant = w.kind !== "f32" && w.kind !== "f16";
    expectArgument(OP, "K", k > 0 && k % (quant ? 32 : 4) === 0, "a multiple of 4 (32)", k);
    expectSize(OP, "x", x, "f32", k);
    if (norm) expectSize(OP, "norm weight", norm.weight, "f32", k);
    const rows = w.parts.map((p) => p.rows);
    // Offsets and strides in the kernel's units: vec4s (f32), vec2<u32> (f16), bytes (blocks).
    const unit = quant ? 1 : w.kind === "f16" ? 8 : 16;
    const rowBytes = quant
      ? quantRowBytes(w.kind as GgmlQuantType, k)
      : k * (w.kind === "f16" ? 2 : 4);
    const dtype = quant ? "u32" : w.kind;
    if (w.data.dtype !== dtype) {
      throw new ShapeError(
        `${OP}: ${w.kind} weights must be a ${dtype} tensor, got ${describeTensor(w.data)}`,
      );
    }
    for (const [i, p] of w.parts.entries()) {
      if (p.rows < 1 || p.offset % unit !== 0 || p.offset + p.rows * rowBytes > w.data.byteLength) {
        throw new ShapeError(
          `${OP}: part ${i} (${p.rows} rows at byte ${p.offset}) does not fit ` +
            describeTensor(w.data),
        );
      }
    }
    if (epilogue === "swiglu" && rows[0] !== rows[1]) {
      throw new ShapeError(`${OP}: gate and up have ${rows[0]} and ${rows[1]} rows`);
    }
    expectSize(OP, "y", y, "f32", rows[0]);
    const rope = kv?.rope;
    const variant: FusedVariant = {
      kind: w.kind,
      epilogue,
      norm: norm !== undefined,
      lora: lora !== undefined,
      loraH: lora?.h !== undefined,
      bias: bias !== undefined,
      rope: rope?.pairs,
      kvDtype: kv?.kv.dtype === "f16" ? "f16" : undefined,
    };
    const kernel = this.kernels.get(variantKey(variant));
    if (!kernel) {
      throw new KernelUsageError(`${OP}: variant ${variantKey(variant)} was not compiled`);
    }
    const R = fusedRows(this.tiles, w.kind);
    const blocks = rows.map((n) => Math.ceil(n / R));
    const groups = epilogue === "swiglu"
      ? Math.ceil(rows[0] / (R / 2))
      : blocks.reduce((a, b) => a + b, 0);
    const grid = splitGrid(rec, groups);
    const bindings: Record<string, Tensor> = { x, y };
    bindings[quant ? "qweight" : w.kind === "f16" ? "weight16" : "weight"] = w.data;
    if (norm) bindings.normW = norm.weight;
    const base = (i: number) => (w.parts[i]?.offset ?? 0) / unit;
    const params: Record<string, number> = {
      k4: k / 4,
      eps: norm?.eps ?? 0,
      stride: rowBytes / unit,
      rows0: rows[0],
      rows1: rows[1] ?? 0,
      rows2: rows[2] ?? 0,
      base0: base(0),
      base1: base(1),
      base2: base(2),
      groups1: blocks[0],
      groups2: blocks[0] + (blocks[1] ?? 0),
      groups,
      groupsX: grid[0],
      biasAt1: 0,
      biasAt2: 0,
      rank: 0,
      scale: 0,
      aAt0: 0,
      aAt1: 0,
      aAt2: 0,
      bAt0: 0,
      bAt1: 0,
      bAt2: 0,
      headDim: rope?.headDim ?? 2,
      pos: rope?.pos ?? 0,
      kAt: kv?.kAt ?? 0,
      vAt: kv?.vAt ?? 0,
      hRows: 0,
    };
    if (bias) {
      const { data, offsets } = bias;
      const fits = offsets.length === nParts && offsets[0] === 0 &&
        offsets.every((o, i) => Number.isInteger(o) && o >= 0 && o + rows[i] <= data.size);
      if (data.dtype !== "f32" || !fits) {
        throw new ShapeError(
          `${OP}: biases [${rows}] at [${offsets}] do not fit ${describeTensor(data)}`,
        );
      }
      bindings.bias = data;
      params.biasAt1 = offsets[1] ?? 0;
      params.biasAt2 = offsets[2] ?? 0;
    }
    if (lora) this.#lora(lora, rows, k, bindings, params);
    if (epilogue === "qkv") {
      if (!kv) throw new KernelUsageError(`${OP}: "qkv" needs a KV target`);
      const kvRows = rows[1];
      const inKv = (at: number) => Number.isInteger(at) && at >= 0 && at + kvRows <= kv.kv.size;
      const f16 = kv.kv.dtype === "f16";
      // f16 rows are whole words, and each word's two rows are in one workgroup.
      const words = !f16 || (kvRows % 2 === 0 && kv.kAt % 2 === 0 && kv.vAt % 2 === 0 &&
        kv.kv.byteOffset % 4 === 0);
      if (f16 && rope && !FusedMatvecOp.kvF16Fits(this.tiles, w.kind, rope.pairs, rope.headDim)) {
        throw new KernelUsageError(
          `${OP}: an f16 KV cache with ${rope.pairs} RoPE pairs needs ROWS and headDim ` +
            `multiples of 4 (ROWS ${fusedRows(this.tiles, w.kind)}, headDim ${rope.headDim})`,
        );
      }
      const dtypeOk = kv.kv.dtype === "f32" || f16;
      if (rows[2] !== kvRows || !dtypeOk || !words || !inKv(kv.kAt) || !inKv(kv.vAt)) {
        throw new ShapeError(
          `${OP}: k and v rows [${rows[1]}, ${rows[2]}] at ${kv.kAt}, ${kv.vAt} do not fit ` +
            describeTensor(kv.kv),
        );
      }
      bindings.kv = kv.kv;
      if (rope) {
        const hd = rope.headDim;
        const fits = hd >= 2 && hd % 2 === 0 && rows[0] % hd === 0 && kvRows % hd === 0;
        expectArgument(OP, "RoPE head size", fits, "even and dividing q's and k's rows", hd);
        expectSize(OP, "RoPE frequencies", rope.freqs, "f32", hd * 2);
        expectArgument(
          OP,
          "position",
          Number.isInteger(rope.pos) && rope.pos >= 0 && rope.pos < 2 ** 24,
          "an integer in [0, 2^24)",
          rope.pos,
        );
        bindings.freqs = rope.freqs;
      }
    }
    if (lora?.h) this.#recordLoraH(rec, lora.h, bindings, params);
    rec.dispatch(kernel, bindings, params, grid);
  }

  /** Records every part's h = A·x into `h` ahead of the product, which then binds it. */
  #recordLoraH(
    rec: Recorder,
    h: Tensor,
    bindings: Record<string, Tensor>,
    params: Record<string, number>,
  ): void {
    const hRows = (params.rows2 ? 3 : params.rows1 ? 2 : 1) * params.rank;
    expectSize(OP, "LoRA h", h, "f32", hRows);
    const norm = bindings.normW !== undefined;
    const kernel = this.kernels.get(hKernelKey(norm))!;
    const grid = splitGrid(rec, Math.ceil(hRows / this.tiles.rows));
    const hParams = { ...params, hRows, groupsX: grid[0] };
    const hBindings: Record<string, Tensor> = {
      x: bindings.x,
      adapter: bindings.adapter,
      lora_hv: h,
    };
    if (norm) hBindings.normW = bindings.normW;
    rec.dispatch(kernel, hBindings, hParams, grid);
    bindings.lora_hv = h;
  }

  /** Binds the adapter's buffer and sets the LoRA parameters of every part. */
  #lora(
    lora: FusedLora,
    rows: number[],
    k: number,
    bindings: Record<string, Tensor>,
    params: Record<string, number>,
  ): void {
    const { parts, scale } = lora;
    if (parts.length !== rows.length) {
      throw new KernelUsageError(`${OP}: LoRA for ${parts.length} of ${rows.length} parts`);
    }
    const rank = parts[0].a.shape[0];
    const buffer = parts[0].a.buffer;
    expectArgument(
      OP,
      "LoRA rank",
      rank >= 1 && rank <= FUSED_MAX_RANK,
      `in 1..${FUSED_MAX_RANK}`,
      rank,
    );
    let lo = Infinity;
    let hi = 0;
    for (const [i, { a, b }] of parts.entries()) {
      const fits = a.dtype === "f32" && b.dtype === "f32" && a.shape.length === 2 &&
        a.shape[0] === rank && a.shape[1] === k && b.shape.length === 2 &&
        b.shape[0] === rows[i] && b.shape[1] === rank;
      if (!fits) {
        throw new ShapeError(
          `${OP}: part ${i}'s LoRA A ${describeTensor(a)} and B ${describeTensor(b)} must be ` +
            `f32 [${rank}, ${k}] and [${rows[i]}, ${rank}]`,
        );
      }
      if (a.buffer !== buffer || b.buffer !== buffer || a.byteOffset % 16 || b.byteOffset % 4) {
        throw new KernelUsageError(
          `${OP}: A and B must be views of one f32 buffer, each A at a multiple of 16 bytes`,
        );
      }
      lo = Math.min(lo, a.byteOffset, b.byteOffset);
      hi = Math.max(hi, a.byteOffset + a.byteLength, b.byteOffset + b.byteLength);
    }
    const start = Math.floor(lo / PORTABLE_OFFSET_ALIGNMENT) * PORTABLE_OFFSET_ALIGNMENT;
    const bytes = Math.min(Math.ceil((hi - start) / 16) * 16, buffer.size - start);
    bindings.adapter = new Tensor(buffer, [bytes / 4], "f32", start);
    params.rank = rank;
    params.scale = scale;
    for (const [i, { a, b }] of parts.entries()) {
      params[`aAt${i}`] = (a.byteOffset - start) / 4;
      params[`bAt${i}`] = (b.byteOffset - start) / 4;
    }
  }
}

/** Host data of one part: f32 values, f16 bits, or GGUF block bytes. */
export type FusedPartData = Float32Array | Uint16Array | Uint8Array;

/**
 * Uploads matrices [rows_p, cols] of one kind back to back into one new buffer, each starting at a
 * multiple of {@link PORTABLE_OFFSET_ALIGNMENT} bytes (so each can also be bound on its own).
 */
export function uploadFusedParts(
  gpu: Gpu,
  kind: FusedWeightKind,
  cols: number,
  data: readonly FusedPartData[],
  rows: readonly number[],
  label = "fused weights",
): FusedParts {
  const quant = kind !== "f32" && kind !== "f16";
  const rowBytes = quant
    ? quantRowBytes(kind as GgmlQuantType, cols)
    : cols * DTYPE_BYTES[kind as "f32" | "f16"];
  const align = PORTABLE_OFFSET_ALIGNMENT;
  const parts: { offset: number; rows: number }[] = [];
  let end = 0;
  for (const [i, d] of data.entries()) {
    if (d.byteLength !== rows[i] * rowBytes) {
      throw new ShapeError(
        `${OP}: part ${i} has ${d.byteLength} bytes, not ${rows[i]} rows of ${rowBytes}`,
      );
    }
    const offset = Math.ceil(end / align) * align;
    parts.push({ offset, rows: rows[i] });
    end = offset + d.byteLength;
  }
  const words = Math.ceil(end / 4);
  const dtype = quant ? "u32" : kind as "f32" | "f16";
  const tensor = createTensor(gpu, [dtype === "f16" ? 2 * words : words], dtype, label);
  for (const [i, d] of data.entries()) {
    const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
    padded.set(bytes);
    gpu.device.queue.writeBuffer(tensor.buffer, parts[i].offset, padded);
  }
  return { data: tensor, kind, cols, parts };
}

/** Part `i` of `parts` as a matrix of its own: a view of the shared buffer. */
export function fusedPartMatrix(parts: FusedParts, i: number): Tensor | QuantMatrix {
  const { data, kind, cols } = parts;
  const { offset, rows } = parts.parts[i];
  if (kind === "f32" || kind === "f16") {
    return new Tensor(data.buffer, [rows, cols], kind, data.byteOffset + offset);
  }
  const words = Math.ceil(rows * quantRowBytes(kind, cols) / 4);
  return quantMatrix(
    new Tensor(data.buffer, [words], "u32", data.byteOffset + offset),
    kind,
    rows,
    cols,
  );
}

/** A single matrix as a one-part {@link FusedParts}. */
export function singlePart(m: Tensor | QuantMatrix): FusedParts {
  if (m instanceof Tensor) {
    if (m.dtype !== "f32" && m.dtype !== "f16") {
      throw new ShapeError(`${OP}: a weight must be f32 or f16, got ${describeTensor(m)}`);
    }
    return { data: m, kind: m.dtype, cols: m.shape[1], parts: [{ offset: 0, rows: m.shape[0] }] };
  }
  return { data: m.data, kind: m.type, cols: m.cols, parts: [{ offset: 0, rows: m.rows }] };
}

const hKernelKey = (norm: boolean) => `lora h|${norm}`;

/** The entry point that computes LoRA's h ahead of a product (lora_h_rows), with or without NORM. */
function compileLoraH(registry: KernelRegistry, tiles: FusedTiles, norm: boolean): Promise<Kernel> {
  const constants = {
    WG: tiles.wg,
    ROWS: tiles.rows,
    NORM: norm,
    LORA: true,
    LORA_H: true,
    MAX_RANK: FUSED_MAX_RANK,
  };
  return registry.get({
    file: "fused_matvec.wgsl",
    source: foldConstantBranches(source, constants),
    includes: QUANT_SNIPPETS,
    entryPoint: "lora_h_rows",
    constants,
  });
}
