import { randomizeAdapter } from "../../kernels_test/model_fixtures.ts";
import assert from "node:assert/strict";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { readLlama2c } from "../formats/llama2c.ts";
import { tensorToF32 } from "../formats/tensor_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import { referenceForward } from "../reference/model.ts";
import { LORA_TARGETS, LoraAdapter } from "../templora/adapter.ts";
import { LlamaModel } from "./llama.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";

const STORIES = STORIES260K;

gpuTest("stories260K: GPU logits over 64 tokens match the float64 reference", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("llama logits");
  const weights = await readLlama2c(STORIES);
  const config = weights.config;
  const model = await LlamaModel.create(gpu, registry, weights, STORIES);
  const t = 64;
  const tokens = [1, ...Array.from({ length: t - 1 }, () => rng.int(config.vocabSize))];
  const lookup = (name: string) => tensorToF32(weights.tensors.get(name)!);
  const head = () => lookup("model.embed_tokens.weight");
  const ref = referenceForward(config, lookup, head, tokens).logits;

  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
  const cache = model.createCache(t);
  const act = model.createActivations(t);
  model.recordForward(recorder, {
    ids,
    offset: 0,
    tokens: t,
    cache,
    activations: act,
    logits: "all",
  });
  recorder.submit();
  const all = await readF32(gpu, act.logits);
  assertClose(all, ref, "prefill logits, all rows");

  // The same text fed as a prefill of 40 and then one token at a time through the cache.
  cache.length = 0;
  const v = config.vocabSize;
  model.recordForward(recorder, {
    ids,
    offset: 0,
    tokens: 40,
    cache,
    activations: act,
    logits: "last",
  });
  recorder.submit();
  assertClose(
    (await readF32(gpu, act.logits)).subarray(0, v),
    ref.subarray(39 * v, 40 * v),
    "prefill of 40, last row",
  );
  for (let i = 40; i < t; i++) {
    model.recordForward(recorder, {
      ids,
      offset: i,
      tokens: 1,
      cache,
      activations: act,
      logits: "last",
    });
  }
  recorder.submit();
  assert.equal(cache.length, t);
  assertClose(
    (await readF32(gpu, act.logits)).subarray(0, v),
    ref.subarray((t - 1) * v),
    "decode one token at a time, last row",
  );
  for (const x of [ids, act, cache, model]) x.destroy();
});

gpuTest(
  "stories260K with a random LoRA adapter: prefill and decode logits match the reference",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("llama lora logits");
    const weights = await readLlama2c(STORIES);
    const config = weights.config;
    const model = await LlamaModel.create(gpu, registry, weights, STORIES);
    const adapter = new LoraAdapter(gpu, config, {
      rank: 8,
      alpha: 16,
      targets: LORA_TARGETS,
      seed: 1,
    });
    const lora = randomizeAdapter(gpu, adapter, rng);
    const t = 24;
    const tokens = [1, ...Array.from({ length: t - 1 }, () => rng.int(config.vocabSize))];
    const lookup = (name: string) => tensorToF32(weights.tensors.get(name)!);
    const ref =
      referenceForward(config, lookup, () => lookup("model.embed_tokens.weight"), tokens, lora)
        .logits;
    const v = config.vocabSize;
    const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
    const cache = model.createCache(t);
    const act = model.createActivations(t);
    const step = { ids, cache, activations: act, adapter };
    model.recordForward(recorder, { ...step, offset: 0, tokens: 16, logits: "last" });
    recorder.submit();
    assertClose(
      (await readF32(gpu, act.logits)).subarray(0, v),
      ref.subarray(15 * v, 16 * v),
      "prefill with the adapter (tiled LoRA)",
    );
    for (let i = 16; i < t; i++) {
      model.recordForward(recorder, { ...step, offset: i, tokens: 1, logits: "last" });
    }
    recorder.submit();
    assertClose(
      (await readF32(gpu, act.logits)).subarray(0, v),
      ref.subarray((t - 1) * v),
      "decode with the adapter (one-token LoRA)",
    );
    for (const x of [ids, act, cache, adapter, model]) x.destroy();
  },
);
