/**
 * The fused decode paths against the unfused one: the same model built with the fused products,
 * with whole layers in one workgroup where the model suits it, and with neither; the same prompt,
 * then token after token through the cache. Without an adapter the fused products' logits equal
 * the unfused ones bit for bit where they use the same tiles (they reduce in the same order);
 * with an adapter, whose h they sum in another order, and with the one-workgroup layer, whose
 * attention keeps its own order, they agree to float32 rounding. With an adapter, small f32
 * models decode on a copy of the layers with its update merged in (rebuilt when its values
 * change, as the test makes them mid-run) or, unmerged, with the layer kernel's adapter stages.
 * Dispatches per decoded token are counted too.
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { randomizeAdapter, randomWeights } from "../../kernels_test/model_fixtures.ts";
import { sharedDataTest, sharedPath, STORIES260K } from "../../kernels_test/test_data.ts";
import type { ModelConfig } from "../formats/config.ts";
import { readLlama2c } from "../formats/llama2c.ts";
import { loadModelFiles } from "../formats/load.ts";
import type { ModelWeights, WeightSource } from "../formats/tensor_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import type { Rng } from "../core/random.ts";
import { FUSED_TILES, FusedMatvecOp, type FusedVariant } from "../ops/fused_matvec.ts";
import { matvecTiling } from "../ops/matvec.ts";
import { adapterClass } from "../ops/shapes.ts";
import { LORA_TARGETS, LoraAdapter } from "../templora/adapter.ts";
import { LlamaModel, type LlamaModelOptions } from "./llama.ts";

/** Qwen2-like: q/k/v biases, half-split pairs, a layer without RoPE, frequency divisors. */
const BIASED: ModelConfig = {
  architecture: "test",
  dim: 48,
  hiddenDim: 72,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 97,
  maxSeqLen: 64,
  normEps: 1e-6,
  ropeTheta: 1e6,
  ropePairs: "half",
  tiedEmbeddings: true,
  qkvBias: true,
  ropeFreqFactors: Float32Array.from([1, 1, 1.5, 3, 7, 20, 32, 32]),
  ropeLayers: [true, false],
};

/** With Qwen3's head norms, which the fused q/k/v kernel leaves to the unfused path. */
const HEAD_NORMS: ModelConfig = { ...BIASED, qkNorm: true, qkvBias: false };

/**
 * Wide enough that a rank-64 adapter's h costs every workgroup of llvmpipe's fused kernels more
 * than the budget (FusedMatvecOp.loraFits): its products read h computed ahead.
 */
const WIDE: ModelConfig = {
  ...BIASED,
  dim: 256,
  hiddenDim: 384,
  headDim: 64,
  ropeFreqFactors: undefined,
  ropeLayers: undefined,
  qkvBias: false,
};

/** Whether this adapter's fused tiles are the unfused matvec's (so sums run in one order). */
async function sameTiles(): Promise<boolean> {
  const { gpu } = await testGpu();
  const fused = FUSED_TILES[adapterClass(gpu.capabilities)];
  const mv = matvecTiling(gpu);
  return fused.wg === mv.WG && fused.rows === mv.ROWS;
}

