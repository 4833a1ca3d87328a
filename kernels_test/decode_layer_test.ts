import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/device.ts";
import {
  assertClose,
  gpuTest,
  POISON_BITS,
  poisoned,
  readWritten,
  seededRng,
  testGpu,
} from "./helpers.ts";
import { randomWeights } from "./model_fixtures.ts";
import { DecodeLayerOp, type DecodeLayerShape } from "../src/ops/decode_layer.ts";
import type { FusedWeightKind } from "../src/ops/fused_matvec.ts";
import { ropeFrequencyTable } from "../src/ops/rope.ts";
import { LORA_TARGETS, type LoraTarget, projectionDims } from "../src/core/lora.ts";
import type { ModelConfig } from "../src/formats/config.ts";
import {
  f16ArrayToF32,
  f32ArrayToF16,
  type StoredTensor,
  tensorToF32,
  type WeightSource,
} from "../src/formats/tensor_data.ts";
import { readBytes, readF32, readU32 } from "../src/gpu/readback.ts";
import { Tensor, uploadTensor, writeTensor } from "../src/gpu/tensor.ts";
import { uploadWeights } from "../src/model/gpu_weights.ts";
import { KvCache, type KvCacheDtype } from "../src/model/kv_cache.ts";
import type { Rng } from "../src/core/random.ts";
import { dequantizeMatrix, quantizeRandom } from "../src/reference/quant.ts";
import { decodeLayerRef, type LayerWeightsRef } from "../src/reference/decode_layer.ts";
import { kvCacheValues } from "../src/reference/attention.ts";

const ROPE_BASE = 10000;

const MATRIX: Record<LoraTarget, string> = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj",
};

/** A one-layer model's weights of one kind, and the float64 values the kernel should see. */
function layerSource(
  config: ModelConfig,
  kind: FusedWeightKind,
  rng: Rng,
): { source: WeightSource; ref: LayerWeightsRef } {
  const weights = randomWeights(config, rng);
  const tensors = new Map<string, StoredTensor>(weights.tensors);
  const values = (name: string) => Float64Array.from(tensorToF32(weights.tensors.get(name)!));
  const matrices = {} as Record<LoraTarget, ArrayLike<number>>;
  for (const t of LORA_TARGETS) {
    const name = `model.layers.0.${MATRIX[t]}.weight`;
    const [rows, cols] = weights.tensors.get(name)!.shape;
    if (kind === "f32") matrices[t] = values(name);
    else if (kind === "f16") {
      matrices[t] = f16ArrayToF32(f32ArrayToF16(tensorToF32(weights.tensors.get(name)!)));
    } else {
      const bytes = quantizeRandom(kind, rng, rows, cols);
      tensors.set(name, { dtype: kind, shape: [rows, cols], data: bytes });
      matrices[t] = dequantizeMatrix(kind, bytes, rows, cols);
    }
  }
  const source: WeightSource = {
    config,
    names: () => tensors.keys(),
    shape: (name) => tensors.get(name)?.shape,
    read: (name) => Promise.resolve(tensors.get(name)!),
  };
  const bias = config.qkvBias
    ? (["q", "k", "v"].map((t) => values(`model.layers.0.self_attn.${t}_proj.bias`)) as [
      Float64Array,
      Float64Array,
      Float64Array,
    ])
    : undefined;
  return {
    source,
    ref: {
      attnNorm: values("model.layers.0.input_layernorm.weight"),
      ffnNorm: values("model.layers.0.post_attention_layernorm.weight"),
      matrices,
      bias,
    },
  };
}

/** The kernel's shape for a layer of `config` with matrices of `kind`. */
function layerShape(
  config: ModelConfig,
  kind: FusedWeightKind,
  options: { rope?: DecodeLayerShape["rope"]; kvDtype?: KvCacheDtype } = {},
): DecodeLayerShape {
  return {
    dim: config.dim,
    hiddenDim: config.hiddenDim,
    nHeads: config.nHeads,
    nKvHeads: config.nKvHeads,
    headDim: config.headDim,
    kind,
    bias: config.qkvBias,
    ...options,
  };
}

