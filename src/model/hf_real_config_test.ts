/**
 * Published models' config.json files (their own keys: Llama 3.2's llama3 RoPE scaling and tied
 * head, a linear-scaled Llama 2, Mistral's sliding window, Qwen2.5's biases, Qwen3's head norms
 * and head_dim, SmolLM3's RoPE-less layers) at tiny sizes with their families' real tokenizers.
 * For each: the folder's logits in prefill and decode against the float64 reference model, whose
 * settings are read from the same config.json by the Hugging Face formulas (not by templora's
 * loader); the folder's tokenizer encodes a text and the model writes a few greedy tokens, the
 * first being the reference's argmax; and one Temp-Lora training step's loss and adapter
 * gradients against the reference's, at the real vocabularies (the architectures' features train
 * in architectures_test.ts).
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import {
  assertAdapterGradients,
  lossMask,
  PUBLISHED_MODELS,
  randomizeAdapter,
  randomWeights,
  referenceWeights,
  writePublishedFolder,
} from "../../kernels_test/model_fixtures.ts";
import type { ModelConfig } from "../formats/config.ts";
import { parseHfConfig } from "../formats/hf.ts";
import { loadModelFiles } from "../formats/load.ts";
import type { ModelWeights } from "../formats/tensor_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import {
  type HfReferenceConfig,
  referenceConfigFromHf,
  referenceForward,
  referenceLossAndGradients,
} from "../reference/model.ts";
import { LORA_TARGETS, LoraAdapter } from "../templora/adapter.ts";
import { DEFAULT_OPTIMIZER, Trainer } from "../templora/trainer.ts";
import { generate } from "./generate.ts";
import { LlamaModel } from "./llama.ts";

/** What each folder's config must read as, beyond what the reference derives itself. */
const EXPECTED: Record<string, Partial<ModelConfig>> = {
  "llama-3.2": { headDim: 16, nKvHeads: 1, tiedEmbeddings: true, maxSeqLen: 131072 },
  "llama-2-linear": { headDim: 16, tiedEmbeddings: false, ropeTheta: 10000 },
  // Within the window, full attention is the same thing: the window caps the context.
  "mistral": { maxSeqLen: 16, tiedEmbeddings: false },
  "qwen2.5": { qkvBias: true, tiedEmbeddings: true, normEps: 1e-6 },
  "qwen3": { headDim: 32, qkNorm: true, qkvBias: false },
  "smollm3": { ropeLayers: [true, true, true, false], ropeTheta: 5e6 },
};

/** The text each model's tokenizer encodes and continues. */
const PROMPT = "The quick brown fox jumps over the lazy dog";

/** Logits of every row of a prefill of all but the last token, and of the decode step after. */
async function gpuLogits(model: LlamaModel, tokens: number[]) {
  const { gpu, recorder } = await testGpu();
  const t = tokens.length;
  const v = model.config.vocabSize;
  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
  const cache = model.createCache(t);
  const act = model.createActivations(t);
  const step = { ids, cache, activations: act };
  model.recordForward(recorder, { ...step, offset: 0, tokens: t - 1, logits: "all" });
  recorder.submit();
  const prefill = (await readF32(gpu, act.logits)).slice(0, (t - 1) * v);
  model.recordForward(recorder, { ...step, offset: t - 1, tokens: 1, logits: "last" });
  recorder.submit();
  const decode = (await readF32(gpu, act.logits)).slice(0, v);
  for (const x of [ids, cache, act]) x.destroy();
  return { prefill, decode };
}

