import assert from "node:assert/strict";
import { BATCH_TARGET_MS, MAX_STEP_GROWTH, nextBatch } from "./decode_loop.ts";

Deno.test("nextBatch doubles quick full batches up to its cap, and keeps the rest", () => {
  const quick = BATCH_TARGET_MS / 2, slow = BATCH_TARGET_MS * 2;
  assert.equal(nextBatch(8, 8, quick, 8), 16);
  assert.equal(nextBatch(16, 16, quick, 8), 32);
  // The cap: MAX_STEP_GROWTH times the first batch.
  assert.equal(nextBatch(8 * MAX_STEP_GROWTH, 8 * MAX_STEP_GROWTH, quick, 8), 8 * MAX_STEP_GROWTH);
  assert.equal(
    nextBatch(8 * MAX_STEP_GROWTH / 2 + 8, 8 * MAX_STEP_GROWTH / 2 + 8, quick, 8),
    8 * MAX_STEP_GROWTH,
  );
  // A slow batch, or a short one (the end of a chunk or of the cache), decides nothing.
  assert.equal(nextBatch(16, 16, slow, 8), 16);
  assert.equal(nextBatch(16, 5, quick, 8), 16);
  assert.equal(nextBatch(1, 1, quick, 1), 2);
});