interface Case {
  config: ModelConfig;
  kind: FusedWeightKind;
  rank?: number;
  past: number;
  /** The KV cache's element type (default f32). */
  kvDtype?: KvCacheDtype;
  /** A first layer: the input is row `id` of a random [vocab, dim] table (clamped), x poisoned. */
  embed?: { vocab: number; id: number };
}

async function runCase(rng: Rng, c: Case): Promise<void> {
  const { gpu, registry, recorder } = await testGpu();
  const { config, kind, past } = c;
  const kvDtype = c.kvDtype ?? "f32";
  const what = `decode layer ${kind} dim=${config.dim} hidden=${config.hiddenDim} heads=` +
    `${config.nHeads}/${config.nKvHeads}x${config.headDim} bias=${config.qkvBias} ` +
    `rope=${config.ropePairs} rank=${c.rank ?? 0} past=${past} kv=${kvDtype}` +
    (c.embed ? ` embedding row ${c.embed.id} of ${c.embed.vocab}` : "");
  const { source, ref } = layerSource(config, kind, rng);
  const weights = await uploadWeights(gpu, source, what, {
    weightDtype: kind === "f16" ? "f16" : "f32",
  });
  const layer = weights.layers[0];
  assert.ok(layer.packed, `${what}: the layer is packed`);
  const rope = config.ropeLayers?.[0] === false ? undefined : config.ropePairs;
  const shape = layerShape(config, kind, { rope, kvDtype });
  assert.ok(DecodeLayerOp.suits(gpu, shape), `${what}: suits`);
  const op = await DecodeLayerOp.create(registry, shape, { embeds: c.embed !== undefined });
  const kvDim = config.nKvHeads * config.headDim;
  const cache = new KvCache(gpu, config, past + 3, kvDtype);
  const kvBuffer = cache.kv[0];
  const f16 = kvDtype === "f16";
  // Poison everywhere, then earlier rows of keys and values (as the cache holds them).
  const poison = new Uint32Array(kvBuffer.byteLength / 4).fill(POISON_BITS);
  const pastK = kvCacheValues(rng.normals(past * kvDim), kvDtype);
  const pastV = kvCacheValues(rng.normals(past * kvDim), kvDtype);
  if (f16) {
    const host = new Uint16Array(poison.buffer);
    host.set(f32ArrayToF16(pastK), 0);
    host.set(f32ArrayToF16(pastV), cache.vOffset);
    writeTensor(gpu, kvBuffer, host);
  } else {
    const host = new Float32Array(poison.buffer);
    host.set(pastK, 0);
    host.set(pastV, cache.vOffset);
    writeTensor(gpu, kvBuffer, host);
  }
  let xValues = rng.normals(config.dim);
  let x = uploadTensor(gpu, xValues, [config.dim]);
  let embed: { table: Tensor; tokens: Tensor; at: number } | undefined;
  if (c.embed) {
    const { vocab, id } = c.embed;
    const tableValues = rng.normals(vocab * config.dim);
    const row = Math.min(id, vocab - 1);
    xValues = tableValues.subarray(row * config.dim, (row + 1) * config.dim);
    x.destroy();
    x = poisoned(gpu, [config.dim]);
    const tokens = uploadTensor(gpu, Uint32Array.from([7, 7, id, 7]), [4]);
    embed = { table: uploadTensor(gpu, tableValues, [vocab, config.dim]), tokens, at: 2 };
  }
  const freqs = rope
    ? uploadTensor(gpu, ropeFrequencyTable(config.headDim, ROPE_BASE), [config.headDim / 2, 4])
    : undefined;
  let loraBuffer: Tensor | undefined;
  let lora: Parameters<DecodeLayerOp["record"]>[1]["lora"];
  if (c.rank) {
    const rank = c.rank;
    const pad = (n: number) => Math.ceil(n / 64) * 64;
    let n = 64;
    const layout = LORA_TARGETS.map((t) => {
      const [inDim, outDim] = projectionDims(config, t);
      const a = n;
      n += pad(rank * inDim);
      const b = n;
      n += pad(outDim * rank);
      return { t, a, b, inDim, outDim };
    });
    const flat = rng.normals(n, 0.3);
    loraBuffer = uploadTensor(gpu, flat, [n]);
    const scale = 0.5 + rng.next();
    const parts = {} as Record<LoraTarget, { a: Tensor; b: Tensor }>;
    const a = {} as Record<LoraTarget, ArrayLike<number>>;
    const b = {} as Record<LoraTarget, ArrayLike<number>>;
    for (const l of layout) {
      parts[l.t] = {
        a: new Tensor(loraBuffer.buffer, [rank, l.inDim], "f32", 4 * l.a),
        b: new Tensor(loraBuffer.buffer, [l.outDim, rank], "f32", 4 * l.b),
      };
      a[l.t] = flat.subarray(l.a, l.a + rank * l.inDim);
      b[l.t] = flat.subarray(l.b, l.b + l.outDim * rank);
    }
    lora = { parts, scale };
    ref.lora = { a, b, rank, scale };
  }
  op.record(recorder, {
    x,
    weights: layer.packed!,
    kv: kvBuffer,
    vOffset: cache.vOffset,
    past,
    eps: config.normEps,
    freqs,
    lora,
    embed,
  });
  recorder.submit();
  const expected = decodeLayerRef(
    {
      dim: config.dim,
      hiddenDim: config.hiddenDim,
      nHeads: config.nHeads,
      nKvHeads: config.nKvHeads,
      headDim: config.headDim,
      eps: config.normEps,
      rope: rope && { base: ROPE_BASE, pairs: rope },
    },
    ref,
    xValues,
    pastK,
    pastV,
    past,
    kvDtype,
  );
  // With an f16 cache the kernel's f32 k or v can round to the half next to the twin's.
  const tol = kind === "f32" || kind === "f16" ? 1e-4 : 3e-4;
  const kvTol = f16 ? Math.max(tol, 1e-3) : tol;
  assertClose(await readF32(gpu, x), expected.x, `${what}: x`, f16 ? kvTol : tol);
  const bytes = await readBytes(gpu, kvBuffer);
  const words = new Uint32Array(bytes);
  const all = f16 ? f16ArrayToF32(new Uint16Array(bytes)) : new Float32Array(bytes);
  const kAt = past * kvDim, vAt = cache.vOffset + past * kvDim;
  const perWord = f16 ? 2 : 1;
  for (let i = 0; i < words.length; i++) {
    const e = i * perWord; // the word's first element
    const written = (e >= kAt && e < kAt + kvDim) || (e >= vAt && e < vAt + kvDim);
    const earlier = e < kAt || (e >= cache.vOffset && e < vAt);
    if (written || earlier) continue;
    if (words[i] !== POISON_BITS) throw new Error(`${what}: kv word ${i} overwritten`);
  }
  assert.deepEqual(all.subarray(0, kAt), Float32Array.from(pastK), `${what}: earlier keys kept`);
  assert.deepEqual(
    all.subarray(cache.vOffset, vAt),
    Float32Array.from(pastV),
    `${what}: earlier values kept`,
  );
  assertClose(all.subarray(kAt, kAt + kvDim), expected.k, `${what}: k`, kvTol);
  assertClose(all.subarray(vAt, vAt + kvDim), expected.v, `${what}: v`, kvTol);
  for (const t of [x, freqs, loraBuffer, embed?.table, embed?.tokens]) t?.destroy();
  cache.destroy();
  weights.destroy();
}

