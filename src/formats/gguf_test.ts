import assert from "node:assert/strict";
import { join } from "node:path";
import { GGML_TYPES } from "../core/quant.ts";
import { Rng } from "../core/random.ts";
import { type ModelConfig, tensorShapes } from "./config.ts";
import {
  BadMagicError,
  CorruptHeaderError,
  InvalidConfigError,
  MissingMetadataError,
  MissingTensorError,
  ModelFileNotFoundError,
  QuantizedWeightsError,
  TensorShapeMismatchError,
  TruncatedFileError,
  UnsupportedArchitectureError,
  UnsupportedDtypeError,
  UnsupportedFeatureError,
  UnsupportedVersionError,
} from "./errors.ts";
import {
  GGUF_LIMITS,
  GGUF_VALUE_TYPES,
  type GgufArray,
  type GgufValue,
  isGgufFile,
  readGguf,
  shortestFloat32,
} from "./gguf.ts";
import { ggufModelWeights, hfToGgufTensorName, readGgufModel } from "./gguf_model.ts";
import {
  ggufHeader,
  type GgufRawValue,
  type GgufSpec,
  type GgufTensorSpec,
  writeGguf,
} from "./gguf_writer.ts";
import { loadModelFiles } from "./load.ts";
import { f32ArrayToBf16, f32ArrayToF16, type TensorData } from "./tensor_data.ts";

// Files are made with the GGUF writer (gguf_writer.ts); raw values and offsets make malformed ones.
type RawValue = GgufRawValue;
type TensorSpec = GgufTensorSpec;

// Value constructors.
const u32 = (value: number): GgufValue => ({ type: "uint32", value });
const f32 = (value: number): GgufValue => ({ type: "float32", value });
const str = (value: string): GgufValue => ({ type: "string", value });
const bool = (value: boolean): GgufValue => ({ type: "bool", value });
const strings = (value: string[]): GgufValue => ({ type: "array", elementType: "string", value });
const raw = (typeId: number, bytes: Uint8Array): RawValue => ({ type: "raw", typeId, bytes });
const u64Bytes = (...xs: (number | bigint)[]): Uint8Array => {
  const b = new Uint8Array(8 * xs.length);
  const v = new DataView(b.buffer);
  xs.forEach((x, i) => v.setBigUint64(8 * i, BigInt(x), true));
  return b;
};

function seed(what: string): Rng {
  const fromEnv = Deno.env.get("TEMPLORA_SEED");
  const s = fromEnv ? Number(fromEnv) : (Math.random() * 2 ** 31) >>> 0;
  console.log(`  ${what}: seed ${s} (replay with TEMPLORA_SEED=${s})`);
  return new Rng(s);
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(256);
  return b;
}

