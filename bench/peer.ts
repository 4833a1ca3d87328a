/**
 * templora against llama.cpp on the same GGUF files, side by side in one run.
 *
 *   deno task bench:peer            (= deno run -A --no-lock bench/peer.ts)
 *   options: --rounds N (3)  --threads 1,2  --decode N (tokens; 256 for stories260K, 32 otherwise)
 *            --models stories,smollm2  --peer-gpu vulkan|cuda  --no-templora-writing
 *            --json FILE (every sample)
 *
 * For each file, templora (WebGPU) and llama.cpp (node-llama-cpp's prebuilt CPU build, 1 and 2
 * threads) take turns, round by round in a rotating order, so that a machine shared with other
 * jobs slows all of them alike:
 * - prefill: one 128-token prompt (BOS and the start of Emma, ids from templora's tokenizer, the
 *   same ids to both) from an empty cache, until the last position's logits are ready;
 * - decode: greedy, one forward per token after that prompt (templora samples on the GPU and
 *   batches steps per submission as generation does, from 8 and growing while a batch is quick,
 *   each batch started before the last one's tokens are read: decodeCount; llama.cpp samples on
 *   the CPU).
 * Each figure is the median over rounds of tokens per wall-clock second and per CPU-second of
 * this process (llama.cpp's threads and llvmpipe's both run in it, so on a busy machine the
 * CPU-second figure is the steadier one). The plain read kernel (bench/read_bandwidth.wgsl) and
 * the copy kernel run at the start and the end, so templora's GB/s of weights read per decoded
 * token can be set against what this adapter can read. Last, Temp-Lora's writing speed against
 * plain writing at the same window on stories260K (as bench/templora_bench.ts), and the table of
 * ratios templora / llama.cpp.
 *
 * The SmolLM2-135M-shaped files are made by bench/make_gguf.ts (written on first use, about two
 * minutes). Benchmarks never assert timings.
 */
import { parseArgs } from "node:util";
import process from "node:process";
import readSource from "./read_bandwidth.wgsl" with { type: "text" };
import { acquireGpu } from "../src/gpu/device.ts";
import { KernelRegistry } from "../src/gpu/kernel.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { createTensor, uploadTensor } from "../src/gpu/tensor.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { Rng } from "../src/core/random.ts";
import { readGguf } from "../src/formats/gguf.ts";
import { TextModel } from "../src/model/text_model.ts";
import { DecodeSession, type SamplingSettings } from "../src/model/decode_session.ts";
import { decodeCount } from "../src/model/decode_loop.ts";
import { isQuantized } from "../src/model/gpu_weights.ts";
import type { LlamaModel } from "../src/model/llama.ts";
import { resolveTempLoraSettings } from "../src/templora/settings.ts";
import { writeWithTempLora } from "../src/templora/writer.ts";
import { benchModelFile, ensureBenchModels } from "./make_gguf.ts";
import {
  disposePeerModel,
  loadPeer,
  loadPeerModel,
  type Peer,
  peerDecode,
  type PeerModel,
  peerPrefill,
} from "./llama_cpp.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    threads: { type: "string", default: "1,2" },
    decode: { type: "string" },
    models: { type: "string", default: "stories,smollm2" },
    "peer-gpu": { type: "string" },
    "no-templora-writing": { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const ROUNDS = Number(args.rounds);
const THREADS = args.threads!.split(",").map(Number);
const PROMPT = 128;
const STEPS_PER_SUBMIT = 8;
/** A decode measurement stops after this long (with at least 8 tokens) on a very slow case. */
const DECODE_SECONDS_CAP = 20;
const GREEDY: SamplingSettings = {
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  penaltyWindow: 0,
  seed: 0,
  banned: [],
};
const SHARED = new URL("../../shared/", import.meta.url);
const shared = (p: string) => new URL(p, SHARED).pathname;
const log = (line: string) => console.error(line);

// ---------------------------------------------------------------------------------------------
// Measuring.

/** Wall and CPU seconds of `fn`, and what it returns. */
async function timed<T>(fn: () => Promise<T>): Promise<{ wall: number; cpu: number; value: T }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { wall, cpu: (cpu.user + cpu.system) / 1e6, value };
}

