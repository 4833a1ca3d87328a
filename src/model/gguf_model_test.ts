import {
  assertAdapterGradients,
  lossMask,
  randomizeAdapter,
} from "../../kernels_test/model_fixtures.ts";
/**
 * GGUF models on the GPU with their weights kept in quantized blocks, against the float64
 * reference model run on the same weights dequantized by the float64 twin (src/reference/quant):
 * logits of every fixture in prefill and decode, and the adapter gradients of a training step
 * through a frozen Q4_K_M base.
 */
import assert from "node:assert/strict";
import { assertClose, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { sharedDataTest, sharedPath } from "../../kernels_test/test_data.ts";
import { loadModelFiles } from "../formats/load.ts";
import { isPacked, tensorToF32, type WeightSource } from "../formats/tensor_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import { dequantizeMatrix } from "../reference/quant.ts";
import { referenceForward, referenceLossAndGradients } from "../reference/model.ts";
import { LORA_TARGETS, LoraAdapter } from "../templora/adapter.ts";
import { DEFAULT_OPTIMIZER, Trainer } from "../templora/trainer.ts";
import { isQuantized } from "./gpu_weights.ts";
import { LlamaModel } from "./llama.ts";

const FIXTURES = [
  "stories260K-q8_0.gguf",
  "stories260K-q4_0.gguf",
  "tiny-llama-spm-q4_k_m.gguf",
  "tiny-llama-spm-q5_k_m.gguf",
  "tiny-llama3-bpe-q8_0.gguf",
  "tiny-qwen2-q8_0.gguf",
  "tiny-qwen3-q8_0.gguf",
];
const gguf = (name: string) => `models/gguf/${name}`;

/** Every tensor as float64, quantized ones dequantized by the twin. */
async function dequantized(source: WeightSource): Promise<(name: string) => Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const name of source.names()) {
    const t = await source.read(name);
    out.set(
      name,
      isPacked(t)
        ? dequantizeMatrix(t.dtype, t.data, t.shape[0], t.shape[1])
        : Float64Array.from(tensorToF32(t)),
    );
  }
  return (name) => {
    const w = out.get(name);
    if (!w) throw new Error(`no tensor ${name}`);
    return w;
  };
}

for (const fixture of FIXTURES) {
  sharedDataTest({
    name: `gguf ${fixture}: quantized on the GPU, logits match the float64 reference`,
    needs: [gguf(fixture)],
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const { gpu, registry, recorder } = await testGpu();
      const rng = seededRng(`gguf logits ${fixture}`);
      const files = await loadModelFiles(sharedPath(gguf(fixture)));
      const config = files.config;
      const model = await LlamaModel.create(gpu, registry, files.source, fixture);
      assert.ok(model.weights.quantTypes.length > 0, "the fixture's matrices stay quantized");
      assert.ok(isQuantized(model.weights.layers[0].q));
      const lookup = await dequantized(files.source);
      const head = () =>
        lookup(config.tiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight");
      const t = 24;
      const tokens = Array.from({ length: t }, () => rng.int(config.vocabSize));
      const ref = referenceForward(config, lookup, head, tokens).logits;
      const v = config.vocabSize;
      const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
      const cache = model.createCache(t);
      const act = model.createActivations(t);
      model.recordForward(recorder, {
        ids,
        offset: 0,
        tokens: 16,
        cache,
        activations: act,
        logits: "last",
      });
      recorder.submit();
      assertClose(
        (await readF32(gpu, act.logits)).subarray(0, v),
        ref.subarray(15 * v, 16 * v),
        `${fixture} prefill (quantized matmul)`,
      );
      for (let i = 16; i < t; i++) {
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
      assertClose(
        (await readF32(gpu, act.logits)).subarray(0, v),
        ref.subarray((t - 1) * v),
        `${fixture} decode (quantized matvec)`,
      );
      for (const x of [ids, act, cache, model]) x.destroy();
    },
  });
}

sharedDataTest({
  name: "gguf Q4_K_M: adapter gradients through the frozen quantized base match the reference",
  needs: [gguf("tiny-llama-spm-q4_k_m.gguf")],
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("gguf q4_k_m gradients");
    const files = await loadModelFiles(sharedPath(gguf("tiny-llama-spm-q4_k_m.gguf")));
    const config = files.config;
    const model = await LlamaModel.create(gpu, registry, files.source);
    const rank = 4;
    const adapter = new LoraAdapter(gpu, config, {
      rank,
      alpha: rank,
      targets: LORA_TARGETS,
      seed: 2,
    });
    const lora = randomizeAdapter(gpu, adapter, rng, 0.05);
    const trainer = await Trainer.create(model, adapter, registry, 20);
    const t = 20;
    const from = 6;
    const tokens = [1, ...Array.from({ length: t - 1 }, () => rng.int(config.vocabSize))];
    const report = await trainer.step(recorder, tokens, from, {
      ...DEFAULT_OPTIMIZER,
      lr: 0,
      dropout: 0,
    }, 0);
    assert.ok(!report.skipped);
    const lookup = await dequantized(files.source);
    const { targets, mask } = lossMask(tokens, from);
    const ref = referenceLossAndGradients(
      config,
      lookup,
      () => lookup("model.embed_tokens.weight"),
      tokens,
      targets,
      mask,
      lora,
    );
    assert.ok(Math.abs(report.loss - ref.loss) < 1e-4 * ref.loss, `${report.loss} vs ${ref.loss}`);
    await assertAdapterGradients(gpu, adapter, ref);
    // Training lowers the chunk's loss over the quantized base.
    const before = report.loss;
    let after = before;
    for (let step = 1; step <= 4; step++) {
      after = (await trainer.step(
        recorder,
        tokens,
        from,
        { ...DEFAULT_OPTIMIZER, lr: 1e-2, dropout: 0 },
        step,
      )).loss;
    }
    assert.ok(after < before, `loss ${before} -> ${after}`);
    for (const x of [trainer, adapter, model]) x.destroy();
  },
});