async function compare(
  what: string,
  weights: ModelWeights | WeightSource,
  rng: Rng,
  options: LlamaModelOptions = {},
  rank = 8,
): Promise<void> {
  const { gpu, registry, recorder } = await testGpu();
  const config = weights.config;
  const fused = await LlamaModel.create(gpu, registry, weights, what, options);
  const layerKernel = options.oneWorkgroupLayers !== false && fused.kernels.layer !== undefined;
  const plain = await LlamaModel.create(gpu, registry, weights, what, {
    ...options,
    fusedDecode: false,
  });
  const adapter = new LoraAdapter(gpu, config, {
    rank,
    alpha: 2 * rank,
    targets: LORA_TARGETS,
    seed: 3,
  });
  randomizeAdapter(gpu, adapter, rng);
  const bitwise = await sameTiles();
  const v = config.vocabSize;
  const prompt = 5;
  const steps = 6;
  const tokens = [1, ...Array.from({ length: prompt + steps }, () => rng.int(v))];
  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [tokens.length]);
  // Products whose adapter is too large for in-kernel h take one dispatch more: its h ahead.
  const { dim, hiddenDim: hidden, headDim, nHeads, nKvHeads } = config;
  const tiles = FUSED_TILES[adapterClass(gpu.capabilities)];
  const products: [FusedVariant["epilogue"], number[], number][] = [
    ["qkv", [nHeads * headDim, nKvHeads * headDim, nKvHeads * headDim], dim],
    ["add", [dim], nHeads * headDim],
    ["swiglu", [hidden, hidden], dim],
    ["add", [dim], hidden],
  ];
  const mergeProducts = layerKernel && options.mergeAdapter !== false
    ? LORA_TARGETS.length * fused.weights.layers.filter((l) => l.packed?.kind === "f32").length
    : 0;
  const hAhead = products.filter(([e, rows, k]) => !FusedMatvecOp.loraFits(tiles, e, rows, k, rank))
    .length;
  try {
    for (const withAdapter of [false, true]) {
      const runs = [fused, plain].map((model) => ({
        model,
        cache: model.createCache(tokens.length),
        act: model.createActivations(prompt),
      }));
      const step = (r: (typeof runs)[number], offset: number, t: number) =>
        r.model.recordForward(recorder, {
          ids,
          offset,
          tokens: t,
          cache: r.cache,
          activations: r.act,
          logits: "last",
          adapter: withAdapter ? adapter : undefined,
        });
      for (const r of runs) step(r, 0, prompt);
      for (let i = prompt; i < prompt + steps; i++) {
        // New adapter values mid-run: merged decode weights must follow them.
        if (withAdapter && i === prompt + 3) randomizeAdapter(gpu, adapter, rng);
        const before = recorder.totals.dispatches;
        step(runs[0], i, 1);
        const dispatches = recorder.totals.dispatches - before;
        step(runs[1], i, 1);
        recorder.submit();
        const [a, b] = await Promise.all(
          runs.map(async (r) => (await readF32(gpu, r.act.logits)).subarray(0, v)),
        );
        const label = `${what}${withAdapter ? " with an adapter" : ""}, token ${i}`;
        if (bitwise && !withAdapter && !layerKernel) {
          assert.deepEqual(
            new Uint32Array(a.slice().buffer),
            new Uint32Array(b.slice().buffer),
            label,
          );
        } else {
          // An f16 cache turns the paths' float32 rounding apart into a half's ulp at times. The
          // random adapter (A and B of scale 0.2) makes some attention sharply peaked, which can
          // magnify rounding apart: across seeds the adapter's tokens differ by 1e-7 to 2e-5,
          // once (seed 314923583, token 8) by 1.1e-4; a LoRA delta 0.1% off differs by 8e-3.
          const tol = options.kvCacheDtype === "f16" ? 2e-3 : withAdapter ? 4e-4 : 1e-4;
          assertClose(a, b, label, tol);
        }
        // The first token after the adapter's values change merges them into a copy of the
        // layers (one product a projection) where the model decodes on merged weights.
        const merges = withAdapter && (i === prompt || i === prompt + 3) ? mergeProducts : 0;
        if (i === prompt || merges) {
          console.log(`  ${label}: ${dispatches} dispatches for the forward`);
          const grouped = fused.weights.layers.every((l) => l.qkv && l.gateUp);
          if (layerKernel) {
            // A layer a dispatch, the first gathering its embedding row where it can; the head.
            const first = [...fused.kernels.layer!.values()].some((op) => op.embeds);
            assert.equal(dispatches, config.nLayers + (first ? 1 : 2) + merges, label);
          } else if (!config.qkNorm && grouped) {
            // Per layer: q/k/v, attention, o, gate/up, down (and an adapter's h ahead where it
            // takes that); then the embedding and the head. (Q4_K_M keeps v in Q6_K: its q, k
            // and v are not one kind, and take the unfused path.)
            const perLayer = 5 + (withAdapter ? hAhead : 0);
            assert.equal(dispatches, perLayer * config.nLayers + 2, label);
          }
        }
      }
      for (const r of runs) {
        r.cache.destroy();
        r.act.destroy();
      }
    }
    // The merged copy lives with the adapter, is counted in its bytes and freed with it.
    const copies = [...adapter.derived.values()];
    const packedBytes = fused.weights.layers.reduce(
      (sum, l) => sum + (l.packed?.data.byteLength ?? 0),
      0,
    );
    assert.deepEqual(copies.map((d) => d.bytes), mergeProducts ? [packedBytes] : [], what);
    recorder.submit();
    const [inUse, counted] = [gpu.memory.bytesInUse, adapter.bytes];
    adapter.destroy();
    assert.equal(inUse - gpu.memory.bytesInUse, counted, "the adapter frees all it counts");
    assert.equal(adapter.derived.size, 0);
  } finally {
    recorder.submit();
    ids.destroy();
    adapter.destroy();
    fused.destroy();
    plain.destroy();
  }
}

