/**
 * End-to-end model throughput: prefill tokens/s (a 128-token prompt) and decode tokens/s
 * (256 tokens, 32 for the larger model, sampled greedily on the GPU in batches of 8 steps growing
 * while they take under 50 ms, each started before the last one's tokens are read, as generation
 * runs: decodeCount in src/model/decode_loop.ts), without and with a LoRA adapter of the
 * Temp-Lora defaults' rank, for stories260K and for a random-weight model of SmolLM2-135M's
 * shape. Each rate is given per wall-clock second and per CPU-second of this process (llvmpipe's
 * threads run in it, so on a shared machine the CPU figure stays comparable). The decode step's
 * dispatches and bytes of weights read per token come from the recorder's counts, beside the
 * least a token must read (every weight once); its GB/s of weights read is set against the copy
 * kernel's GB/s measured in the same run. A table is printed at the end.
 */
import process from "node:process";
import { gpu, recorder, registry } from "./harness.ts";
import { type ModelConfig, tensorShapes } from "../src/formats/config.ts";
import { readLlama2c } from "../src/formats/llama2c.ts";
import type { ModelWeights, TensorData } from "../src/formats/tensor_data.ts";
import { createTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { Rng } from "../src/core/random.ts";
import { DecodeSession, type SamplingSettings } from "../src/model/decode_session.ts";
import { LlamaModel, type LlamaModelOptions } from "../src/model/llama.ts";
import { decodeCount, MAX_STEP_GROWTH } from "../src/model/decode_loop.ts";
import type { ModelAdapter } from "../src/model/adapter.ts";
import { LoraAdapter } from "../src/templora/adapter.ts";
import { resolveTempLoraSettings } from "../src/templora/settings.ts";

const PROMPT = 128;
const STEPS_PER_SUBMIT = 8;
const MAX_STEPS = STEPS_PER_SUBMIT * MAX_STEP_GROWTH;
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

/** Wall-clock and CPU seconds of one sample. */
interface Sample {
  wall: number;
  cpu: number;
}

interface Row {
  model: string;
  params: number;
  prefill: Sample[]; // seconds per 128-token prefill
  decode: Sample[]; // seconds per token
  adapter?: number; // LoRA rank, when decoding with an adapter
  dispatchesPerToken: number;
  weightBytesPerToken: number;
  minWeightBytesPerToken: number;
}

const rows: Row[] = [];
const copyGBs: number[] = [];

/** Runs `fn`, returning its wall-clock and process CPU seconds. */
async function timed(fn: () => Promise<void>): Promise<Sample> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const cpu = process.cpuUsage(cpu0);
  return { wall: (performance.now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function benchModel(
  label: string,
  weights: ModelWeights,
  iterations: number,
  decodeTokens: number,
  options: LlamaModelOptions = {},
) {
  const model = await LlamaModel.create(gpu, registry, weights, label, options);
  const c = model.config;
  const params = [...weights.tensors.values()].reduce((s, t) => s + t.data.length, 0);
  const row: Row = {
    model: label,
    params,
    prefill: [],
    decode: [],
    dispatchesPerToken: 0,
    weightBytesPerToken: 0,
    minWeightBytesPerToken: model.minWeightBytesPerToken(),
  };
  const settings = resolveTempLoraSettings(c);
  const adapter = new LoraAdapter(gpu, c, settings);
  const adapted: Row = {
    ...row,
    prefill: [],
    decode: [],
    adapter: settings.rank,
    minWeightBytesPerToken: model.minWeightBytesPerToken(adapter),
  };
  rows.push(row, adapted);
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
      const sample = await timed(async () => {
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
      });
      row.prefill.push({ wall: sample.wall / repeat, cpu: sample.cpu / repeat });
      b.end();
    },
  });

  for (const [r, withAdapter] of [[row, undefined], [adapted, adapter]] as const) {
    benchDecode(label, model, prompt, iterations, decodeTokens, r, withAdapter);
  }
}

