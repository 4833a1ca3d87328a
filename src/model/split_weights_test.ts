/**
 * The embedding and the LM head split by rows (tables larger than one storage binding). Small
 * models split when the part size is lowered (maxPartBytes): their logits equal the whole
 * tables' bit for bit (every logit and every gathered row is computed as before, only by another
 * dispatch), so do greedy tokens and scores; Temp-Lora's head gradient sums the parts' products,
 * so gradients and the losses after an update agree to float32 rounding. One test loads a
 * real-sized table: Qwen2.5-0.5B's [151936, 896] f32 embedding, above lavapipe's 128 MiB binding.
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { randomizeAdapter, randomWeights } from "../../kernels_test/model_fixtures.ts";
import {
  sharedDataTest,
  sharedPath,
  STORIES260K,
  STORIES260K_TOKENIZER,
} from "../../kernels_test/test_data.ts";
import type { ModelConfig } from "../formats/config.ts";
import { readLlama2c } from "../formats/llama2c.ts";
import { readTokenizerBin } from "../formats/llama2c_tokenizer.ts";
import { loadModelFiles } from "../formats/load.ts";
import { type ModelWeights, tensorToF32, type WeightSource } from "../formats/tensor_data.ts";
import type { Tokenizer } from "../formats/tokenizer.ts";
import { GpuLimitError } from "../gpu/errors.ts";
import { readF32 } from "../gpu/readback.ts";
import { DTYPE_BYTES, uploadTensor } from "../gpu/tensor.ts";
import { referenceForward } from "../reference/model.ts";
import { LORA_TARGETS, LoraAdapter } from "../templora/adapter.ts";
import { DEFAULT_OPTIMIZER, Trainer } from "../templora/trainer.ts";
import { generate } from "./generate.ts";
import {
  type GpuMatrix,
  isQuantized,
  plannedWeightBytes,
  rowPartition,
  uploadWeights,
} from "./gpu_weights.ts";
import { LlamaModel, type LlamaModelOptions } from "./llama.ts";
import { Rng } from "../core/random.ts";

/** Logits of every position of one prefill, and of the last one after a decode step. */
async function logitsOf(
  model: LlamaModel,
  tokens: number[],
): Promise<{ prefill: Float32Array; decode: Float32Array }> {
  const { gpu, recorder } = await testGpu();
  const t = tokens.length;
  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
  const cache = model.createCache(t);
  const act = model.createActivations(t);
  const step = { ids, cache, activations: act };
  model.recordForward(recorder, { ...step, offset: 0, tokens: t, logits: "all" });
  recorder.submit();
  const prefill = await readF32(gpu, act.logits);
  cache.length = 0;
  model.recordForward(recorder, { ...step, offset: 0, tokens: t - 1, logits: "last" });
  model.recordForward(recorder, { ...step, offset: t - 1, tokens: 1, logits: "last" });
  recorder.submit();
  const decode = (await readF32(gpu, act.logits)).slice(0, model.config.vocabSize);
  for (const x of [ids, cache, act]) x.destroy();
  return { prefill, decode };
}

/** Logits of the last row of a prefill of all but one token, then of that token decoded. */
async function lastLogitsOf(
  model: LlamaModel,
  tokens: number[],
): Promise<{ lastPrefill: Float32Array; decode: Float32Array }> {
  const { gpu, recorder } = await testGpu();
  const t = tokens.length;
  const v = model.config.vocabSize;
  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
  const cache = model.createCache(t);
  const act = model.createActivations(t);
  const step = { ids, cache, activations: act, logits: "last" as const };
  model.recordForward(recorder, { ...step, offset: 0, tokens: t - 1 });
  recorder.submit();
  const lastPrefill = (await readF32(gpu, act.logits)).slice(0, v);
  model.recordForward(recorder, { ...step, offset: t - 1, tokens: 1 });
  recorder.submit();
  const decode = (await readF32(gpu, act.logits)).slice(0, v);
  for (const x of [ids, cache, act]) x.destroy();
  return { lastPrefill, decode };
}

