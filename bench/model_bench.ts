/**
 * End-to-end model throughput: prefill tokens/s (a 128-token prompt) and decode tokens/s
 * (64 tokens, 32 for the larger model, sampled greedily on the GPU, 8 steps per submission,
 * tokens read back after each batch, as generation runs) for stories260K and for a random-weight
 * model of SmolLM2-135M's shape. The decode step's GB/s of weights read (every weight matrix once
 * per token) is set against the copy kernel's GB/s measured in the same run. A table is printed
 * at the end.
 */
import { gpu, recorder, registry } from "./harness.ts";
import { type ModelConfig, tensorShapes } from "../src/formats/config.ts";
import { readLlama2c } from "../src/formats/llama2c.ts";
import type { ModelWeights, TensorData } from "../src/formats/tensor_data.ts";
import { createTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { Rng } from "../src/core/random.ts";
import { DecodeSession, type SamplingSettings } from "../src/model/decode_session.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { isQuantized } from "../src/model/gpu_weights.ts";

const PROMPT = 128;
const STEPS_PER_SUBMIT = 8;
const GREEDY: SamplingSettings = {
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  penaltyWindow: 0,
  seed: 0,
  banned: [],
};

const SMOLLM2_135M: ModelConfig = {
  architecture: "LlamaForCausalLM",
  dim: 576,
  hiddenDim: 1536,
  nLayers: 30,
  nHeads: 9,
  nKvHeads: 3,
  headDim: 64,
  vocabSize: 49152,
  maxSeqLen: 2048,
  normEps: 1e-5,
  ropeTheta: 100000,
  ropePairs: "half",
  tiedEmbeddings: true,
  qkvBias: false,
};

/** Random F32 weights, cheaply: slices of one block of normals (timing does not need more). */
function syntheticWeights(config: ModelConfig): ModelWeights {
  const rng = new Rng(1234);
  const block = rng.normals(1 << 20, 0.02);
  const tensors = new Map<string, TensorData>();
  for (const [name, shape] of tensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n;) {
      const start = rng.int(block.length >> 1);
      const len = Math.min(block.length - start, n - i);
      data.set(block.subarray(start, start + len), i);
      i += len;
    }
    if (name.endsWith("norm.weight")) data.fill(1);
    tensors.set(name, { dtype: "F32", shape, data });
  }
  return { config, tensors };
}

/** Bytes of weights one decode step reads: every matrix and norm, one embedding row. */
function bytesPerToken(model: LlamaModel): number {
  const c = model.config;
  const w = model.weights;
  const e = w.embed;
  const [embedBytes, rowBytes] = isQuantized(e) ? [e.data.byteLength, e.rowBytes] : [
    e.byteLength,
    4 * c.dim,
  ];
  const embedUnread = c.tiedEmbeddings ? 0 : embedBytes - rowBytes;
  return w.bytes - embedUnread;
}

interface Row {
  model: string;
  params: number;
  weightBytes: number;
  prefill: number[]; // seconds per 128-token prefill
  decode: number[]; // seconds per token
}