/** One measured case: tokens (or bytes) per wall second and per CPU-second, per sample. */
interface Samples {
  wall: number[];
  cpu: number[];
}
const samples = () => ({ wall: [], cpu: [] } as Samples);

function median(v: number[]): number {
  if (!v.length) return NaN;
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function add(s: Samples, amount: number, t: { wall: number; cpu: number }): void {
  s.wall.push(amount / t.wall);
  s.cpu.push(amount / Math.max(t.cpu, 1e-6));
}

// ---------------------------------------------------------------------------------------------
// The GPU, and the bandwidth yardsticks.

const gpu = await acquireGpu();
const registry = new KernelRegistry(gpu);
const recorder = new Recorder(gpu);
const adapter = `${gpu.capabilities.description} (fallback: ${gpu.capabilities.isFallbackAdapter})`;
log(`adapter: ${adapter}`);

const READ_BYTES = 64 * 2 ** 20;
const readKernel = await registry.get({
  file: "read_bandwidth.wgsl",
  source: readSource,
  constants: { WG: 256 },
});
const copy = await CopyOp.create(registry);
const big = uploadTensor(gpu, new Rng(7).uniforms(READ_BYTES / 4), [READ_BYTES / 4]);
const bigCopy = createTensor(gpu, [READ_BYTES / 4]);
const READ_GROUPS = 1024;
const sums = createTensor(gpu, [READ_GROUPS * 256]);
const bandwidth = { read: samples(), copy: samples() };

async function measureBandwidth(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    const reps = 4;
    const r = await timed(async () => {
      for (let k = 0; k < reps; k++) {
        recorder.dispatch(readKernel, { src: big, dst: sums }, {
          n4: READ_BYTES / 16,
          stride: READ_GROUPS * 256,
        }, [READ_GROUPS]);
      }
      await recorder.flush();
    });
    const c = await timed(async () => {
      for (let k = 0; k < reps; k++) copy.record(recorder, big, bigCopy);
      await recorder.flush();
    });
    if (i === 0) continue; // first use of the pipelines
    add(bandwidth.read, reps * READ_BYTES / 1e9, r);
    add(bandwidth.copy, reps * READ_BYTES / 1e9, c); // bytes read (as many again written)
  }
}

// ---------------------------------------------------------------------------------------------
// The cases.

interface ModelCase {
  label: string;
  file: string;
  decode: number;
  weightDtype?: "f16";
}

const wanted = new Set(args.models!.split(","));
const cases: ModelCase[] = [];
const stories = Number(args.decode ?? 256), smol = Number(args.decode ?? 32);
if (wanted.has("stories")) {
  cases.push(
    { label: "stories260K F32", file: shared("models/gguf/stories260K-f32.gguf"), decode: stories },
    {
      label: "stories260K Q8_0",
      file: shared("models/gguf/stories260K-q8_0.gguf"),
      decode: stories,
    },
  );
}
if (wanted.has("smollm2")) {
  log("bench models: checking bench/models/ (written on first use)");
  await ensureBenchModels({ log });
  for (const type of ["F32", "F16", "Q8_0", "Q4_K_M"] as const) {
    cases.push({
      label: `SmolLM2-135M shape ${type}`,
      file: benchModelFile(type),
      decode: smol,
      weightDtype: type === "F16" ? "f16" : undefined,
    });
  }
}

const peerGpu = args["peer-gpu"] as "vulkan" | "cuda" | undefined;
const peer: Peer = await loadPeer(peerGpu ?? false);
if (!peer.ok) log(`llama.cpp: not measured: ${peer.why}`);
else log(`llama.cpp: ${peer.version}, ${peer.backend}`);
const peerLabel = (n: number) =>
  peer.ok && peer.backend !== "CPU" ? `llama.cpp ${peer.backend}` : `llama.cpp ${n}t`;
const peerThreads = peer.ok && peer.backend !== "CPU" ? [THREADS[0]] : THREADS;

