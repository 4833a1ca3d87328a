/**
 * GGUF (llama.cpp's model files, versions 2 and 3): a little-endian header (magic "GGUF",
 * version, tensor count, metadata count), typed key-value metadata, tensor infos (name, dims,
 * ggml type, offset) and then the tensor data, each tensor aligned to `general.alignment`
 * (default 32) from the start of the data section.
 *
 * Only the header is read when a file is opened; tensors are read one at a time with positioned
 * reads, so a file of any size can be used. Block-quantized tensors come back as their packed
 * bytes.
 */
import { ggmlTypeById, type GgmlTypeInfo, ggmlTypeName } from "../core/quant.ts";
import {
  BadMagicError,
  CorruptHeaderError,
  MissingMetadataError,
  MissingTensorError,
  ModelFormatError,
  TruncatedFileError,
  UnsupportedDtypeError,
  UnsupportedVersionError,
} from "./errors.ts";
import { type FileStore, openFileForReading, type RandomAccessFile, storeFor } from "./files.ts";
import type { TensorData } from "./tensor_data.ts";

/** "GGUF" read as a little-endian uint32. */
export const GGUF_MAGIC = 0x46554747;
/** GGUF versions this reader takes (v1 used 32-bit counts and is long obsolete). */
export const GGUF_VERSIONS: readonly number[] = [2, 3];
/** Data alignment when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml tensors have at most four dimensions. */
export const GGML_MAX_DIMS = 4;

/**
 * Limits past which a count or length is taken for garbage rather than a model, whatever the
 * file's size (anything within them must still fit in the file).
 */
export const GGUF_LIMITS = {
  tensors: 1 << 20,
  metadata: 1 << 20,
  stringBytes: 1 << 28,
  arrayElements: 1 << 28,
  arrayDepth: 8,
} as const;

/** Metadata value types in the order of their GGUF ids (0 = uint8 ... 12 = float64). */
export const GGUF_VALUE_TYPES = [
  "uint8",
  "int8",
  "uint16",
  "int16",
  "uint32",
  "int32",
  "float32",
  "bool",
  "string",
  "array",
  "uint64",
  "int64",
  "float64",
] as const;

/** A metadata value type's name. */
export type GgufValueType = typeof GGUF_VALUE_TYPES[number];

/** Scalar types held as JavaScript numbers. */
export type GgufNumberType =
  | "uint8"
  | "int8"
  | "uint16"
  | "int16"
  | "uint32"
  | "int32"
  | "float32"
  | "float64";

/** The elements of a metadata array: a typed array for numbers, JS arrays otherwise. */
export type GgufArrayValues =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | boolean[]
  | string[]
  | GgufArray[];

/** A metadata array (arrays may nest). */
export interface GgufArray {
  /** Always "array". */
  type: "array";
  /** Type of every element. */
  elementType: GgufValueType;
  /** The elements. */
  value: GgufArrayValues;
}

/** One metadata value with its stored type (64-bit integers as bigint). */
export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: "uint64" | "int64"; value: bigint }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | GgufArray;

/** One tensor info of the header, with the derived layout. */
export interface GgufTensorInfo {
  /** The tensor's name (e.g. "blk.0.attn_q.weight"). */
  name: string;
  /** ggml's ne: dims[0] is the innermost (the row length, the direction blocks run along). */
  dims: number[];
  /** Row-major shape, outermost first (dims reversed): a matrix with ne = [in, out] is [out, in]. */
  shape: number[];
  /** The ggml type id as stored. */
  typeId: number;
  /** The type's block layout. */
  type: GgmlTypeInfo;
  /** Offset as stored, relative to the data section. */
  offset: number;
  /** Absolute position of the first byte in the file. */
  fileOffset: number;
  /** Bytes of data. */
  byteLength: number;
}

/** Raised inside the header parser when the buffered bytes end before `end`. */
class NeedMore {
  constructor(readonly end: number) {}
}

const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** Synchronous little-endian reads over the first bytes of the file. */
class Cursor {
  pos = 0;
  readonly #view: DataView;