/** The loader's reading agrees with the reference's on every setting both have. */
function assertSameSettings(config: ModelConfig, ref: HfReferenceConfig, what: string): void {
  for (const key of ["dim", "hiddenDim", "nLayers", "nHeads", "nKvHeads", "headDim"] as const) {
    assert.equal(config[key], ref[key], `${what}: ${key}`);
  }
  assert.equal(config.vocabSize, ref.vocabSize, `${what}: vocabSize`);
  assert.equal(config.ropeTheta, ref.ropeTheta, `${what}: ropeTheta`);
  assert.equal(config.tiedEmbeddings, ref.tiedEmbeddings, `${what}: tied`);
  assert.equal(config.qkvBias, ref.qkvBias, `${what}: biases`);
  assert.equal(config.qkNorm ?? false, ref.qkNorm ?? false, `${what}: head norms`);
  assert.deepEqual(
    config.ropeLayers ?? Array(config.nLayers).fill(true),
    ref.ropeLayers ?? Array(config.nLayers).fill(true),
    `${what}: layers with RoPE`,
  );
  const divisors = (f: ArrayLike<number> | undefined) =>
    Array.from({ length: config.headDim / 2 }, (_, i) => f?.[i] ?? 1);
  assertClose(
    divisors(config.ropeFreqFactors),
    divisors(ref.ropeFreqFactors),
    `${what}: RoPE`,
    1e-6,
  );
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * One Temp-Lora step with a random adapter on `model`: the loss and every adapter gradient
 * against the reference's.
 */
async function assertTrainingStep(
  model: LlamaModel,
  ref: HfReferenceConfig,
  weights: ModelWeights,
  tokens: number[],
  what: string,
): Promise<void> {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng(`${what} training`);
  const { lookup, head } = referenceWeights(weights, ref.tiedEmbeddings);
  const rank = 4;
  const adapter = new LoraAdapter(gpu, model.config, {
    rank,
    alpha: 2 * rank,
    targets: LORA_TARGETS,
    seed: 3,
  });
  const lora = randomizeAdapter(gpu, adapter, rng, 0.1);
  const trainer = await Trainer.create(model, adapter, registry, tokens.length);
  const from = 4;
  const optimizer = { ...DEFAULT_OPTIMIZER, lr: 0, dropout: 0 };
  const report = await trainer.step(recorder, tokens, from, optimizer, 0);
  assert.ok(!report.skipped);
  const { targets, mask } = lossMask(tokens, from);
  const grads = referenceLossAndGradients(ref, lookup, head, tokens, targets, mask, lora);
  const close = Math.abs(report.loss - grads.loss) < 1e-4 * grads.loss;
  assert.ok(close, `${what} loss ${report.loss} vs ${grads.loss}`);
  await assertAdapterGradients(gpu, adapter, grads);
  for (const x of [trainer, adapter]) x.destroy();
}

for (const [key, published] of Object.entries(PUBLISHED_MODELS)) {
  gpuTest(
    `${key} (${published.name}'s config.json): logits, tokenizer and generation match the ` +
      "reference, and a training step",
    async () => {
      const { gpu, registry, recorder } = await testGpu();
      const rng = seededRng(`published ${key}`);
      const dir = await Deno.makeTempDir({ prefix: `templora_${key}_` });
      let model: LlamaModel | undefined;
      try {
        const { configJson } = await writePublishedFolder(dir, published, rng);
        // The folder as a user's: config.json, safetensors and the tokenizer found beside them.
        const files = await loadModelFiles(dir);
        const config = files.config;
        for (const [field, want] of Object.entries(EXPECTED[key])) {
          assert.deepEqual(config[field as keyof ModelConfig], want, `${key}: ${field}`);
        }
        const ref = referenceConfigFromHf(configJson);
        assertSameSettings(config, ref, key);
        const { lookup, head } = referenceWeights(files.weights, ref.tiedEmbeddings);
        const v = config.vocabSize;
        model = await LlamaModel.create(gpu, registry, files.source, dir);

        // Logits of random tokens from the whole vocabulary, specials included.
        const t = 12;
        const tokens = Array.from({ length: t }, () => rng.int(v));
        const want = referenceForward(ref, lookup, head, tokens).logits;
        const got = await gpuLogits(model, tokens);
        assertClose(got.prefill, want.subarray(0, (t - 1) * v), `${key} prefill`);
        assertClose(got.decode, want.subarray((t - 1) * v), `${key} decode`);
        if (ref.slidingWindow !== undefined) {
          // The reference does model the window: past it, the last row changes.
          const long = [...tokens, ...tokens];
          const windowed = referenceForward(ref, lookup, head, long).logits.subarray(-v);
          const full = referenceForward({ ...ref, slidingWindow: undefined }, lookup, head, long)
            .logits.subarray(-v);
          assert.ok(windowed.some((x, i) => Math.abs(x - full[i]) > 1e-3), "the window matters");
        }

        // The folder's tokenizer encodes a text, and the model writes a few greedy tokens.
        const tokenizer = files.tokenizer;
        const ids = tokenizer.encode(PROMPT, { bos: true });
        if (published.tokenizer === "qwen") assert.equal(tokenizer.bosId, null, "Qwen: no BOS");
        else assert.equal(ids[0], tokenizer.bosId);
        assert.ok(ids.length > 5 && ids.length < 16, `${ids.length} ids`);
        assert.equal(tokenizer.decode(ids), PROMPT);
        const window = Math.min(32, config.maxSeqLen);
        const options = { maxTokens: 3, temperature: 0, window };
        const it = generate(model, tokenizer, registry, recorder, ids, options);
        let step = await it.next();
        while (!step.done) step = await it.next();
        const reply = step.value;
        const prompt = referenceForward(ref, lookup, head, ids).logits.subarray(-v);
        assert.equal(reply.tokens[0], argmax(prompt), `${key}: first greedy token`);
        assert.ok(reply.tokens.every((id) => id >= 0 && id < v));
        assert.equal(tokenizer.decode([...ids, ...reply.tokens]), PROMPT + reply.text);

        await assertTrainingStep(model, ref, files.weights, tokens, key);
      } finally {
        model?.destroy();
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

gpuTest(
  "a Temp-Lora step at Llama 3's 128256-token vocabulary with an untied head: loss and gradients",
  async () => {
    // The head gradient dH = dLogits·W sums over the vocabulary: past one dispatch's loop budget
    // on llvmpipe it came out short (see maxDispatchDepth in src/ops/matmul.ts).
    const { gpu, registry } = await testGpu();
    const rng = seededRng("large vocabulary training");
    const json = { ...PUBLISHED_MODELS["llama-3.2"].config, tie_word_embeddings: false };
    const weights = randomWeights(parseHfConfig(json, "llama-3.2"), rng);
    assert.equal(weights.config.tiedEmbeddings, false);
    const model = await LlamaModel.create(gpu, registry, weights);
    const tokens = Array.from({ length: 12 }, () => rng.int(weights.config.vocabSize));
    await assertTrainingStep(model, referenceConfigFromHf(json), weights, tokens, "llama-3.2");
    model.destroy();
  },
);
