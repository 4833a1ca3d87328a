import assert from "node:assert/strict";
import { join } from "node:path";
import { Rng } from "../core/random.ts";
import {
  CorruptHeaderError,
  MissingTensorError,
  ModelFileNotFoundError,
  TruncatedFileError,
  UnsupportedDtypeError,
} from "./errors.ts";
import { parseSafetensors, readSafetensors, writeSafetensors } from "./safetensors.ts";
import { readSafetensorsFolder } from "./safetensors_folder.ts";
import { f32ArrayToBf16, f32ArrayToF16, type TensorData } from "./tensor_data.ts";

function seed(): Rng {
  const s = (Math.random() * 2 ** 31) >>> 0;
  console.log(`seed ${s}`);
  return new Rng(s);
}

function sample(rng: Rng): Map<string, TensorData> {
  const a = rng.normals(3 * 5);
  const b = rng.normals(7);
  const c = rng.normals(2 * 3 * 2);
  return new Map<string, TensorData>([
    ["odd.f16", { dtype: "F16", shape: [7], data: f32ArrayToF16(b) }],
    ["a.weight", { dtype: "F32", shape: [3, 5], data: a }],
    ["c.bf16", { dtype: "BF16", shape: [2, 3, 2], data: f32ArrayToBf16(c) }],
    ["scalar", { dtype: "F32", shape: [], data: new Float32Array([42]) }],
    ["empty", { dtype: "F32", shape: [0, 4], data: new Float32Array(0) }],
  ]);
}

