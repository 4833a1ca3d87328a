/**
 * The architecture features beyond Llama 2 on the GPU, against the float64 reference model on a
 * random model that has all of them: Qwen3's per-head q/k RMSNorm with heads × head_dim wider
 * than the model, Llama 3's RoPE frequency divisors, a layer without RoPE (SmolLM3), q/k/v biases
 * (Qwen2) and tied embeddings. Prefill and decode logits with an adapter, and adapter gradients.
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import {
  assertAdapterGradients,
  lossMask,
  randomizeAdapter,
  randomWeights,
} from "../../kernels_test/model_fixtures.ts";
import type { ModelConfig } from "../formats/config.ts";
import { tensorToF32 } from "../formats/tensor_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import { referenceForward, referenceLossAndGradients } from "../reference/model.ts";
import { LORA_TARGETS, LoraAdapter } from "../templora/adapter.ts";
import { DEFAULT_OPTIMIZER, Trainer } from "../templora/trainer.ts";
import { LlamaModel } from "./llama.ts";

const EVERYTHING: ModelConfig = {
  architecture: "test",
  dim: 48,
  hiddenDim: 72,
  nLayers: 3,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16, // 4 x 16 = 64 query features for a width of 48
  vocabSize: 97,
  maxSeqLen: 64,
  normEps: 1e-6,
  ropeTheta: 1e6,
  ropePairs: "half",
  tiedEmbeddings: true,
  qkvBias: true,
  qkNorm: true,
  ropeFreqFactors: Float32Array.from([1, 1, 1.5, 3, 7, 20, 32, 32]),
  ropeLayers: [true, false, true],
};

async function setup(rank: number) {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("architectures");
  const weights = randomWeights(EVERYTHING, rng);
  const model = await LlamaModel.create(gpu, registry, weights);
  const adapter = new LoraAdapter(gpu, EVERYTHING, {
    rank,
    alpha: rank,
    targets: LORA_TARGETS,
    seed: 5,
  });
  const lora = randomizeAdapter(gpu, adapter, rng);
  const lookup = (name: string) => tensorToF32(weights.tensors.get(name)!);
  const head = () => lookup("model.embed_tokens.weight");
  const tokens = (
    t: number,
  ) => [1, ...Array.from({ length: t - 1 }, () => rng.int(EVERYTHING.vocabSize))];
  return { gpu, registry, recorder, model, adapter, lora, lookup, head, tokens };
}

gpuTest(
  "q/k head norms, RoPE divisors, a layer without RoPE: logits match the reference",
  async () => {
    const { gpu, recorder, model, adapter, lora, lookup, head, tokens: draw } = await setup(8);
    const t = 20;
    const tokens = draw(t);
    const v = EVERYTHING.vocabSize;
    const ref = referenceForward(EVERYTHING, lookup, head, tokens, lora).logits;
    const plain = referenceForward(EVERYTHING, lookup, head, tokens).logits;
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
    assertClose(await readF32(gpu, act.logits), plain, "prefill logits without the adapter");
    cache.length = 0;
    const step = { ids, cache, activations: act, adapter };
    model.recordForward(recorder, { ...step, offset: 0, tokens: 12, logits: "last" });
    recorder.submit();
    assertClose(
      (await readF32(gpu, act.logits)).subarray(0, v),
      ref.subarray(11 * v, 12 * v),
      "prefill of 12 with the adapter",
    );
    for (let i = 12; i < t; i++) {
      model.recordForward(recorder, { ...step, offset: i, tokens: 1, logits: "last" });
    }
    recorder.submit();
    assert.equal(cache.length, t);
    assertClose(
      (await readF32(gpu, act.logits)).subarray(0, v),
      ref.subarray((t - 1) * v),
      "decode with the adapter, through the cache",
    );
    for (const x of [ids, act, cache, adapter, model]) x.destroy();
  },
);

gpuTest(
  "q/k head norms, RoPE divisors, a layer without RoPE: adapter gradients match",
  async () => {
    const { gpu, registry, recorder, model, adapter, lora, lookup, head, tokens: draw } =
      await setup(4);
    const trainer = await Trainer.create(model, adapter, registry, 32);
    const t = 30;
    const from = 9;
    const tokens = draw(t);
    const report = await trainer.step(recorder, tokens, from, {
      ...DEFAULT_OPTIMIZER,
      lr: 0,
      dropout: 0,
    }, 0);
    assert.ok(!report.skipped);
    const { targets, mask } = lossMask(tokens, from);
    const ref = referenceLossAndGradients(EVERYTHING, lookup, head, tokens, targets, mask, lora);
    assert.ok(Math.abs(report.loss - ref.loss) < 1e-4 * ref.loss, `${report.loss} vs ${ref.loss}`);
    await assertAdapterGradients(gpu, adapter, ref);
    for (const x of [trainer, adapter, model]) x.destroy();
  },
);
