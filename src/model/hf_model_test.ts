import assert from "node:assert/strict";
import { join } from "node:path";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import {
  loadTokenizerFixture,
  randomWeights,
  SMALL_LLAMA,
} from "../../kernels_test/model_fixtures.ts";
import type { ModelConfig } from "../formats/config.ts";
import { readHfModel, writeHfFolder } from "../formats/hf.ts";
import { readLlama2c } from "../formats/llama2c.ts";
import {
  convertTensor,
  type ModelWeights,
  type TensorData,
  tensorToF32,
  type WeightDtype,
} from "../formats/tensor_data.ts";
import { readTokenizerBin } from "../formats/llama2c_tokenizer.ts";
import type { Gpu } from "../gpu/device.ts";
import { GpuLimitError } from "../gpu/errors.ts";
import { readF32 } from "../gpu/readback.ts";
import { type Tensor, uploadTensor } from "../gpu/tensor.ts";
import { MatvecOp } from "../ops/matvec.ts";
import type { Rng } from "../core/random.ts";
import { referenceForward } from "../reference/model.ts";
import { generate } from "./generate.ts";
import { type GpuWeightDtype, uploadWeights } from "./gpu_weights.ts";
import { LlamaModel } from "./llama.ts";
import { TextModel } from "./text_model.ts";
import { STORIES260K, STORIES260K_TOKENIZER } from "../../kernels_test/test_data.ts";

const STORIES = STORIES260K;
const STORIES_TOKENIZER = STORIES260K_TOKENIZER;
const FIRST_SENTENCE = "Once upon a time, there was a little girl named Lily.";

/** Logits of every position for `tokens` fed as one prefill from position 0. */
async function prefillLogits(model: LlamaModel, tokens: number[]): Promise<Float32Array> {
  const { gpu, recorder } = await testGpu();
  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [tokens.length]);
  const cache = model.createCache(tokens.length);
  const act = model.createActivations(tokens.length);
  model.recordForward(recorder, {
    ids,
    offset: 0,
    tokens: tokens.length,
    cache,
    activations: act,
    logits: "all",
  });
  recorder.submit();
  const logits = await readF32(gpu, act.logits);
  for (const x of [ids, cache, act]) x.destroy();
  return logits;
}

/** Logits of the last position after a prefill of all but one token and one decode step. */
async function decodeLogits(model: LlamaModel, tokens: number[]): Promise<Float32Array> {
  const { gpu, recorder } = await testGpu();
  const t = tokens.length;
  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
  const cache = model.createCache(t);
  const act = model.createActivations(t);
  const step = { ids, cache, activations: act, logits: "last" as const };
  model.recordForward(recorder, { ...step, offset: 0, tokens: t - 1 });
  model.recordForward(recorder, { ...step, offset: t - 1, tokens: 1 });
  recorder.submit();
  const logits = (await readF32(gpu, act.logits)).slice(0, model.config.vocabSize);
  for (const x of [ids, cache, act]) x.destroy();
  return logits;
}

/**
 * A model whose matrices are uploaded as `weightDtype` (f16 ones read by matvec's f16 kernels
 * in decode). LlamaModel.create does not take the option yet, so the weights are swapped into a
 * model built with the same kernels.
 */
async function modelWithWeightDtype(
  weights: ModelWeights,
  weightDtype: GpuWeightDtype,
  uploadGpu?: Gpu,
): Promise<LlamaModel> {
  const { gpu, registry } = await testGpu();
  const base = await LlamaModel.create(gpu, registry, weights);
  const kernels = { ...base.kernels, matvec: await MatvecOp.create(registry, { f16: true }) };
  const uploaded = await uploadWeights(uploadGpu ?? gpu, weights, "model", { weightDtype });
  base.destroy();
  // deno-lint-ignore no-explicit-any
  return new (LlamaModel as any)(gpu, weights.config, uploaded, kernels);
}

function randomTokens(rng: Rng, n: number, vocab: number, first = 1): number[] {
  return [first, ...Array.from({ length: n - 1 }, () => rng.int(vocab))];
}

