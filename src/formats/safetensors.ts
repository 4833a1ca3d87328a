/**
 * safetensors: an 8-byte little-endian header length N, N bytes of JSON
 * ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the data,
 * offsets relative to its start. Single files and sharded folders
 * (model.safetensors.index.json with a weight_map) are read; F32, F16 and BF16 tensors are served.
 */
import {
  CorruptHeaderError,
  MissingTensorError,
  ModelFormatError,
  TruncatedFileError,
  UnsupportedDtypeError,
} from "./errors.ts";
import {
  dtypeBytes,
  shapeSize,
  type TensorData,
  tensorToF32,
  type WeightDtype,
} from "./tensor_data.ts";
import { type FileStore, readFileBytes, storeFor } from "./files.ts";

/** Headers above this are taken for corruption (real ones are a few MB at most). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Every dtype of the format, with its element size; only F32/F16/BF16 can be read as floats. */
const KNOWN_DTYPES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};
const READABLE: readonly string[] = ["F32", "F16", "BF16"];

/** A tensor of unsigned 32-bit integers (token ids), which {@link writeSafetensors} also takes. */
export interface U32TensorData {
  /** Always "U32". */
  dtype: "U32";
  /** Dimensions, outermost first. */
  shape: number[];
  /** The elements. */
  data: Uint32Array;
}

/** Anything {@link writeSafetensors} writes: float weights or unsigned 32-bit integers. */
export type SafetensorsTensorData = TensorData | U32TensorData;

/** Where one tensor lives in its file. */
export interface TensorEntry {
  /** The header's dtype name (F32, F16, BF16, or another the format knows). */
  dtype: string;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Byte range in the file (header included). */
  begin: number;
  /** One past the last byte in the file. */
  end: number;
}