/** stories260K's shape. */
const STORIES: ModelConfig = {
  architecture: "test",
  dim: 64,
  hiddenDim: 172,
  nLayers: 1,
  nHeads: 8,
  nKvHeads: 4,
  headDim: 8,
  vocabSize: 32,
  maxSeqLen: 64,
  normEps: 1e-5,
  ropeTheta: ROPE_BASE,
  ropePairs: "interleaved",
  tiedEmbeddings: true,
  qkvBias: false,
};

/** Odd sizes: q wider than the model, heads of 6, biases, half pairs. */
const ODD: ModelConfig = {
  ...STORIES,
  dim: 20,
  hiddenDim: 28,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 6,
  ropePairs: "half",
  qkvBias: true,
};

gpuTest("decode_layer.wgsl matches its twin (f32, f16; adapter; biases; no RoPE)", async () => {
  const rng = seededRng("decode layer");
  for (const kind of ["f32", "f16"] as const) {
    await runCase(rng, { config: STORIES, kind, past: 0 });
    await runCase(rng, { config: STORIES, kind, past: 9, rank: 16 });
    await runCase(rng, { config: ODD, kind, past: 5 });
    await runCase(rng, { config: ODD, kind, past: 2, rank: 3 });
  }
  await runCase(rng, { config: { ...ODD, ropeLayers: [false] }, kind: "f32", past: 4, rank: 2 });
});

