/**
 * The GGUF fixtures llama.cpp's own tools wrote (../shared/models/gguf): every file parses with
 * the README's configuration, the tensor types fixtures.json lists, every tensor readable; the
 * stories260K files hold the llama2.c checkpoint's weights, and the GPU model built from
 * stories260K-f32.gguf computes the checkpoint's logits.
 */
import assert from "node:assert/strict";
import { assertClose, relativeError, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { sharedDataTest, sharedPath, STORIES260K } from "../../kernels_test/test_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import { LlamaModel } from "../model/llama.ts";
import { TextModel } from "../model/text_model.ts";
import type { ModelConfig } from "./config.ts";
import { QuantizedWeightsError } from "./errors.ts";
import { ggufModelWeights, readGgufModel } from "./gguf_model.ts";
import { readLlama2c } from "./llama2c.ts";
import { loadModelFiles } from "./load.ts";
import { convertTensor, type ModelWeights } from "./tensor_data.ts";

const GGUF_DIR = "models/gguf";
const fixture = (name: string) => sharedPath(`${GGUF_DIR}/${name}`);

/** The README's table, per model: what ggufModelConfig must produce. */
const EXPECTED: Record<string, Partial<ModelConfig>> = {
  stories260K: {
    architecture: "LlamaForCausalLM",
    dim: 64,
    nLayers: 5,
    nHeads: 8,
    nKvHeads: 4,
    headDim: 8,
    hiddenDim: 172,
    maxSeqLen: 512,
    vocabSize: 512,
    tiedEmbeddings: false,
    ropeTheta: 10000,
    normEps: 1e-5,
    ropePairs: "interleaved",
    qkvBias: false,
  },
  "tiny-llama-spm": {
    architecture: "LlamaForCausalLM",
    dim: 256,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 64,
    hiddenDim: 768,
    maxSeqLen: 1024,
    vocabSize: 32000,
    tiedEmbeddings: true,
    ropeTheta: 10000,
    normEps: 1e-5,
    ropePairs: "interleaved",
    qkvBias: false,
  },
  "tiny-llama3-bpe": {
    architecture: "LlamaForCausalLM",
    dim: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 1,
    headDim: 16,
    hiddenDim: 192,
    maxSeqLen: 2048,
    vocabSize: 128256,
    tiedEmbeddings: true,
    ropeTheta: 500000,
    normEps: 1e-5,
    ropePairs: "interleaved",
    qkvBias: false,
  },
  "tiny-qwen2": {
    architecture: "Qwen2ForCausalLM",
    dim: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 16,
    hiddenDim: 192,
    maxSeqLen: 2048,
    vocabSize: 151936,
    tiedEmbeddings: true,
    ropeTheta: 1e6,
    normEps: 1e-6,
    ropePairs: "half",
    qkvBias: true,
  },
  "tiny-qwen3": {
    architecture: "Qwen3ForCausalLM",
    dim: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 32,
    hiddenDim: 192,
    maxSeqLen: 2048,
    vocabSize: 151936,
    tiedEmbeddings: true,
    ropeTheta: 1e6,
    normEps: 1e-6,
    ropePairs: "half",
    qkvBias: false,
    qkNorm: true,
  },
};

interface FixtureFile {
  file: string;
  model: string;
  shipped: boolean;
  bytes: number;
  tensor_types: Record<string, string>;
}

async function shippedFixtures(): Promise<FixtureFile[]> {
  const json = JSON.parse(await Deno.readTextFile(fixture("fixtures.json")));
  return (json.files as FixtureFile[]).filter((f) => f.shipped);
}

sharedDataTest({
  name: "gguf fixtures: every file parses with the README's config and fixtures.json's types",
  needs: [`${GGUF_DIR}/fixtures.json`],
  fn: async () => {
    const files = await shippedFixtures();
    assert.equal(files.length, 10);
    for (const f of files) {
      const model = await readGgufModel(fixture(f.file));
      const { gguf, config } = model;
      assert.equal(gguf.fileSize, f.bytes, f.file);
      assert.deepEqual({ ...config, ropeFreqFactors: undefined }, {
        ...EXPECTED[f.model],
        ropeFreqFactors: undefined,
      }, f.file);
      // Each tensor's type, as llama-quantize wrote it (fallbacks and Q6_K embeddings included).
      const types = Object.fromEntries(
        [...gguf.tensors.values()].map((t) => [t.name, t.type.name]),
      );
      assert.deepEqual(types, f.tensor_types, f.file);
      // Tensors are laid out back to back at the alignment, the last one (padded) ending the file.
      const infos = [...gguf.tensors.values()].sort((a, b) => a.offset - b.offset);
      let next = 0;
      for (const t of infos) {
        assert.equal(t.offset, Math.ceil(next / gguf.alignment) * gguf.alignment, t.name);
        next = t.offset + t.byteLength;
      }
      const padded = Math.ceil(next / gguf.alignment) * gguf.alignment;
      assert.ok([next, padded].includes(gguf.fileSize - gguf.dataOffset), f.file);
      // Every tensor reads back at its size; 1-D tensors are F32 (norms, biases, rope_freqs).
      let read = 0;
      for (const w of model.tensors.values()) {
        const bytes = await w.read();
        assert.equal(bytes.length, w.byteLength);
        read += bytes.length;
        if (w.shape.length === 1) {
          assert.equal(w.type.name, "F32");
          const data = new Float32Array(bytes.buffer);
          assert.ok(data.every(Number.isFinite), `${w.ggufName} is finite`);
        }
      }
      const ropeFreqs = gguf.tensors.get("rope_freqs.weight")?.byteLength ?? 0;
      assert.equal(read + ropeFreqs, infos.reduce((s, t) => s + t.byteLength, 0));
      assert.equal(
        model.quantized.length > 0,
        !f.file.startsWith("stories260K-f") &&
          !f.file.startsWith("stories260K-bf"),
        f.file,
      );
    }
  },
});

sharedDataTest({
  name:
    "gguf fixtures: Llama 3's rope_freqs are the README's factors; quantized files refuse floats",
  needs: [`${GGUF_DIR}/tiny-llama3-bpe-q8_0.gguf`, `${GGUF_DIR}/tiny-qwen2-q8_0.gguf`],
  fn: async () => {
    const llama3 = await readGgufModel(fixture("tiny-llama3-bpe-q8_0.gguf"));
    const factors = Array.from(llama3.config.ropeFreqFactors!);
    const want = [1, 1, 1, 1, 3.2923, 32, 32, 32];
    factors.forEach((f, i) => assert.ok(Math.abs(f - want[i]) < 1e-4, `factor ${i}: ${f}`));
    assert.equal(llama3.quantized.length, 15);
    await assert.rejects(ggufModelWeights(llama3), QuantizedWeightsError);
    const qwen2 = await loadModelFiles(fixture("tiny-qwen2-q8_0.gguf"));
    assert.equal(qwen2.format, "gguf");
    assert.throws(() => qwen2.weights, (e: unknown) => {
      return e instanceof QuantizedWeightsError && /15 of 26 tensors are block-quantized/.test(
        e.message,
      );
    });
    assert.equal(qwen2.gguf?.tensors.get("model.layers.0.self_attn.q_proj.bias")?.type.name, "F32");
  },
});

sharedDataTest({
  name: "gguf fixtures: stories260K F32/F16/BF16/Q8_0 files hold the llama2.c checkpoint's weights",
  needs: [`${GGUF_DIR}/stories260K-f32.gguf`],
  fn: async () => {
    const llama2c = await readLlama2c(STORIES260K);
    const f32 = await ggufModelWeights(await readGgufModel(fixture("stories260K-f32.gguf")));
    // llama.cpp's converter stores the classifier separately; llama2.c's checkpoint shares it.
    const expected = new Map(llama2c.tensors);
    expected.set("lm_head.weight", llama2c.tensors.get("model.embed_tokens.weight")!);
    assert.deepEqual([...f32.tensors.keys()].sort(), [...expected.keys()].sort());
    for (const [name, t] of f32.tensors) {
      assert.deepEqual(t, expected.get(name), name); // Q and K rows as stored: not permuted
    }
    for (const dtype of ["F16", "BF16"] as const) {
      const w = await ggufModelWeights(
        await readGgufModel(fixture(`stories260K-${dtype.toLowerCase()}.gguf`)),
      );
      for (const [name, t] of w.tensors) {
        const want = t.shape.length === 1
          ? expected.get(name)!
          : convertTensor(expected.get(name)!, dtype);
        assert.deepEqual(t, want, `${dtype} ${name}`);
      }
    }
    // Q8_0: the norms stay F32 and the rows of 172 values fall back to F16, exactly.
    const q8 = await readGgufModel(fixture("stories260K-q8_0.gguf"));
    for (const [name, w] of q8.tensors) {
      if (w.type.quantized) continue;
      const data = q8.gguf.readTensor(w.ggufName);
      const want = w.type.name === "F32"
        ? expected.get(name)!
        : convertTensor(expected.get(name)!, "F16");
      assert.deepEqual(await data, want, `Q8_0 file ${name}`);
    }
  },
});

/** Logits of every position for `tokens` fed as one prefill. */
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

/** The same weights with every matrix rounded to `dtype` (vectors kept), as F32. */
function roundedMatrices(weights: ModelWeights, dtype: "F16" | "BF16"): ModelWeights {
  const tensors = new Map(
    [...weights.tensors].map(([name, t]) => [
      name,
      t.shape.length === 1 ? t : convertTensor(convertTensor(t, dtype), "F32"),
    ]),
  );
  return { config: weights.config, tensors };
}

sharedDataTest({
  name: "gguf on the GPU: stories260K-f32.gguf gives the llama2.c checkpoint's logits",
  needs: [`${GGUF_DIR}/stories260K-f32.gguf`, `${GGUF_DIR}/stories260K-f16.gguf`],
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { gpu, registry } = await testGpu();
    const rng = seededRng("gguf stories logits");
    const llama2c = await readLlama2c(STORIES260K);
    const tokens = [1, ...Array.from({ length: 47 }, () => rng.int(512))];
    const reference = await LlamaModel.create(gpu, registry, llama2c, STORIES260K);
    const want = await prefillLogits(reference, tokens);
    reference.destroy();

    const loaded = await loadModelFiles(fixture("stories260K-f32.gguf"));
    assert.equal(loaded.config.ropePairs, "interleaved");
    const model = await LlamaModel.create(gpu, registry, loaded.weights, "stories260K-f32.gguf");
    const got = await prefillLogits(model, tokens);
    model.destroy();
    const err = relativeError(got, want);
    console.log(
      `  stories260K-f32.gguf vs stories260K.bin: relative error ${err.toExponential(2)}`,
    );
    assertClose(got, want, "GGUF F32 vs llama2.c logits", 1e-5);

    // F16 and BF16 files compute what the llama2.c model with rounded matrices computes.
    for (const dtype of ["F16", "BF16"] as const) {
      const file = fixture(`stories260K-${dtype.toLowerCase()}.gguf`);
      const half = await LlamaModel.create(gpu, registry, (await loadModelFiles(file)).weights);
      const halfLogits = await prefillLogits(half, tokens);
      half.destroy();
      const twin = await LlamaModel.create(gpu, registry, roundedMatrices(llama2c, dtype));
      const twinLogits = await prefillLogits(twin, tokens);
      twin.destroy();
      assertClose(halfLogits, twinLogits, `GGUF ${dtype} vs llama2.c rounded to ${dtype}`, 1e-5);
      // ...and stay near the F32 logits.
      assert.ok(relativeError(halfLogits, want) < 0.05, `${dtype} near F32`);
    }

    // Greedy text from BOS: the checkpoint's first sentence.
    const text = await TextModel.load(fixture("stories260K-f32.gguf"), { gpu });
    let story = "";
    for await (const t of text.generate([1], { maxTokens: 20, temperature: 0 })) story += t.text;
    text.dispose();
    assert.match(story, /^Once upon a time, there was a little girl named Lily\./);

    // A quantized file: no float weights (a typed error), but the GPU model takes it packed.
    const q8 = await loadModelFiles(fixture("stories260K-q8_0.gguf"));
    assert.throws(() => q8.weights, QuantizedWeightsError);
    const q8Text = await TextModel.load(fixture("stories260K-q8_0.gguf"), { gpu });
    let q8Story = "";
    for await (const t of q8Text.generate([1], { maxTokens: 6, temperature: 0 })) {
      q8Story += t.text;
    }
    q8Text.dispose();
    assert.match(q8Story, /^Once upon a time/);
  },
});