const f32Bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const u16Bytes = (a: Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "templora_gguf_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes `bytes` to `dir`/name.gguf and reads it back. */
async function roundTrip(dir: string, bytes: Uint8Array, name = "t.gguf") {
  const path = join(dir, name);
  await Deno.writeFile(path, bytes);
  return await readGguf(path);
}

/** The error `readGguf` throws for `bytes`, checked to be of `type` and to match `pattern`. */
async function rejects(
  dir: string,
  bytes: Uint8Array,
  type: new (...args: any[]) => Error,
  pattern: RegExp,
): Promise<void> {
  const path = join(dir, "bad.gguf");
  await Deno.writeFile(path, bytes);
  await assert.rejects(readGguf(path), (e: unknown) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e}`);
    assert.match((e as Error).message, pattern);
    assert.ok((e as Error).message.startsWith(path), "the message starts with the file");
    return true;
  });
}

/** A random metadata value of `type`; arrays hold random elements, nesting up to `depth`. */
function randomValue(rng: Rng, type: string, depth: number): GgufValue {
  const pick = <T>(xs: T[]) => xs[rng.int(xs.length)];
  const n = rng.int(5);
  switch (type) {
    case "uint8":
      return { type, value: rng.int(256) };
    case "int8":
      return { type, value: rng.int(256) - 128 };
    case "uint16":
      return { type, value: rng.int(65536) };
    case "int16":
      return { type, value: rng.int(65536) - 32768 };
    case "uint32":
      return { type, value: rng.int(2 ** 32) };
    case "int32":
      return { type, value: rng.int(2 ** 32) - 2 ** 31 };
    case "float32":
      return { type, value: Math.fround(rng.normal() * 1e3) };
    case "float64":
      return { type, value: rng.normal() * 1e-7 };
    case "uint64":
      return { type, value: (BigInt(rng.int(2 ** 32)) << 32n) | BigInt(rng.int(2 ** 32)) };
    case "int64":
      return { type, value: -((BigInt(rng.int(2 ** 31)) << 32n) | BigInt(rng.int(2 ** 32))) };
    case "bool":
      return { type, value: rng.next() < 0.5 };
    case "string":
      return {
        type,
        value: Array.from({ length: n * 3 }, () => pick(["a", "▁", "é", "🦙", " ", "\n", "\uFEFF"]))
          .join(""),
      };
  }
  // An array of some element type (an array of arrays while depth allows).
  const elems = GGUF_VALUE_TYPES.filter((t) => t !== "array" || depth > 0);
  const elementType = pick(elems);
  const items = Array.from({ length: n }, () => randomValue(rng, elementType, depth - 1));
  if (elementType === "array") return { type: "array", elementType, value: items as GgufArray[] };
  const values = items.map((v) => (v as { value: unknown }).value);
  const typed: Record<string, (xs: any[]) => GgufArray["value"]> = {
    uint8: (xs) => Uint8Array.from(xs),
    int8: (xs) => Int8Array.from(xs),
    uint16: (xs) => Uint16Array.from(xs),
    int16: (xs) => Int16Array.from(xs),
    uint32: (xs) => Uint32Array.from(xs),
    int32: (xs) => Int32Array.from(xs),
    float32: (xs) => Float32Array.from(xs),
    float64: (xs) => Float64Array.from(xs),
    uint64: (xs) => BigUint64Array.from(xs),
    int64: (xs) => BigInt64Array.from(xs),
  };
  return {
    type: "array",
    elementType,
    value: typed[elementType]?.(values) ?? values as GgufArray["value"],
  };
}

// ---------------------------------------------------------------------------------------------

Deno.test("gguf: every metadata type, nested arrays included, reads back as written (v2, v3)", async () => {
  const rng = seed("gguf metadata");
  await withTemp(async (dir) => {
    for (const version of [2, 3]) {
      const metadata: [string, GgufValue][] = [];
      for (const type of GGUF_VALUE_TYPES) {
        for (let i = 0; i < 4; i++) metadata.push([`test.${type}.${i}`, randomValue(rng, type, 3)]);
      }
      metadata.push(["test.empty", str("")]);
      metadata.push(["test.bom", str("\uFEFFtoken")]);
      metadata.push(["test.empty_array", {
        type: "array",
        elementType: "int32",
        value: new Int32Array(0),
      }]);
      metadata.push(["test.deep", {
        type: "array",
        elementType: "array",
        value: [{
          type: "array",
          elementType: "array",
          value: [strings(["x", "yz"]) as GgufArray, strings([]) as GgufArray],
        }],
      }]);
      const g = await roundTrip(dir, writeGguf({ version, metadata }));
      assert.equal(g.version, version);
      assert.equal(g.tensors.size, 0);
      assert.deepEqual([...g.metadata.keys()], metadata.map(([k]) => k));
      for (const [key, value] of metadata) assert.deepEqual(g.metadata.get(key), value, key);
    }
  });
});

Deno.test("gguf: typed accessors convert integer widths and refuse other types", async () => {
  await withTemp(async (dir) => {
    const g = await roundTrip(
      dir,
      writeGguf({
        metadata: [
          ["a.u8", { type: "uint8", value: 7 }],
          ["a.i64", { type: "int64", value: -5n }],
          ["a.big", { type: "uint64", value: 2n ** 60n }],
          ["a.f32", f32(1e-5)],
          ["a.f64", { type: "float64", value: 0.1 }],
          ["a.s", str("llama")],
          ["a.b", bool(true)],
          ["a.arr", strings(["x"])],
        ],
      }),
    );
    assert.equal(g.int("a.u8"), 7);
    assert.equal(g.int("a.i64"), -5);
    assert.throws(() => g.int("a.big"), CorruptHeaderError);
    assert.equal(g.float("a.f32"), 1e-5); // the float32 nearest 1e-5, read as 1e-5
    assert.equal(g.float("a.f64"), 0.1);
    assert.equal(g.float("a.u8"), 7);
    assert.equal(g.string("a.s"), "llama");
    assert.equal(g.optionalBool("a.b"), true);
    assert.deepEqual(g.optionalArray("a.arr", ["string"])?.value, ["x"]);
    assert.throws(() => g.optionalArray("a.arr", ["int32"]), /array of string, expected/);
    assert.throws(() => g.int("a.s"), /a\.s is string, expected an integer/);
    assert.throws(() => g.string("a.u8"), CorruptHeaderError);
    assert.throws(() => g.optionalBool("a.s"), CorruptHeaderError);
    assert.throws(() => g.string("a.none"), MissingMetadataError);
    assert.equal(g.optionalInt("a.none"), undefined);
    assert.equal(g.architecture, undefined);
  });
  assert.equal(shortestFloat32(Math.fround(1e-6)), 1e-6);
  assert.equal(shortestFloat32(Math.fround(0.1)), 0.1);
  assert.equal(shortestFloat32(Math.fround(Math.PI)), 3.1415927);
});

Deno.test("gguf: tensors of every supported type come back byte for byte, floats as TensorData", async () => {
  const rng = seed("gguf tensors");
  await withTemp(async (dir) => {
    for (const alignment of [32, 64, 8]) {
      const tensors: TensorSpec[] = [];
      const floats = rng.normals(6 * 5);
      tensors.push({ name: "f32", dims: [5, 6], typeId: 0, data: f32Bytes(floats) });
      tensors.push({
        name: "f16",
        dims: [3, 2, 5],
        typeId: 1,
        data: u16Bytes(f32ArrayToF16(floats)),
      });
      tensors.push({
        name: "bf16",
        dims: [2, 3, 1, 5],
        typeId: 30,
        data: u16Bytes(f32ArrayToBf16(floats)),
      });
      tensors.push({ name: "vector", dims: [7], typeId: 0, data: f32Bytes(rng.normals(7)) });
      for (const t of Object.values(GGML_TYPES).filter((t) => t.quantized)) {
        const rows = 1 + rng.int(3);
        const blocks = 1 + rng.int(2);
        tensors.push({
          name: `q.${t.name}`,
          dims: [blocks * t.blockElems, rows],
          typeId: t.id,
          data: randomBytes(rng, rows * blocks * t.blockBytes),
        });
      }
      const metadata: [string, GgufValue][] = alignment === 32
        ? [["general.architecture", str("llama")]]
        : [["general.alignment", u32(alignment)]];
      const g = await roundTrip(dir, writeGguf({ metadata, tensors, alignment }));
      assert.equal(g.alignment, alignment);
      assert.equal(g.dataOffset % alignment, 0);
      assert.deepEqual([...g.tensors.keys()], tensors.map((t) => t.name));
      for (const spec of tensors) {
        const info = g.tensor(spec.name);
        assert.deepEqual(info.dims, spec.dims);
        assert.deepEqual(info.shape, [...spec.dims].reverse());
        assert.equal(info.typeId, spec.typeId);
        assert.equal(info.byteLength, spec.data.length);
        assert.equal(info.fileOffset % alignment, g.dataOffset % alignment);
        assert.deepEqual(await g.readTensorBytes(spec.name), spec.data, spec.name);
      }
      const want: Record<string, TensorData> = {
        f32: { dtype: "F32", shape: [6, 5], data: floats },
        f16: { dtype: "F16", shape: [5, 2, 3], data: f32ArrayToF16(floats) },
        bf16: { dtype: "BF16", shape: [5, 1, 3, 2], data: f32ArrayToBf16(floats) },
      };
      for (const [name, t] of Object.entries(want)) assert.deepEqual(await g.readTensor(name), t);
      await assert.rejects(g.readTensor("q.Q8_0"), UnsupportedDtypeError);
      await assert.rejects(g.readTensorBytes("absent"), MissingTensorError);
    }
  });
});

Deno.test("gguf: a 5 GB (sparse) file: the header is read alone, a tensor past 4 GiB by position", async () => {
  const rng = seed("gguf sparse");
  await withTemp(async (dir) => {
    const path = join(dir, "big.gguf");
    const far = 5_000_000_032; // a multiple of 32 past 2^32
    const data = f32Bytes(rng.normals(64));
    const small = f32Bytes(rng.normals(8));
    const { header, dataStart } = ggufHeader({
      metadata: [["general.name", str("sparse")]],
      tensors: [
        { name: "near", dims: [8], typeId: 0, data: small },
        { name: "far", dims: [16, 4], typeId: 0, data, offset: far },
      ],
    });
    const f = await Deno.open(path, { write: true, create: true, truncate: true });
    try {
      await f.write(header);
      await f.seek(dataStart, Deno.SeekMode.Start);
      await f.write(small);
      await f.seek(dataStart + far, Deno.SeekMode.Start);
      await f.write(data);
    } finally {
      f.close();
    }
    const g = await readGguf(path);
    assert.equal(g.fileSize, dataStart + far + data.length);
    assert.equal(g.tensor("far").fileOffset, dataStart + far);
    assert.deepEqual(await g.readTensorBytes("far"), data);
    assert.deepEqual(await g.readTensorBytes("near"), small);
    // Cut the file short: the far tensor no longer fits.
    await Deno.truncate(path, dataStart + far + 10);
    await assert.rejects(readGguf(path), (e: unknown) => {
      return e instanceof TruncatedFileError && /tensor far/.test(e.message) &&
        e.expectedBytes === dataStart + far + data.length;
    });
  });
});

/**
 * A small valid file with metadata of several types and two tensors, ending right after the last
 * tensor's bytes (no padding), so that every shorter prefix cuts something off.
 */
function smallFile(rng: Rng): Uint8Array {
  return writeGguf({
    padEnd: false,
    metadata: [
      ["general.architecture", str("llama")],
      ["tokenizer.ggml.tokens", strings(["<unk>", "a", "bc"])],
      ["x.arr", { type: "array", elementType: "float32", value: Float32Array.of(1, 2) }],
      ["x.u", u32(3)],
    ],
    tensors: [
      { name: "a", dims: [4, 2], typeId: 0, data: f32Bytes(rng.normals(8)) },
      { name: "q", dims: [32], typeId: 8, data: randomBytes(rng, 34) },
    ],
  });
}

Deno.test("gguf: every prefix of a valid file is a TruncatedFileError, and closes the file", async () => {
  const rng = seed("gguf prefixes");
  const bytes = smallFile(rng);
  await withTemp(async (dir) => {
    await roundTrip(dir, bytes); // the whole file is fine
    for (let n = 0; n < bytes.length; n++) {
      await rejects(dir, bytes.subarray(0, n), TruncatedFileError, /truncated/);
    }
  });
});

Deno.test("gguf: wrong magic and unsupported versions", async () => {
  const rng = seed("gguf magic");
  const good = smallFile(rng);
  await withTemp(async (dir) => {
    const ggml = good.slice();
    ggml.set(new TextEncoder().encode("GGML"));
    await rejects(dir, ggml, BadMagicError, /not a GGUF file: it starts with bytes 47 47 4d 4c/);
    const safetensors = new Uint8Array(64);
    new DataView(safetensors.buffer).setBigUint64(0, 40n, true);
    await rejects(dir, safetensors, BadMagicError, /not a GGUF file/);
    for (const version of [0, 1, 4, 99]) {
      const b = good.slice();
      new DataView(b.buffer).setUint32(4, version, true);
      await rejects(dir, b, UnsupportedVersionError, new RegExp(`GGUF version ${version};`));
    }
    const bigEndian = good.slice();
    new DataView(bigEndian.buffer).setUint32(4, 3, false);
    await rejects(dir, bigEndian, UnsupportedVersionError, /big-endian/);
    await assert.rejects(readGguf(join(dir, "absent.gguf")), ModelFileNotFoundError);
    assert.equal(await isGgufFile(join(dir, "bad.gguf")), true);
    await Deno.writeFile(join(dir, "short"), new Uint8Array(2));
    assert.equal(await isGgufFile(join(dir, "short")), false);
  });
});

Deno.test("gguf: absurd counts and lengths fail fast, before any allocation", async () => {
  const rng = seed("gguf absurd");
  const good = smallFile(rng);
  const patched = (at: number, value: bigint) => {
    const b = good.slice();
    new DataView(b.buffer).setBigUint64(at, value, true);
    return b;
  };
  await withTemp(async (dir) => {
    // Header counts (tensor count at byte 8, metadata count at 16, first key length at 24).
    await rejects(
      dir,
      patched(8, 1n << 40n),
      CorruptHeaderError,
      /tensor count = 1099511627776 .* absurd/,
    );
    await rejects(dir, patched(16, 1n << 63n), CorruptHeaderError, /metadata count .* absurd/);
    await rejects(dir, patched(24, 1n << 62n), CorruptHeaderError, /string length .* absurd/);
    // Within the limits but more than the file could hold: truncated, still before allocating.
    await rejects(dir, patched(8, 100_000n), TruncatedFileError, /100000 tensor infos/);
    await rejects(dir, patched(24, 1n << 20n), TruncatedFileError, /a string of 1048576 bytes/);
    const value = (v: RawValue) => writeGguf({ metadata: [["k", v]] });
    await rejects(
      dir,
      value(raw(8, u64Bytes(GGUF_LIMITS.stringBytes + 1))),
      CorruptHeaderError,
      /absurd/,
    );
    await rejects(
      dir,
      value(raw(9, Uint8Array.of(0, 0, 0, 0, ...u64Bytes(1n << 50n)))),
      CorruptHeaderError,
      /array length .* absurd/,
    );
    await rejects(
      dir,
      value(raw(9, Uint8Array.of(8, 0, 0, 0, ...u64Bytes(1n << 24n)))),
      TruncatedFileError,
      /16777216 string values/,
    );
    await rejects(
      dir,
      value(raw(9, Uint8Array.of(12, 0, 0, 0, ...u64Bytes(1000)))),
      TruncatedFileError,
      /1000 float64/,
    );
    await rejects(
      dir,
      value(raw(13, new Uint8Array(8))),
      CorruptHeaderError,
      /unknown metadata value type 13/,
    );
    await rejects(
      dir,
      value(raw(9, Uint8Array.of(42, 0, 0, 0, ...u64Bytes(0)))),
      CorruptHeaderError,
      /unknown array element type 42/,
    );
    await rejects(dir, value(raw(7, Uint8Array.of(2))), CorruptHeaderError, /bool byte 2/);
    // Arrays nested past the limit: each level is [type array, length 1].
    const level = Uint8Array.of(9, 0, 0, 0, ...u64Bytes(1));
    const nested = new Uint8Array(level.length * 12);
    for (let i = 0; i < 12; i++) nested.set(level, i * level.length);
    await rejects(dir, value(raw(9, nested)), CorruptHeaderError, /nested deeper than 8/);
    // Tensor infos.
    const tensor = (t: Partial<TensorSpec>, extra: GgufSpec = {}) =>
      writeGguf({
        ...extra,
        tensors: [{ name: "t", dims: [4], typeId: 0, data: new Uint8Array(16), ...t }],
      });
    await rejects(dir, tensor({ dims: [1, 1, 1, 1, 1] }), CorruptHeaderError, /5 dimensions/);
    await rejects(dir, tensor({ dims: [2 ** 40, 2 ** 40] }), CorruptHeaderError, /dims .* absurd/);
    await rejects(
      dir,
      tensor({ dims: [4, 2 ** 30] }),
      TruncatedFileError,
      /tensor t \(17179869184 bytes/,
    );
    await rejects(
      dir,
      tensor({ dims: [33], typeId: 8 }),
      CorruptHeaderError,
      /not whole Q8_0 blocks of 32/,
    );
    await rejects(
      dir,
      tensor({ offset: 16 }),
      CorruptHeaderError,
      /offset 16 is not a multiple of the alignment 32/,
    );
    await rejects(
      dir,
      tensor({ typeId: 99 }),
      UnsupportedDtypeError,
      /tensor t has ggml type unknown type 99 \(id 99\)/,
    );
    await rejects(
      dir,
      tensor({ typeId: 16 }),
      UnsupportedDtypeError,
      /ggml type IQ2_XXS \(id 16\)/,
    );
    await rejects(dir, tensor({ typeId: 10 }), UnsupportedDtypeError, /Q2_K/);
    await rejects(
      dir,
      tensor({}, { metadata: [["general.alignment", u32(48)]] }),
      CorruptHeaderError,
      /alignment 48 is not a power of two/,
    );
    await rejects(
      dir,
      tensor({}, { metadata: [["general.alignment", { type: "uint64", value: 32n }]] }),
      CorruptHeaderError,
      /alignment is uint64/,
    );
    // Out of range and overlapping data.
    const two = (second: Partial<TensorSpec>) =>
      writeGguf({
        tensors: [
          { name: "first", dims: [16], typeId: 0, data: new Uint8Array(64) },
          { name: "second", dims: [8], typeId: 0, data: new Uint8Array(32), ...second },
        ],
      });
    await rejects(
      dir,
      two({ offset: 32 }),
      CorruptHeaderError,
      /tensors first \(data bytes 0\.\.64\) and second \(from 32\) overlap/,
    );
    await rejects(dir, two({ offset: 0 }), CorruptHeaderError, /overlap/);
    const cut = two({});
    await rejects(dir, cut.subarray(0, cut.length - 1), TruncatedFileError, /tensor second/);
    // Duplicates.
    await rejects(
      dir,
      writeGguf({ metadata: [["k", u32(1)], ["k", u32(2)]] }),
      CorruptHeaderError,
      /metadata key k appears twice/,
    );
    await rejects(
      dir,
      writeGguf({
        tensors: [
          { name: "t", dims: [8], typeId: 0, data: new Uint8Array(32) },
          { name: "t", dims: [8], typeId: 0, data: new Uint8Array(32) },
        ],
      }),
      CorruptHeaderError,
      /tensor t appears twice/,
    );
  });
});

Deno.test("gguf: a file that changes after its header was read is refused, not misread", async () => {
  const rng = seed("gguf changed");
  await withTemp(async (dir) => {
    const g = await roundTrip(dir, smallFile(rng));
    await Deno.writeFile(join(dir, "t.gguf"), new Uint8Array(10));
    await assert.rejects(g.readTensorBytes("a"), /changed on disk/);
  });
});

// ---------------------------------------------------------------------------------------------
// Models: ModelWeights under Hugging Face names written as GGUF models.

const GGUF_ARCH: Record<string, string> = {
  LlamaForCausalLM: "llama",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
};

/** GGUF metadata of a config, the way llama.cpp's converter writes it. */
function modelMetadata(c: ModelConfig, extra: [string, GgufValue][] = []): [string, GgufValue][] {
  const arch = GGUF_ARCH[c.architecture];
  const k = (s: string) => `${arch}.${s}`;
  const md: [string, GgufValue][] = [
    ["general.architecture", str(arch)],
    [k("context_length"), u32(c.maxSeqLen)],
    [k("embedding_length"), u32(c.dim)],
    [k("block_count"), u32(c.nLayers)],
    [k("feed_forward_length"), u32(c.hiddenDim)],
    [k("attention.head_count"), u32(c.nHeads)],
    [k("attention.head_count_kv"), u32(c.nKvHeads)],
    [k("rope.dimension_count"), u32(c.headDim)],
    [k("rope.freq_base"), f32(c.ropeTheta)],
    [k("attention.layer_norm_rms_epsilon"), f32(c.normEps)],
  ];
  if (c.headDim !== c.dim / c.nHeads) {
    md.push([k("attention.key_length"), u32(c.headDim)]);
    md.push([k("attention.value_length"), u32(c.headDim)]);
  }
  return [...md, ...extra];
}

type Storage = "F32" | "F16" | "BF16" | "Q8_0";

/** Random weights for every tensor of `c`, and their GGUF tensor specs stored as `storage`. */
function modelTensors(c: ModelConfig, rng: Rng, storage: Storage) {
  const weights = new Map<string, TensorData>();
  const specs: TensorSpec[] = [];
  for (const [name, shape] of tensorShapes(c)) {
    const data = rng.normals(shape.reduce((a, b) => a * b, 1), 0.5);
    const matrix = shape.length === 2;
    const dims = [...shape].reverse();
    const ggufName = hfToGgufTensorName(name)!;
    if (!matrix || storage === "F32") {
      weights.set(name, { dtype: "F32", shape, data });
      specs.push({ name: ggufName, dims, typeId: 0, data: f32Bytes(data) });
    } else if (storage === "Q8_0") {
      specs.push({
        name: ggufName,
        dims,
        typeId: 8,
        data: randomBytes(rng, (data.length / 32) * 34),
      });
    } else {
      const bits = storage === "F16" ? f32ArrayToF16(data) : f32ArrayToBf16(data);
      weights.set(name, { dtype: storage, shape, data: bits });
      specs.push({
        name: ggufName,
        dims,
        typeId: storage === "F16" ? 1 : 30,
        data: u16Bytes(bits),
      });
    }
  }
  return { weights, specs };
}

const BASE: ModelConfig = {
  architecture: "LlamaForCausalLM",
  dim: 64,
  hiddenDim: 96,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 300,
  maxSeqLen: 128,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropePairs: "interleaved",
  tiedEmbeddings: false,
  qkvBias: false,
};

/** A tiny SentencePiece vocabulary of `n` tokens: specials, 256 bytes, pieces with scores. */
function spmVocab(n: number): [string, GgufValue][] {
  const tokens = ["<unk>", "<s>", "</s>"];
  for (let b = 0; b < 256; b++) tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const pieces = ["▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "▁c", "ca"];
  for (let i = 0; tokens.length < n; i++) tokens.push(pieces[i] ?? `x${i}`);
  const types = tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1));
  const scores = tokens.map((_, i) => (i < 259 ? 0 : -(i - 259)));
  return [
    ["tokenizer.ggml.model", str("llama")],
    ["tokenizer.ggml.tokens", strings(tokens)],
    ["tokenizer.ggml.scores", {
      type: "array",
      elementType: "float32",
      value: Float32Array.from(scores),
    }],
    ["tokenizer.ggml.token_type", {
      type: "array",
      elementType: "int32",
      value: Int32Array.from(types),
    }],
    ["tokenizer.ggml.bos_token_id", u32(1)],
    ["tokenizer.ggml.eos_token_id", u32(2)],
    ["tokenizer.ggml.unknown_token_id", u32(0)],
    ["tokenizer.ggml.padding_token_id", u32(0xffffffff)],
  ];
}

Deno.test("gguf models: llama, qwen2 and qwen3 configs and tensors, in every float storage", async () => {
  const rng = seed("gguf models");
  const cases: { config: ModelConfig; storage: Storage; extra?: [string, GgufValue][] }[] = [
    { config: BASE, storage: "F32" },
    {
      config: {
        ...BASE,
        architecture: "Qwen2ForCausalLM",
        ropePairs: "half",
        qkvBias: true,
        tiedEmbeddings: true,
        normEps: 1e-6,
        ropeTheta: 1e6,
      },
      storage: "F16",
    },
    {
      config: {
        ...BASE,
        architecture: "Qwen3ForCausalLM",
        ropePairs: "half",
        qkNorm: true,
        headDim: 32,
        nKvHeads: 1,
        tiedEmbeddings: true,
      },
      storage: "BF16",
    },
  ];
  await withTemp(async (dir) => {
    for (const { config, storage } of cases) {
      const { weights, specs } = modelTensors(config, rng, storage);
      const path = join(dir, `${config.architecture}.gguf`);
      await Deno.writeFile(
        path,
        writeGguf({
          metadata: [...modelMetadata(config), ...spmVocab(config.vocabSize)],
          tensors: specs,
        }),
      );
      const model = await readGgufModel(path);
      assert.deepEqual(model.config, config);
      assert.deepEqual(model.quantized, []);
      assert.deepEqual([...model.tensors.keys()].sort(), [...tensorShapes(config).keys()].sort());
      const read = await ggufModelWeights(model);
      assert.equal(read.config, model.config);
      assert.deepEqual(read.tensors, weights);
      // loadModelFiles: the same weights, and the tokenizer from the metadata.
      const loaded = await loadModelFiles(path);
      assert.equal(loaded.format, "gguf");
      assert.deepEqual(loaded.weights.tensors, weights);
      assert.equal(loaded.gguf?.file, path);
      assert.deepEqual(loaded.tokenizer.encode("abc ab", { bos: true }), [1, 265, 262, 265]);
      assert.equal(loaded.tokenizer.decode([1, 265, 262, 265, 2]), "abc ab");
    }
  });
});

Deno.test("gguf models: rope_freqs become ropeFreqFactors; quantized models parse but refuse floats", async () => {
  const rng = seed("gguf rope_freqs");
  await withTemp(async (dir) => {
    const factors = Float32Array.from({ length: 8 }, (_, i) => 1 + i * i);
    const { specs } = modelTensors({ ...BASE, tiedEmbeddings: true }, rng, "Q8_0");
    specs.push({ name: "rope_freqs.weight", dims: [8], typeId: 0, data: f32Bytes(factors) });
    const path = join(dir, "llama3.gguf");
    await Deno.writeFile(
      path,
      writeGguf({
        metadata: [...modelMetadata(BASE), ...spmVocab(BASE.vocabSize)],
        tensors: specs,
      }),
    );
    const model = await readGgufModel(path);
    assert.deepEqual(model.config.ropeFreqFactors, factors);
    assert.equal(model.config.tiedEmbeddings, true);
    assert.equal(model.quantized.length, 7 * BASE.nLayers + 1);
    assert.equal(model.tensors.get("model.layers.1.mlp.down_proj.weight")?.type.name, "Q8_0");
    assert.deepEqual(model.tensors.get("model.layers.1.mlp.down_proj.weight")?.shape, [64, 96]);
    const embed = specs.find((s) => s.name === "token_embd.weight")!;
    assert.deepEqual(await model.tensors.get("model.embed_tokens.weight")!.read(), embed.data);
    await assert.rejects(ggufModelWeights(model), (e: unknown) => {
      return e instanceof QuantizedWeightsError && e.tensors.length === 15 &&
        /15 of 20 tensors are block-quantized \(Q8_0: model\.embed_tokens\.weight/.test(e.message);
    });
    const loaded = await loadModelFiles(path);
    assert.equal(loaded.config.vocabSize, BASE.vocabSize);
    assert.equal(loaded.tokenizer.vocabSize, BASE.vocabSize);
    assert.throws(() => loaded.weights, QuantizedWeightsError);
    // rope_freqs of the wrong length.
    specs[specs.length - 1] = {
      name: "rope_freqs.weight",
      dims: [4],
      typeId: 0,
      data: f32Bytes(factors.subarray(0, 4)),
    };
    await Deno.writeFile(path, writeGguf({ metadata: modelMetadata(BASE), tensors: specs }));
    await assert.rejects(readGgufModel(path), TensorShapeMismatchError);
  });
});

Deno.test("gguf models: typed errors for unknown architectures, missing keys and tensors, extras", async () => {
  const rng = seed("gguf model errors");
  await withTemp(async (dir) => {
    const { specs } = modelTensors(BASE, rng, "F32");
    const path = join(dir, "m.gguf");
    const check = async (
      metadata: [string, GgufValue][],
      tensors: TensorSpec[],
      type: new (...args: any[]) => Error,
      pattern: RegExp,
    ) => {
      await Deno.writeFile(path, writeGguf({ metadata, tensors }));
      await assert.rejects(readGgufModel(path), (e: unknown) => {
        assert.ok(e instanceof type, `expected ${type.name}, got ${e}`);
        assert.match((e as Error).message, pattern);
        return true;
      });
    };
    const md = modelMetadata(BASE);
    const without = (key: string) => md.filter(([k]) => k !== key);
    const replaced = (key: string, v: GgufValue) =>
      md.map(([k, x]): [string, GgufValue] => [k, k === key ? v : x]);
    await check(
      replaced("general.architecture", str("mamba")),
      specs,
      UnsupportedArchitectureError,
      /"mamba" is not supported; supported: llama, qwen2, qwen3/,
    );
    await check(
      without("general.architecture"),
      specs,
      MissingMetadataError,
      /general\.architecture/,
    );
    for (
      const key of [
        "llama.embedding_length",
        "llama.block_count",
        "llama.context_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.layer_norm_rms_epsilon",
      ]
    ) {
      await check(
        without(key),
        specs,
        MissingMetadataError,
        new RegExp(`missing metadata key ${key.replaceAll(".", "\\.")}`),
      );
    }
    await check(
      replaced("llama.block_count", str("two")),
      specs,
      CorruptHeaderError,
      /llama\.block_count is string/,
    );
    await check(
      replaced("llama.attention.head_count_kv", u32(3)),
      specs,
      InvalidConfigError,
      /nHeads \(4\) is not a multiple of nKvHeads \(3\)/,
    );
    await check(
      replaced("llama.attention.head_count", u32(5)),
      specs,
      InvalidConfigError,
      /embedding_length 64 is not a multiple of head_count 5/,
    );
    await check(
      [...md, ["llama.vocab_size", u32(301)]],
      specs,
      InvalidConfigError,
      /vocab_size = 301 but token_embd\.weight has 300 rows/,
    );
    await check(
      [...md, ["llama.rope.scaling.type", str("yarn")]],
      specs,
      UnsupportedFeatureError,
      /rope\.scaling\.type "yarn"/,
    );
    await check(
      [...md, ["llama.expert_count", u32(8)]],
      specs,
      UnsupportedFeatureError,
      /8 experts/,
    );
    await check(
      replaced("llama.rope.dimension_count", u32(8)),
      specs,
      UnsupportedFeatureError,
      /rotates part of a head/,
    );
    await check(
      md,
      specs.filter((s) => s.name !== "blk.1.ffn_up.weight"),
      MissingTensorError,
      /missing tensor blk\.1\.ffn_up\.weight/,
    );
    await check(
      md,
      specs.filter((s) => s.name !== "token_embd.weight"),
      MissingTensorError,
      /token_embd\.weight/,
    );
    const wrongShape = specs.map((s) =>
      s.name === "blk.0.attn_k.weight"
        ? { ...s, dims: [32, 64], data: new Uint8Array(32 * 64 * 4) }
        : s
    );
    await check(
      md,
      wrongShape,
      TensorShapeMismatchError,
      /blk\.0\.attn_k\.weight has shape \[64,32\] but the config implies \[32,64\]/,
    );
    const extra = [...specs, {
      name: "blk.0.attn_output.bias",
      dims: [64],
      typeId: 0,
      data: new Uint8Array(256),
    }];
    await check(
      md,
      extra,
      UnsupportedFeatureError,
      /tensor blk\.0\.attn_output\.bias is not part of a LlamaForCausalLM/,
    );
    await check(
      md,
      [...specs, {
        name: "blk.2.attn_q.weight",
        dims: [64, 64],
        typeId: 0,
        data: new Uint8Array(64 * 64 * 4),
      }],
      UnsupportedFeatureError,
      /blk\.2\.attn_q\.weight/,
    );
    // A qwen2 file without its biases.
    const qwen = { ...BASE, architecture: "Qwen2ForCausalLM", ropePairs: "half" as const };
    await check(modelMetadata(qwen), specs, MissingTensorError, /blk\.0\.attn_q\.bias/);
  });
});
