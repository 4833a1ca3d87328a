import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { LORA_TARGETS, projectionDims } from "../core/lora.ts";
import { LoraAdapter } from "../templora/adapter.ts";
import { resolveTempLoraSettings } from "../templora/settings.ts";
import { TestThenTrain } from "../templora/test_then_train.ts";
import { DecodeSession, type SamplingSettings } from "./decode_session.ts";
import { TextModel } from "./text_model.ts";
import { LlamaModel } from "./llama.ts";
import { loadModelFiles } from "../formats/load.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import { InvalidSettingError } from "./errors.ts";
import { decodeCount } from "./decode_loop.ts";

const GREEDY: SamplingSettings = {
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  penaltyWindow: 0,
  seed: 0,
  banned: [],
};

gpuTest("DecodeSession sinks: a rebuild keeps the first tokens at positions 0..", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const text = lm.encode(
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the " +
      "park with her big red ball and her little dog Max.",
  );
  assert.ok(text.length > 40, `${text.length} tokens`);
  const ids = text.slice(0, 40);
  // An independent path to the same predictions: one forward over the window's tokens.
  const scorer = await TestThenTrain.create(lm, ids, resolveTempLoraSettings(lm.config));
  const sessions: DecodeSession[] = [];
  try {
    const decodeAfterRebuild = async (sink: number) => {
      const session = await DecodeSession.create(lm.model, lm.registry, {
        capacity: 32,
        maxTokens: 64,
        sink,
      });
      sessions.push(session);
      session.append(ids);
      session.recordFill(lm.recorder); // 40 tokens in a window of 32: a rebuild
      assert.equal(session.cache.length, 32);
      session.recordRebuild(lm.recorder, 16);
      assert.equal(session.cache.length, 16);
      return { session, tokens: await session.decode(lm.recorder, 8, GREEDY) };
    };
    const plain = await decodeAfterRebuild(0);
    assert.equal(plain.session.sinkRows, 0);
    assert.equal(plain.session.cacheStart, 24);
    const sunk = await decodeAfterRebuild(4);
    assert.equal(sunk.session.sinkRows, 4);
    assert.equal(sunk.session.cacheStart, 28, "16 rows: 4 sinks, then the 12 most recent");
    const check = async (window: number[], decoded: number[]) => {
      const tokens = [...window, ...decoded];
      const r = await scorer.score(tokens, window.length, false, { predictions: true });
      assert.deepEqual(r.predicted, decoded);
    };
    await check(ids.slice(24), plain.tokens);
    await check([...ids.slice(0, 4), ...ids.slice(28)], sunk.tokens);
    // At most a quarter of the window.
    await assert.rejects(
      () => DecodeSession.create(lm.model, lm.registry, { capacity: 32, maxTokens: 64, sink: 9 }),
      /sink must be an integer in 0\.\.8/,
    );
  } finally {
    lm.recorder.submit();
    for (const s of sessions) s.destroy();
    scorer.destroy();
    lm.dispose();
  }
});

gpuTest("DecodeSession sinks: a rebuild that still reaches the start keeps no sinks", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const session = await DecodeSession.create(lm.model, lm.registry, {
    capacity: 32,
    maxTokens: 64,
    sink: 4,
  });
  try {
    session.append(lm.encode("Once upon a time, there was a little girl named Lily."));
    session.recordFill(lm.recorder);
    session.recordRebuild(lm.recorder, 32);
    assert.equal(session.sinkRows, 0);
    assert.equal(session.cacheStart, 0);
    assert.equal(session.cache.length, session.length);
  } finally {
    lm.recorder.submit();
    session.destroy();
    lm.dispose();
  }
});

