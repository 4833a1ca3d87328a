import type { Gpu } from "../gpu/device.ts";
import { GpuLimitError } from "../gpu/errors.ts";
import { Tensor, uploadTensor } from "../gpu/tensor.ts";
import type { GgmlQuantType } from "../core/quant.ts";
import { kvDim, type ModelConfig, qDim, tensorShapes } from "../formats/config.ts";
import {
  MissingTensorError,
  TensorShapeMismatchError,
  UnsupportedDtypeError,
} from "../formats/errors.ts";
import {
  f32ArrayToF16,
  isPacked,
  type ModelWeights,
  shapeSize,
  type TensorData,
  tensorToF32,
  type WeightSource,
  weightSourceOf,
} from "../formats/tensor_data.ts";
import { type QuantMatrix, uploadQuantMatrix } from "../ops/quant_weight.ts";

/**
 * How float projection and LM-head matrices are stored on the GPU: "f32"; "f16" (half the
 * memory and half the bytes a decode step reads, at float16 precision); or "auto": f32, except a
 * matrix whose f32 form is larger than one storage binding may be (the adapter's
 * maxStorageBufferBindingSize), which is stored as f16 instead of failing. Block-quantized
 * matrices (GGUF Q4_K, Q8_0, ...) always stay in their blocks; norm and bias vectors are f32.
 */
export type GpuWeightDtype = "f32" | "f16" | "auto";

/** Options of {@link uploadWeights}. */
export interface UploadWeightsOptions {
  /** Storage of the float projection and LM-head matrices (default "auto"). */
  weightDtype?: GpuWeightDtype;
}

/** A weight matrix on the GPU: f32 or f16 [out, in], or quantized blocks. */
export type GpuMatrix = Tensor | QuantMatrix;

/** Whether a GPU matrix is kept in quantized blocks. */
export function isQuantized(m: GpuMatrix): m is QuantMatrix {
  return !(m instanceof Tensor);
}

/** One decoder layer's weights on the GPU; projections are stored [out, in] as in checkpoints. */
export interface GpuLayer {
  /** Input RMSNorm weight, [dim]. */
  attnNorm: Tensor;
  /** Query projection, [qDim, dim]. */
  q: GpuMatrix;
  /** Key projection, [kvDim, dim]. */
  k: GpuMatrix;
  /** Value projection, [kvDim, dim]. */
  v: GpuMatrix;
  /** Output projection, [dim, qDim]. */
  o: GpuMatrix;
  /** Query bias (Qwen2), [qDim]. */
  qBias?: Tensor;
  /** Key bias (Qwen2), [kvDim]. */
  kBias?: Tensor;
  /** Value bias (Qwen2), [kvDim]. */
  vBias?: Tensor;
  /** RMSNorm weight over each query head (Qwen3), [headDim]. */
  qNorm?: Tensor;
  /** RMSNorm weight over each key head (Qwen3), [headDim]. */
  kNorm?: Tensor;
  /** Post-attention RMSNorm weight, [dim]. */
  ffnNorm: Tensor;
  /** SwiGLU gate projection, [hidden, dim]. */
  gate: GpuMatrix;
  /** SwiGLU up projection, [hidden, dim]. */
  up: GpuMatrix;
  /** SwiGLU down projection, [dim, hidden]. */
  down: GpuMatrix;
}

/** A model's weights on the GPU. `head` is `embed` when the embeddings are tied. */
export interface GpuWeights {
  /** Token embedding, [vocab, dim]: f32, or quantized blocks (gathered row by row). */
  embed: GpuMatrix;
  /** Per decoder layer. */
  layers: GpuLayer[];
  /** Final RMSNorm weight, [dim]. */
  norm: Tensor;
  /** LM head (the embedding when tied), [vocab, dim]. */
  head: GpuMatrix;
  /** Bytes of weights uploaded. */
  bytes: number;
  /** Names of the tensors stored as f16. */
  f16Tensors: string[];
  /** The block types of the quantized matrices (empty for a float model). */
  quantTypes: GgmlQuantType[];
  /** Frees every weight buffer. */
  destroy(): void;
}

/**
 * Uploads every weight, checking names and shapes against the config, reading one tensor at a
 * time from `weights`. Float matrices are stored as `options.weightDtype` says; quantized ones
 * keep their blocks. Throws GpuLimitError for a tensor too large for one binding even in its
 * smallest allowed form; on any error, what was uploaded is freed.
 */