gpuTest("fused decode: stories260K f32 and f16 decode as the unfused kernels do", async () => {
  const rng = seededRng("fused decode stories260K");
  const weights = await readLlama2c(STORIES260K);
  await compare("stories260K", weights, rng, { oneWorkgroupLayers: false });
  await compare("stories260K f16", weights, rng, { weightDtype: "f16", oneWorkgroupLayers: false });
  await compare("stories260K, a layer a workgroup", weights, rng);
  await compare("stories260K, a layer a workgroup, adapter unmerged", weights, rng, {
    mergeAdapter: false,
  });
  await compare("stories260K f16, a layer a workgroup", weights, rng, { weightDtype: "f16" });
});

gpuTest("fused decode: biases, half pairs, a layer without RoPE, head norms", async () => {
  const rng = seededRng("fused decode architectures");
  const biased = randomWeights(BIASED, rng);
  await compare("biased", biased, rng, { oneWorkgroupLayers: false });
  await compare("biased, a layer a workgroup", biased, rng);
  await compare("head norms", randomWeights(HEAD_NORMS, rng), rng);
});

for (const fixture of ["stories260K-q8_0.gguf", "tiny-llama-spm-q4_k_m.gguf"]) {
  sharedDataTest({
    name: `fused decode: ${fixture} (quantized blocks) decodes as the unfused kernels do`,
    needs: [`models/gguf/${fixture}`],
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const rng = seededRng(`fused decode ${fixture}`);
      const files = await loadModelFiles(sharedPath(`models/gguf/${fixture}`));
      await compare(fixture, files.source, rng, { oneWorkgroupLayers: false });
      await compare(`${fixture}, a layer a workgroup where it suits`, files.source, rng);
    },
  });
}

gpuTest("fused decode: a wide model with a rank-64 adapter (h computed ahead)", async () => {
  const rng = seededRng("fused decode wide");
  const { gpu } = await testGpu();
  const tiles = FUSED_TILES[adapterClass(gpu.capabilities)];
  if (tiles === FUSED_TILES.fallback) {
    assert.ok(!FusedMatvecOp.loraFits(tiles, "qkv", [256, 128, 128], 256, 64), "h goes ahead here");
  }
  await compare("wide, rank 64", randomWeights(WIDE, rng), rng, { oneWorkgroupLayers: false }, 64);
});

gpuTest("fused decode: with an f16 KV cache, as the unfused kernels do", async () => {
  const rng = seededRng("fused decode f16 kv");
  const weights = await readLlama2c(STORIES260K);
  const f16 = { kvCacheDtype: "f16" } as const;
  await compare("stories260K, f16 cache", weights, rng, { ...f16, oneWorkgroupLayers: false });
  await compare("stories260K, f16 cache, a layer a workgroup", weights, rng, f16);
  const biased = randomWeights(BIASED, rng);
  await compare("biased, f16 cache", biased, rng, { ...f16, oneWorkgroupLayers: false });
  await compare("biased, f16 cache, a layer a workgroup", biased, rng, f16);
});
