import type { Gpu } from "../gpu/device.ts";
import { GpuLimitError } from "../gpu/errors.ts";
import { createTensor, Tensor, uploadTensor } from "../gpu/tensor.ts";
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
  type StoredTensor,
  type TensorData,
  tensorToF32,
  type WeightSource,
  weightSourceOf,
} from "../formats/tensor_data.ts";
import {
  type QuantMatrix,
  quantMatrix,
  quantRowBytes,
  uploadQuantMatrix,
} from "../ops/quant_weight.ts";
import type { LoraTarget } from "../core/lora.ts";
import { PORTABLE_OFFSET_ALIGNMENT } from "../gpu/recorder.ts";
import {
  type FusedPartData,
  fusedPartMatrix,
  type FusedParts,
  type FusedWeightKind,
  uploadFusedParts,
} from "../ops/fused_matvec.ts";

/**
 * How float projection and LM-head matrices are stored on the GPU: "f32"; "f16" (half the
 * memory and half the bytes a decode step reads, at float16 precision); or "auto": f32, except a
 * matrix whose f32 form is larger than one storage binding may be (the adapter's
 * maxStorageBufferBindingSize), which is stored as f16. Block-quantized matrices (GGUF Q4_K,
 * Q8_0, ...) always stay in their blocks; norm and bias vectors are f32. The embedding and the LM
 * head are split by rows where they still exceed a binding ({@link RowParts}); a projection that
 * does is refused.
 */
export type GpuWeightDtype = "f32" | "f16" | "auto";

/** Options of {@link uploadWeights}. */
export interface UploadWeightsOptions {
  /** Storage of the float projection and LM-head matrices (default "auto"). */
  weightDtype?: GpuWeightDtype;
  /**
   * The most bytes one part of the embedding or LM head may take (default, and at most, the
   * adapter's maxStorageBufferBindingSize). Lower values split smaller tables: for tests.
   */
  maxPartBytes?: number;
}

/** A weight matrix on the GPU: f32 or f16 [out, in], or quantized blocks. */
export type GpuMatrix = Tensor | QuantMatrix;

/**
 * A [rows, cols] matrix (the embedding, the LM head) held as consecutive ranges of rows, each in
 * its own buffer: one part, unless the matrix is larger than one storage binding. Then every part
 * but the last has the most rows a binding holds that are a multiple of {@link PART_ROWS}, so a
 * part's slice of a row of f32 logits starts at a binding offset any adapter accepts.
 */
export interface RowParts {
  /** Rows of the whole matrix (the vocabulary). */
  rows: number;
  /** Values per row. */
  cols: number;
  /** The parts in row order; one unless the matrix was split. */
  parts: RowPart[];
}

/** Rows [start, start + rows) of a {@link RowParts} matrix. */
export interface RowPart {
  /** The whole matrix's row that this part's first row is. */
  start: number;
  /** How many rows. */
  rows: number;
  /** The rows as their own [rows, cols] matrix. */
  matrix: GpuMatrix;
}

/** Split rows start at multiples of this: 64 f32 logits are 256 bytes, the portable alignment. */
export const PART_ROWS = PORTABLE_OFFSET_ALIGNMENT / 4;

/**
 * Rows of each part of a matrix of `rows` rows of `rowBytes` bytes (padded to whole words in its
 * buffer) when no part may exceed `limit` bytes: one part if it fits, else parts of the most
 * multiples of {@link PART_ROWS} rows that fit, the last one the rest. undefined when not even
 * PART_ROWS rows fit.
 */
export function rowPartition(rows: number, rowBytes: number, limit: number): number[] | undefined {
  const bytes = (n: number) => Math.ceil((n * rowBytes) / 4) * 4;
  if (bytes(rows) <= limit) return [rows];
  const most = Math.floor(limit / rowBytes / PART_ROWS) * PART_ROWS;
  if (most === 0) return undefined;
  const parts: number[] = [];
  for (let left = rows; left > 0; left -= most) parts.push(Math.min(most, left));
  return parts;
}

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
  /**
   * q, k and v back to back in one buffer (q, k and v above are views of it), when they share a
   * storage kind and fit one binding: what the fused decode kernel reads.
   */
  qkv?: FusedParts;
  /** gate and up in one buffer the same way. */
  gateUp?: FusedParts;
  /** The q, k and v biases in one buffer (qBias, kBias, vBias are views), at element offsets. */
  qkvBias?: { data: Tensor; offsets: number[] };
  /**
   * The whole layer in one buffer, when its matrices share a storage kind and fit one binding:
   * every tensor above except the head norms is a view of it (what the one-workgroup decode
   * kernel reads through a single binding).
   */
  packed?: PackedLayer;
}