/** The same weights with every tensor rounded to `dtype` and back to F32. */
function rounded(weights: ModelWeights, dtype: WeightDtype): ModelWeights {
  const tensors = new Map<string, TensorData>();
  for (const [name, t] of weights.tensors) {
    tensors.set(name, convertTensor(convertTensor(t, dtype), "F32"));
  }
  return { config: weights.config, tensors };
}

gpuTest("stories260K as a Hugging Face folder (F32, F16, BF16) gives the same logits", async () => {
  const { gpu, registry } = await testGpu();
  const rng = seededRng("hf stories logits");
  const llama2c = await readLlama2c(STORIES);
  const dir = await Deno.makeTempDir({ prefix: "templora_hf_model_" });
  try {
    const tokens = randomTokens(rng, 64, llama2c.config.vocabSize);
    const original = await LlamaModel.create(gpu, registry, llama2c, STORIES);
    const expected = await prefillLogits(original, tokens);
    original.destroy();
    let f32Folder: ModelWeights | undefined;
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const folder = join(dir, dtype);
      await writeHfFolder(folder, llama2c, { dtype });
      const hf = await readHfModel(folder);
      assert.equal(hf.config.ropePairs, "half");
      for (const t of hf.tensors.values()) assert.equal(t.dtype, dtype);
      f32Folder ??= hf;
      // The F16/BF16 files hold exactly the rounded F32 weights...
      const twin = rounded(f32Folder, dtype);
      for (const [name, t] of hf.tensors) {
        assert.deepEqual(tensorToF32(t), tensorToF32(twin.tensors.get(name)!), name);
      }
      // ...and the GPU model of the file computes what the rounded llama2.c model computes.
      const model = await LlamaModel.create(gpu, registry, hf, folder);
      const got = await prefillLogits(model, tokens);
      model.destroy();
      if (dtype === "F32") {
        assertClose(got, expected, "HF F32 folder vs llama2.c checkpoint");
      } else {
        const roundedLlama2c = await LlamaModel.create(gpu, registry, rounded(llama2c, dtype));
        const want = await prefillLogits(roundedLlama2c, tokens);
        roundedLlama2c.destroy();
        assertClose(got, want, `HF ${dtype} folder vs llama2.c with ${dtype}-rounded weights`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest("a random Llama folder with a real tokenizer.json loads and generates", async () => {
  const { gpu } = await testGpu();
  const rng = seededRng("hf random llama");
  const config = SMALL_LLAMA;
  const dir = await Deno.makeTempDir({ prefix: "templora_hf_llama_" });
  try {
    await writeHfFolder(dir, randomWeights(config, rng), { dtype: "BF16" });
    for (const name of ["tokenizer.json", "tokenizer_config.json"]) {
      await Deno.writeTextFile(join(dir, name), JSON.stringify(await loadTokenizerFixture(name)));
    }
    const lm = await TextModel.load(dir, { gpu });
    assert.equal(lm.config.vocabSize, 32000);
    assert.equal(lm.tokenizer.bosId, 1);
    const options = { maxTokens: 20, temperature: 0.9, seed: 11, banEos: true };
    const a = await lm.complete("Once upon a time", options);
    const b = await lm.complete("Once upon a time", options);
    assert.equal(a.tokens.length, 20);
    assert.deepEqual(a.tokens, b.tokens);
    assert.equal(a.text, b.text);
    assert.ok(a.tokens.every((id) => Number.isInteger(id) && id >= 0 && id < 32000));
    assert.equal(typeof a.text, "string");
    assert.ok(a.text.length > 0);
    const prompt = lm.encode("Once upon a time");
    assert.equal(lm.decode([...prompt, ...a.tokens]), "Once upon a time" + a.text);
    lm.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const QWEN: ModelConfig = {
  architecture: "Qwen2ForCausalLM",
  dim: 64,
  hiddenDim: 128,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 33,
  maxSeqLen: 128,
  normEps: 1e-6,
  ropeTheta: 1000000,
  ropePairs: "half",
  tiedEmbeddings: true,
  qkvBias: true,
};

gpuTest(
  "a random Qwen2 folder (q/k/v biases, tied head) matches the float64 reference",
  async () => {
    const { gpu, registry } = await testGpu();
    const rng = seededRng("hf random qwen2");
    const dir = await Deno.makeTempDir({ prefix: "templora_hf_qwen_" });
    try {
      await writeHfFolder(dir, randomWeights(QWEN, rng));
      const config = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
      assert.equal(config.architectures[0], "Qwen2ForCausalLM");
      assert.equal(config.tie_word_embeddings, true);
      const weights = await readHfModel(dir);
      assert.equal(weights.config.qkvBias, true);
      assert.ok(weights.tensors.has("model.layers.1.self_attn.k_proj.bias"));
      assert.ok(!weights.tensors.has("lm_head.weight"));
      const tokens = randomTokens(rng, 24, QWEN.vocabSize, rng.int(QWEN.vocabSize));
      const lookup = (name: string) => tensorToF32(weights.tensors.get(name)!);
      const ref = referenceForward(
        weights.config,
        lookup,
        () => lookup("model.embed_tokens.weight"),
        tokens,
      ).logits;
      const model = await LlamaModel.create(gpu, registry, weights, dir);
      assertClose(await prefillLogits(model, tokens), ref, "Qwen2 prefill logits");
      const v = QWEN.vocabSize;
      assertClose(await decodeLogits(model, tokens), ref.subarray(-v), "Qwen2 decode logits");
      model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest(
  "f16 weights: close to f32, same greedy sentence; auto mode follows the binding limit",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("f16 weights");
    const weights = await readLlama2c(STORIES);
    const f32 = await LlamaModel.create(gpu, registry, weights, STORIES);
    const f16 = await modelWithWeightDtype(weights, "f16");
    assert.equal((f16.weights.layers[0].q as Tensor).dtype, "f16");
    const head = f16.weights.head.parts[0].matrix as Tensor;
    assert.equal(head.dtype, "f32", "a tied head stays the f32 embedding");
    assert.ok(f16.weights.bytes < f32.weights.bytes);
    const tokens = randomTokens(rng, 64, weights.config.vocabSize);
    assertClose(
      await prefillLogits(f16, tokens),
      await prefillLogits(f32, tokens),
      "prefill",
      1e-2,
    );
    assertClose(await decodeLogits(f16, tokens), await decodeLogits(f32, tokens), "decode", 1e-2);
    const tokenizer = await readTokenizerBin(STORIES_TOKENIZER, weights.config.vocabSize);
    const it = generate(f16, tokenizer, registry, recorder, "", { maxTokens: 40, temperature: 0 });
    let text = "";
    for await (const piece of it) text += piece.text;
    assert.ok(text.startsWith(FIRST_SENTENCE), text);
    f16.destroy();
    f32.destroy();

    // "auto" with a pretend binding limit of 20000 bytes: the 32768-byte MLP matrices become f16,
    // the 16384-byte attention matrices stay f32; the logits still match the reference.
    const qwen = randomWeights(QWEN, rng);
    const limited = (max: number) =>
      Object.create(gpu, {
        limits: { value: { ...gpu.limits, maxStorageBufferBindingSize: max } },
      });
    const auto = await modelWithWeightDtype(qwen, "auto", limited(20000));
    assert.deepEqual(
      auto.weights.f16Tensors,
      [0, 1].flatMap((l) =>
        ["gate", "up", "down"].map((p) => `model.layers.${l}.mlp.${p}_proj.weight`)
      ),
    );
    const qTokens = randomTokens(rng, 16, QWEN.vocabSize, 0);
    const lookup = (name: string) => tensorToF32(qwen.tensors.get(name)!);
    const ref = referenceForward(QWEN, lookup, () => lookup("model.embed_tokens.weight"), qTokens);
    assertClose(await prefillLogits(auto, qTokens), ref.logits, "auto f16 MLP", 1e-2);
    auto.destroy();
    // At 12000 bytes even the f16 gate projection (16384 bytes) does not fit.
    await assert.rejects(
      uploadWeights(limited(12000), qwen, "qwen", { weightDtype: "auto" }),
      (e: unknown) =>
        e instanceof GpuLimitError && /model\.layers\.0\.mlp\.gate_proj\.weight/.test(e.message) &&
        /32768 bytes as f32 and 16384 as f16/.test(e.message) && /12000/.test(e.message),
    );
  },
);
