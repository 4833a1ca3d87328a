import assert from "node:assert/strict";
import { projectionDims } from "../core/lora.ts";
import {
  LORA_TARGETS,
  projectionName,
  type ReferenceConfig,
  referenceForward,
  type ReferenceLora,
  referenceLoss,
  referenceLossAndGradients,
} from "./model.ts";
import { centralDifference } from "./finite_difference.ts";
import { Rng } from "../core/random.ts";

function randomModel(config: ReferenceConfig, rng: Rng) {
  const w = new Map<string, Float64Array>();
  const put = (name: string, n: number, scale: number, offset = 0) =>
    w.set(name, Float64Array.from({ length: n }, () => offset + scale * rng.normal()));
  const { dim, vocabSize } = config;
  put("model.embed_tokens.weight", vocabSize * dim, 1);
  put("model.norm.weight", dim, 0.1, 1);
  for (let l = 0; l < config.nLayers; l++) {
    put(`model.layers.${l}.input_layernorm.weight`, dim, 0.1, 1);
    put(`model.layers.${l}.post_attention_layernorm.weight`, dim, 0.1, 1);
    if (config.qkNorm) {
      put(`model.layers.${l}.self_attn.q_norm.weight`, config.headDim, 0.3, 1);
      put(`model.layers.${l}.self_attn.k_norm.weight`, config.headDim, 0.3, 1);
    }
    for (const target of LORA_TARGETS) {
      const [inDim, outDim] = projectionDims(config, target);
      put(`${projectionName(l, target)}.weight`, inDim * outDim, 1 / Math.sqrt(inDim));
      if (config.qkvBias && "qkv".includes(target)) {
        put(`${projectionName(l, target)}.bias`, outDim, 0.1);
      }
    }
  }
  return w;
}

function randomLora(config: ReferenceConfig, rng: Rng, rank: number): ReferenceLora {
  const lora: ReferenceLora = { rank, scale: 2, a: new Map(), b: new Map() };
  for (let l = 0; l < config.nLayers; l++) {
    for (const target of LORA_TARGETS) {
      const [inDim, outDim] = projectionDims(config, target);
      const name = projectionName(l, target);
      lora.a.set(name, Float64Array.from({ length: rank * inDim }, () => 0.3 * rng.normal()));
      lora.b.set(name, Float64Array.from({ length: outDim * rank }, () => 0.3 * rng.normal()));
    }
  }
  return lora;
}

const CONFIGS: ReferenceConfig[] = [
  {
    dim: 16,
    hiddenDim: 20,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 4,
    vocabSize: 13,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropePairs: "interleaved",
  },
  {
    dim: 12,
    hiddenDim: 8,
    nLayers: 1,
    nHeads: 3,
    nKvHeads: 1,
    headDim: 4,
    vocabSize: 9,
    normEps: 1e-6,
    ropeTheta: 1e6,
    ropePairs: "half",
    qkvBias: true,
  },
  // Heads wider than dim / nHeads (Qwen3's shape): q is [T, 2 * 8] for a width of 12.
  {
    dim: 12,
    hiddenDim: 10,
    nLayers: 1,
    nHeads: 2,
    nKvHeads: 1,
    headDim: 8,
    vocabSize: 11,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropePairs: "half",
  },
  // Qwen3's per-head q/k norms, Llama 3's frequency divisors, and a layer without RoPE (SmolLM3).
  {
    dim: 12,
    hiddenDim: 10,
    nLayers: 2,
    nHeads: 2,
    nKvHeads: 1,
    headDim: 8,
    vocabSize: 11,
    normEps: 1e-6,
    ropeTheta: 500000,
    ropePairs: "interleaved",
    qkNorm: true,
    ropeFreqFactors: [1, 3.5, 12, 32],
    ropeLayers: [true, false],
  },
];

Deno.test("reference model: adapter gradients match central finite differences", () => {
  const seed = Math.floor(Math.random() * 2 ** 31);
  console.log(`  seed ${seed}`);
  const rng = new Rng(seed);
  for (const config of CONFIGS) {
    const weights = randomModel(config, rng);
    const lookup = (name: string) => {
      const w = weights.get(name);
      if (!w) throw new Error(`no ${name}`);
      return w;
    };
    const head = () => lookup("model.embed_tokens.weight");
    const lora = randomLora(config, rng, 3);
    const t = 6;
    const tokens = Array.from({ length: t }, () => rng.int(config.vocabSize));
    const targets = Array.from({ length: t }, () => rng.int(config.vocabSize));
    const mask = [false, true, true, false, true, true];
    const grads = referenceLossAndGradients(config, lookup, head, tokens, targets, mask, lora);
    assert.equal(grads.count, 4);
    const loss = (l: ReferenceLora) =>
      referenceLoss(config, lookup, head, tokens, targets, mask, l);
    assert.ok(Math.abs(grads.loss - loss(lora)) < 1e-12);
    for (
      const [name, matrices, analytic] of [
        ["A", lora.a, grads.dA],
        ["B", lora.b, grads.dB],
      ] as const
    ) {
      for (const key of matrices.keys()) {
        const m = matrices.get(key)!;
        const g = analytic.get(key)!;
        for (let trial = 0; trial < 2; trial++) {
          const i = rng.int(m.length);
          // m belongs to lora, so perturbing it in place moves loss(lora).
          const numeric = centralDifference(() => loss(lora), m, i);
          const err = Math.abs(numeric - g[i]) / Math.max(1e-6, Math.abs(numeric) + Math.abs(g[i]));
          assert.ok(err < 1e-5, `${key} d${name}[${i}]: ${g[i]} vs finite difference ${numeric}`);
        }
      }
    }
  }
});

Deno.test("reference model: an adapter with B = 0 changes nothing", () => {
  const rng = new Rng(7);
  const config = CONFIGS[0];
  const weights = randomModel(config, rng);
  const lookup = (name: string) => weights.get(name)!;
  const head = () => lookup("model.embed_tokens.weight");
  const lora = randomLora(config, rng, 2);
  for (const b of lora.b.values()) b.fill(0);
  const tokens = [1, 5, 2, 7];
  const plain = referenceForward(config, lookup, head, tokens).logits;
  const adapted = referenceForward(config, lookup, head, tokens, lora).logits;
  assert.deepEqual(adapted, plain);
});