for (const mergeAdapter of [true, false]) {
  gpuTest(
    `DecodeSession counts: dispatches and weight bytes per decoded token${
      mergeAdapter ? "" : " (adapter unmerged)"
    }`,
    async () => {
      const { gpu } = await testGpu();
      const lm = await TextModel.load(STORIES260K, { gpu, mergeAdapter });
      const settings = resolveTempLoraSettings(lm.config);
      const adapter = new LoraAdapter(gpu, lm.config, settings);
      const sessions: DecodeSession[] = [];
      try {
        const perToken = async (withAdapter: boolean) => {
          const session = await DecodeSession.create(lm.model, lm.registry, { maxTokens: 64 });
          sessions.push(session);
          session.adapter = withAdapter ? adapter : undefined;
          session.append(lm.encode("Once upon a time"));
          session.recordFill(lm.recorder);
          assert.deepEqual(session.stats, { tokens: 0, dispatches: 0, weightBytes: 0 });
          // The first token with an adapter may merge it into the decode weights first.
          await session.decode(lm.recorder, 1, GREEDY);
          const warm = session.stats;
          await session.decode(lm.recorder, 3, GREEDY);
          const first = session.stats;
          await session.decode(lm.recorder, 5, GREEDY);
          const all = session.stats;
          assert.equal(all.tokens, 9);
          // Every token records the same work, and reads every weight exactly once; a head that
          // picks the greedy token leaves one sampling dispatch a batch (its first step's).
          const batchOnce = lm.model.headArgmax ? 1 : 0;
          const three = first.dispatches - warm.dispatches - batchOnce;
          const five = all.dispatches - first.dispatches - batchOnce;
          assert.equal(three / 3, five / 5);
          assert.equal(
            (all.weightBytes - warm.weightBytes) / 8,
            lm.model.minWeightBytesPerToken(session.adapter),
          );
          return five / 5;
        };
        const plain = await perToken(false);
        const adapted = await perToken(true);
        console.log(`  dispatches per token: ${plain} plain, ${adapted} with an adapter`);
        assert.ok(plain > lm.config.nLayers && adapted >= plain);
        const c = lm.config;
        const adapterBytes = LORA_TARGETS.reduce((sum, target) => {
          const [inDim, outDim] = projectionDims(c, target);
          return sum + 4 * settings.rank * (inDim + outDim);
        }, 0) * c.nLayers;
        // On merged layers a token reads the adapter's update inside the weights.
        const merged = mergeAdapter && lm.model.kernels.layer !== undefined;
        assert.equal(
          lm.model.minWeightBytesPerToken(adapter),
          lm.model.minWeightBytesPerToken() + (merged ? 0 : adapterBytes),
        );
        if (merged) assert.equal(adapted, plain, "merged layers decode as without an adapter");
      } finally {
        lm.recorder.submit();
        for (const s of sessions) s.destroy();
        adapter.destroy();
        lm.dispose();
      }
    },
  );
}

gpuTest(
  "DecodeSession greedy: the head's own argmax writes the tokens the sampling kernel picks",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    const files = await loadModelFiles(STORIES260K);
    // The same weights, each layer and the head on the general kernels, sampled by sampling.wgsl.
    const general = await LlamaModel.create(gpu, lm.registry, files.source, "general", {
      oneWorkgroupLayers: false,
    });
    const sessions: DecodeSession[] = [];
    try {
      assert.ok(lm.model.headArgmax, "stories260K's head runs in one workgroup");
      assert.ok(!general.headArgmax);
      // Asking a head that cannot pick the token to pick it is an error, not a silent no-op.
      const cache = general.createCache(8), act = general.createActivations(2);
      const ids = uploadTensor(gpu, Uint32Array.from([1, 2, 3]), [3]);
      const step = { ids, offset: 0, cache, activations: act, logits: "last" } as const;
      const argmaxInto = { tokens: ids, at: 1 };
      assert.throws(
        () => general.recordForward(lm.recorder, { ...step, tokens: 1, argmaxInto }),
        KernelUsageError,
      );
      assert.throws(
        () => lm.model.recordForward(lm.recorder, { ...step, tokens: 2, argmaxInto }),
        KernelUsageError,
      );
      cache.destroy();
      act.destroy();
      ids.destroy();
      const write = async (model: LlamaModel, banned: number[] = []) => {
        const session = await DecodeSession.create(model, lm.registry, { maxTokens: 80 });
        sessions.push(session);
        session.append(lm.encode("Once upon a time"));
        session.recordFill(lm.recorder);
        const ids: number[] = [];
        // Batches of several sizes: the handover between them goes through the logits.
        for (const steps of [1, 7, 16, 24]) {
          ids.push(...await session.decode(lm.recorder, steps, { ...GREEDY, banned }));
        }
        return { ids, dispatches: session.stats.dispatches };
      };
      const picked = await write(lm.model);
      const sampled = await write(general);
      assert.deepEqual(picked.ids, sampled.ids);
      // A banned id takes the sampling path on the same model: the same text, a dispatch more a step.
      const never = lm.config.vocabSize - 1;
      assert.ok(!picked.ids.includes(never));
      const banned = await write(lm.model, [never]);
      assert.deepEqual(banned.ids, picked.ids);
      assert.ok(banned.dispatches > picked.dispatches);
    } finally {
      lm.recorder.submit();
      for (const s of sessions) s.destroy();
      general.destroy();
      lm.dispose();
    }
  },
);

