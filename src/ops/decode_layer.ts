import { DECODE_LAYER_WGSL as source } from "./shaders.generated.ts";
import { GGML_TYPES, type GgmlQuantType } from "../core/quant.ts";
import { LORA_TARGETS, type LoraTarget } from "../core/lora.ts";
import { GpuLimitError, KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import { PORTABLE_OFFSET_ALIGNMENT, type Recorder } from "../gpu/recorder.ts";
import { Tensor } from "../gpu/tensor.ts";
import { foldConstantBranches } from "../gpu/wgsl_parse.ts";
import { FUSED_TILES, type FusedWeightKind } from "./fused_matvec.ts";
import { qtypeConstant, QUANT_SNIPPETS } from "./quant_weight.ts";
import { adapterClass, describeTensor, expectArgument, expectShape, expectSize } from "./shapes.ts";
import { matvecTiling } from "./matvec.ts";
import { quantMatvecTiles } from "./quant_matvec.ts";
import type { KvCacheDtype } from "../model/kv_cache.ts";

const OP = "decode layer";

/** Largest LoRA rank the kernel takes. */
export const DECODE_LAYER_MAX_RANK = 64;

/** The sizes of one layer, and how its weights are stored. */
export interface DecodeLayerShape {
  /** Model width (a multiple of 4, and of 32 for blocks). */
  dim: number;
  /** MLP width (a multiple of 4, and of 32 for blocks). */
  hiddenDim: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads (dividing nHeads). */
  nKvHeads: number;
  /** Head size (even). */
  headDim: number;
  /** Storage of the matrices. */
  kind: FusedWeightKind;
  /** q/k/v biases. */
  bias: boolean;
  /** RoPE pair convention, or none (a layer without RoPE). */
  rope?: "interleaved" | "half";
  /** Element type of the KV cache (default "f32"; see KvCache). */
  kvDtype?: KvCacheDtype;
}

/** Where the layer's tensors lie in its one buffer (see src/model/gpu_weights.ts). */
export interface DecodeLayerWeights {
  /** The buffer, as u32 words. */
  data: Tensor;
  /** Byte offsets of the norms, the q bias, and the matrices. */
  at: Record<"attnNorm" | "ffnNorm" | "bias" | LoraTarget, number>;
  /** Element offsets of the q, k and v biases from `at.bias`. */
  biasAt: readonly [number, number, number];
}

/** The LM head as decode_layer.wgsl's `head` entry point computes it: its matrix's storage and rows. */
export interface DecodeHeadShape {
  /** Storage of the head matrix [vocab, dim]. */
  kind: "f32" | "f16";
  /** Rows of the head (the vocabulary). */
  vocab: number;
}

/** The head for one token. */
export interface DecodeHeadArgs {
  /** [dim] the last layer's residual stream. */
  x: Tensor;
  /** [dim] f32 weight of the final RMSNorm. */
  norm: Tensor;
  /** [vocab, dim] the head matrix, of the shape's kind. */
  head: Tensor;
  /** [vocab] f32 logits out. */
  logits: Tensor;
  /** RMSNorm epsilon. */
  eps: number;
  /** Also writes the argmax of the logits (ties to the lowest index) to tokens[at] (u32). */
  argmax?: { tokens: Tensor; at: number };
}

/** One layer for one token. */
export interface DecodeLayerArgs {
  /** [dim] the residual stream, updated in place. */
  x: Tensor;
  /** The layer's weights. */
  weights: DecodeLayerWeights;
  /**
   * The layer's KV buffer of the shape's kvDtype: keys [capacity, nKvHeads, headDim] from 0,
   * values from vOffset.
   */
  kv: Tensor;
  /** Element of kv where the values start. */
  vOffset: number;
  /** Cache rows before this token (its position). */
  past: number;
  /** RMSNorm epsilon. */
  eps: number;
  /** RoPE frequency table ([headDim / 2, 4]), when the layer rotates. */
  freqs?: Tensor;
  /** A LoRA adapter on all seven projections: A, B views of one f32 buffer, and alpha / rank. */
  lora?: { parts: Record<LoraTarget, { a: Tensor; b: Tensor }>; scale: number };
  /**
   * A first layer (an op created with `embeds`): its input is row tokens[at] of the f32 table
   * [vocab, dim] (an id past the table reads its last row), not x; x still takes the output.
   */
  embed?: { table: Tensor; tokens: Tensor; at: number };
}

/** What {@link DecodeLayerOp.create} compiles besides the layer's own variants. */
export interface DecodeLayerOptions {
  /** The LM head's entry point for this head ({@link DecodeLayerOp.headSuits}). */
  head?: DecodeHeadShape;
  /** The variants of a first layer, which gather the token's embedding themselves. */
  embeds?: boolean;
}

/**
 * Most vec4s of input an f32 product reads from registers rather than workgroup memory (the loops
 * over them are unrolled; beyond this the shader grows and spills more than it saves).
 */
const REGISTER_VEC4S = 64;

/**
 * Most weights one workgroup's products may take for it to beat several dispatches. On llvmpipe a
 * dispatch costs 40-55 µs and a workgroup is a CPU thread, so a small layer in one workgroup wins
 * (stories260K F32 decoded 4x faster than its Q8_0 file, whose mixed tensor types take several
 * dispatches a layer). On a GPU one workgroup has one multiprocessor of many: on an NVIDIA H200
 * stories260K's layer kernel took 0.43 ms, and the Q8_0 file decoded 1.7x faster than the F32 one
 * (bench/RESULTS.md, "On an NVIDIA H200"), so GPUs take several wide dispatches a layer.
 */
function workgroupWeights(gpu: Gpu, always: boolean): number {
  return always || adapterClass(gpu.capabilities) === "fallback" ? 2 ** 20 : 0;
}

/**
 * A whole decoder layer for one token in one workgroup (shaders/decode_layer.wgsl), for models
 * whose layers fit one workgroup's memory and take little work: one dispatch a layer instead of
 * five, with or without an adapter. Its products and norms sum in the unfused kernels' order.
 */
export class DecodeLayerOp {
  private constructor(
    private readonly kernels: Map<string, Kernel>,
    readonly shape: DecodeLayerShape,
    private readonly headKernels: Map<boolean, Kernel>,
    /** The head it was compiled for ({@link recordHead}), if any. */
    readonly head: DecodeHeadShape | undefined,
  ) {}

  /**
   * Whether a layer of `shape` suits the one-workgroup kernel on `gpu`: its values fit the
   * workgroup memory WebGPU guarantees (16 KiB), and a layer is little enough work for one
   * workgroup (on llvmpipe one CPU thread) to beat several dispatches. `always`: little enough for
   * a software adapter, whatever `gpu` is (for measuring the kernel on a GPU).
   */
  static suits(gpu: Gpu, shape: DecodeLayerShape, always = false): boolean {
    const { dim, hiddenDim: hidden, nHeads, nKvHeads, headDim: hd, kind } = shape;
    const q = nHeads * hd;
    const kvDim = nKvHeads * hd;
    const quant = kind !== "f32" && kind !== "f16";
    // Every product's input width whole vec4s, and whole blocks for blocks.
    const multiple = quant ? GGML_TYPES[kind as GgmlQuantType].blockElems : 4;
    if (dim % multiple || hidden % multiple || q % multiple || hd % 2 || nHeads % nKvHeads) {
      return false;
    }
    if (hd > 256) return false;
    // vin, xs, x2, qkv, qr, ao, gu, the norm's lanes, h.
    const floats = Math.max(dim, q, hidden) + 2 * dim + q + 2 * kvDim + 2 * q + 2 * hidden + 64 +
      3 * DECODE_LAYER_MAX_RANK;
    const weights = (q + 2 * kvDim) * dim + dim * q + 3 * dim * hidden;
    return 4 * floats <= Math.min(16384, gpu.limits.maxComputeWorkgroupStorageSize) &&
      weights <= workgroupWeights(gpu, always);
  }

  /** Whether it has the variants of a first layer ({@link DecodeLayerArgs.embed}). */
  get embeds(): boolean {
    return this.kernels.has(variantKey(false, true)) && this.kernels.has(variantKey(true, true));
  }

  /**
   * Whether the LM head of a model whose layers have `shape` suits the same one-workgroup form
   * (decode_layer.wgsl's `head`): the layers do, the head is f32 or f16, and as little work
   * (`always` as in {@link suits}).
   */
  static headSuits(
    gpu: Gpu,
    shape: DecodeLayerShape,
    head: DecodeHeadShape,
    always = false,
  ): boolean {
    return DecodeLayerOp.suits(gpu, shape, always) &&
      (head.kind === "f32" || head.kind === "f16") &&
      Number.isInteger(head.vocab) && head.vocab >= 1 &&
      head.vocab * shape.dim <= workgroupWeights(gpu, always);
  }

  /**
   * Compiles the kernel for `shape`, with and without an adapter, and what `options` asks for
   * besides: the head's entry point, the variants of a first layer.
   */
  static async create(
    registry: KernelRegistry,
    shape: DecodeLayerShape,
    options: DecodeLayerOptions = {},
  ): Promise<DecodeLayerOp> {
    const { head, embeds = false } = options;
    if (!DecodeLayerOp.suits(registry.gpu, shape)) {
      throw new KernelUsageError(`${OP}: a layer of ${JSON.stringify(shape)} does not suit it`);
    }
    if (head && !DecodeLayerOp.headSuits(registry.gpu, shape, head)) {
      throw new KernelUsageError(`${OP}: a head of ${JSON.stringify(head)} does not suit it`);
    }
    const gpu = registry.gpu;
    const quant = shape.kind !== "f32" && shape.kind !== "f16";
    const WG = adapterClass(gpu.capabilities) === "fallback" ? 8 : 64;
    const mvLanes = quant ? quantMatvecTiles(gpu).wg : matvecTiling(gpu).WG;
    // The widest product input, in vec4s; f32 products keep it in registers when it is short.
    const inputVec4s = Math.max(shape.dim, shape.nHeads * shape.headDim, shape.hiddenDim) / 4;
    const registers = shape.kind === "f32" && mvLanes === 8 && inputVec4s <= REGISTER_VEC4S;
    const layerConstants = (lora: boolean, embed = false) => ({
      WG,
      DIM: shape.dim,
      QDIM: shape.nHeads * shape.headDim,
      KVDIM: shape.nKvHeads * shape.headDim,
      HIDDEN: shape.hiddenDim,
      HD: shape.headDim,
      NH: shape.nHeads,
      NKV: shape.nKvHeads,
      WTYPE: quant ? 2 : shape.kind === "f16" ? 1 : 0,
      QTYPE: quant ? qtypeConstant(shape.kind as GgmlQuantType) : 8,
      BIAS: shape.bias,
      LORA: lora,
      ROPE: shape.rope !== undefined,
      INTERLEAVED: shape.rope !== "half",
      // Each row sums as the unfused products do with their invocations.
      MV_LANES: mvLanes,
      REG_K4: registers ? inputVec4s : 0,
      NORM_LANES: 64,
      MAX_RANK: DECODE_LAYER_MAX_RANK,
      KV_F16: shape.kvDtype === "f16",
      EMBED: embed,
    });
    const compile = async (constants: Record<string, number | boolean>, entryPoint: string) => {
      const kernel = await registry.get({
        file: "decode_layer.wgsl",
        source: foldConstantBranches(source, constants),
        includes: QUANT_SNIPPETS,
        entryPoint,
        constants,
      });
      const storage = gpu.limits.maxStorageBuffersPerShaderStage;
      if (kernel.storage.length > storage) {
        throw new GpuLimitError(
          `${OP}: ${kernel.storage.length} storage buffers; ${storage} allowed`,
        );
      }
      return kernel;
    };
    const kernels = new Map<string, Kernel>();
    const variants = [false, true].flatMap((lora) =>
      (embeds ? [false, true] : [false]).map((embed) => ({ lora, embed }))
    );
    await Promise.all(variants.map(async ({ lora, embed }) => {
      try {
        kernels.set(variantKey(lora, embed), await compile(layerConstants(lora, embed), "main"));
      } catch (error) {
        // A first layer's variants bind two buffers more; without them the model embeds apart.
        if (!embed || !(error instanceof GpuLimitError)) throw error;
      }
    }));
    const headKernels = new Map<boolean, Kernel>();
    if (head) {
      // The head's rows sum as the fused head kernel's (fused_matvec.wgsl) would.
      const lanes = FUSED_TILES[adapterClass(gpu.capabilities)].wg;
      const f32 = head.kind === "f32";
      await Promise.all([false, true].map(async (argmax) => {
        headKernels.set(
          argmax,
          await compile({
            ...layerConstants(false),
            WTYPE: f32 ? 0 : 1,
            MV_LANES: lanes,
            REG_K4: f32 && lanes === 8 && shape.dim / 4 <= REGISTER_VEC4S ? shape.dim / 4 : 0,
            ARGMAX: argmax,
          }, "head"),
        );
      }));
    }
    return new DecodeLayerOp(kernels, shape, headKernels, head);
  }

  /**
   * Records the LM head for one token (the kernel was created with a head): logits, and with
   * `argmax` the greedy next token.
   */
  recordHead(rec: Recorder, args: DecodeHeadArgs): void {
    const { x, norm, head, logits, eps, argmax } = args;
    const kernel = this.headKernels.get(argmax !== undefined);
    if (!kernel || !this.head) throw new KernelUsageError(`${OP}: created without a head`);
    const { dim } = this.shape, { vocab, kind } = this.head;
    expectSize(OP, "x", x, "f32", dim);
    expectSize(OP, "final norm", norm, "f32", dim);
    expectSize(OP, "logits", logits, "f32", vocab);
    expectShape(OP, "head", head, kind, [vocab, dim]);
    // The norm and the matrix are bound from aligned starts, their offsets passed in bytes.
    const aligned = (t: Tensor) =>
      Math.floor(t.byteOffset / PORTABLE_OFFSET_ALIGNMENT) *
      PORTABLE_OFFSET_ALIGNMENT;
    const normStart = aligned(norm), headStart = aligned(head);
    const bindings: Record<string, Tensor> = {
      x,
      qweight: new Tensor(
        norm.buffer,
        [(norm.byteOffset + norm.byteLength - normStart) / 4],
        "u32",
        normStart,
      ),
      logits,
    };
    const headElements = (head.byteOffset + head.byteLength - headStart) / (kind === "f32" ? 4 : 2);
    bindings[kind === "f32" ? "weight" : "weight16"] = new Tensor(
      head.buffer,
      [headElements],
      kind,
      headStart,
    );
    const params: Record<string, number> = Object.fromEntries(
      kernel.params.map((f) => [f.name, 0]),
    );
    if ((head.byteOffset - headStart) % 16) {
      throw new KernelUsageError(`${OP}: the head matrix must start at a multiple of 16 bytes`);
    }
    params.attnNormAt = norm.byteOffset - normStart;
    params.headAt = head.byteOffset - headStart;
    params.eps = eps;
    params.vocab = vocab;
    if (argmax) {
      const { tokens, at } = argmax;
      expectArgument(
        OP,
        "token slot",
        Number.isInteger(at) && at >= 0 && at < tokens.size,
        `an integer in 0..${tokens.size - 1}`,
        at,
      );
      if (tokens.dtype !== "u32") {
        throw new ShapeError(`${OP}: tokens must be a u32 tensor, got ${describeTensor(tokens)}`);
      }
      bindings.tokens = tokens;
      params.tokenAt = at;
    }
    rec.dispatch(kernel, bindings, params, [1]);
  }

  /** Records the layer for one token. */
  record(rec: Recorder, args: DecodeLayerArgs): void {
    const { x, weights, kv, vOffset, past, eps, freqs, lora, embed } = args;
    const s = this.shape;
    const kvDim = s.nKvHeads * s.headDim;
    expectSize(OP, "x", x, "f32", s.dim);
    expectArgument(OP, "past", Number.isInteger(past) && past >= 0, "an integer >= 0", past);
    const f16 = s.kvDtype === "f16";
    // f16 rows are whole u32 words (KvCache keeps kvDim even and vOffset aligned).
    const words = !f16 || (kvDim % 2 === 0 && vOffset % 2 === 0 && kv.byteOffset % 4 === 0);
    const fits = kv.dtype === (s.kvDtype ?? "f32") && words && vOffset >= (past + 1) * kvDim &&
      vOffset + (past + 1) * kvDim <= kv.size;
    if (!fits) {
      throw new ShapeError(
        `${OP}: row ${past} does not fit the KV buffer ${
          describeTensor(kv)
        } (values at ${vOffset})`,
      );
    }
    if (weights.data.dtype !== "u32") {
      throw new ShapeError(
        `${OP}: weights must be a u32 tensor, got ${describeTensor(weights.data)}`,
      );
    }
    if ((s.rope !== undefined) !== (freqs !== undefined)) {
      throw new KernelUsageError(`${OP}: RoPE frequencies go with a rotating layer only`);
    }
    if (freqs) expectSize(OP, "RoPE frequencies", freqs, "f32", 2 * s.headDim);
    const kernel = this.kernels.get(variantKey(lora !== undefined, embed !== undefined));
    if (!kernel) throw new KernelUsageError(`${OP}: created without the first layer's variants`);
    const bindings: Record<string, Tensor> = { x, qweight: weights.data, kv };
    const { buffer, byteOffset, size } = weights.data;
    if (s.kind === "f32") bindings.weight = new Tensor(buffer, [size], "f32", byteOffset);
    if (s.kind === "f16") bindings.weight16 = new Tensor(buffer, [2 * size], "f16", byteOffset);
    if (freqs) bindings.freqs = freqs;
    const at = weights.at;
    const params: Record<string, number> = {
      ...zeroParams(kernel),
      eps,
      scale: 1 / Math.sqrt(s.headDim),
      pos: past,
      keys: past + 1,
      kRow: past * kvDim,
      vRow: vOffset + past * kvDim,
      vBase: vOffset,
      attnNormAt: at.attnNorm,
      ffnNormAt: at.ffnNorm,
      biasAt: at.bias,
      biasK: weights.biasAt[1],
      biasV: weights.biasAt[2],
      qAt: at.q,
      kAt: at.k,
      vAt: at.v,
      oAt: at.o,
      gateAt: at.gate,
      upAt: at.up,
      downAt: at.down,
    };
    const names: Record<LoraTarget, string> = {
      q: "Q",
      k: "K",
      v: "V",
      o: "O",
      gate: "Gate",
      up: "Up",
      down: "Down",
    };
    if (lora) {
      const parts = LORA_TARGETS.map((t) => lora.parts[t]);
      const rank = parts[0].a.shape[0];
      expectArgument(
        OP,
        "LoRA rank",
        rank >= 1 && rank <= DECODE_LAYER_MAX_RANK,
        `in 1..${DECODE_LAYER_MAX_RANK}`,
        rank,
      );
      const buffer = parts[0].a.buffer;
      const lo = Math.min(...parts.flatMap((p) => [p.a.byteOffset, p.b.byteOffset]));
      const hi = Math.max(
        ...parts.flatMap((p) => [p.a.byteOffset + p.a.byteLength, p.b.byteOffset + p.b.byteLength]),
      );
      const start = Math.floor(lo / PORTABLE_OFFSET_ALIGNMENT) * PORTABLE_OFFSET_ALIGNMENT;
      for (const [i, t] of LORA_TARGETS.entries()) {
        const { a, b } = parts[i];
        if (
          a.buffer !== buffer || b.buffer !== buffer || a.byteOffset % 16 || b.byteOffset % 4 ||
          a.shape[0] !== rank || b.shape[1] !== rank
        ) {
          throw new KernelUsageError(
            `${OP}: every A and B must be rank-${rank} views of one f32 buffer, A at multiples of 16 bytes`,
          );
        }
        params[`a${names[t]}`] = (a.byteOffset - start) / 4;
        params[`b${names[t]}`] = (b.byteOffset - start) / 4;
      }
      const bytes = Math.min(Math.ceil((hi - start) / 16) * 16, buffer.size - start);
      bindings.adapter = new Tensor(buffer, [bytes / 4], "f32", start);
      params.rank = rank;
      params.loraScale = lora.scale;
    }
    if (embed) {
      const { table, tokens, at } = embed;
      expectShape(OP, "embedding table", table, "f32", [table.shape[0], s.dim]);
      if (tokens.dtype !== "u32" || !Number.isInteger(at) || at < 0 || at >= tokens.size) {
        throw new ShapeError(
          `${OP}: token slot ${at} of ${describeTensor(tokens)} (u32 ids expected)`,
        );
      }
      const start = alignedStart(table);
      if ((table.byteOffset - start) % 16) {
        throw new KernelUsageError(
          `${OP}: the embedding table must start at a multiple of 16 bytes`,
        );
      }
      bindings.embed = new Tensor(
        table.buffer,
        [(table.byteOffset + table.byteLength - start) / 4],
        "f32",
        start,
      );
      bindings.tokens = tokens;
      params.embedAt = (table.byteOffset - start) / 16;
      params.vocab = table.shape[0];
      params.tokenAt = at;
    }
    rec.dispatch(kernel, bindings, params, [1]);
  }
}

function variantKey(lora: boolean, embed: boolean): string {
  return `${lora ? "lora" : "base"}${embed ? "+embed" : ""}`;
}

/** The portable binding start at or before a tensor's first byte. */
function alignedStart(t: Tensor): number {
  return Math.floor(t.byteOffset / PORTABLE_OFFSET_ALIGNMENT) * PORTABLE_OFFSET_ALIGNMENT;
}

/** Every parameter of `kernel` at 0 (a variant or entry point sets those it reads). */
function zeroParams(kernel: Kernel): Record<string, number> {
  return Object.fromEntries(kernel.params.map((f) => [f.name, 0]));
}