gpuTest(
  "decode_layer.wgsl as a first layer gathers its input from the embedding table",
  async () => {
    const rng = seededRng("decode layer embedding");
    await runCase(rng, { config: STORIES, kind: "f32", past: 0, embed: { vocab: 40, id: 13 } });
    await runCase(rng, {
      config: STORIES,
      kind: "f32",
      past: 5,
      rank: 4,
      embed: { vocab: 40, id: 39 },
    });
    // An id past the table reads its last row, as embedding.wgsl does.
    await runCase(rng, {
      config: ODD,
      kind: "f16",
      past: 3,
      rank: 2,
      embed: { vocab: 9, id: 1000 },
    });
  },
);

gpuTest("decode_layer.wgsl over an f16 KV cache matches its twin", async () => {
  const rng = seededRng("decode layer f16 cache");
  await runCase(rng, { config: STORIES, kind: "f32", past: 0, kvDtype: "f16" });
  await runCase(rng, { config: STORIES, kind: "f16", past: 11, rank: 8, kvDtype: "f16" });
  await runCase(rng, { config: ODD, kind: "f32", past: 5, kvDtype: "f16" });
  await runCase(rng, { config: ODD, kind: "f16", past: 3, rank: 3, kvDtype: "f16" });
  const noRope = { ...ODD, ropeLayers: [false] };
  await runCase(rng, { config: noRope, kind: "f32", past: 4, rank: 2, kvDtype: "f16" });
  await runCase(rng, {
    config: { ...STORIES, dim: 64, hiddenDim: 96 },
    kind: "Q8_0",
    past: 6,
    kvDtype: "f16",
  });
});

gpuTest("decode_layer.wgsl over GGUF blocks matches its twin", async () => {
  const rng = seededRng("decode layer blocks");
  const config = { ...STORIES, dim: 64, hiddenDim: 96 };
  for (const kind of ["Q8_0", "Q4_0", "Q5_1"] as const) {
    await runCase(rng, { config, kind, past: 6 });
    await runCase(rng, { config, kind, past: 3, rank: 5 });
  }
  const k256 = { ...STORIES, dim: 256, hiddenDim: 256, nHeads: 4, nKvHeads: 2, headDim: 64 };
  await runCase(rng, { config: k256, kind: "Q4_K", past: 4, rank: 4 });
});

gpuTest("decode layer: which shapes suit one workgroup", async () => {
  const { gpu } = await testGpu();
  const shape = (c: ModelConfig, kind: FusedWeightKind = "f32") =>
    layerShape({ ...c, qkvBias: false }, kind, { rope: "half" });
  assert.ok(DecodeLayerOp.suits(gpu, shape(STORIES)));
  // SmolLM2-135M: 3.5 M weights a layer and more values than 16 KiB hold.
  const smol = { ...STORIES, dim: 576, hiddenDim: 1536, nHeads: 9, nKvHeads: 3, headDim: 64 };
  assert.ok(!DecodeLayerOp.suits(gpu, shape(smol)));
  assert.ok(!DecodeLayerOp.suits(gpu, shape(STORIES, "Q8_0")), "172 is not whole blocks");
  // A GPU takes several dispatches a layer even for stories260K, unless told to take one.
  const discrete = {
    limits: gpu.limits,
    capabilities: { ...gpu.capabilities, isFallbackAdapter: false, description: "NVIDIA H200" },
  } as unknown as Gpu;
  assert.ok(!DecodeLayerOp.suits(discrete, shape(STORIES)));
  assert.ok(DecodeLayerOp.suits(discrete, shape(STORIES), true));
  assert.ok(!DecodeLayerOp.suits(discrete, shape(smol), true), "always, where it fits");
});