/** A session for `lm` holding "Once upon a time", its cache filled (kept in `sessions`). */
async function onceUponATime(
  lm: TextModel,
  sessions: DecodeSession[],
  maxTokens: number,
): Promise<DecodeSession> {
  const session = await DecodeSession.create(lm.model, lm.registry, { maxTokens });
  sessions.push(session);
  session.append(lm.encode("Once upon a time"));
  session.recordFill(lm.recorder);
  return session;
}

gpuTest("DecodeSession: batches in flight at once, and the newest taken back", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const sampled: SamplingSettings = { ...GREEDY, temperature: 0.9, seed: 11 };
  const sessions: DecodeSession[] = [];
  try {
    const start = () => onceUponATime(lm, sessions, 64);
    for (const sampling of [GREEDY, sampled]) {
      // One batch at a time: 5 then 7 tokens.
      const one = await start();
      const expected = [
        ...await one.decode(lm.recorder, 5, sampling),
        ...await one.decode(lm.recorder, 7, sampling),
      ];
      // Three batches started before any is read, the last taken back and decoded again.
      const many = await start();
      const a = many.startDecode(lm.recorder, 5, sampling);
      const b = many.startDecode(lm.recorder, 4, sampling);
      const c = many.startDecode(lm.recorder, 6, sampling);
      assert.throws(
        () => many.discard(lm.recorder, b),
        InvalidSettingError,
        "only the newest batch",
      );
      const before = { length: many.length, cache: many.cache.length, stats: many.stats };
      many.discard(lm.recorder, c);
      assert.equal(many.length, before.length - 6);
      assert.equal(many.cache.length, before.cache - 6);
      assert.equal(many.stats.tokens, before.stats.tokens - 6);
      assert.throws(
        () => many.discard(lm.recorder, c),
        InvalidSettingError,
        "a batch is taken back once",
      );
      const d = many.startDecode(lm.recorder, 3, sampling);
      const got = [...await a.ids, ...await b.ids, ...await d.ids];
      assert.deepEqual(got, expected, `${sampling.temperature}`);
      assert.equal(many.stats.tokens, 12);
      // Greedy with a head that picks: one sampling dispatch a batch, and `many` kept three.
      const perBatch = lm.model.headArgmax && sampling.temperature === 0 ? 1 : 0;
      assert.equal(many.stats.dispatches, one.stats.dispatches + perBatch);
    }
  } finally {
    for (const s of sessions) s.destroy();
  }
});

gpuTest(
  "decodeCount: the tokens of one batch at a time, in growing batches one ahead",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    const sessions: DecodeSession[] = [];
    try {
      const start = () => onceUponATime(lm, sessions, 80);
      const one = await start();
      const expected: number[] = [];
      for (let i = 0; i < 45; i++) expected.push(...await one.decode(lm.recorder, 1, GREEDY));
      const counted = await start();
      const ids = await decodeCount(counted, lm.recorder, 45, GREEDY, { stepsPerSubmit: 2 });
      assert.deepEqual(ids, expected);
      assert.equal(counted.length, one.length);
      assert.deepEqual(
        await decodeCount(counted, lm.recorder, 0, GREEDY, { stepsPerSubmit: 2 }),
        [],
      );
    } finally {
      for (const s of sessions) s.destroy();
    }
  },
);