/** Bytes of one row of a stored matrix. */
function rowBytesOf(m: GpuMatrix): number {
  return isQuantized(m) ? m.rowBytes : m.shape[1] * DTYPE_BYTES[m.dtype];
}

/** Greedy ids of `n` tokens from BOS. */
async function greedy(model: LlamaModel, tokenizer: Tokenizer, n: number): Promise<number[]> {
  const { registry, recorder } = await testGpu();
  const ids: number[] = [];
  const it = generate(model, tokenizer, registry, recorder, "", { maxTokens: n, temperature: 0 });
  for await (const piece of it) if (piece.id !== null) ids.push(piece.id);
  return ids;
}

/**
 * What a trainer reports on a sequence drawn from `seed`: a score, then three steps and the first
 * step's gradients.
 */
async function training(model: LlamaModel, what: string, seed: number) {
  const { gpu, registry, recorder } = await testGpu();
  const c = model.config;
  const rng = new Rng(seed);
  const tokens = [1, ...Array.from({ length: 99 }, () => rng.int(c.vocabSize))];
  const adapter = new LoraAdapter(gpu, c, { rank: 4, alpha: 8, targets: LORA_TARGETS, seed: 3 });
  randomizeAdapter(gpu, adapter, rng);
  // Two tiles of logit rows, so the head runs over tiles and parts together.
  const trainer = await Trainer.create(model, adapter, registry, tokens.length, {
    logitBytes: 64 * 8 * c.vocabSize,
  });
  assert.equal(trainer.activations.logitRows, 64);
  const score = await trainer.score(recorder, tokens, 30, true, { predictions: true });
  const settings = { ...DEFAULT_OPTIMIZER, lr: 1e-3, dropout: 0.1, maxGradNorm: Infinity };
  const losses: number[] = [];
  let grads: Float32Array | undefined;
  for (let i = 0; i < 3; i++) {
    const report = await trainer.step(recorder, tokens, 30, settings, i);
    assert.ok(!report.skipped, what);
    losses.push(report.loss);
    grads ??= await readF32(gpu, adapter.grads);
  }
  for (const x of [trainer, adapter]) x.destroy();
  return { score, losses, grads: grads! };
}

/**
 * The model of `weights` with whole tables and with parts of at most 200 head rows: the head
 * in 192 + 192 + 128 rows of a 512-token vocabulary (every part but the last a multiple of 64).
 */
