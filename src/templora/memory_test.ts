import assert from "node:assert/strict";
import { gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { randomWeights } from "../../kernels_test/model_fixtures.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import type { ModelConfig } from "../formats/config.ts";
import { readLlama2c } from "../formats/llama2c.ts";
import { DecodeSession } from "../model/decode_session.ts";
import { LlamaModel } from "../model/llama.ts";
import { LORA_TARGETS, LoraAdapter } from "./adapter.ts";
import { planMemory } from "./memory.ts";
import { Trainer } from "./trainer.ts";

/** Qwen3-like: head norms, heads wider than the model, tied embeddings. */
const WIDE: ModelConfig = {
  architecture: "test",
  dim: 48,
  hiddenDim: 72,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 300,
  maxSeqLen: 256,
  normEps: 1e-6,
  ropeTheta: 1e6,
  ropePairs: "half",
  tiedEmbeddings: true,
  qkvBias: true,
  qkNorm: true,
};

gpuTest("memory plan: equals what the runtime allocates, part by part", async () => {
  const { gpu, registry } = await testGpu();
  const stories = await readLlama2c(STORIES260K);
  for (
    const [weights, window, T, rank, recompute] of [
      [stories, 512, 385, 16, false],
      [randomWeights(WIDE, seededRng("memory plan")), 64, 200, 8, true],
    ] as const
  ) {
    const config = weights.config;
    const plan = planMemory(config, {
      window,
      trainTokens: T,
      rank,
      weightDtype: "f32",
      recompute,
      logitBytes: 64 * 8 * config.vocabSize,
    });
    const model = await LlamaModel.create(gpu, registry, weights, "plan", { weightDtype: "f32" });
    assert.equal(model.weights.bytes, plan.weights, `${config.architecture} weights`);
    const session = await DecodeSession.create(model, registry, { capacity: window, maxTokens: 1 });
    session.activations.prepareAdapter(rank);
    assert.equal(session.cache.bytes, plan.kvCache);
    assert.equal(session.activations.bytes, plan.decode);
    const adapter = new LoraAdapter(gpu, config, {
      rank,
      alpha: rank,
      targets: LORA_TARGETS,
      seed: 1,
    });
    assert.equal(adapter.bytes, plan.adapter);
    const trainer = await Trainer.create(model, adapter, registry, T, {
      recompute,
      logitBytes: 64 * 8 * config.vocabSize,
    });
    assert.equal(trainer.bytes, plan.training, `${config.architecture} training`);
    assert.equal(trainer.activations.recompute, plan.recompute);
    for (const x of [trainer, adapter, session, model]) x.destroy();
  }
});

Deno.test("memory plan: a 3B model's Temp-Lora step at 4,096 tokens fits 16 GB", () => {
  // Llama 3.2 3B's shape.
  const llama32_3b: ModelConfig = {
    architecture: "LlamaForCausalLM",
    dim: 3072,
    hiddenDim: 8192,
    nLayers: 28,
    nHeads: 24,
    nKvHeads: 8,
    headDim: 128,
    vocabSize: 128256,
    maxSeqLen: 131072,
    normEps: 1e-5,
    ropeTheta: 500000,
    ropePairs: "half",
    tiedEmbeddings: true,
    qkvBias: false,
  };
  const plan = planMemory(llama32_3b, { window: 4096, trainTokens: 4096, rank: 64 });
  assert.ok(plan.recompute, "layers are recomputed at this size");
  assert.ok(plan.total < 16e9, `${(plan.total / 1e9).toFixed(2)} GB`);
  const kept = planMemory(llama32_3b, {
    window: 4096,
    trainTokens: 4096,
    rank: 64,
    recompute: false,
  });
  assert.ok(kept.training > 3 * plan.training, "recomputing saves most of the training memory");
});

gpuTest("memory plan: an f16 KV cache halves the writing and training caches", async () => {
  const { gpu, registry } = await testGpu();
  const stories = await readLlama2c(STORIES260K);
  const config = stories.config;
  const options = { window: 256, trainTokens: 200, rank: 8, weightDtype: "f32" as const };
  const f32 = planMemory(config, options);
  const f16 = planMemory(config, { ...options, kvCacheDtype: "f16" });
  assert.equal(f16.kvCache * 2, f32.kvCache);
  // The training step's cache of trainTokens rows halves too; nothing else changes.
  const trainCache = config.nLayers * 2 * 200 * config.nKvHeads * config.headDim * 2;
  assert.equal(f32.training - f16.training, trainCache);
  assert.equal(f32.total - f16.total, f32.kvCache / 2 + trainCache);
  const model = await LlamaModel.create(gpu, registry, stories, "plan", {
    weightDtype: "f32",
    kvCacheDtype: "f16",
  });
  const session = await DecodeSession.create(model, registry, { capacity: 256, maxTokens: 1 });
  assert.equal(session.cache.bytes, f16.kvCache);
  session.destroy();
  model.destroy();
});

gpuTest("memory plan: tables split into row parts take the bytes the plan counts", async () => {
  const { gpu, registry } = await testGpu();
  const stories = await readLlama2c(STORIES260K);
  const config = stories.config;
  const options = { window: 128, trainTokens: 100, rank: 4, weightDtype: "f32" as const };
  const plan = planMemory(config, options);
  // Parts of at most 200 rows: the tied embedding in 192 + 192 + 128.
  const model = await LlamaModel.create(gpu, registry, stories, "plan", {
    weightDtype: "f32",
    maxPartBytes: 200 * 4 * config.dim,
  });
  assert.equal(model.weights.embed.parts.length, 3);
  assert.equal(model.weights.bytes, plan.weights);
  const adapter = new LoraAdapter(gpu, config, {
    rank: 4,
    alpha: 4,
    targets: LORA_TARGETS,
    seed: 1,
  });
  const trainer = await Trainer.create(model, adapter, registry, 100);
  assert.equal(trainer.bytes, plan.training);
  for (const x of [trainer, adapter, model]) x.destroy();
});
