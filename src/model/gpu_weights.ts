import type { Gpu } from "../gpu/device.ts";
import { GpuLimitError } from "../gpu/errors.ts";
import { type Tensor, uploadTensor } from "../gpu/tensor.ts";
import { kvDim, type ModelConfig, qDim } from "../formats/config.ts";
import { MissingTensorError, TensorShapeMismatchError } from "../formats/errors.ts";
import {
  f32ArrayToF16,
  type ModelWeights,
  shapeSize,
  type TensorData,
  tensorToF32,
} from "../formats/tensor_data.ts";

/**
 * How projection and LM-head matrices are stored on the GPU: "f32"; "f16" (half the memory and
 * half the bytes a decode step reads, at float16 precision); or "auto": f32, except a matrix
 * whose f32 form is larger than one storage binding may be (the adapter's
 * maxStorageBufferBindingSize), which is stored as f16 instead of failing. The embedding table
 * and the norm and bias vectors are always f32 (the embedding gather reads f32).
 */
export type GpuWeightDtype = "f32" | "f16" | "auto";

/** Options of {@link uploadWeights}. */
export interface UploadWeightsOptions {
  /** Storage of the projection and LM-head matrices (default "auto"). */
  weightDtype?: GpuWeightDtype;
}

/** One decoder layer's weights on the GPU; projections are stored [out, in] as in checkpoints. */
export interface GpuLayer {
  /** Input RMSNorm weight, [dim]. */
  attnNorm: Tensor;
  /** Query projection, [qDim, dim]. */
  q: Tensor;
  /** Key projection, [kvDim, dim]. */
  k: Tensor;
  /** Value projection, [kvDim, dim]. */
  v: Tensor;
  /** Output projection, [dim, qDim]. */
  o: Tensor;
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
  gate: Tensor;
  /** SwiGLU up projection, [hidden, dim]. */
  up: Tensor;
  /** SwiGLU down projection, [dim, hidden]. */
  down: Tensor;
}

/** A model's weights on the GPU. `head` is `embed` when the embeddings are tied. */
export interface GpuWeights {
  /** Token embedding, [vocab, dim]. */
  embed: Tensor;
  /** Per decoder layer. */
  layers: GpuLayer[];
  /** Final RMSNorm weight, [dim]. */
  norm: Tensor;
  /** LM head (the embedding when tied), [vocab, dim]. */
  head: Tensor;
  /** Bytes of weights uploaded. */
  bytes: number;
  /** Names of the tensors stored as f16. */
  f16Tensors: string[];
  /** Frees every weight buffer. */
  destroy(): void;
}

/**
 * Uploads every weight, checking names and shapes against the config; matrices are stored as
 * `options.weightDtype` says. Throws GpuLimitError for a tensor too large for one binding even in
 * its smallest allowed form.
 */
export function uploadWeights(
  gpu: Gpu,
  weights: ModelWeights,
  file = "model",
  options: UploadWeightsOptions = {},
): GpuWeights {
  const c: ModelConfig = weights.config;
  const mode = options.weightDtype ?? "auto";
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const made: Tensor[] = [];
  const f16Tensors: string[] = [];
  let bytes = 0;
  const upload = (name: string, shape: number[], matrix = false): Tensor => {
    const data = weights.tensors.get(name);
    if (!data) throw new MissingTensorError(file, name);
    if (data.shape.length !== shape.length || data.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeMismatchError(file, name, shape, data.shape);
    }
    const f32Bytes = 4 * shapeSize(shape);
    const half = matrix && (mode === "f16" || (mode === "auto" && f32Bytes > limit));
    if (f32Bytes / (half ? 2 : 1) > limit) {
      throw new GpuLimitError(
        `${file}: tensor ${name} [${shape}] needs ${f32Bytes} bytes as f32` +
          (matrix ? ` and ${f32Bytes / 2} as f16` : " (it is read as f32 only)") +
          `; this adapter binds at most ${limit} bytes`,
      );
    }
    const t = half
      ? uploadTensor(gpu, toF16Bits(data), shape, "f16", name)
      : uploadTensor(gpu, tensorToF32(data), shape, "f32", name);
    if (half) f16Tensors.push(name);
    made.push(t);
    bytes += t.byteLength;
    return t;
  };
  const matrix = (name: string, shape: number[]) => upload(name, shape, true);
  try {
    const embed = upload("model.embed_tokens.weight", [c.vocabSize, c.dim]);
    const layers: GpuLayer[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}`;
      const attn = `${p}.self_attn`;
      layers.push({
        attnNorm: upload(`${p}.input_layernorm.weight`, [c.dim]),
        q: matrix(`${attn}.q_proj.weight`, [qDim(c), c.dim]),
        k: matrix(`${attn}.k_proj.weight`, [kvDim(c), c.dim]),
        v: matrix(`${attn}.v_proj.weight`, [kvDim(c), c.dim]),
        o: matrix(`${attn}.o_proj.weight`, [c.dim, qDim(c)]),
        qBias: c.qkvBias ? upload(`${attn}.q_proj.bias`, [qDim(c)]) : undefined,
        kBias: c.qkvBias ? upload(`${attn}.k_proj.bias`, [kvDim(c)]) : undefined,
        vBias: c.qkvBias ? upload(`${attn}.v_proj.bias`, [kvDim(c)]) : undefined,
        qNorm: c.qkNorm ? upload(`${attn}.q_norm.weight`, [c.headDim]) : undefined,
        kNorm: c.qkNorm ? upload(`${attn}.k_norm.weight`, [c.headDim]) : undefined,
        ffnNorm: upload(`${p}.post_attention_layernorm.weight`, [c.dim]),
        gate: matrix(`${p}.mlp.gate_proj.weight`, [c.hiddenDim, c.dim]),
        up: matrix(`${p}.mlp.up_proj.weight`, [c.hiddenDim, c.dim]),
        down: matrix(`${p}.mlp.down_proj.weight`, [c.dim, c.hiddenDim]),
      });
    }
    const norm = upload("model.norm.weight", [c.dim]);
    const head = c.tiedEmbeddings ? embed : matrix("lm_head.weight", [c.vocabSize, c.dim]);
    return {
      embed,
      layers,
      norm,
      head,
      bytes,
      f16Tensors,
      destroy: () => made.forEach((t) => t.destroy()),
    };
  } catch (error) {
    made.forEach((t) => t.destroy());
    throw error;
  }
}

/** Float16 bits of a weight: F16 data as stored, F32 and BF16 rounded to nearest even. */
function toF16Bits(t: TensorData): Uint16Array {
  return t.dtype === "F16" ? t.data : f32ArrayToF16(tensorToF32(t));
}
