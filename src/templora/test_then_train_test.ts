import assert from "node:assert/strict";
import { gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { TextModel } from "../model/text_model.ts";
import { resolveTempLoraSettings } from "./settings.ts";
import { TestThenTrain, windowTokens } from "./test_then_train.ts";

Deno.test("windowTokens: the budget before the span, sinks in front once it slides", () => {
  const ids = Array.from({ length: 40 }, (_, i) => 100 + i);
  // Without sinks, or while the budget still reaches the start: a plain slice.
  assert.deepEqual(windowTokens(ids, 30, 34, 8).positions, [
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
  ]);
  assert.deepEqual(windowTokens(ids, 6, 8, 8, 3).positions, [0, 1, 2, 3, 4, 5, 6, 7]);
  // With 3 sinks the window holds the same number of tokens: 0..2, then the 5 most recent.
  const w = windowTokens(ids, 30, 34, 8, 3);
  assert.deepEqual(w.positions, [0, 1, 2, 25, 26, 27, 28, 29, 30, 31, 32, 33]);
  assert.deepEqual(w.tokens, w.positions.map((p) => ids[p]));
  // Just past the point where the budget stops reaching the start: no token is repeated.
  assert.deepEqual(windowTokens(ids, 9, 10, 8, 3).positions, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
  // An empty span (a query's context) and a zero budget.
  assert.deepEqual(windowTokens(ids, 20, 20, 4, 1).positions, [0, 17, 18, 19]);
  assert.deepEqual(windowTokens(ids, 20, 22, 0, 2).positions, [20, 21]);
  assert.throws(() => windowTokens(ids, 30, 41, 8), /window over/);
});

gpuTest("Trainer.score: a loss mask, an index, and greedy predictions agree", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const settings = resolveTempLoraSettings(lm.config, { window: 64, chunk: 16 });
  const rng = seededRng("loss masks");
  const prompt = lm.encode("Once upon a time, there was a");
  const greedy = await lm.complete(prompt, { maxTokens: 12, temperature: 0 });
  const tokens = [...prompt, ...greedy.tokens];
  const walk = await TestThenTrain.create(lm, tokens, settings);
  try {
    const from = prompt.length;
    const byIndex = await walk.score(tokens, from, false, { predictions: true });
    const flags = tokens.map((_, i) => i >= from);
    const byMask = await walk.score(tokens, flags, false);
    assert.equal(byMask.lossSum, byIndex.lossSum, "the same selection, two spellings");
    assert.equal(byIndex.count, greedy.tokens.length);
    // Greedy decoding is the argmax at every step: scoring its own output reproduces it.
    assert.deepEqual(byIndex.predicted, greedy.tokens);
    // A random subset's loss is the sum of its tokens' losses, each scored on its own prefix.
    const subset = tokens.map((_, i) => i >= 1 && rng.int(3) === 0);
    subset[1 + rng.int(tokens.length - 1)] = true;
    const masked = await walk.score(tokens, subset, false);
    let sum = 0;
    for (let i = 1; i < tokens.length; i++) {
      if (subset[i]) sum += (await walk.score(tokens.slice(0, i + 1), i, false)).lossSum;
    }
    assert.equal(masked.count, subset.filter(Boolean).length);
    assert.ok(Math.abs(masked.lossSum - sum) < 1e-4 * sum, `${masked.lossSum} vs ${sum}`);
    await assert.rejects(() => walk.score(tokens, tokens.map(() => false), false), /selects none/);
    await assert.rejects(() => walk.score(tokens, [true], false), /loss mask of 1 flags/);
  } finally {
    walk.destroy();
    lm.dispose();
  }
});

gpuTest("TestThenTrain: a loss mask keeps training and scoring to the flagged tokens", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const settings = resolveTempLoraSettings(lm.config, { window: 64, chunk: 16, epochs: 2 });
  const ids = lm.encode(
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the " +
      "park with her big red ball and her little dog.",
  );
  // Chunks of uneven length; only odd positions carry loss.
  const bounds = [0, 10, 25, ids.length];
  const lossMask = ids.map((_, i) => i % 2 === 1);
  const walk = await TestThenTrain.create(lm, ids, settings, { bounds, lossMask });
  try {
    assert.deepEqual(walk.chunks.map((c) => [c.start, c.end]), [[0, 10], [10, 25], [
      25,
      ids.length,
    ]]);
    const second = walk.window(walk.chunks[1]);
    assert.deepEqual(second.positions, Array.from({ length: 25 }, (_, i) => i));
    assert.deepEqual(second.loss, second.positions.map((p) => p >= 10 && p % 2 === 1));
    const before = await walk.scoreChunk(walk.chunks[1], true);
    assert.equal(before!.count, 7);
    const fresh = await walk.scoreChunk(walk.chunks[1], false);
    assert.equal(before!.lossSum, fresh!.lossSum, "a fresh adapter changes nothing");
    const { reports } = await walk.train(walk.chunks[1]);
    assert.equal(reports.length, 2);
    assert.equal(reports[0].count, 7, "the training example's loss is on the flagged tokens");
    assert.equal(walk.steps, 2);
    const after = await walk.scoreChunk(walk.chunks[1], true);
    assert.ok(after!.loss < before!.loss, `${before!.loss} -> ${after!.loss}`);
    await assert.rejects(
      () => TestThenTrain.create(lm, [1, 2, 3], settings, { bounds: [0, 2, 2, 3] }),
      /rise from 0/,
    );
    // A chunk written later joins the text, with its loss flags.
    const more = walk.append(ids.slice(1, 9), ids.slice(1, 9).map((_, i) => i >= 4));
    assert.deepEqual([more.index, more.start, more.end], [3, ids.length, ids.length + 8]);
    assert.equal(walk.ids.length, ids.length + 8);
    assert.equal((await walk.scoreChunk(more, true))!.count, 4);
    assert.throws(() => walk.append([5, 6]), /loss flags go with a walk that has a loss mask/);
  } finally {
    walk.destroy();
    lm.dispose();
  }
});

gpuTest(
  "TestThenTrain with sinks: windows change only once they stop reaching the start",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    const text = (await lm.complete("", { maxTokens: 160, temperature: 0, banEos: true })).tokens;
    const ids = [lm.tokenizer.bosId!, ...text];
    const plain = resolveTempLoraSettings(lm.config, { window: 64, chunk: 16, epochs: 0 });
    const sunk = resolveTempLoraSettings(lm.config, { window: 64, chunk: 16, epochs: 0, sink: 4 });
    assert.throws(
      () => resolveTempLoraSettings(lm.config, { window: 64, sink: 17 }),
      /sink must be an integer in 0\.\.16/,
    );
    const a = await TestThenTrain.create(lm, ids, plain);
    const b = await TestThenTrain.create(lm, ids, sunk);
    try {
      for (const chunk of a.chunks) {
        const wa = a.window(chunk);
        const wb = b.window(chunk);
        assert.equal(wb.tokens.length, wa.tokens.length, "sinks take the oldest tokens' places");
        const slid = chunk.start > 64 - 16;
        assert.equal(wb.positions[3] !== wa.positions[3], slid, `chunk ${chunk.index}`);
        if (slid) assert.deepEqual(wb.tokens.slice(0, 4), ids.slice(0, 4));
        const sa = await a.scoreChunk(chunk, false);
        const sb = await b.scoreChunk(chunk, false);
        if (!slid) assert.equal(sb!.lossSum, sa!.lossSum);
        else assert.notEqual(sb!.lossSum, sa!.lossSum);
      }
    } finally {
      a.destroy();
      b.destroy();
      lm.dispose();
    }
  },
);
