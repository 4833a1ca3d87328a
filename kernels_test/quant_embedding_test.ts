import assert from "node:assert/strict";
import { gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { haveFixtures, readFixture } from "./quant_fixtures.ts";
import { QuantEmbeddingOp } from "../src/ops/quant_embedding.ts";
import { quantMatrix, uploadQuantMatrix } from "../src/ops/quant_weight.ts";
import { createTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { KernelUsageError, ShapeError } from "../src/gpu/errors.ts";
import { GGML_QUANT_TYPES, GGML_TYPES, type GgmlQuantType } from "../src/core/quant.ts";
import { dequantizeRow, quantizeRandom, rowBytes } from "../src/reference/quant.ts";
import type { Rng } from "../src/core/random.ts";

/** Ids over [0, vocab), with a few past the end (clamped by the kernel). */
function randomIds(rng: Rng, n: number, vocab: number): Uint32Array {
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rng.next();
    ids[i] = r < 0.05 ? vocab + rng.int(1000) : r < 0.07 ? 0xffffffff : rng.int(vocab);
  }
  return ids;
}

/**
 * Every gathered value against the twin's row, element by element: the kernel rounds a * code
 * (+ c) to f32 once, so each value is within 2^-23 of the exact one, relatively (edge scales,
 * subnormal float16 included).
 */
function checkRows(
  out: Float32Array,
  type: GgmlQuantType,
  bytes: Uint8Array,
  vocab: number,
  dim: number,
  ids: Uint32Array,
  offset: number,
  what: string,
): void {
  const stride = rowBytes(type, dim);
  const tokens = out.length / dim;
  for (let t = 0; t < tokens; t++) {
    const row = Math.min(ids[offset + t], vocab - 1);
    const ref = dequantizeRow(type, bytes, dim, row * stride);
    for (let c = 0; c < dim; c++) {
      const got = out[t * dim + c];
      if (!(Math.abs(got - ref[c]) <= 2 ** -23 * Math.abs(ref[c]))) {
        throw new Error(`${what}: token ${t} (row ${row}) value ${c} is ${got}, want ${ref[c]}`);
      }
    }
  }
}

gpuTest("quant_embedding.wgsl gathers dequantized rows of every type, value by value", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("quant embedding");
  const op = await QuantEmbeddingOp.create(registry);
  for (const type of GGML_QUANT_TYPES) {
    const qk = GGML_TYPES[type].blockElems;
    const cases: [number, number, number, number][] = [
      [1, qk, 1, 0],
      [45, 3 * qk, 37, 5],
      [7, qk, 300, 3],
    ];
    for (const [vocab, dim, tokens, offset] of cases) {
      for (const blocks of [{ edgeFraction: 0.3 }, { fill: "ramp" as const }]) {
        const what = `quant embedding ${type} vocab=${vocab} dim=${dim} tokens=${tokens} ` +
          JSON.stringify(blocks);
        const bytes = quantizeRandom(type, rng, vocab, dim, blocks);
        const table = uploadQuantMatrix(gpu, bytes, type, vocab, dim);
        const idsData = randomIds(rng, offset + tokens + 2, vocab);
        const ids = uploadTensor(gpu, idsData, [idsData.length]);
        const out = poisoned(gpu, [tokens, dim]);
        op.recordForward(recorder, table, ids, out, offset);
        recorder.submit();
        const values = await readWritten(gpu, out, what);
        checkRows(values, type, bytes, vocab, dim, idsData, offset, what);
        for (const t of [table.data, ids, out]) t.destroy();
      }
    }
  }
});

gpuTest("quant embedding reads the fixtures' tied Q6_K and Q8_0 tables", async () => {
  if (!haveFixtures()) return console.log("  skipped: no GGUF fixtures in ../shared");
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("quant embedding fixtures");
  const op = await QuantEmbeddingOp.create(registry, { types: ["Q6_K", "Q8_0"] });
  const sources: [string, string][] = [
    ["tiny-llama-spm-q4_k_m.gguf", "token_embd.weight"],
    ["stories260K-q4_0.gguf", "output.weight"],
  ];
  for (const [file, name] of sources) {
    const t = (await readFixture(file)).get(name)!;
    const type = t.type as GgmlQuantType;
    const [dim, vocab] = t.dims;
    const table = uploadQuantMatrix(gpu, t.bytes, type, vocab, dim);
    const idsData = randomIds(rng, 64, vocab);
    const ids = uploadTensor(gpu, idsData, [64]);
    const out = poisoned(gpu, [64, dim]);
    op.recordForward(recorder, table, ids, out);
    recorder.submit();
    const what = `${file} ${name} (${type} [${vocab}, ${dim}])`;
    checkRows(await readWritten(gpu, out, what), type, t.bytes, vocab, dim, idsData, 0, what);
    for (const x of [table.data, ids, out]) x.destroy();
  }
});

gpuTest(
  "quant embedding rejects bad shapes, id ranges and types it was not compiled for",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const op = await QuantEmbeddingOp.create(registry, { types: ["Q8_0"] });
    const data = createTensor(gpu, [Math.ceil((3 * 2 * 34) / 4)], "u32");
    const table = quantMatrix(data, "Q8_0", 3, 64);
    const ids = uploadTensor(gpu, new Uint32Array([0, 1, 2]), [3]);
    assert.throws(
      () => op.recordForward(recorder, table, ids, createTensor(gpu, [2, 32])),
      ShapeError,
    );
    const out = createTensor(gpu, [2, 64]);
    assert.throws(() => op.recordForward(recorder, table, ids, out, 2), KernelUsageError);
    const q4 = quantMatrix(data, "Q4_0", 3, 64);
    assert.throws(() => op.recordForward(recorder, q4, ids, out), KernelUsageError);
    for (const t of [data, ids, out]) t.destroy();
  },
);

gpuTest("quant embedding over a table split by rows: each part writes its tokens", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("quant embedding parts");
  const types: GgmlQuantType[] = ["Q8_0", "Q4_K", "Q6_K"];
  const op = await QuantEmbeddingOp.create(registry, { types });
  const [vocab, tokens, offset, sizes] = [150, 90, 2, [64, 64, 22]];
  for (const type of types) {
    const dim = 2 * GGML_TYPES[type].blockElems;
    const what = `quant embedding parts ${type} vocab=${vocab} parts=${sizes}`;
    const bytes = quantizeRandom(type, rng, vocab, dim, { edgeFraction: 0.3 });
    const stride = rowBytes(type, dim);
    const idsData = randomIds(rng, offset + tokens, vocab);
    const ids = uploadTensor(gpu, idsData, [idsData.length]);
    const out = poisoned(gpu, [tokens, dim]);
    const tables = [];
    let first = 0;
    for (const rows of sizes) {
      const part = bytes.subarray(first * stride, (first + rows) * stride);
      const table = uploadQuantMatrix(gpu, part, type, rows, dim);
      op.recordForward(recorder, table, ids, out, offset, { first, vocab });
      tables.push(table.data);
      first += rows;
    }
    recorder.submit();
    const values = await readWritten(gpu, out, what);
    checkRows(values, type, bytes, vocab, dim, idsData, offset, what);
    for (const t of [...tables, ids, out]) t.destroy();
  }
});
