import assert from "node:assert/strict";
import {
  assertClose,
  gpuTest,
  POISON_BITS,
  poisoned,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { KernelUsageError } from "../src/gpu/errors.ts";
import { readF32 } from "../src/gpu/readback.ts";
import { EmbeddingOp } from "../src/ops/embedding.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { embeddingBackward, embeddingForward } from "../src/reference/embedding.ts";
import type { Rng } from "../src/core/random.ts";
import { dot, finiteDifferences } from "../src/reference/finite_difference.ts";

/** Ids over [0, vocab), with a few past the end (clamped by the kernel). */
function randomIds(rng: Rng, n: number, vocab: number): Uint32Array {
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rng.next();
    ids[i] = r < 0.05 ? vocab + rng.int(1000) : r < 0.07 ? 0xffffffff : rng.int(vocab);
  }
  return ids;
}

gpuTest("embedding forward gathers rows, clamps bad ids, honours the ids offset", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("embedding forward");
  const op = await EmbeddingOp.create(registry);
  for (const [vocab, dim, tokens, offset] of [[512, 64, 1, 0], [45, 172, 37, 5], [7, 4, 300, 3]]) {
    const what = `embedding forward vocab=${vocab} dim=${dim} tokens=${tokens} offset=${offset}`;
    const tableData = rng.normals(vocab * dim);
    const idsData = randomIds(rng, offset + tokens + 2, vocab);
    const table = uploadTensor(gpu, tableData, [vocab, dim]);
    const ids = uploadTensor(gpu, idsData, [idsData.length]);
    const out = poisoned(gpu, [tokens, dim]);
    op.recordForward(recorder, table, ids, out, offset);
    recorder.submit();
    const ref = embeddingForward(tableData, vocab, dim, idsData, tokens, offset);
    assertClose(await readWritten(gpu, out, what), ref, what, 1e-12);
    for (const t of [table, ids, out]) t.destroy();
  }
});

gpuTest("embedding backward scatter-adds repeated ids without atomics", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("embedding backward");
  const op = await EmbeddingOp.create(registry);
  const cases = [[13, 172, 150, 2], [45, 280, 37, 0], [512, 64, 1, 9], [70, 4, 65, 1]];
  for (const [vocab, dim, tokens, offset] of cases) {
    for (const accumulate of [false, true]) {
      const what = `embedding backward vocab=${vocab} dim=${dim} tokens=${tokens}` +
        ` offset=${offset} accumulate=${accumulate}`;
      const dOutData = rng.normals(tokens * dim);
      const idsData = randomIds(rng, offset + tokens, vocab);
      const dOut = uploadTensor(gpu, dOutData, [tokens, dim]);
      const ids = uploadTensor(gpu, idsData, [idsData.length]);
      const before = rng.normals(vocab * dim);
      const dTable = accumulate
        ? uploadTensor(gpu, before, [vocab, dim])
        : poisoned(gpu, [vocab, dim]);
      op.recordBackward(recorder, dOut, ids, dTable, { offset, accumulate });
      recorder.submit();
      const ref = embeddingBackward(dOutData, vocab, dim, idsData, tokens, offset);
      if (accumulate) { for (let i = 0; i < ref.length; i++) ref[i] += before[i]; }
      assertClose(await readWritten(gpu, dTable, what), ref, what);
      for (const t of [dOut, ids, dTable]) t.destroy();
    }
  }
});

Deno.test("embedding backward twin matches finite differences of the forward twin", () => {
  const rng = seededRng("embedding finite differences");
  const [vocab, dim, tokens, offset] = [6, 4, 9, 2];
  const table = Float64Array.from(rng.normals(vocab * dim));
  const ids = randomIds(rng, offset + tokens, vocab);
  const w = rng.normals(tokens * dim);
  const loss = (t: Float64Array) => dot(w, embeddingForward(t, vocab, dim, ids, tokens, offset));
  const numeric = finiteDifferences(loss, table);
  assertClose(embeddingBackward(w, vocab, dim, ids, tokens, offset), numeric, "embedding fd", 1e-7);
});

gpuTest("embedding op rejects ids that run past the buffer", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const op = await EmbeddingOp.create(registry);
  const table = uploadTensor(gpu, new Float32Array(8), [2, 4]);
  const ids = uploadTensor(gpu, new Uint32Array(3), [3]);
  const out = poisoned(gpu, [2, 4]);
  let threw = false;
  try {
    op.recordForward(recorder, table, ids, out, 2);
  } catch {
    threw = true;
  }
  for (const t of [table, ids, out]) t.destroy();
  if (!threw) throw new Error("offset past the ids was accepted");
});

gpuTest("embedding forward over a table split by rows: each part writes its tokens", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("embedding parts");
  const op = await EmbeddingOp.create(registry);
  // [vocab, dim, tokens, offset, part sizes]: uneven last parts, one part of one row.
  const cases: [number, number, number, number, number[]][] = [
    [150, 8, 90, 3, [64, 64, 22]],
    [45, 12, 37, 0, [1, 40, 4]],
  ];
  for (const [vocab, dim, tokens, offset, sizes] of cases) {
    const what = `embedding parts vocab=${vocab} dim=${dim} parts=${sizes}`;
    const tableData = rng.normals(vocab * dim);
    const idsData = randomIds(rng, offset + tokens, vocab);
    const ids = uploadTensor(gpu, idsData, [idsData.length]);
    const out = poisoned(gpu, [tokens, dim]);
    const tables = [];
    let first = 0;
    for (const rows of sizes) {
      const part = uploadTensor(gpu, tableData.subarray(first * dim, (first + rows) * dim), [
        rows,
        dim,
      ]);
      op.recordForward(recorder, part, ids, out, offset, { first, vocab });
      tables.push(part);
      first += rows;
    }
    recorder.submit();
    const ref = embeddingForward(tableData, vocab, dim, idsData, tokens, offset);
    assertClose(await readWritten(gpu, out, what), ref, what, 1e-12);
    // One part alone leaves the other tokens' rows as they were.
    const alone = poisoned(gpu, [tokens, dim]);
    op.recordForward(recorder, tables[1], ids, alone, offset, { first: sizes[0], vocab });
    recorder.submit();
    const words = new Uint32Array((await readF32(gpu, alone)).buffer);
    for (let t = 0; t < tokens; t++) {
      const row = Math.min(idsData[offset + t], vocab - 1);
      const mine = row >= sizes[0] && row < sizes[0] + sizes[1];
      const poisonedRow = words.subarray(t * dim, (t + 1) * dim).every((w) => w === POISON_BITS);
      if (mine === poisonedRow) throw new Error(`${what}: token ${t} (row ${row}) in part 1 alone`);
    }
    for (const t of [...tables, ids, out, alone]) t.destroy();
  }
  const table = uploadTensor(gpu, new Float32Array(8), [2, 4]);
  const ids = uploadTensor(gpu, new Uint32Array(1), [1]);
  const out = poisoned(gpu, [1, 4]);
  assert.throws(
    () => op.recordForward(recorder, table, ids, out, 0, { first: 5, vocab: 6 }),
    KernelUsageError,
  );
  for (const t of [table, ids, out]) t.destroy();
});