/** Bytes of weights one decode step reads in templora's GPU layout. */
function temploraBytesPerToken(model: LlamaModel): number {
  const c = model.config;
  const w = model.weights;
  const e = w.embed.parts[0].matrix;
  const embedBytes = w.embed.parts.reduce(
    (sum, { matrix: m }) => sum + (isQuantized(m) ? m.data.byteLength : m.byteLength),
    0,
  );
  const rowBytes = isQuantized(e) ? e.rowBytes : 4 * c.dim;
  return w.bytes - (c.tiedEmbeddings ? 0 : embedBytes - rowBytes);
}

/** Bytes of weights one decode step reads in the file's layout (what llama.cpp reads). */
async function fileBytesPerToken(path: string): Promise<number> {
  const g = await readGguf(path);
  let total = 0;
  for (const t of g.tensors.values()) total += t.byteLength;
  const embed = g.tensor("token_embd.weight");
  const tied = !g.tensors.has("output.weight");
  return tied ? total : total - embed.byteLength + embed.byteLength / embed.shape[0];
}

interface EngineResult {
  engine: string;
  prefill: Samples;
  decode: Samples;
  bytesPerToken: number;
  tokens?: number[];
}

interface CaseResult {
  label: string;
  file: string;
  decodeTokens: number;
  engines: EngineResult[];
  /** Greedy tokens templora and llama.cpp agree on from the start (of the first round's). */
  agreement?: string;
}

const results: CaseResult[] = [];
const promptText = await Deno.readTextFile(shared("data/books/austen-emma.txt"))
  .then((t) => t.slice(0, 4000), () => "Once upon a time ".repeat(200));

await measureBandwidth();

for (const c of cases) {
  log(`== ${c.label}: loading`);
  const lm = await TextModel.load(c.file, { gpu, weightDtype: c.weightDtype });
  const prompt = lm.encode(promptText).slice(0, PROMPT);
  const model = lm.model;
  const templora: EngineResult = {
    engine: "templora",
    prefill: samples(),
    decode: samples(),
    bytesPerToken: temploraBytesPerToken(model),
  };
  const engines: EngineResult[] = [templora];
  let peerModel: PeerModel | undefined;
  if (peer.ok) {
    peerModel = await loadPeerModel(peer, c.file, peerThreads, 512, PROMPT);
    const bytes = await fileBytesPerToken(c.file);
    for (const n of peerThreads) {
      engines.push({
        engine: peerLabel(n),
        prefill: samples(),
        decode: samples(),
        bytesPerToken: bytes,
      });
    }
  }
  const ids = uploadTensor(gpu, Uint32Array.from(prompt), [PROMPT]);
  const cache = model.createCache(PROMPT);
  const act = model.createActivations(PROMPT);
  const params = model.weights.bytes;
  // Small models: repeat a measurement until it lasts a moment (one prefill of stories260K is a
  // few milliseconds); each repetition still waits for its own result.
  const minSeconds = 0.5;

  const measure = async (e: EngineResult) => {
    const isPeer = e.engine !== "templora";
    const ctx = isPeer ? peerModel!.contexts.get(peerThreads[engines.indexOf(e) - 1])! : undefined;
    // Prefill.
    let count = 0;
    const pre = await timed(async () => {
      const t0 = performance.now();
      do {
        if (ctx) await peerPrefill(ctx, prompt);
        else {
          cache.length = 0;
          model.recordForward(recorder, {
            ids,
            offset: 0,
            tokens: PROMPT,
            cache,
            activations: act,
            logits: "last",
          });
          await recorder.flush();
        }
        count++;
      } while ((performance.now() - t0) / 1000 < minSeconds && params < 50e6);
    });
    add(e.prefill, count * PROMPT, pre);
    // Decode.
    let tokens: number[] = [];
    if (ctx) {
      let start = { t: 0, cpu: process.cpuUsage() };
      const got = await peerDecode(ctx, prompt, c.decode, () => {
        start = { t: performance.now(), cpu: process.cpuUsage() };
      });
      const cpu = process.cpuUsage(start.cpu);
      tokens = got;
      add(e.decode, got.length, {
        wall: (performance.now() - start.t) / 1000,
        cpu: (cpu.user + cpu.system) / 1e6,
      });
    } else {
      const session = await DecodeSession.create(model, lm.registry, {
        capacity: PROMPT + c.decode + 1,
        maxTokens: PROMPT + c.decode + 1,
      });
      session.append(prompt);
      session.recordFill(recorder);
      await recorder.flush();
      const dec = await timed(async () => {
        tokens.push(
          ...await decodeCount(session, recorder, c.decode, GREEDY, {
            stepsPerSubmit: STEPS_PER_SUBMIT,
            seconds: DECODE_SECONDS_CAP,
          }),
        );
      });
      session.destroy();
      add(e.decode, tokens.length, dec);
    }
    e.tokens ??= tokens;
  };

  for (let r = 0; r < ROUNDS; r++) {
    const order = engines.map((_, i) => engines[(i + r) % engines.length]);
    for (const e of order) {
      await measure(e);
      log(
        `  round ${r + 1} ${e.engine}: prefill ${e.prefill.wall.at(-1)!.toFixed(1)} tok/s, ` +
          `decode ${e.decode.wall.at(-1)!.toFixed(1)} tok/s (load ${Deno.loadavg()[0].toFixed(1)})`,
      );
    }
  }
  const result: CaseResult = { label: c.label, file: c.file, decodeTokens: c.decode, engines };
  if (engines.length > 1) {
    const a = templora.tokens!, b = engines[1].tokens!;
    let same = 0;
    while (same < Math.min(a.length, b.length) && a[same] === b[same]) same++;
    result.agreement = `${same}/${Math.min(a.length, b.length)}`;
  }
  results.push(result);
  ids.destroy();
  cache.destroy();
  act.destroy();
  if (peerModel) await disposePeerModel(peerModel);
  lm.dispose();
}