export async function uploadWeights(
  gpu: Gpu,
  weights: ModelWeights | WeightSource,
  file = "model",
  options: UploadWeightsOptions = {},
): Promise<GpuWeights> {
  const source = "tensors" in weights ? weightSourceOf(weights) : weights;
  const c: ModelConfig = source.config;
  const mode = options.weightDtype ?? "auto";
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const made: Tensor[] = [];
  const f16Tensors: string[] = [];
  const quantTypes = new Set<GgmlQuantType>();
  let bytes = 0;
  const tooLarge = (name: string, shape: number[], needs: string) =>
    new GpuLimitError(
      `${file}: tensor ${name} [${shape}] needs ${needs}; this adapter binds at most ${limit} bytes`,
    );
  const read = async (name: string, shape: number[]) => {
    const stored = source.shape(name);
    if (!stored) throw new MissingTensorError(file, name);
    if (stored.length !== shape.length || stored.some((d, i) => d !== shape[i])) {
      throw new TensorShapeMismatchError(file, name, shape, [...stored]);
    }
    return await source.read(name);
  };
  const keep = (t: Tensor) => {
    made.push(t);
    bytes += t.byteLength;
    return t;
  };
  /** A vector, or the embedding when it is f32: always read as f32. */
  const vector = async (name: string, shape: number[]): Promise<Tensor> => {
    const data = await read(name, shape);
    if (isPacked(data)) {
      throw new UnsupportedDtypeError(
        file,
        `tensor ${name} is ${data.dtype}; vectors must be float`,
      );
    }
    if (4 * shapeSize(shape) > limit) {
      throw tooLarge(name, shape, `${4 * shapeSize(shape)} bytes as f32 (it is read as f32 only)`);
    }
    return keep(uploadTensor(gpu, tensorToF32(data), shape, "f32", name));
  };
  const packedOf = (name: string, type: GgmlQuantType, data: Uint8Array, shape: number[]) => {
    if (data.length > limit) throw tooLarge(name, shape, `${data.length} bytes as ${type}`);
    const m = uploadQuantMatrix(gpu, data, type, shape[0], shape[1], name);
    quantTypes.add(type);
    return m;
  };
  const matrix = async (name: string, shape: number[]): Promise<GpuMatrix> => {
    const data = await read(name, shape);
    if (isPacked(data)) {
      const m = packedOf(name, data.dtype, data.data, shape);
      keep(m.data);
      return m;
    }
    const f32Bytes = 4 * shapeSize(shape);
    const half = floatMatrixDtype(f32Bytes, mode, limit) === "f16";
    if (f32Bytes / (half ? 2 : 1) > limit) {
      throw tooLarge(name, shape, `${f32Bytes} bytes as f32 and ${f32Bytes / 2} as f16`);
    }
    if (half) f16Tensors.push(name);
    return keep(
      half
        ? uploadTensor(gpu, toF16Bits(data), shape, "f16", name)
        : uploadTensor(gpu, tensorToF32(data), shape, "f32", name),
    );
  };
  try {
    const embedName = "model.embed_tokens.weight";
    const embedShape = [c.vocabSize, c.dim];
    const embedData = await read(embedName, embedShape);
    const embed: GpuMatrix = isPacked(embedData)
      ? packedOf(embedName, embedData.dtype, embedData.data, embedShape)
      : await vector(embedName, embedShape);
    if (isQuantized(embed)) keep(embed.data);
    const layers: GpuLayer[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}`;
      const attn = `${p}.self_attn`;
      layers.push({
        attnNorm: await vector(`${p}.input_layernorm.weight`, [c.dim]),
        q: await matrix(`${attn}.q_proj.weight`, [qDim(c), c.dim]),
        k: await matrix(`${attn}.k_proj.weight`, [kvDim(c), c.dim]),
        v: await matrix(`${attn}.v_proj.weight`, [kvDim(c), c.dim]),
        o: await matrix(`${attn}.o_proj.weight`, [c.dim, qDim(c)]),
        qBias: c.qkvBias ? await vector(`${attn}.q_proj.bias`, [qDim(c)]) : undefined,
        kBias: c.qkvBias ? await vector(`${attn}.k_proj.bias`, [kvDim(c)]) : undefined,
        vBias: c.qkvBias ? await vector(`${attn}.v_proj.bias`, [kvDim(c)]) : undefined,
        qNorm: c.qkNorm ? await vector(`${attn}.q_norm.weight`, [c.headDim]) : undefined,
        kNorm: c.qkNorm ? await vector(`${attn}.k_norm.weight`, [c.headDim]) : undefined,
        ffnNorm: await vector(`${p}.post_attention_layernorm.weight`, [c.dim]),
        gate: await matrix(`${p}.mlp.gate_proj.weight`, [c.hiddenDim, c.dim]),
        up: await matrix(`${p}.mlp.up_proj.weight`, [c.hiddenDim, c.dim]),
        down: await matrix(`${p}.mlp.down_proj.weight`, [c.dim, c.hiddenDim]),
      });
    }
    const norm = await vector("model.norm.weight", [c.dim]);
    const head = c.tiedEmbeddings ? embed : await matrix("lm_head.weight", [c.vocabSize, c.dim]);
    return {
      embed,
      layers,
      norm,
      head,
      bytes,
      f16Tensors,
      quantTypes: [...quantTypes],
      destroy: () => made.forEach((t) => t.destroy()),
    };
  } catch (error) {
    made.forEach((t) => t.destroy());
    throw error;
  }
}

/** How a float matrix of `f32Bytes` is stored under `mode` with bindings of at most `limit`. */
function floatMatrixDtype(f32Bytes: number, mode: GpuWeightDtype, limit: number): "f32" | "f16" {
  return mode === "f16" || (mode === "auto" && f32Bytes > limit) ? "f16" : "f32";
}

/**
 * Bytes {@link uploadWeights} would put on the GPU for a float model of `config` (the norm and
 * bias vectors and the embedding as f32, matrices as `options.weightDtype` says), without any.
 */
export function plannedWeightBytes(
  config: ModelConfig,
  limit: number,
  options: UploadWeightsOptions = {},
): number {
  const mode = options.weightDtype ?? "auto";
  let bytes = 0;
  for (const [name, shape] of tensorShapes(config)) {
    const f32Bytes = 4 * shapeSize(shape);
    const matrix = shape.length === 2 && name !== "model.embed_tokens.weight";
    bytes += matrix && floatMatrixDtype(f32Bytes, mode, limit) === "f16" ? f32Bytes / 2 : f32Bytes;
  }
  return bytes;
}

/** Float16 bits of a weight: F16 data as stored, F32 and BF16 rounded to nearest even. */
function toF16Bits(t: TensorData): Uint16Array {
  return t.dtype === "F16" ? t.data : f32ArrayToF16(tensorToF32(t));
}
