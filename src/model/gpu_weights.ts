import type { Gpu } from "../gpu/device.ts";
import { type Tensor, uploadTensor } from "../gpu/tensor.ts";
import { kvDim, type ModelConfig, qDim } from "../formats/config.ts";
import { MissingTensorError, TensorShapeMismatchError } from "../formats/errors.ts";
import { type ModelWeights, tensorToF32 } from "../formats/tensor_data.ts";

/** One decoder layer's weights on the GPU; projections are stored [out, in] as in checkpoints. */
export interface GpuLayer {
  attnNorm: Tensor; // [dim]
  q: Tensor; // [qDim, dim]
  k: Tensor; // [kvDim, dim]
  v: Tensor; // [kvDim, dim]
  o: Tensor; // [dim, qDim]
  qBias?: Tensor; // [qDim]
  kBias?: Tensor; // [kvDim]
  vBias?: Tensor; // [kvDim]
  ffnNorm: Tensor; // [dim]
  gate: Tensor; // [hidden, dim]
  up: Tensor; // [hidden, dim]
  down: Tensor; // [dim, hidden]
}

/** A model's weights on the GPU. `head` is `embed` when the embeddings are tied. */
export interface GpuWeights {
  embed: Tensor; // [vocab, dim]
  layers: GpuLayer[];
  norm: Tensor; // [dim]
  head: Tensor; // [vocab, dim]
  /** Bytes of weights uploaded. */
  bytes: number;
  destroy(): void;
}

/** Uploads every weight as f32, checking names and shapes against the config. */
export function uploadWeights(gpu: Gpu, weights: ModelWeights, file = "model"): GpuWeights {
  const c: ModelConfig = weights.config;
  const made: Tensor[] = [];
  let bytes = 0;
  const upload = (name: string, shape: number[]): Tensor => {
    const data = weights.tensors.get(name);
    if (!data) throw new MissingTensorError(file, name);
    if (data.shape.length !== shape.length || data.shape.some((d, i) => d !== shape[i])) {
      throw new TensorShapeMismatchError(file, name, shape, data.shape);
    }
    const t = uploadTensor(gpu, tensorToF32(data), shape, "f32", name);
    made.push(t);
    bytes += t.byteLength;
    return t;
  };
  try {
    const embed = upload("model.embed_tokens.weight", [c.vocabSize, c.dim]);
    const layers: GpuLayer[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}`;
      const attn = `${p}.self_attn`;
      layers.push({
        attnNorm: upload(`${p}.input_layernorm.weight`, [c.dim]),
        q: upload(`${attn}.q_proj.weight`, [qDim(c), c.dim]),
        k: upload(`${attn}.k_proj.weight`, [kvDim(c), c.dim]),
        v: upload(`${attn}.v_proj.weight`, [kvDim(c), c.dim]),
        o: upload(`${attn}.o_proj.weight`, [c.dim, qDim(c)]),
        qBias: c.qkvBias ? upload(`${attn}.q_proj.bias`, [qDim(c)]) : undefined,
        kBias: c.qkvBias ? upload(`${attn}.k_proj.bias`, [kvDim(c)]) : undefined,
        vBias: c.qkvBias ? upload(`${attn}.v_proj.bias`, [kvDim(c)]) : undefined,
        ffnNorm: upload(`${p}.post_attention_layernorm.weight`, [c.dim]),
        gate: upload(`${p}.mlp.gate_proj.weight`, [c.hiddenDim, c.dim]),
        up: upload(`${p}.mlp.up_proj.weight`, [c.hiddenDim, c.dim]),
        down: upload(`${p}.mlp.down_proj.weight`, [c.dim, c.hiddenDim]),
      });
    }
    const norm = upload("model.norm.weight", [c.dim]);
    const head = c.tiedEmbeddings ? embed : upload("lm_head.weight", [c.vocabSize, c.dim]);
    return {
      embed,
      layers,
      norm,
      head,
      bytes,
      destroy: () => made.forEach((t) => t.destroy()),
    };
  } catch (error) {
    made.forEach((t) => t.destroy());
    throw error;
  }
}