const rows: Row[] = [];
const copyGBs: number[] = [];

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function benchModel(
  label: string,
  weights: ModelWeights,
  iterations: number,
  decodeTokens: number,
) {
  const model = await LlamaModel.create(gpu, registry, weights, label);
  const c = model.config;
  const row: Row = {
    model: label,
    params: [...weights.tensors.values()].reduce((s, t) => s + t.data.length, 0),
    weightBytes: bytesPerToken(model),
    prefill: [],
    decode: [],
  };
  rows.push(row);
  const rng = new Rng(99);
  const prompt = Array.from({ length: PROMPT }, () => 1 + rng.int(c.vocabSize - 1));
  const ids = uploadTensor(gpu, Uint32Array.from(prompt), [PROMPT]);
  const cache = model.createCache(PROMPT);
  const act = model.createActivations(PROMPT);
  // Small models: several prefills per submission, so the ~12 ms host round trip does not count.
  const repeat = Math.max(1, Math.min(16, Math.round(2e9 / (2 * row.params * PROMPT))));

  Deno.bench({
    name: `${label} prefill ${PROMPT} tokens`,
    group: label,
    n: iterations,
    warmup: 1,
    async fn(b) {
      b.start();
      const t0 = performance.now();
      for (let r = 0; r < repeat; r++) {
        cache.length = 0;
        model.recordForward(recorder, {
          ids,
          offset: 0,
          tokens: PROMPT,
          cache,
          activations: act,
          logits: "last",
        });
      }
      await recorder.flush();
      row.prefill.push((performance.now() - t0) / 1000 / repeat);
      b.end();
    },
  });

  Deno.bench({
    name: `${label} decode ${decodeTokens} tokens (${STEPS_PER_SUBMIT} per submit)`,
    group: label,
    n: iterations,
    warmup: 1,
    async fn(b) {
      const session = await DecodeSession.create(model, registry, {
        capacity: PROMPT + decodeTokens + 1,
        maxTokens: PROMPT + decodeTokens + 1,
      });
      session.append(prompt);
      session.recordFill(recorder);
      await recorder.flush();
      b.start();
      const t0 = performance.now();
      for (let done = 0; done < decodeTokens; done += STEPS_PER_SUBMIT) {
        await session.decode(recorder, STEPS_PER_SUBMIT, GREEDY);
      }
      row.decode.push((performance.now() - t0) / 1000 / decodeTokens);
      b.end();
      session.destroy();
    },
  });
}

{
  const n = 16 * 1024 * 1024; // 64 MiB each way, as in kernels_bench.ts
  const op = await CopyOp.create(registry);
  const src = createTensor(gpu, [n]), dst = createTensor(gpu, [n]);
  const repeat = 4;
  Deno.bench({
    name: "copy 64 MiB (bandwidth yardstick)",
    group: "copy",
    n: 5,
    warmup: 1,
    async fn(b) {
      b.start();
      const t0 = performance.now();
      for (let r = 0; r < repeat; r++) op.record(recorder, src, dst);
      await recorder.flush();
      const seconds = (performance.now() - t0) / 1000 / repeat;
      b.end();
      copyGBs.push(2 * 4 * n / seconds / 1e9);
    },
  });
}

await benchModel(
  "stories260K",
  await readLlama2c("../shared/models/stories260K/stories260K.bin"),
  5,
  64,
);
await benchModel("SmolLM2-135M shape (random f32)", syntheticWeights(SMOLLM2_135M), 2, 32);

function report(): void {
  if (!rows.some((r) => r.decode.length)) return;
  // The first sample of each list is the warm-up (deno bench runs it through fn too).
  const steady = (v: number[]) => median(v.length > 1 ? v.slice(1) : v);
  const copy = steady(copyGBs);
  const lines = [
    `\nadapter: ${gpu.capabilities.description} (fallback: ${gpu.capabilities.isFallbackAdapter})`,
    `load average at the end: ${Deno.loadavg().map((x) => x.toFixed(2)).join(", ")}`,
    `copy kernel: ${copy.toFixed(2)} GB/s (read + write)`,
    "| model | params | weights read / token | prefill tok/s | decode tok/s | decode ms/token | " +
    "decode GB/s | vs copy |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    const prefill = steady(r.prefill);
    const decode = steady(r.decode);
    const gbs = r.weightBytes / decode / 1e9;
    lines.push(
      `| ${r.model} | ${(r.params / 1e6).toFixed(2)} M | ${
        (r.weightBytes / 1e6).toFixed(1)
      } MB | ` +
        `${(PROMPT / prefill).toFixed(1)} | ${(1 / decode).toFixed(1)} | ` +
        `${(decode * 1000).toFixed(2)} | ${gbs.toFixed(2)} | ${(100 * gbs / copy).toFixed(0)}% |`,
    );
  }
  console.log(lines.join("\n"));
}

globalThis.addEventListener("unload", report);