// ---------------------------------------------------------------------------------------------
// Temp-Lora writing against plain writing, same window (stories260K, as bench/templora_bench.ts).

const writing = { off: samples(), on: samples() };
let writingSettings = "";
if (!args["no-templora-writing"]) {
  log("== Temp-Lora writing, stories260K");
  const lm = await TextModel.load(shared("models/gguf/stories260K-f32.gguf"), { gpu });
  const settings = resolveTempLoraSettings(lm.config, { window: 256 });
  writingSettings =
    `W ${settings.window}, Δ ${settings.chunk}, rank ${settings.rank}, ${settings.epochs} epochs`;
  for (let r = 0; r < ROUNDS + 1; r++) {
    for (const enabled of r % 2 ? [true, false] : [false, true]) {
      let tokens = 0;
      const t = await timed(async () => {
        const run = writeWithTempLora(lm, "Once upon a time", {
          maxTokens: 256,
          temperature: 0.8,
          seed: r,
          banEos: true,
        }, { ...settings, enabled });
        let next = await run.next();
        while (!next.done) next = await run.next();
        tokens = next.value.tokens.length;
      });
      if (r === 0) continue; // warm-up: pipelines compiled
      add(enabled ? writing.on : writing.off, tokens, t);
    }
  }
  lm.dispose();
}

await measureBandwidth();

// ---------------------------------------------------------------------------------------------
// Tables.

