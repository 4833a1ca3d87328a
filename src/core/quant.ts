/**
 * The tensor types of GGUF files (ggml's type ids) and their block layouts. Supported types are
 * the ones Q4_K_M, Q5_K_M, Q6_K and Q8_0 files contain, fallbacks included; every other id has a
 * name only, so a refusal can say what the file holds.
 */

/** A tensor type templora reads from GGUF files. */
export type GgmlType =
  | "F32"
  | "F16"
  | "BF16"
  | "Q4_0"
  | "Q4_1"
  | "Q5_0"
  | "Q5_1"
  | "Q8_0"
  | "Q4_K"
  | "Q5_K"
  | "Q6_K";

/** Block layout of a tensor type: `blockElems` consecutive values of a row in `blockBytes`. */
export interface GgmlTypeInfo {
  /** ggml's type id, as stored in GGUF tensor infos. */
  id: number;
  /** The type's name as llama.cpp prints it. */
  name: GgmlType;
  /** Values per block (1 for the float types). */
  blockElems: number;
  /** Bytes per block. */
  blockBytes: number;
  /** True for block-quantized types (kept packed on the GPU). */
  quantized: boolean;
}

const info = (
  id: number,
  name: GgmlType,
  blockElems: number,
  blockBytes: number,
): GgmlTypeInfo => ({ id, name, blockElems, blockBytes, quantized: blockElems > 1 });

/** Every supported type, by name. */
export const GGML_TYPES: Readonly<Record<GgmlType, GgmlTypeInfo>> = {
  F32: info(0, "F32", 1, 4),
  F16: info(1, "F16", 1, 2),
  Q4_0: info(2, "Q4_0", 32, 18),
  Q4_1: info(3, "Q4_1", 32, 20),
  Q5_0: info(6, "Q5_0", 32, 22),
  Q5_1: info(7, "Q5_1", 32, 24),
  Q8_0: info(8, "Q8_0", 32, 34),
  Q4_K: info(12, "Q4_K", 256, 144),
  Q5_K: info(13, "Q5_K", 256, 176),
  Q6_K: info(14, "Q6_K", 256, 210),
  BF16: info(30, "BF16", 1, 2),
};

/** Names of ggml type ids templora does not read, for error messages. */
const UNSUPPORTED_NAMES: Readonly<Record<number, string>> = {
  4: "Q4_2 (removed)",
  5: "Q4_3 (removed)",
  9: "Q8_1",
  10: "Q2_K",
  11: "Q3_K",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
};

const BY_ID = new Map(Object.values(GGML_TYPES).map((t) => [t.id, t]));

/** The supported type with ggml id `id`, or undefined. */
export function ggmlTypeById(id: number): GgmlTypeInfo | undefined {
  return BY_ID.get(id);
}

/** A readable name for any ggml type id (supported or not). */
export function ggmlTypeName(id: number): string {
  return BY_ID.get(id)?.name ?? UNSUPPORTED_NAMES[id] ?? `unknown type ${id}`;
}

/** Bytes of a row of `elems` values of type `type`; throws RangeError if not whole blocks. */
export function ggmlRowBytes(type: GgmlTypeInfo, elems: number): number {
  if (elems % type.blockElems !== 0) {
    throw new RangeError(
      `a ${type.name} row of ${elems} values is not a whole number of ${type.blockElems}-value blocks`,
    );
  }
  return (elems / type.blockElems) * type.blockBytes;
}

/** The block-quantized types: kept packed on the GPU and dequantized inside the kernels. */
export type GgmlQuantType = "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1" | "Q8_0" | "Q4_K" | "Q5_K" | "Q6_K";

/** Every block-quantized type, in ggml id order. */
export const GGML_QUANT_TYPES: readonly GgmlQuantType[] = [
  "Q4_0",
  "Q4_1",
  "Q5_0",
  "Q5_1",
  "Q8_0",
  "Q4_K",
  "Q5_K",
  "Q6_K",
];

/** Whether `name` is one of the block-quantized types. */
export function isGgmlQuantType(name: string): name is GgmlQuantType {
  return (GGML_QUANT_TYPES as readonly string[]).includes(name);
}