/** A safetensors file with a hand-written header and `dataBytes` bytes of data. */
function rawFile(header: unknown, dataBytes: number, headerLen?: bigint): Uint8Array {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, headerLen ?? BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

Deno.test("safetensors: write then read returns every tensor exactly", () => {
  const tensors = sample(seed());
  const bytes = writeSafetensors(tensors, { format: "pt" });
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(headerLen % 8, 0);
  const f = parseSafetensors(bytes, "rt.safetensors");
  assert.deepEqual(f.metadata, { format: "pt" });
  assert.deepEqual(f.names().sort(), [...tensors.keys()].sort());
  // No holes: the data section is exactly the tensors back to back.
  const spans = [...f.entries.values()].sort((x, y) => x.begin - y.begin);
  let at = 8 + headerLen;
  for (const e of spans) {
    assert.equal(e.begin, at);
    assert.equal(e.begin % (e.dtype === "F32" ? 4 : 2), 0);
    at = e.end;
  }
  assert.equal(at, bytes.length);
  for (const [name, t] of tensors) {
    const back = f.raw(name);
    assert.equal(back.dtype, t.dtype);
    assert.deepEqual(back.shape, t.shape);
    assert.deepEqual([...back.data], [...t.data], name);
  }
  // Views, not copies, when aligned.
  assert.equal(f.raw("a.weight").data.buffer, bytes.buffer);
  const f16 = f.f32("odd.f16");
  assert.deepEqual(f16, new Float32Array(new Float16Array(tensors.get("odd.f16")!.data.buffer)));
  assert.throws(() => f.raw("nope"), MissingTensorError);
});

Deno.test("safetensors: an unaligned buffer still reads correctly", () => {
  const tensors = sample(seed());
  const bytes = writeSafetensors(tensors);
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  const f = parseSafetensors(shifted.subarray(1), "shift.safetensors");
  for (const [name, t] of tensors) assert.deepEqual([...f.raw(name).data], [...t.data], name);
});

Deno.test("safetensors: lying headers get typed errors naming the file", () => {
  const F = "bad.safetensors";
  const entry = (dtype: string, shape: number[], offsets: number[]) => ({
    dtype,
    shape,
    data_offsets: offsets,
  });
  const expectError = (
    bytes: Uint8Array,
    type: new (...args: any[]) => Error,
    pattern: RegExp,
  ) =>
    assert.throws(() => parseSafetensors(bytes, F), (e: unknown) => {
      assert.ok(e instanceof type, `expected ${type.name}, got ${e}`);
      assert.ok(e.message.startsWith(`${F}: `), e.message);
      assert.match(e.message, pattern);
      return true;
    });

  expectError(new Uint8Array(5), TruncatedFileError, /truncated/);
  expectError(rawFile({}, 0, 1n << 40n), CorruptHeaderError, /absurd/);
  expectError(rawFile({}, 0, 1000n), CorruptHeaderError, /exceeds the file/);
  expectError(rawFile("{not json", 0), CorruptHeaderError, /not valid JSON/);
  expectError(rawFile("[1, 2]", 0), CorruptHeaderError, /not a JSON object/);
  expectError(rawFile({ a: entry("F32", [2], [0, 8]) }, 4), TruncatedFileError, /4 missing/);
  expectError(rawFile({ a: entry("F32", [3], [0, 8]) }, 8), CorruptHeaderError, /needs 12/);
  expectError(rawFile({ a: entry("F32", [2], [8, 0]) }, 8), CorruptHeaderError, /end before/);
  expectError(rawFile({ a: entry("F32", [2], [0]) }, 8), CorruptHeaderError, /data_offsets/);
  expectError(rawFile({ a: entry("F32", [-2], [0, 8]) }, 8), CorruptHeaderError, /shape/);
  expectError(rawFile({ a: entry("F32", [1.5], [0, 8]) }, 8), CorruptHeaderError, /shape/);
  expectError(
    rawFile({ a: entry("F32", [2], [0, 8]), b: entry("F32", [2], [4, 12]) }, 12),
    CorruptHeaderError,
    /overlap/,
  );
  expectError(
    rawFile({ a: entry("F32", [4], [0, 16]), b: entry("F16", [2], [4, 8]) }, 16),
    CorruptHeaderError,
    /overlap/,
  );
  expectError(rawFile({ a: entry("Q4_K", [2], [0, 8]) }, 8), UnsupportedDtypeError, /Q4_K/);
  expectError(rawFile({ a: { shape: [2], data_offsets: [0, 8] } }, 8), CorruptHeaderError, /dtype/);
  expectError(
    rawFile({ __metadata__: [1], a: entry("F32", [0], [0, 0]) }, 0),
    CorruptHeaderError,
    /metadata/,
  );

  // Known but unreadable dtypes parse; reading them says which dtypes are readable.
  const f = parseSafetensors(rawFile({ ids: entry("I64", [2], [0, 16]) }, 16), F);
  assert.throws(() => f.raw("ids"), (e: unknown) => {
    return e instanceof UnsupportedDtypeError && /I64.*F32, F16, BF16/.test(e.message);
  });
  // A file cut short after a valid header.
  const good = writeSafetensors(sample(seed()));
  assert.throws(() => parseSafetensors(good.subarray(0, good.length - 3), F), TruncatedFileError);
});

Deno.test("safetensors: folders, single and sharded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "templora_st_" });
  try {
    const tensors = sample(seed());
    const names = [...tensors.keys()];
    const shard1 = new Map(names.slice(0, 2).map((n) => [n, tensors.get(n)!]));
    const shard2 = new Map(names.slice(2).map((n) => [n, tensors.get(n)!]));
    await Deno.writeFile(join(dir, "model-00001-of-00002.safetensors"), writeSafetensors(shard1));
    await Deno.writeFile(join(dir, "model-00002-of-00002.safetensors"), writeSafetensors(shard2));
    await assert.rejects(readSafetensorsFolder(dir), ModelFileNotFoundError);

    const weightMap: Record<string, string> = {};
    for (const n of shard1.keys()) weightMap[n] = "model-00001-of-00002.safetensors";
    for (const n of shard2.keys()) weightMap[n] = "model-00002-of-00002.safetensors";
    const indexPath = join(dir, "model.safetensors.index.json");
    await Deno.writeTextFile(indexPath, JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const set = await readSafetensorsFolder(dir);
    assert.deepEqual(set.names().sort(), names.sort());
    for (const [name, t] of tensors) assert.deepEqual([...set.raw(name).data], [...t.data]);
    assert.match(set.entry("scalar").file, /00002/);
    assert.throws(() => set.raw("missing.weight"), MissingTensorError);

    // The index names a tensor its shard lacks.
    await Deno.writeTextFile(
      indexPath,
      JSON.stringify({ weight_map: { ...weightMap, ghost: "model-00001-of-00002.safetensors" } }),
    );
    await assert.rejects(readSafetensorsFolder(dir), (e: unknown) => {
      return e instanceof MissingTensorError && /ghost/.test(e.message) && /00001/.test(e.message);
    });
    // The index names a shard that is not there.
    await Deno.writeTextFile(indexPath, JSON.stringify({ weight_map: { a: "gone.safetensors" } }));
    await assert.rejects(readSafetensorsFolder(dir), ModelFileNotFoundError);
    await Deno.writeTextFile(indexPath, "{ broken");
    await assert.rejects(readSafetensorsFolder(dir), CorruptHeaderError);
    await Deno.writeTextFile(indexPath, JSON.stringify({ weights: {} }));
    await assert.rejects(readSafetensorsFolder(dir), /weight_map/);

    // A single model.safetensors.
    await Deno.remove(indexPath);
    await Deno.writeFile(join(dir, "model.safetensors"), writeSafetensors(tensors));
    const single = await readSafetensorsFolder(dir);
    assert.equal(single.names().length, names.length);
    assert.deepEqual((await readSafetensors(join(dir, "model.safetensors"))).names().length, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