  constructor(
    readonly bytes: Uint8Array,
    readonly fileSize: number,
    readonly file: string,
  ) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Makes sure `n` bytes from pos are buffered; `what` names them for a truncation error. */
  need(n: number, what: string): void {
    const end = this.pos + n;
    if (end <= this.bytes.length) return;
    if (end > this.fileSize) throw new TruncatedFileError(this.file, end, this.fileSize, what);
    throw new NeedMore(end);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.bytes[this.pos++];
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.#view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64(what: string): bigint {
    this.need(8, what);
    const v = this.#view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** A uint64 that must be at most `limit` (a count, a length, a dimension). */
  size(what: string, limit: number): number {
    const at = this.pos;
    const v = this.u64(what);
    if (v > BigInt(limit)) {
      throw new CorruptHeaderError(
        this.file,
        `${what} = ${v} at byte ${at} is absurd (limit ${limit})`,
      );
    }
    return Number(v);
  }

  /** Bytes left in the file after pos. */
  get remaining(): number {
    return this.fileSize - this.pos;
  }

  string(what: string): string {
    const len = this.size(`${what}: string length`, GGUF_LIMITS.stringBytes);
    this.need(len, `${what} (a string of ${len} bytes)`);
    const s = decodeUtf8(this.bytes, this.pos, len);
    this.pos += len;
    return s;
  }

  value(type: number, what: string, depth: number): GgufValue {
    const v = this.#view;
    switch (type) {
      case 0:
        return { type: "uint8", value: this.u8(what) };
      case 1:
        this.need(1, what);
        return { type: "int8", value: v.getInt8(this.#advance(1)) };
      case 2:
        this.need(2, what);
        return { type: "uint16", value: v.getUint16(this.#advance(2), true) };
      case 3:
        this.need(2, what);
        return { type: "int16", value: v.getInt16(this.#advance(2), true) };
      case 4:
        return { type: "uint32", value: this.u32(what) };
      case 5:
        this.need(4, what);
        return { type: "int32", value: v.getInt32(this.#advance(4), true) };
      case 6:
        this.need(4, what);
        return { type: "float32", value: v.getFloat32(this.#advance(4), true) };
      case 7: {
        const b = this.u8(what);
        if (b > 1) {
          throw new CorruptHeaderError(this.file, `${what}: bool byte ${b} at ${this.pos - 1}`);
        }
        return { type: "bool", value: b === 1 };
      }
      case 8:
        return { type: "string", value: this.string(what) };
      case 9:
        return this.array(what, depth);
      case 10:
        return { type: "uint64", value: this.u64(what) };
      case 11:
        this.need(8, what);
        return { type: "int64", value: v.getBigInt64(this.#advance(8), true) };
      case 12:
        this.need(8, what);
        return { type: "float64", value: v.getFloat64(this.#advance(8), true) };
      default:
        throw new CorruptHeaderError(
          this.file,
          `${what}: unknown metadata value type ${type} at byte ${this.pos - 4}`,
        );
    }
  }

  #advance(n: number): number {
    const p = this.pos;
    this.pos += n;
    return p;
  }

  array(what: string, depth: number): GgufArray {
    if (depth >= GGUF_LIMITS.arrayDepth) {
      throw new CorruptHeaderError(
        this.file,
        `${what}: arrays nested deeper than ${GGUF_LIMITS.arrayDepth}`,
      );
    }
    const typeAt = this.pos;
    const elem = this.u32(`${what}: array element type`);
    const elementType = GGUF_VALUE_TYPES[elem];
    if (elementType === undefined) {
      throw new CorruptHeaderError(
        this.file,
        `${what}: unknown array element type ${elem} at byte ${typeAt}`,
      );
    }
    const n = this.size(`${what}: array length`, GGUF_LIMITS.arrayElements);
    // Smallest encoding of one element: its fixed size, a string's length, a nested array's
    // type and length.
    const minBytes = elementType === "string" ? 8 : elementType === "array" ? 12 : FIXED[elem];
    if (n * minBytes > this.remaining) {
      throw new TruncatedFileError(
        this.file,
        this.pos + n * minBytes,
        this.fileSize,
        `${what}: an array of ${n} ${elementType} values`,
      );
    }
    const item = `${what}[]`;
    if (elementType === "string") {
      const out = new Array<string>(n);
      for (let i = 0; i < n; i++) out[i] = this.string(item);
      return { type: "array", elementType, value: out };
    }
    if (elementType === "array") {
      const out = new Array<GgufArray>(n);
      for (let i = 0; i < n; i++) out[i] = this.array(item, depth + 1);
      return { type: "array", elementType, value: out };
    }
    if (elementType === "bool") {
      this.need(n, item);
      const out = new Array<boolean>(n);
      for (let i = 0; i < n; i++) {
        const b = this.bytes[this.pos + i];
        if (b > 1) {
          throw new CorruptHeaderError(this.file, `${item}: bool byte ${b} at ${this.pos + i}`);
        }
        out[i] = b === 1;
      }
      this.pos += n;
      return { type: "array", elementType, value: out };
    }
    const bytes = n * minBytes;
    this.need(bytes, item);
    // Copy into a fresh, aligned buffer; the host is little-endian like the file.
    const copy = this.bytes.slice(this.pos, this.pos + bytes).buffer;
    this.pos += bytes;
    const Ctor = TYPED[elem];
    return { type: "array", elementType, value: new Ctor(copy) } as GgufArray;
  }
}

/** Fixed sizes by value type id (strings and arrays are variable). */
const FIXED = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
const TYPED: Record<number, new (buffer: ArrayBuffer) => any> = {
  0: Uint8Array,
  1: Int8Array,
  2: Uint16Array,
  3: Int16Array,
  4: Uint32Array,
  5: Int32Array,
  6: Float32Array,
  10: BigUint64Array,
  11: BigInt64Array,
  12: Float64Array,
};

/** UTF-8 text of bytes[at, at+len); ASCII without a decoder call (token lists are mostly ASCII). */
function decodeUtf8(bytes: Uint8Array, at: number, len: number): string {
  if (len <= 32) {
    let s = "";
    for (let i = at; i < at + len; i++) {
      const b = bytes[i];
      if (b >= 0x80) return UTF8.decode(bytes.subarray(at, at + len));
      s += String.fromCharCode(b);
    }
    return s;
  }
  return UTF8.decode(bytes.subarray(at, at + len));
}

/** What parsing the header yields. */
interface ParsedHeader {
  version: number;
  metadata: Map<string, GgufValue>;
  infos: { name: string; dims: number[]; typeId: number; offset: number }[];
  /** Where the tensor infos end (the data section starts at the next multiple of alignment). */
  end: number;
}

function parseHeader(c: Cursor): ParsedHeader {
  const file = c.file;
  if (c.fileSize < 4) throw new TruncatedFileError(file, 4, c.fileSize, "the GGUF magic");
  c.need(4, "the GGUF magic");
  const magic = c.u32("the GGUF magic");
  if (magic !== GGUF_MAGIC) throw new BadMagicError(file, c.bytes.subarray(0, 4), "GGUF");
  const version = c.u32("the GGUF version");
  if (!GGUF_VERSIONS.includes(version)) {
    const swapped = ((version & 0xff) << 24 | (version & 0xff00) << 8 | (version >>> 8) & 0xff00 |
      version >>> 24) >>> 0;
    throw new UnsupportedVersionError(
      file,
      version,
      GGUF_VERSIONS.includes(swapped)
        ? `a big-endian GGUF (version ${swapped} byte-swapped); only little-endian files are read`
        : `GGUF version ${version}; versions ${GGUF_VERSIONS.join(" and ")} are read`,
    );
  }
  const nTensors = c.size("tensor count", GGUF_LIMITS.tensors);
  const nKv = c.size("metadata count", GGUF_LIMITS.metadata);
  // A key-value pair takes at least 13 bytes (key length, type, one byte); a tensor info 28.
  if (nKv * 13 + nTensors * 28 > c.remaining) {
    throw new TruncatedFileError(
      file,
      c.pos + nKv * 13 + nTensors * 28,
      c.fileSize,
      `a header of ${nKv} metadata entries and ${nTensors} tensor infos`,
    );
  }
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = c.string(`metadata key ${i}`);
    if (metadata.has(key)) throw new CorruptHeaderError(file, `metadata key ${key} appears twice`);
    const type = c.u32(`metadata ${key}: type`);
    metadata.set(key, c.value(type, `metadata ${key}`, 0));
  }
  const infos: ParsedHeader["infos"] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.string(`tensor info ${i}: name`);
    if (names.has(name)) throw new CorruptHeaderError(file, `tensor ${name} appears twice`);
    names.add(name);
    const nDims = c.u32(`tensor ${name}: dimension count`);
    if (nDims < 1 || nDims > GGML_MAX_DIMS) {
      throw new CorruptHeaderError(
        file,
        `tensor ${name} has ${nDims} dimensions (ggml allows 1..${GGML_MAX_DIMS})`,
      );
    }
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      dims.push(c.size(`tensor ${name}: dimension ${d}`, Number.MAX_SAFE_INTEGER));
    }
    const typeId = c.u32(`tensor ${name}: type`);
    const offset = c.size(`tensor ${name}: offset`, Number.MAX_SAFE_INTEGER);
    infos.push({ name, dims, typeId, offset });
  }
  return { version, metadata, infos, end: c.pos };
}

/** Bytes buffered on the first try; doubled (or grown to what is needed) until the header fits. */
const FIRST_READ = 1 << 20;

/** Reads the header from an open file, growing the buffer until it parses. */
async function readHeader(
  f: RandomAccessFile,
  fileSize: number,
  file: string,
): Promise<ParsedHeader> {
  let want = Math.min(FIRST_READ, fileSize);
  for (;;) {
    const bytes = await f.read(0, want);
    try {
      return parseHeader(new Cursor(bytes, fileSize, file));
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
      want = Math.min(fileSize, Math.max(want * 2, e.end));
    }
  }
}

/** The layout of every tensor: types known, whole blocks, aligned, inside the file, no overlaps. */
function layout(
  file: string,
  infos: ParsedHeader["infos"],
  dataOffset: number,
  alignment: number,
  fileSize: number,
): Map<string, GgufTensorInfo> {
  const out = new Map<string, GgufTensorInfo>();
  for (const { name, dims, typeId, offset } of infos) {
    const type = ggmlTypeById(typeId);
    if (!type) {
      throw new UnsupportedDtypeError(
        file,
        `tensor ${name} has ggml type ${ggmlTypeName(typeId)} (id ${typeId}), which templora ` +
          "does not read",
      );
    }
    if (dims[0] % type.blockElems !== 0) {
      throw new CorruptHeaderError(
        file,
        `tensor ${name}: rows of ${dims[0]} values are not whole ${type.name} blocks of ` +
          `${type.blockElems}`,
      );
    }
    let byteLength = (dims[0] / type.blockElems) * type.blockBytes;
    for (let d = 1; d < dims.length; d++) byteLength *= dims[d];
    if (!Number.isSafeInteger(byteLength)) {
      throw new CorruptHeaderError(file, `tensor ${name}: dims [${dims}] are absurd`);
    }
    if (offset % alignment !== 0) {
      throw new CorruptHeaderError(
        file,
        `tensor ${name}: offset ${offset} is not a multiple of the alignment ${alignment}`,
      );
    }
    const fileOffset = dataOffset + offset;
    if (fileOffset + byteLength > fileSize) {
      throw new TruncatedFileError(
        file,
        fileOffset + byteLength,
        fileSize,
        `tensor ${name} (${byteLength} bytes at data offset ${offset})`,
      );
    }
    out.set(name, {
      name,
      dims,
      shape: [...dims].reverse(),
      typeId,
      type,
      offset,
      fileOffset,
      byteLength,
    });
  }
  const sorted = [...out.values()].filter((t) => t.byteLength > 0)
    .sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    const t = sorted[i];
    if (t.offset < prev.offset + prev.byteLength) {
      throw new CorruptHeaderError(
        file,
        `tensors ${prev.name} (data bytes ${prev.offset}..${prev.offset + prev.byteLength}) and ` +
          `${t.name} (from ${t.offset}) overlap`,
      );
    }
  }
  return out;
}

/** A GGUF file's header: metadata and tensor infos. Tensors are read on demand. */
export class GgufFile {
  /** Use readGguf, which validates the header first. */
  constructor(
    /** The path, for messages and reads. */
    readonly file: string,
    /** The file's GGUF version (2 or 3). */
    readonly version: number,
    /** Size of the file in bytes. */
    readonly fileSize: number,
    /** Metadata in file order. */
    readonly metadata: ReadonlyMap<string, GgufValue>,
    /** Tensor infos in file order. */
    readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    /** `general.alignment`, or 32. */
    readonly alignment: number,
    /** Absolute position of the data section. */
    readonly dataOffset: number,
    /** Where the file is read from (the local file system, the web, or chosen files). */
    readonly store: FileStore = storeFor(file),
  ) {}

  /** `general.architecture` (undefined when absent). */
  get architecture(): string | undefined {
    return this.optionalString("general.architecture");
  }

  /** The tensor info of `name`; MissingTensorError when the file has no such tensor. */
  tensor(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new MissingTensorError(this.file, name);
    return t;
  }

  /** The value of `key`; MissingMetadataError when absent. */
  value(key: string): GgufValue {
    const v = this.metadata.get(key);
    if (!v) throw new MissingMetadataError(this.file, key);
    return v;
  }

  /** A string value, or undefined when the key is absent; CorruptHeaderError for another type. */
  optionalString(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== "string") this.#wrongType(key, v, "a string");
    return v.value as string;
  }

  /** A string value; MissingMetadataError when absent. */
  string(key: string): string {
    return this.optionalString(key) ?? this.#missing(key);
  }

  /**
   * An integer value of any integer type (64-bit ones within the safe range), or undefined when
   * absent; CorruptHeaderError for another type.
   */
  optionalInt(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type === "uint64" || v.type === "int64") {
      if (v.value > BigInt(Number.MAX_SAFE_INTEGER) || v.value < -BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new CorruptHeaderError(this.file, `metadata ${key} = ${v.value} is out of range`);
      }
      return Number(v.value);
    }
    if (!INT_TYPES.includes(v.type)) this.#wrongType(key, v, "an integer");
    return v.value as number;
  }

  /** An integer value; MissingMetadataError when absent. */
  int(key: string): number {
    return this.optionalInt(key) ?? this.#missing(key);
  }

  /** A number of any numeric type, or undefined when absent. */
  optionalFloat(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type === "float64") return v.value;
    if (v.type === "float32") return shortestFloat32(v.value);
    return this.optionalInt(key);
  }

  /** A number of any numeric type; MissingMetadataError when absent. */
  float(key: string): number {
    return this.optionalFloat(key) ?? this.#missing(key);
  }

  /** A bool value, or undefined when absent. */
  optionalBool(key: string): boolean | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== "bool") this.#wrongType(key, v, "a bool");
    return v.value as boolean;
  }

  /** An array value, or undefined when absent; CorruptHeaderError if not an array of `of`. */
  optionalArray(key: string, of?: readonly GgufValueType[]): GgufArray | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== "array" || (of && !of.includes(v.elementType))) {
      this.#wrongType(key, v, `an array${of ? ` of ${of.join(" or ")}` : ""}`);
    }
    return v as GgufArray;
  }

  #missing(key: string): never {
    throw new MissingMetadataError(this.file, key);
  }

  #wrongType(key: string, v: GgufValue, want: string): never {
    const got = v.type === "array" ? `an array of ${v.elementType}` : v.type;
    throw new CorruptHeaderError(this.file, `metadata ${key} is ${got}, expected ${want}`);
  }

  /** The stored bytes of a tensor (packed blocks for quantized types), read from the file. */
  async readTensorBytes(name: string): Promise<Uint8Array> {
    const t = this.tensor(name);
    const f = await openFileForReading(this.file, "GGUF tensor data", this.store);
    if (f.size !== this.fileSize) {
      throw new ModelFormatError(
        this.file,
        `changed on disk since its header was read (${this.fileSize} -> ${f.size} bytes)`,
      );
    }
    return await f.read(t.fileOffset, t.byteLength);
  }

  /**
   * An F32, F16 or BF16 tensor as TensorData (row-major shape); UnsupportedDtypeError for a
   * block-quantized one (use readTensorBytes).
   */
  async readTensor(name: string): Promise<TensorData> {
    const t = this.tensor(name);
    if (t.type.quantized) {
      throw new UnsupportedDtypeError(
        this.file,
        `tensor ${name} is ${t.type.name} (block-quantized); read its bytes with readTensorBytes`,
      );
    }
    const bytes = await this.readTensorBytes(name);
    return bytesToTensorData(t, bytes);
  }
}

/**
 * The shortest decimal that is the same float32 as `x` (a float32 1e-5 reads as 1e-5, not
 * 0.000009999999747378752): what the writer most likely meant, and exactly as precise.
 */
export function shortestFloat32(x: number): number {
  if (!Number.isFinite(x)) return x;
  for (let digits = 1; digits < 9; digits++) {
    const y = Number(x.toPrecision(digits));
    if (Math.fround(y) === x) return y;
  }
  return x;
}

const INT_TYPES: readonly string[] = ["uint8", "int8", "uint16", "int16", "uint32", "int32"];

/** TensorData view of a float tensor's bytes (`bytes` must start at a 4-byte aligned offset). */
export function bytesToTensorData(t: GgufTensorInfo, bytes: Uint8Array): TensorData {
  const shape = [...t.shape];
  const n = t.byteLength / t.type.blockBytes;
  if (t.type.name === "F32") {
    return { dtype: "F32", shape, data: new Float32Array(bytes.buffer, bytes.byteOffset, n) };
  }
  if (t.type.name === "F16" || t.type.name === "BF16") {
    return {
      dtype: t.type.name,
      shape,
      data: new Uint16Array(bytes.buffer, bytes.byteOffset, n),
    };
  }
  throw new UnsupportedDtypeError("(gguf)", `tensor ${t.name} of type ${t.type.name} is no float`);
}

/** Whether the file at `path` starts with the GGUF magic (false for folders and short files). */
export async function isGgufFile(
  path: string,
  store: FileStore = storeFor(path),
): Promise<boolean> {
  const f = await openFileForReading(path, "file", store).catch((error) => {
    if (error instanceof ModelFormatError && /not a file/.test(error.problem)) return null;
    throw error;
  });
  if (!f || f.size < 4) return false;
  const head = await f.read(0, 4);
  return new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC;
}

/**
 * Reads and validates a GGUF file's header: magic, version, counts and lengths bounded by the
 * file, every metadata value, tensor infos with known types, alignment (`general.alignment`, a
 * power of two, default 32), and tensor data inside the file without overlaps. No tensor data is
 * read (from the web: range requests for the header only).
 */
export async function readGguf(path: string, store: FileStore = storeFor(path)): Promise<GgufFile> {
  const f = await openFileForReading(path, "GGUF file", store);
  const fileSize = f.size;
  const h = await readHeader(f, fileSize, path);
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const a = h.metadata.get("general.alignment");
  if (a !== undefined) {
    if (a.type !== "uint32") {
      throw new CorruptHeaderError(path, `general.alignment is ${a.type}, expected uint32`);
    }
    if (a.value === 0 || (a.value & (a.value - 1)) !== 0) {
      throw new CorruptHeaderError(path, `general.alignment ${a.value} is not a power of two`);
    }
    alignment = a.value;
  }
  const dataOffset = Math.ceil(h.end / alignment) * alignment;
  const tensors = layout(path, h.infos, dataOffset, alignment, fileSize);
  if (tensors.size > 0 && dataOffset > fileSize) {
    throw new TruncatedFileError(path, dataOffset, fileSize, "the data section's start");
  }
  return new GgufFile(path, h.version, fileSize, h.metadata, tensors, alignment, dataOffset, store);
}