/** A layer's weights in one buffer: each tensor's first byte, a multiple of 256. */
export interface PackedLayer {
  /** The buffer as u32 words. */
  data: Tensor;
  /** Storage of the matrices (norms and biases are f32). */
  kind: FusedWeightKind;
  /** Byte offset of each piece: the norms, the biases (q, k, v at `bias` + 4 · biasAt), the matrices. */
  at: Record<"attnNorm" | "ffnNorm" | "bias" | LoraTarget, number>;
  /** Element offsets of the k and v biases from the q bias. */
  biasAt: [number, number, number];
}

/** A model's weights on the GPU. `head` is `embed` when the embeddings are tied. */
export interface GpuWeights {
  /** Token embedding, [vocab, dim]: f32, or quantized blocks (gathered row by row). */
  embed: RowParts;
  /** Per decoder layer. */
  layers: GpuLayer[];
  /** Final RMSNorm weight, [dim]. */
  norm: Tensor;
  /** LM head (the embedding when tied), [vocab, dim]. */
  head: RowParts;
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
 * keep their blocks. The embedding and the LM head go in row parts that each fit one binding;
 * any other tensor too large for one binding even in its smallest allowed form throws
 * GpuLimitError. On any error, what was uploaded is freed.
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
  const partLimit = Math.min(limit, options.maxPartBytes ?? limit);
  const made: Tensor[] = [];
  const f16Tensors: string[] = [];
  const quantTypes = new Set<GgmlQuantType>();
  let bytes = 0;
  const tooLarge = (name: string, shape: number[], needs: string, most = limit) =>
    new GpuLimitError(
      `${file}: tensor ${name} [${shape}] needs ${needs}; ` +
        `${most === limit ? "this adapter binds" : "a part may take"} at most ${most} bytes`,
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
  /**
   * The embedding or the LM head in parts that each fit one binding (see {@link RowParts}):
   * quantized blocks as stored, floats as `dtype`.
   */
  const table = (
    name: string,
    shape: number[],
    data: StoredTensor,
    dtype: "f32" | "f16",
  ): RowParts => {
    const [rows, cols] = shape;
    const rowBytes = isPacked(data)
      ? quantRowBytes(data.dtype, cols)
      : cols * (dtype === "f16" ? 2 : 4);
    const sizes = rowPartition(rows, rowBytes, partLimit);
    if (!sizes) {
      throw tooLarge(
        name,
        shape,
        `${rowBytes * PART_ROWS} bytes for ${PART_ROWS} rows as ${
          isPacked(data) ? data.dtype : dtype
        } (the smallest part it splits into)`,
        partLimit,
      );
    }
    const floats = isPacked(data)
      ? undefined
      : dtype === "f16"
      ? toF16Bits(data)
      : tensorToF32(data);
    const parts: RowPart[] = [];
    let start = 0;
    for (const n of sizes) {
      const label = sizes.length === 1 ? name : `${name} rows ${start}..${start + n}`;
      let matrix: GpuMatrix;
      if (isPacked(data)) {
        const blocks = data.data.subarray(start * rowBytes, (start + n) * rowBytes);
        matrix = uploadQuantMatrix(gpu, blocks, data.dtype, n, cols, label);
        keep(matrix.data);
        quantTypes.add(data.dtype);
      } else {
        const values = floats!.subarray(start * cols, (start + n) * cols);
        matrix = keep(uploadTensor(gpu, values, [n, cols], dtype, label));
      }
      parts.push({ start, rows: n, matrix });
      start += n;
    }
    if (floats && dtype === "f16") f16Tensors.push(name);
    return { rows, cols, parts };
  };
  /** A vector: always read as f32. */
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
    return placeMatrix(name, shape, await read(name, shape));
  };
  /** How a matrix is stored: its blocks' type, or f32 or f16 as the mode says. */
  const kindOf = (data: StoredTensor, shape: number[]): FusedWeightKind =>
    isPacked(data) ? data.dtype : floatMatrixDtype(4 * shapeSize(shape), mode, limit);
  /**
   * Matrices of one layer that one fused kernel reads (q, k, v; gate, up): back to back in one
   * buffer when they share a kind and fit one binding, else each on its own.
   */
  const matrixGroup = async (
    names: string[],
    shapes: number[][],
  ): Promise<{ matrices: GpuMatrix[]; group?: FusedParts }> => {
    const datas: StoredTensor[] = [];
    for (const [i, name] of names.entries()) datas.push(await read(name, shapes[i]));
    const kinds = datas.map((d, i) => kindOf(d, shapes[i]));
    const kind = kinds[0];
    const bytesOf = (d: StoredTensor, shape: number[]) =>
      isPacked(d) ? d.data.length : shapeSize(shape) * (kind === "f16" ? 2 : 4);
    const padded = datas.reduce(
      (sum, d, i) => sum + Math.ceil(bytesOf(d, shapes[i]) / 256) * 256,
      0,
    );
    const cols = shapes[0][1];
    if (kinds.some((k) => k !== kind) || shapes.some((sh) => sh[1] !== cols) || padded > limit) {
      return { matrices: datas.map((d, i) => placeMatrix(names[i], shapes[i], d)) };
    }
    const host: FusedPartData[] = datas.map((d) =>
      isPacked(d) ? d.data : kind === "f16" ? toF16Bits(d) : tensorToF32(d)
    );
    const group = uploadFusedParts(gpu, kind, cols, host, shapes.map((sh) => sh[0]), names[0]);
    made.push(group.data);
    bytes += host.reduce((sum, h) => sum + h.byteLength, 0);
    if (kind === "f16") f16Tensors.push(...names);
    else if (kind !== "f32") quantTypes.add(kind);
    return { matrices: names.map((_, i) => fusedPartMatrix(group, i)), group };
  };
  /**
   * Layer `l` in one buffer when its seven matrices share a kind and everything fits one binding;
   * undefined otherwise (nothing uploaded).
   */
  const packedLayer = async (l: number): Promise<GpuLayer | undefined> => {
    const p = `model.layers.${l}`;
    const attn = `${p}.self_attn`;
    const shapes: Record<LoraTarget, number[]> = {
      q: [qDim(c), c.dim],
      k: [kvDim(c), c.dim],
      v: [kvDim(c), c.dim],
      o: [c.dim, qDim(c)],
      gate: [c.hiddenDim, c.dim],
      up: [c.hiddenDim, c.dim],
      down: [c.dim, c.hiddenDim],
    };
    const nameOf = (t: LoraTarget) =>
      `${["gate", "up", "down"].includes(t) ? `${p}.mlp` : attn}.${t}_proj.weight`;
    const targets = Object.keys(shapes) as LoraTarget[];
    const stored = targets.map((t) => source.shape(nameOf(t)));
    if (stored.some((sh) => !sh)) return undefined; // the usual path names what is missing
    const datas = new Map<LoraTarget, StoredTensor>();
    for (const t of targets) datas.set(t, await read(nameOf(t), shapes[t]));
    const kinds = targets.map((t) => kindOf(datas.get(t)!, shapes[t]));
    const kind = kinds[0];
    if (kinds.some((k) => k !== kind)) return undefined; // the usual path reads them again
    const f32 = async (name: string, n: number) => {
      const d = await read(name, [n]);
      if (isPacked(d)) {
        throw new UnsupportedDtypeError(
          file,
          `tensor ${name} is ${d.dtype}; vectors must be float`,
        );
      }
      return tensorToF32(d);
    };
    const pieces: [string, Uint8Array][] = [];
    const bytesOf = (a: Float32Array | Uint16Array | Uint8Array) =>
      new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    pieces.push(["attnNorm", bytesOf(await f32(`${p}.input_layernorm.weight`, c.dim))]);
    pieces.push(["ffnNorm", bytesOf(await f32(`${p}.post_attention_layernorm.weight`, c.dim))]);
    const biasAt: [number, number, number] = [0, Math.ceil(qDim(c) / 64) * 64, 0];
    biasAt[2] = biasAt[1] + Math.ceil(kvDim(c) / 64) * 64;
    if (c.qkvBias) {
      const flat = new Float32Array(biasAt[2] + kvDim(c));
      flat.set(await f32(`${attn}.q_proj.bias`, qDim(c)), 0);
      flat.set(await f32(`${attn}.k_proj.bias`, kvDim(c)), biasAt[1]);
      flat.set(await f32(`${attn}.v_proj.bias`, kvDim(c)), biasAt[2]);
      pieces.push(["bias", bytesOf(flat)]);
    }
    for (const t of targets) {
      const d = datas.get(t)!;
      const host = isPacked(d) ? d.data : kind === "f16" ? toF16Bits(d) : tensorToF32(d);
      pieces.push([t, bytesOf(host)]);
    }
    const align = PORTABLE_OFFSET_ALIGNMENT;
    const at: Record<string, number> = { bias: 0 };
    let end = 0;
    for (const [name, b] of pieces) {
      at[name] = Math.ceil(end / align) * align;
      end = at[name] + b.length;
    }
    end = Math.ceil(end / 16) * 16;
    if (end > limit) return undefined;
    const data = createTensor(gpu, [end / 4], "u32", `layer ${l}`);
    made.push(data);
    for (const [name, b] of pieces) {
      const padded = new Uint8Array(Math.ceil(b.length / 4) * 4);
      padded.set(b);
      gpu.device.queue.writeBuffer(data.buffer, at[name], padded);
    }
    // Counted as uploaded: the tensors' own bytes (the biases without their padding).
    bytes += pieces.reduce((sum, [name, b]) => sum + (name === "bias" ? 0 : b.length), 0) +
      (c.qkvBias ? 4 * (qDim(c) + 2 * kvDim(c)) : 0);
    const names = targets.map(nameOf);
    if (kind === "f16") f16Tensors.push(...names);
    else if (kind !== "f32") quantTypes.add(kind);
    const typed = new Tensor(
      data.buffer,
      [kind === "f16" ? end / 2 : end / 4],
      kind === "f16" ? "f16" : kind === "f32" ? "f32" : "u32",
    );
    const group = (ts: LoraTarget[]): FusedParts => ({
      data: typed,
      kind,
      cols: shapes[ts[0]][1],
      parts: ts.map((t) => ({ offset: at[t], rows: shapes[t][0] })),
    });
    const matrixAt = (t: LoraTarget): GpuMatrix => {
      const [rows, cols] = shapes[t];
      if (kind === "f32" || kind === "f16") {
        return new Tensor(data.buffer, [rows, cols], kind, at[t]);
      }
      const words = Math.ceil(rows * quantRowBytes(kind, cols) / 4);
      return quantMatrix(new Tensor(data.buffer, [words], "u32", at[t]), kind, rows, cols);
    };
    const vec = (name: string, n: number, offset = 0) =>
      new Tensor(data.buffer, [n], "f32", at[name] + 4 * offset);
    const bias = c.qkvBias ? vec("bias", biasAt[2] + kvDim(c)) : undefined;
    return {
      attnNorm: vec("attnNorm", c.dim),
      ffnNorm: vec("ffnNorm", c.dim),
      q: matrixAt("q"),
      k: matrixAt("k"),
      v: matrixAt("v"),
      o: matrixAt("o"),
      gate: matrixAt("gate"),
      up: matrixAt("up"),
      down: matrixAt("down"),
      qBias: bias && vec("bias", qDim(c)),
      kBias: bias && vec("bias", kvDim(c), biasAt[1]),
      vBias: bias && vec("bias", kvDim(c), biasAt[2]),
      qNorm: c.qkNorm ? await vector(`${attn}.q_norm.weight`, [c.headDim]) : undefined,
      kNorm: c.qkNorm ? await vector(`${attn}.k_norm.weight`, [c.headDim]) : undefined,
      qkv: group(["q", "k", "v"]),
      gateUp: group(["gate", "up"]),
      qkvBias: bias && { data: bias, offsets: [...biasAt] },
      packed: { data, kind, at: at as PackedLayer["at"], biasAt },
    };
  };
  /** The q, k and v biases in one buffer, each at a portable binding offset. */
  const biasGroup = async (names: string[], sizes: number[]) => {
    const align = 64;
    const offsets: number[] = [];
    let end = 0;
    for (const n of sizes) {
      offsets.push(Math.ceil(end / align) * align);
      end = offsets[offsets.length - 1] + n;
    }
    const flat = new Float32Array(end);
    for (const [i, name] of names.entries()) {
      const data = await read(name, [sizes[i]]);
      if (isPacked(data)) {
        throw new UnsupportedDtypeError(
          file,
          `tensor ${name} is ${data.dtype}; biases must be float`,
        );
      }
      flat.set(tensorToF32(data), offsets[i]);
    }
    const data = uploadTensor(gpu, flat, [end], "f32", "qkv bias");
    made.push(data);
    bytes += 4 * sizes.reduce((a, b) => a + b, 0);
    const views = sizes.map((n, i) => new Tensor(data.buffer, [n], "f32", 4 * offsets[i]));
    return { data, offsets, views };
  };
  const placeMatrix = (name: string, shape: number[], data: StoredTensor): GpuMatrix => {
    if (isPacked(data)) {
      const m = packedOf(name, data.dtype, data.data, shape);
      keep(m.data);
      return m;
    }
    const f32Bytes = 4 * shapeSize(shape);
    const half = floatMatrixDtype(f32Bytes, mode, limit) === "f16";
    if (f32Bytes / (half ? 2 : 1) > limit) {
      throw tooLarge(
        name,
        shape,
        `${f32Bytes} bytes as f32 and ${f32Bytes / 2} as f16 (only the embedding and the LM head ` +
          "are split into parts)",
      );
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
    // The gather reads f32 or blocks: a float embedding is f32 whatever the mode.
    const embed = table(embedName, embedShape, await read(embedName, embedShape), "f32");
    const layers: GpuLayer[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const packed = await packedLayer(l);
      if (packed) {
        layers.push(packed);
        continue;
      }
      const p = `model.layers.${l}`;
      const attn = `${p}.self_attn`;
      const attnNorm = await vector(`${p}.input_layernorm.weight`, [c.dim]);
      const qkv = await matrixGroup(
        ["q", "k", "v"].map((t) => `${attn}.${t}_proj.weight`),
        [[qDim(c), c.dim], [kvDim(c), c.dim], [kvDim(c), c.dim]],
      );
      const o = await matrix(`${attn}.o_proj.weight`, [c.dim, qDim(c)]);
      const qkvBias = c.qkvBias
        ? await biasGroup(
          ["q", "k", "v"].map((t) => `${attn}.${t}_proj.bias`),
          [qDim(c), kvDim(c), kvDim(c)],
        )
        : undefined;
      const qNorm = c.qkNorm ? await vector(`${attn}.q_norm.weight`, [c.headDim]) : undefined;
      const kNorm = c.qkNorm ? await vector(`${attn}.k_norm.weight`, [c.headDim]) : undefined;
      const ffnNorm = await vector(`${p}.post_attention_layernorm.weight`, [c.dim]);
      const gateUp = await matrixGroup(
        ["gate", "up"].map((t) => `${p}.mlp.${t}_proj.weight`),
        [[c.hiddenDim, c.dim], [c.hiddenDim, c.dim]],
      );
      const down = await matrix(`${p}.mlp.down_proj.weight`, [c.dim, c.hiddenDim]);
      layers.push({
        attnNorm,
        q: qkv.matrices[0],
        k: qkv.matrices[1],
        v: qkv.matrices[2],
        o,
        qBias: qkvBias?.views[0],
        kBias: qkvBias?.views[1],
        vBias: qkvBias?.views[2],
        qNorm,
        kNorm,
        ffnNorm,
        gate: gateUp.matrices[0],
        up: gateUp.matrices[1],
        down,
        qkv: qkv.group,
        gateUp: gateUp.group,
        qkvBias: qkvBias && { data: qkvBias.data, offsets: qkvBias.offsets },
      });
    }
    const norm = await vector("model.norm.weight", [c.dim]);
    const headShape = [c.vocabSize, c.dim];
    const head = c.tiedEmbeddings ? embed : table(
      "lm_head.weight",
      headShape,
      await read("lm_head.weight", headShape),
      floatMatrixDtype(4 * shapeSize(headShape), mode, limit),
    );
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
 * A table split into row parts takes the same bytes as whole.
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
