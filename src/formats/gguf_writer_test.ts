import assert from "node:assert/strict";
import { join } from "node:path";
import { GGML_TYPES } from "../core/quant.ts";
import { seededRng } from "../../kernels_test/helpers.ts";
import { sharedDataTest, sharedPath } from "../../kernels_test/test_data.ts";
import { type GgufValue, readGguf } from "./gguf.ts";
import {
  ggmlTensorBytes,
  ggufHeader,
  type GgufStreamTensor,
  type GgufTensorSpec,
  writeGguf,
  writeGgufFile,
} from "./gguf_writer.ts";

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "templora_gguf_writer_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const FIXTURES = [
  "stories260K-f32.gguf",
  "stories260K-f16.gguf",
  "stories260K-q8_0.gguf",
  "stories260K-q4_0.gguf",
  "tiny-llama-spm-q4_k_m.gguf",
  "tiny-llama-spm-q5_k_m.gguf",
  "tiny-llama3-bpe-q8_0.gguf",
  "tiny-qwen2-q8_0.gguf",
  "tiny-qwen3-q8_0.gguf",
];

sharedDataTest({
  name: "gguf writer: every llama.cpp-written fixture, read and written back, is the same file",
  needs: FIXTURES.map((f) => `models/gguf/${f}`),
  async fn() {
    await withTemp(async (dir) => {
      for (const name of FIXTURES) {
        const path = sharedPath(`models/gguf/${name}`);
        const g = await readGguf(path);
        const out = join(dir, name);
        const size = await writeGgufFile(out, {
          version: g.version,
          alignment: g.alignment,
          metadata: [...g.metadata],
          tensors: [...g.tensors.values()].map((t) => ({
            name: t.name,
            dims: t.dims,
            typeId: t.typeId,
            byteLength: t.byteLength,
            data: () => g.readTensorBytes(t.name),
          })),
        });
        const [want, got] = [await Deno.readFile(path), await Deno.readFile(out)];
        assert.equal(size, want.length, name);
        assert.ok(got.every((b, i) => b === want[i]), `${name}: the bytes differ`);
      }
    });
  },
});

/** Random tensors of every supported type (whole blocks), some dims of one and four dims. */
function randomTensors(seed: string): GgufTensorSpec[] {
  const rng = seededRng(seed);
  const tensors: GgufTensorSpec[] = [];
  for (const type of Object.values(GGML_TYPES)) {
    const dims = [type.blockElems * (1 + rng.int(3)), 1 + rng.int(3)];
    if (rng.next() < 0.5) dims.push(1, 1 + rng.int(2));
    const data = new Uint8Array(ggmlTensorBytes(type, dims));
    for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
    tensors.push({ name: `t.${type.name}`, dims, typeId: type.id, data });
  }
  return tensors;
}

Deno.test("gguf writer: a streamed file equals the one built in memory, and reads back", async () => {
  await withTemp(async (dir) => {
    for (const alignment of [32, 64, 256]) {
      const tensors = randomTensors(`gguf writer, alignment ${alignment}`);
      const metadata: [string, GgufValue][] = [
        ["general.architecture", { type: "string", value: "llama" }],
        ["general.alignment", { type: "uint32", value: alignment }],
        ["x.scores", { type: "array", elementType: "float32", value: Float32Array.of(-1.5, 2) }],
        ["x.names", { type: "array", elementType: "string", value: ["▁a", "<0x0A>", ""] }],
      ];
      const bytes = writeGguf({ metadata, tensors, alignment });
      assert.equal(bytes.length % alignment, 0, "padded to the alignment at the end");
      let asked = 0;
      const streamed: GgufStreamTensor[] = tensors.map((t) => ({
        ...t,
        byteLength: t.data.length,
        data: () => (asked++, Promise.resolve(t.data)),
      }));
      const path = join(dir, `a${alignment}.gguf`);
      assert.equal(
        await writeGgufFile(path, { metadata, tensors: streamed, alignment }),
        bytes.length,
      );
      assert.equal(asked, tensors.length, "each tensor's bytes asked for once");
      assert.deepEqual(await Deno.readFile(path), bytes);
      const g = await readGguf(path);
      assert.equal(g.alignment, alignment);
      for (const [key, value] of metadata) assert.deepEqual(g.metadata.get(key), value, key);
      for (const t of tensors) {
        const info = g.tensor(t.name);
        assert.deepEqual(info.dims, t.dims, t.name);
        assert.equal(info.typeId, t.typeId, t.name);
        assert.equal(info.fileOffset % alignment, 0, `${t.name} aligned`);
        assert.deepEqual(await g.readTensorBytes(t.name), t.data, t.name);
      }
    }
  });
});

Deno.test("gguf writer: a tensor of the wrong size or out of order leaves no file behind", async () => {
  await withTemp(async (dir) => {
    const path = join(dir, "bad.gguf");
    const short = {
      name: "w",
      dims: [4],
      typeId: 0,
      byteLength: 16,
      data: () => new Uint8Array(12),
    };
    await assert.rejects(writeGgufFile(path, { tensors: [short] }), /gave 12 bytes, 16 announced/);
    const a = { ...short, data: () => new Uint8Array(16) };
    const b = { ...a, name: "v", offset: 0 } as GgufStreamTensor;
    await assert.rejects(writeGgufFile(path, { tensors: [a, b] }), /tensor v overlaps/);
    assert.deepEqual([...Deno.readDirSync(dir)], [], "neither the file nor its .partial");
  });
});

Deno.test("gguf writer: tensor sizes come from the block layouts", () => {
  assert.equal(ggmlTensorBytes(GGML_TYPES.F32, [576, 1536]), 576 * 1536 * 4);
  assert.equal(ggmlTensorBytes(GGML_TYPES.F16, [576]), 1152);
  assert.equal(ggmlTensorBytes(GGML_TYPES.Q8_0, [576, 3]), 3 * 18 * 34);
  assert.equal(ggmlTensorBytes(GGML_TYPES.Q5_0, [576, 2]), 2 * 18 * 22);
  assert.equal(ggmlTensorBytes(GGML_TYPES.Q4_K, [1536, 576]), 576 * 6 * 144);
  assert.equal(ggmlTensorBytes(GGML_TYPES.Q6_K, [256, 1, 2]), 2 * 210);
  assert.throws(() => ggmlTensorBytes(GGML_TYPES.Q4_K, [576, 2]), RangeError);
  // The header of a file without tensors ends where its metadata ends, padded.
  const { header, dataStart } = ggufHeader({ metadata: [["k", { type: "bool", value: true }]] });
  assert.equal(dataStart % 32, 0);
  assert.equal(header.length, dataStart);
});