async function compareSplit(
  what: string,
  weights: ModelWeights | WeightSource,
  tokenizer: Tokenizer,
  options: LlamaModelOptions = {},
): Promise<void> {
  const { gpu, registry } = await testGpu();
  const whole = await LlamaModel.create(gpu, registry, weights, what, options);
  const w = whole.weights;
  assert.equal(w.head.parts.length, 1, `${what}: whole head`);
  assert.equal(w.embed.parts.length, 1, `${what}: whole embedding`);
  const maxPartBytes = 200 * rowBytesOf(w.head.parts[0].matrix);
  const split = await LlamaModel.create(gpu, registry, weights, what, {
    ...options,
    maxPartBytes,
  });
  const s = split.weights;
  assert.deepEqual(s.head.parts.map((p) => [p.start, p.rows]), [[0, 192], [192, 192], [384, 128]]);
  assert.ok(s.embed.parts.length >= 3, `${what}: ${s.embed.parts.length} embedding parts`);
  for (const p of [...s.head.parts, ...s.embed.parts]) {
    assert.ok(p.rows * rowBytesOf(p.matrix) <= maxPartBytes);
  }
  assert.equal(s.bytes, w.bytes, `${what}: parts take the tables' bytes`);
  assert.deepEqual(s.f16Tensors, w.f16Tensors);
  assert.equal(split.minWeightBytesPerToken(), whole.minWeightBytesPerToken());

  const rng = seededRng(what);
  const tokens = [1, ...Array.from({ length: 40 }, () => rng.int(whole.config.vocabSize))];
  // Ids past the vocabulary are clamped to its last row, which the last part holds.
  tokens[7] = whole.config.vocabSize + 5;
  const a = await logitsOf(whole, tokens);
  const b = await logitsOf(split, tokens);
  assert.deepEqual(b.prefill, a.prefill, `${what}: prefill logits`);
  if (whole.headArgmax) {
    // The whole head runs in one workgroup, a split one on the fused kernel: the same sums in
    // the same order, but llvmpipe may fuse a multiply-add in one and not the other.
    assert.ok(!split.headArgmax, `${what}: a split head takes the general kernels`);
    assertClose(b.decode, a.decode, `${what}: decode logits`, 1e-6);
  } else assert.deepEqual(b.decode, a.decode, `${what}: decode logits`);
  const text = await greedy(whole, tokenizer, 40);
  assert.deepEqual(await greedy(split, tokenizer, 40), text, `${what}: greedy tokens`);

  const seed = rng.int(2 ** 31);
  const ta = await training(whole, what, seed);
  const tb = await training(split, what, seed);
  assert.equal(tb.score.lossSum, ta.score.lossSum, `${what}: score`);
  assert.deepEqual(tb.score.predicted, ta.score.predicted, `${what}: predictions`);
  // The split head's input gradient sums its parts one after another, the whole head's in one
  // product: float32 rounding apart, carried through the backward and three steps. Over 25 runs
  // of each model here the relative errors reached 3.9e-6 (gradients) and 2.3e-6 (losses).
  assertClose(tb.grads, ta.grads, `${what}: adapter gradients`, 3e-5);
  assertClose(tb.losses, ta.losses, `${what}: training losses`, 3e-5);
  console.log(
    `  ${what}: embedding in ${s.embed.parts.length} parts, head in ${s.head.parts.length}; ` +
      `losses ${ta.losses.map((l) => l.toFixed(6)).join(" ")} whole, ` +
      `${tb.losses.map((l) => l.toFixed(6)).join(" ")} split`,
  );
  whole.destroy();
  split.destroy();
}

gpuTest("split tables: stories260K f32, tied (the head is the split embedding)", async () => {
  const weights = await readLlama2c(STORIES260K);
  const tokenizer = await readTokenizerBin(STORIES260K_TOKENIZER, weights.config.vocabSize);
  await compareSplit("stories260K f32", weights, tokenizer, { weightDtype: "f32" });
});

for (
  const [file, what, options] of [
    ["stories260K-f32.gguf", "stories260K f16 head", { weightDtype: "f16" }],
    ["stories260K-q8_0.gguf", "stories260K Q8_0", {}],
  ] as const
) {
  sharedDataTest({
    name: `split tables: ${what} (untied, embedding and head split)`,
    needs: [`models/gguf/${file}`],
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const files = await loadModelFiles(sharedPath(`models/gguf/${file}`));
      await compareSplit(what, files.source, files.tokenizer, options);
    },
  });
}

Deno.test("split tables: parts of the most whole 64-row blocks that fit, the rest last", () => {
  assert.deepEqual(rowPartition(512, 256, 512 * 256), [512]);
  assert.deepEqual(rowPartition(512, 256, 200 * 256), [192, 192, 128]);
  assert.deepEqual(rowPartition(130, 68, 64 * 68), [64, 64, 2]);
  // A last part whose blocks end inside a word still fits once padded.
  assert.deepEqual(rowPartition(3, 34, 104), [3]);
  assert.equal(rowPartition(100, 256, 63 * 256), undefined);
  // Qwen2.5-0.5B's f32 embedding at lavapipe's 128 MiB: 5 parts.
  const parts = rowPartition(151936, 4 * 896, 2 ** 27)!;
  assert.deepEqual(parts, [37440, 37440, 37440, 37440, 2176]);
});