function benchDecode(
  label: string,
  model: LlamaModel,
  prompt: number[],
  iterations: number,
  decodeTokens: number,
  row: Row,
  adapter: ModelAdapter | undefined,
): void {
  const lora = adapter ? `, LoRA r=${adapter.rank}` : "";
  Deno.bench({
    name:
      `${label} decode ${decodeTokens} tokens (${STEPS_PER_SUBMIT}-${MAX_STEPS} per submit${lora})`,
    group: label,
    n: iterations,
    warmup: 1,
    async fn(b) {
      const session = await DecodeSession.create(model, registry, {
        capacity: PROMPT + decodeTokens + 1,
        maxTokens: PROMPT + decodeTokens + 1,
      });
      session.adapter = adapter;
      session.append(prompt);
      session.recordFill(recorder);
      await recorder.flush();
      b.start();
      const sample = await timed(async () => {
        await decodeCount(session, recorder, decodeTokens, GREEDY, {
          stepsPerSubmit: STEPS_PER_SUBMIT,
        });
      });
      row.decode.push({ wall: sample.wall / decodeTokens, cpu: sample.cpu / decodeTokens });
      b.end();
      const stats = session.stats;
      row.dispatchesPerToken = stats.dispatches / stats.tokens;
      row.weightBytesPerToken = stats.weightBytes / stats.tokens;
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

const stories = await readLlama2c("../shared/models/stories260K/stories260K.bin");
await benchModel("stories260K", stories, 5, 256);
// The same model with the other decode path: one workgroup a layer (DecodeLayerOp) is chosen for
// it on software adapters and several wide dispatches on GPUs (see workgroupWeights there).
const fallback = gpu.capabilities.isFallbackAdapter;
await benchModel(
  `stories260K, ${fallback ? "layers in several dispatches" : "one workgroup a layer"}`,
  stories,
  5,
  256,
  { oneWorkgroupLayers: fallback ? false : "always" },
);
await benchModel("SmolLM2-135M shape (random f32)", syntheticWeights(SMOLLM2_135M), 2, 32);

function report(): void {
  if (!rows.some((r) => r.decode.length)) return;
  // The first sample of each list is the warm-up (deno bench runs it through fn too).
  const steady = (v: number[]) => median(v.length > 1 ? v.slice(1) : v);
  const seconds = (v: Sample[], key: keyof Sample) => steady(v.map((s) => s[key]));
  const copy = steady(copyGBs);
  const lines = [
    `\nadapter: ${gpu.capabilities.description} (fallback: ${gpu.capabilities.isFallbackAdapter})`,
    `load average at the end: ${Deno.loadavg().map((x) => x.toFixed(2)).join(", ")}`,
    `copy kernel: ${copy.toFixed(2)} GB/s (read + write)`,
    "| model | LoRA | dispatches / token | weights read / token (least) | prefill tok/s " +
    "(per CPU-s) | decode tok/s (per CPU-s) | decode GB/s of weights | vs copy |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  const rate = (tokens: number, v: Sample[]) =>
    v.length
      ? `${(tokens / seconds(v, "wall")).toFixed(1)} (${(tokens / seconds(v, "cpu")).toFixed(1)})`
      : "";
  for (const r of rows) {
    if (!r.decode.length) continue;
    const gbs = r.weightBytesPerToken / seconds(r.decode, "wall") / 1e9;
    lines.push(
      `| ${r.model} (${(r.params / 1e6).toFixed(2)} M) | ${
        r.adapter ? `r=${r.adapter}` : "none"
      } | ` +
        `${r.dispatchesPerToken.toFixed(1)} | ${(r.weightBytesPerToken / 1e6).toFixed(2)} MB ` +
        `(${(r.minWeightBytesPerToken / 1e6).toFixed(2)}) | ${rate(PROMPT, r.prefill)} | ` +
        `${rate(1, r.decode)} | ${gbs.toFixed(2)} | ${(100 * gbs / copy).toFixed(0)}% |`,
    );
  }
  console.log(lines.join("\n"));
}

globalThis.addEventListener("unload", report);
