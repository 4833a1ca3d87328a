import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { TextModel } from "./text_model.ts";
import { generate, type GenerateOptions } from "./generate.ts";
import type { Tokenizer } from "../formats/tokenizer.ts";
import { InvalidSettingError, PromptTooLongError } from "./errors.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";

const STORIES = STORIES260K;
const GREEDY_START =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

gpuTest("stories260K: greedy generation from BOS writes the text its README quotes", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES, { gpu });
  const greedy = { maxTokens: 60, temperature: 0, stepsPerSubmit: 7 };
  await lm.complete("", greedy); // compiles kernels and sizes the recorder's parameter slabs
  gpu.memory.trim();
  const before = gpu.memory.bytesInUse;
  const result = await lm.complete("", greedy);
  assert.ok(result.text.startsWith(GREEDY_START), result.text);
  assert.equal(result.tokens.length, 60);
  assert.equal(result.finishReason, "length");
  assert.equal(lm.decode([lm.tokenizer.bosId!, ...result.tokens]), result.text);

  gpu.memory.trim();
  assert.equal(gpu.memory.bytesInUse, before, "a finished generation frees its session");
  const stopped = await lm.complete("", { ...greedy, stop: ["Lily"] });
  assert.equal(stopped.text, "Once upon a time, there was a little girl named ");
  assert.equal(stopped.finishReason, "stop");
  // Batching does not change the text; the stop above ended inside a batch of 7.
  const one = await lm.complete("", { ...greedy, stepsPerSubmit: 1 });
  assert.equal(one.text, result.text);
  lm.dispose();
});

gpuTest("stories260K: sampling is reproducible by seed, and a small window slides", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES, { gpu });
  const options = { maxTokens: 80, temperature: 1, topP: 0.9, seed: 42, window: 32 };
  const a = await lm.complete("Once upon a time", options);
  const b = await lm.complete("Once upon a time", { ...options, stepsPerSubmit: 3 });
  const c = await lm.complete("Once upon a time", { ...options, seed: 43 });
  assert.ok(a.tokens.length > 0);
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
  const banned = await lm.complete("", {
    maxTokens: 300,
    temperature: 0,
    banEos: true,
    window: 64,
  });
  assert.equal(banned.tokens.length, 300);
  assert.ok(!banned.tokens.includes(2));
  lm.dispose();
});

gpuTest("generation rejects a prompt longer than the model and bad settings", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES, { gpu });
  const long = Array.from({ length: 600 }, () => 100);
  await assert.rejects(lm.complete(long, { maxTokens: 1 }), PromptTooLongError);
  await assert.rejects(lm.complete("", { maxTokens: 1, temperature: -1 }), InvalidSettingError);
  await assert.rejects(lm.complete("", { maxTokens: 1, topP: 0 }), InvalidSettingError);
  await assert.rejects(lm.complete("", { maxTokens: 1, window: 1 }), InvalidSettingError);
  lm.dispose();
});

gpuTest("stories260K: where the model begins another story, the separator is written", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES, { gpu });
  // Greedy from BOS, the first story ends after 345 tokens and the model writes BOS (id 1).
  const separator = "\n\n* * *\n\n";
  const r = await lm.complete("", { maxTokens: 350, temperature: 0, separator });
  assert.equal(r.finishReason, "length");
  assert.equal(r.tokens[345], lm.tokenizer.bosId);
  assert.equal(r.tokens.filter((id) => id === lm.tokenizer.bosId).length, 1);
  assert.equal(r.text.split(separator).length, 2, "one separator, where the story ends");
  assert.match(r.text, /good friend\."\n\n\* \* \*\n\nOnce upon a time/);
  // The separator is text only: the tokens decode to the text without it.
  const [first, second] = r.text.split(separator);
  assert.equal(lm.decode([lm.tokenizer.bosId!, ...r.tokens]), first + second);
  lm.dispose();
});

gpuTest(
  "generation ends at any of the tokenizer's end ids (an end-of-turn token), or bans them all",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES, { gpu });
    const base = lm.tokenizer;
    const comma = base.encode(",", { bos: false }).at(-1)!;
    // The same tokenizer, with "," as an end-of-turn token beside EOS.
    const tokenizer: Tokenizer = {
      vocabSize: base.vocabSize,
      bosId: base.bosId,
      eosId: base.eosId,
      endIds: [base.eosId!, comma],
      encode: (text, options) => base.encode(text, options),
      decode: (ids) => base.decode(ids),
      streamDecoder: (context) => base.streamDecoder(context),
    };
    const run = async (options: GenerateOptions) => {
      const it = generate(lm.model, tokenizer, lm.registry, lm.recorder, "", options);
      for (;;) {
        const step = await it.next();
        if (step.done) return step.value;
      }
    };
    const greedy = { maxTokens: 40, temperature: 0 };
    const ended = await run(greedy);
    assert.equal(ended.text, "Once upon a time");
    assert.equal(ended.finishReason, "eos");
    const banned = await run({ ...greedy, banEos: true });
    assert.ok(!banned.tokens.includes(comma), "banEos bans every end id");
    assert.equal(banned.tokens.length, 40);
    lm.dispose();
  },
);
