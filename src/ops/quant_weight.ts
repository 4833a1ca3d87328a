import { QUANT_BLOCKS_WGSL as blocks } from "./shaders.generated.ts";
import { GGML_QUANT_TYPES, GGML_TYPES, type GgmlQuantType } from "../core/quant.ts";
import type { Gpu } from "../gpu/device.ts";
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { KernelSpec } from "../gpu/kernel.ts";
import { createTensor, type Tensor, writeTensor } from "../gpu/tensor.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";

/**
 * A quantized [rows, cols] matrix on the GPU ([out, in] for a projection, [vocab, dim] for an
 * embedding table): its GGUF blocks exactly as in the file, packed in u32 words. Row r is
 * cols / blockElems consecutive blocks starting at byte r * rowBytes; the buffer's end is padded
 * to a whole word.
 */
export interface QuantMatrix {
  /** The blocks: a u32 tensor of at least ceil(rows * rowBytes / 4) words. */
  readonly data: Tensor;
  /** The block type. */
  readonly type: GgmlQuantType;
  /** Rows (out features, or vocabulary entries). */
  readonly rows: number;
  /** Values per row (in features, or embedding width); a multiple of the block size. */
  readonly cols: number;
  /** Bytes of one row of blocks. */
  readonly rowBytes: number;
}

/** Bytes of one row of `cols` values of `type`; throws ShapeError unless whole blocks. */
export function quantRowBytes(type: GgmlQuantType, cols: number): number {
  const { blockElems, blockBytes } = GGML_TYPES[type];
  if (!Number.isInteger(cols) || cols <= 0 || cols % blockElems !== 0) {
    throw new ShapeError(
      `${type}: a row of ${cols} values is not whole ${blockElems}-value blocks`,
    );
  }
  return (cols / blockElems) * blockBytes;
}

/** Describes blocks already on the GPU as a matrix; checks that `data` holds them all. */
export function quantMatrix(
  data: Tensor,
  type: GgmlQuantType,
  rows: number,
  cols: number,
): QuantMatrix {
  if (!GGML_QUANT_TYPES.includes(type)) {
    throw new KernelUsageError(`${type} is not block-quantized`);
  }
  if (data.dtype !== "u32") throw new ShapeError(`${type} blocks must be in a u32 tensor`);
  if (!Number.isInteger(rows) || rows <= 0) throw new ShapeError(`${type}: ${rows} rows`);
  const rowBytes = quantRowBytes(type, cols);
  const words = Math.ceil((rows * rowBytes) / 4);
  if (data.size < words) {
    throw new ShapeError(
      `${type} [${rows}, ${cols}] needs ${words} words of blocks, the tensor has ${data.size}`,
    );
  }
  return { data, type, rows, cols, rowBytes };
}

/** Uploads a matrix's blocks (the bytes of a GGUF tensor) into a new buffer. */
export function uploadQuantMatrix(
  gpu: Gpu,
  bytes: Uint8Array,
  type: GgmlQuantType,
  rows: number,
  cols: number,
  label?: string,
): QuantMatrix {
  const size = rows * quantRowBytes(type, cols);
  if (bytes.length !== size) {
    throw new ShapeError(`${type} [${rows}, ${cols}] is ${size} bytes, got ${bytes.length}`);
  }
  const words = Math.ceil(size / 4);
  const data = createTensor(gpu, [words], "u32", label ?? `${type} [${rows}, ${cols}]`);
  let padded = bytes;
  if (size % 4 !== 0 || bytes.byteOffset % 4 !== 0) {
    padded = new Uint8Array(words * 4);
    padded.set(bytes);
  }
  writeTensor(gpu, data, new Uint32Array(padded.buffer, padded.byteOffset, words));
  return quantMatrix(data, type, rows, cols);
}

/**
 * What the quant_* kernels may include: the shared snippets and the block decoding
 * (`//!include "quant_blocks.wgsl"`).
 */
export const QUANT_SNIPPETS: NonNullable<KernelSpec["includes"]> = {
  ...SHADER_SNIPPETS,
  "quant_blocks.wgsl": blocks,
};

/** The QTYPE specialisation constant of a type: its ggml id. */
export function qtypeConstant(type: GgmlQuantType): number {
  return GGML_TYPES[type].id;
}

/** The types an op compiles for: the given ones (checked), or all of them. */
export function resolveTypes(types: readonly GgmlQuantType[] | undefined): GgmlQuantType[] {
  const list = [...new Set(types ?? GGML_QUANT_TYPES)];
  for (const t of list) {
    if (!GGML_QUANT_TYPES.includes(t)) throw new KernelUsageError(`${t} is not block-quantized`);
  }
  return list;
}