const f1 = (x: number) => Number.isFinite(x) ? x.toFixed(1) : "-";
const f2 = (x: number) => Number.isFinite(x) ? x.toFixed(2) : "-";
const [readGBs, readCpu] = [median(bandwidth.read.wall), median(bandwidth.read.cpu)];
const lines: string[] = [
  "",
  `adapter: ${adapter}`,
  `llama.cpp: ${peer.ok ? `${peer.version}, ${peer.backend}` : `not measured (${peer.why})`}`,
  `machine: ${navigator.hardwareConcurrency} cores, load average at the end ${
    Deno.loadavg().map((x) => x.toFixed(2)).join(", ")
  }; ${ROUNDS} rounds, medians; prompt ${PROMPT} tokens`,
  `read kernel: ${f2(readGBs)} GB/s (${f2(readCpu)} per CPU-s); copy kernel: ` +
  `${f2(median(bandwidth.copy.wall))} GB/s read (+ as much written)`,
  "",
  "| model | engine | weights read / token | prefill tok/s | per CPU-s | decode tok/s | per CPU-s " +
  "| decode GB/s of weights | per CPU-s | vs read kernel (per CPU-s) |",
  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
];
for (const r of results) {
  for (const e of r.engines) {
    const [dec, decCpu] = [median(e.decode.wall), median(e.decode.cpu)];
    const [gbs, gbsCpu] = [e.bytesPerToken * dec / 1e9, e.bytesPerToken * decCpu / 1e9];
    lines.push(
      `| ${r.label} | ${e.engine} | ${(e.bytesPerToken / 1e6).toFixed(1)} MB | ` +
        `${f1(median(e.prefill.wall))} | ${f1(median(e.prefill.cpu))} | ${f1(dec)} | ` +
        `${f1(decCpu)} | ${f2(gbs)} | ${f2(gbsCpu)} | ` +
        `${e.engine === "templora" ? `${(100 * gbsCpu / readCpu).toFixed(0)}%` : ""} |`,
    );
  }
}
const agreements = results.filter((r) => r.agreement);
if (agreements.length) {
  lines.push(
    "",
    "greedy tokens templora and llama.cpp agree on from the first: " +
      agreements.map((r) => `${r.label} ${r.agreement}`).join(", "),
  );
}
if (writing.on.wall.length) {
  const [off, on] = [median(writing.off.wall), median(writing.on.wall)];
  const [offC, onC] = [median(writing.off.cpu), median(writing.on.cpu)];
  lines.push(
    "",
    `Temp-Lora writing, stories260K (${writingSettings}, 256 tokens, temperature 0.8):`,
    "",
    "| writing | tok/s | per CPU-s |",
    "| --- | ---: | ---: |",
    `| plain (Temp-Lora off), same window | ${f1(off)} | ${f1(offC)} |`,
    `| Temp-Lora on | ${f1(on)} | ${f1(onC)} |`,
    `| slowdown (off / on) | ${f2(off / on)}x | ${f2(offC / onC)}x |`,
  );
}
if (peer.ok) {
  const first = peerLabel(peerThreads[0]);
  const heads = peerThreads.flatMap((
    n,
  ) => [`decode vs ${peerLabel(n)}`, `prefill vs ${peerLabel(n)}`]);
  heads.push(`decode per CPU-s vs ${first}`, `prefill per CPU-s vs ${first}`);
  lines.push(
    "",
    "Ratios templora / llama.cpp, tokens/s (above 1: templora faster):",
    "",
    `| model | ${heads.join(" | ")} |`,
    `| --- | ${heads.map(() => "---:").join(" | ")} |`,
  );
  for (const r of results) {
    const [t, ...p] = r.engines;
    const ratio = (a: number[], b: number[]) => f2(median(a) / median(b));
    const cells = p.flatMap((e) => [
      ratio(t.decode.wall, e.decode.wall),
      ratio(t.prefill.wall, e.prefill.wall),
    ]);
    cells.push(ratio(t.decode.cpu, p[0].decode.cpu), ratio(t.prefill.cpu, p[0].prefill.cpu));
    lines.push(`| ${r.label} | ${cells.join(" | ")} |`);
  }
}
console.log(lines.join("\n"));

if (args.json) {
  await Deno.writeTextFile(
    args.json,
    JSON.stringify(
      {
        adapter,
        peer: peer.ok ? `${peer.version}, ${peer.backend}` : peer.why,
        rounds: ROUNDS,
        prompt: PROMPT,
        bandwidth,
        results: results.map((r) => ({ ...r, engines: r.engines.map(({ tokens: _, ...e }) => e) })),
        writing: { settings: writingSettings, ...writing },
      },
      null,
      1,
    ) + "\n",
  );
}
if (peer.ok) await peer.llama.dispose();
recorder.destroy();
gpu.destroy();