/** The head entry point on fresh inputs: logits against the twin, and the argmax of them. */
async function runHeadCase(rng: Rng, config: ModelConfig, kind: "f32" | "f16", vocab: number) {
  const { gpu, registry, recorder } = await testGpu();
  const what = `decode head ${kind} dim=${config.dim} vocab=${vocab}`;
  const dim = config.dim;
  const shape = layerShape(config, "f32", { rope: config.ropePairs });
  const head = { kind, vocab };
  assert.ok(DecodeLayerOp.headSuits(gpu, shape, head), `${what}: suits`);
  const op = await DecodeLayerOp.create(registry, shape, { head });
  const xValues = rng.normals(dim);
  const normValues = rng.normals(dim, 0.5).map((v) => 1 + v);
  const matrix = rng.normals(vocab * dim, 0.2);
  // A tie for the largest logit: two equal rows well above the rest; the lower index wins.
  const [low, high] = [3, vocab - 2];
  for (let k = 0; k < dim; k++) {
    matrix[low * dim + k] = matrix[high * dim + k] = 4 * Math.sign(xValues[k] * normValues[k]);
  }
  const stored = kind === "f16" ? f16ArrayToF32(f32ArrayToF16(matrix)) : Float32Array.from(matrix);
  const x = uploadTensor(gpu, xValues, [dim]);
  const norm = uploadTensor(gpu, normValues, [dim]);
  const w = uploadTensor(
    gpu,
    kind === "f16" ? f32ArrayToF16(matrix) : Float32Array.from(matrix),
    [vocab, dim],
  );
  const logits = poisoned(gpu, [vocab]);
  const tokens = poisoned(gpu, [8], "u32");
  op.recordHead(recorder, {
    x,
    norm,
    head: w,
    logits,
    eps: config.normEps,
    argmax: { tokens, at: 5 },
  });
  recorder.submit();
  const got = await readWritten(gpu, logits, `${what}: logits`);
  // The twin: float64 RMSNorm, then the product.
  let squares = 0;
  for (const v of xValues) squares += v * v;
  const rstd = 1 / Math.sqrt(squares / dim + config.normEps);
  const expected = new Float64Array(vocab);
  for (let r = 0; r < vocab; r++) {
    for (let k = 0; k < dim; k++) {
      expected[r] += xValues[k] * rstd * normValues[k] * stored[r * dim + k];
    }
  }
  assertClose(got, expected, `${what}: logits`, 1e-5);

  const ids = await readU32(gpu, tokens);
  const poison = new Uint32Array(8).fill(POISON_BITS);
  assert.deepEqual([...ids.subarray(0, 5)], [...poison.subarray(0, 5)], `${what}: slots before`);
  assert.deepEqual([...ids.subarray(6)], [...poison.subarray(6)], `${what}: slots after`);
  let best = 0;
  for (let r = 1; r < vocab; r++) if (got[r] > got[best]) best = r;
  assert.equal(best, low, `${what}: the tied rows lead`);
  assert.equal(got[low], got[high], `${what}: the tied rows' logits`);
  assert.equal(ids[5], low, `${what}: argmax, ties to the lowest index`);
  for (const t of [x, norm, w, logits, tokens]) t.destroy();
}

gpuTest(
  "decode_layer.wgsl's head matches its twin, and its argmax the logits' own",
  async () => {
    const rng = seededRng("decode head");
    await runHeadCase(rng, STORIES, "f32", 512);
    await runHeadCase(rng, STORIES, "f16", 512);
    await runHeadCase(rng, ODD, "f32", 37);
    const { gpu } = await testGpu();
    const shape = layerShape(STORIES, "f32");
    assert.ok(!DecodeLayerOp.headSuits(gpu, shape, { kind: "f32", vocab: 151936 }), "big vocab");
  },
);