gpuTest("split tables: a table no part of 64 rows fits is refused with GpuLimitError", async () => {
  const { gpu } = await testGpu();
  const config: ModelConfig = {
    architecture: "test",
    dim: 64,
    hiddenDim: 96,
    nLayers: 1,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 16,
    vocabSize: 200,
    maxSeqLen: 32,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropePairs: "interleaved",
    tiedEmbeddings: true,
    qkvBias: false,
  };
  const weights = randomWeights(config, seededRng("split refused"));
  await assert.rejects(
    uploadWeights(gpu, weights, "tiny", { maxPartBytes: 63 * 256 }),
    (e: unknown) =>
      e instanceof GpuLimitError && /model\.embed_tokens\.weight/.test(e.message) &&
      /16128/.test(e.message),
  );
});

gpuTest(
  "split tables: a [151936, 896] f32 embedding loads past a 128 MiB binding and runs",
  async () => {
    const { gpu, registry } = await testGpu();
    // Qwen2.5-0.5B's vocabulary and width, one layer, random weights.
    const config: ModelConfig = {
      architecture: "Qwen2ForCausalLM",
      dim: 896,
      hiddenDim: 1024,
      nLayers: 1,
      nHeads: 14,
      nKvHeads: 2,
      headDim: 64,
      vocabSize: 151936,
      maxSeqLen: 64,
      normEps: 1e-6,
      ropeTheta: 1e6,
      ropePairs: "half",
      tiedEmbeddings: true,
      qkvBias: true,
    };
    const rng = seededRng("real-sized embedding");
    // The layer from the fixture, the 136M-value table from a quicker generator.
    const weights = randomWeights({ ...config, vocabSize: 64 }, rng);
    const embedShape = [config.vocabSize, config.dim];
    const table = uniformTable(config.vocabSize * config.dim, rng.int(2 ** 31));
    weights.tensors.set("model.embed_tokens.weight", {
      dtype: "F32",
      shape: embedShape,
      data: table,
    });
    weights.config = config;
    const limit = gpu.limits.maxStorageBufferBindingSize;
    const model = await LlamaModel.create(gpu, registry, weights, "qwen-sized", {
      weightDtype: "f32",
    });
    const embed = model.weights.embed;
    const expected = rowPartition(config.vocabSize, 4 * config.dim, limit)!;
    assert.deepEqual(embed.parts.map((p) => p.rows), expected);
    assert.equal(model.weights.head, embed, "tied: the head is the embedding");
    assert.equal(model.weights.bytes, plannedWeightBytes(config, limit, { weightDtype: "f32" }));
    console.log(
      `  ${4 * config.vocabSize * config.dim} bytes of embedding, binding limit ${limit}: ` +
        `${embed.parts.length} parts`,
    );
    // Ids in the first, middle and last parts; the logits of the prefill's last row and of the
    // decoded token (one-row products: "all" logits of a few rows at this vocabulary take the
    // tiled matmul minutes on llvmpipe, and the split tests above cover its windows).
    const tokens = [3, 151935, 77777, 1024, 40000];
    const { decode, lastPrefill } = await lastLogitsOf(model, tokens);
    const lookup = (name: string) => tensorToF32(weights.tensors.get(name)!);
    const ref = referenceForward(config, lookup, () => lookup("model.embed_tokens.weight"), tokens);
    const v = config.vocabSize;
    const row = (t: number) => ref.logits.subarray(t * v, (t + 1) * v);
    assertClose(lastPrefill, row(tokens.length - 2), "prefill logits", 1e-4);
    assertClose(decode, row(tokens.length - 1), "decode logits", 1e-4);
    model.destroy();
  },
);

/** `n` values uniform on [-sqrt(3), sqrt(3)) (unit variance) from a 32-bit generator. */
function uniformTable(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed | 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 * 2 - 1) * Math.sqrt(3);
  }
  return out;
}
