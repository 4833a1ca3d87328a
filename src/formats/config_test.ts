import assert from "node:assert/strict";
import { deriveHeadDim, type ModelConfig, tensorShapes, validateConfig } from "./config.ts";
import { InvalidConfigError } from "./errors.ts";

const BASE: ModelConfig = {
  architecture: "llama2c",
  dim: 64,
  hiddenDim: 172,
  nLayers: 2,
  nHeads: 8,
  nKvHeads: 4,
  headDim: 8,
  vocabSize: 512,
  maxSeqLen: 512,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropePairs: "interleaved",
  tiedEmbeddings: true,
  qkvBias: false,
};

Deno.test("validateConfig accepts a sane config and names every kind of problem", () => {
  validateConfig(BASE, "m.bin");
  const cases: [Partial<ModelConfig>, RegExp][] = [
    [{ dim: 0 }, /dim must be a positive integer/],
    [{ nLayers: -1 }, /nLayers/],
    [{ vocabSize: 1.5 }, /vocabSize/],
    [{ maxSeqLen: NaN }, /maxSeqLen/],
    [{ nKvHeads: 3 }, /not a multiple of nKvHeads/],
    [{ nKvHeads: 16 }, /exceeds nHeads/],
    [{ headDim: 7 }, /even/],
    [{ normEps: 0 }, /normEps/],
    [{ ropeTheta: 0.5 }, /ropeTheta/],
    [{ ropePairs: "sideways" as "half" }, /ropePairs/],
    [{ architecture: "" }, /architecture/],
  ];
  for (const [change, re] of cases) {
    assert.throws(() => validateConfig({ ...BASE, ...change }, "m.bin"), (e: unknown) => {
      return e instanceof InvalidConfigError && e.message.startsWith("m.bin: ") &&
        re.test(e.message);
    }, JSON.stringify(change));
  }
  assert.equal(deriveHeadDim(64, 8, "f"), 8);
  assert.throws(() => deriveHeadDim(64, 6, "f"), /not divisible by nHeads/);
});

Deno.test("tensorShapes lists biases and lm_head only when the config has them", () => {
  const tied = tensorShapes(BASE);
  assert.equal(tied.size, 1 + 2 * 9 + 1);
  assert.ok(!tied.has("lm_head.weight"));
  assert.deepEqual(tied.get("model.layers.1.self_attn.k_proj.weight"), [32, 64]);
  const qwen = tensorShapes({ ...BASE, qkvBias: true, tiedEmbeddings: false });
  assert.deepEqual(qwen.get("model.layers.0.self_attn.k_proj.bias"), [32]);
  assert.deepEqual(qwen.get("lm_head.weight"), [512, 64]);
  assert.equal(qwen.size, 1 + 2 * 12 + 2);
});