/** A parsed safetensors file held in memory. */
export class SafetensorsFile {
  /** Use parseSafetensors or readSafetensors, which validate the header first. */
  constructor(
    readonly file: string,
    readonly bytes: Uint8Array,
    readonly entries: ReadonlyMap<string, TensorEntry>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  /** Whether the file holds a tensor of that name. */
  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The tensor with its stored dtype: F32 as floats, F16/BF16 as raw bits. Views when aligned. */
  raw(name: string): TensorData {
    const e = this.entries.get(name);
    if (!e) throw new MissingTensorError(this.file, name);
    if (!READABLE.includes(e.dtype)) {
      throw new UnsupportedDtypeError(
        this.file,
        `tensor ${name} has dtype ${e.dtype}; readable dtypes are ${READABLE.join(", ")}`,
      );
    }
    const dtype = e.dtype as WeightDtype;
    const size = dtypeBytes(dtype);
    const n = (e.end - e.begin) / size;
    const offset = this.bytes.byteOffset + e.begin;
    const buffer = offset % size === 0
      ? this.bytes.buffer
      : this.bytes.slice(e.begin, e.end).buffer;
    const at = offset % size === 0 ? offset : 0;
    const shape = [...e.shape];
    if (dtype === "F32") return { dtype, shape, data: new Float32Array(buffer, at, n) };
    return { dtype, shape, data: new Uint16Array(buffer, at, n) };
  }

  /** The tensor as float32 (converted from F16/BF16 exactly). */
  f32(name: string): Float32Array {
    return tensorToF32(this.raw(name));
  }

  /** A U32 tensor's elements (a copy). */
  u32(name: string): Uint32Array {
    const e = this.entries.get(name);
    if (!e) throw new MissingTensorError(this.file, name);
    if (e.dtype !== "U32") {
      throw new UnsupportedDtypeError(this.file, `tensor ${name} has dtype ${e.dtype}, not U32`);
    }
    return new Uint32Array(this.bytes.slice(e.begin, e.end).buffer);
  }
}

function fail(file: string, problem: string): never {
  throw new CorruptHeaderError(file, problem);
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** Parses and validates a safetensors file held in memory. */
export function parseSafetensors(bytes: Uint8Array, file: string): SafetensorsFile {
  if (bytes.byteLength < 8) {
    throw new TruncatedFileError(file, 8, bytes.byteLength, "the safetensors length prefix");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    fail(file, `header length ${headerLen} is absurd (limit ${MAX_HEADER_BYTES} bytes)`);
  }
  if (headerLen > BigInt(bytes.byteLength - 8)) {
    fail(file, `header length ${headerLen} exceeds the file (${bytes.byteLength} bytes)`);
  }
  const n = Number(headerLen);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    fail(file, `header is not valid JSON: ${e instanceof Error ? e.message : e}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    fail(file, "header is not a JSON object");
  }
  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        fail(file, "__metadata__ is not an object");
      }
      metadata = value as Record<string, string>;
      continue;
    }
    entries.set(name, parseEntry(file, name, value, dataStart));
  }
  checkLayout(file, entries, dataStart, dataLen);
  return new SafetensorsFile(file, bytes, entries, metadata);
}

function parseEntry(file: string, name: string, value: unknown, dataStart: number): TensorEntry {
  if (typeof value !== "object" || value === null) {
    fail(file, `tensor ${name}: entry not an object`);
  }
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== "string") fail(file, `tensor ${name}: dtype missing`);
  const elemBytes = KNOWN_DTYPES[dtype];
  if (elemBytes === undefined) {
    throw new UnsupportedDtypeError(
      file,
      `tensor ${name} has unknown dtype ${JSON.stringify(dtype)}; ` +
        `readable dtypes are ${READABLE.join(", ")}`,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    fail(file, `tensor ${name}: shape ${JSON.stringify(shape)} is not a list of sizes`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
    fail(file, `tensor ${name}: data_offsets ${JSON.stringify(offsets)} are not [begin, end]`);
  }
  const [begin, end] = offsets as number[];
  if (end < begin) fail(file, `tensor ${name}: data_offsets [${begin}, ${end}] end before begin`);
  const want = shapeSize(shape) * elemBytes;
  if (!Number.isSafeInteger(want) || end - begin !== want) {
    fail(
      file,
      `tensor ${name}: ${end - begin} bytes of data but shape [${shape}] of ${dtype} needs ${want}`,
    );
  }
  return { dtype, shape: shape as number[], begin: dataStart + begin, end: dataStart + end };
}

/** Offsets inside the data, no two tensors sharing bytes. */
function checkLayout(
  file: string,
  entries: Map<string, TensorEntry>,
  dataStart: number,
  dataLen: number,
): void {
  const sorted = [...entries].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let lastEnd = dataStart;
  let lastName = "";
  for (const [name, e] of sorted) {
    if (e.begin < lastEnd && e.end > e.begin) {
      fail(
        file,
        `tensors ${lastName} and ${name} overlap (data_offsets ${lastEnd - dataStart} > ` +
          `${e.begin - dataStart})`,
      );
    }
    if (e.end > lastEnd) {
      lastEnd = e.end;
      lastName = name;
    }
  }
  if (lastEnd - dataStart > dataLen) {
    throw new TruncatedFileError(
      file,
      lastEnd,
      dataStart + dataLen,
      `tensor ${lastName}'s data_offsets`,
    );
  }
}

/** Reads one .safetensors file. */
export async function readSafetensors(
  path: string,
  store: FileStore = storeFor(path),
): Promise<SafetensorsFile> {
  return parseSafetensors(await readFileBytes(path, "safetensors", store), path);
}

/**
 * Serializes tensors (F32, F16, BF16 or U32) as one safetensors file. The JSON header is padded
 * with spaces to a multiple of 8 bytes; 4-byte tensors come before 2-byte ones (each group in map
 * order) so every tensor is aligned to its element size with no gaps between tensors (the
 * reference implementation rejects gaps).
 */
export function writeSafetensors(
  tensors: ReadonlyMap<string, SafetensorsTensorData>,
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const size = (t: SafetensorsTensorData) => t.dtype === "U32" ? 4 : dtypeBytes(t.dtype);
  const ordered = [...tensors].sort((a, b) => size(b[1]) - size(a[1]));
  let offset = 0;
  for (const [name, t] of ordered) {
    const bytes = t.data.byteLength;
    if (t.data.length !== shapeSize(t.shape)) {
      throw new ModelFormatError(
        "(safetensors writer)",
        `tensor ${name} has ${t.data.length} elements but shape [${t.shape}]`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = json.length + ((8 - (json.length % 8)) % 8);
  if (padded !== json.length) {
    const withSpaces = new Uint8Array(padded).fill(0x20);
    withSpaces.set(json);
    json = withSpaces;
  }
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  for (const [name, t] of ordered) {
    const [begin] = (header[name] as { data_offsets: number[] }).data_offsets;
    out.set(
      new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      8 + padded + begin,
    );
  }
  return out;
}
