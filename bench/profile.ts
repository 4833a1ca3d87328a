/**
 * Where GPU time goes: every dispatch of one Temp-Lora training step, of decoding a few tokens,
 * and of writing two chunks with Temp-Lora (decoding with the adapter, and training on the first
 * chunk), timed with timestamp queries and summed by kernel.
 *
 *   deno task profile [--model PATH] [--window N] [--tokens N] [--top N]
 *                     [--phases training,decode,writing]
 *
 * Prints a table per phase: milliseconds, dispatches, the slowest dispatch and share of each
 * kernel, and the GPU time against the wall time (a pass per dispatch costs a little, so these
 * runs are slower than unprofiled ones; compare kernels within one run, not with the
 * benchmarks). Needs an adapter with `timestamp-query` (lavapipe has it).
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { TextModel } from "../src/model/text_model.ts";
import { LoraAdapter } from "../src/templora/adapter.ts";
import { resolveTempLoraSettings } from "../src/templora/settings.ts";
import { Trainer } from "../src/templora/trainer.ts";
import { type WriterRunOptions, writeWithTempLora } from "../src/templora/writer.ts";
import { DispatchProfiler, type KernelTime } from "../src/gpu/profiler.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    window: { type: "string", default: "256" },
    tokens: { type: "string", default: "32" },
    top: { type: "string", default: "20" },
    phases: { type: "string", default: "training,decode,writing" },
  },
});
const PHASES = ["training", "decode", "writing"];
const phases = new Set(values.phases!.split(","));
for (const p of phases) {
  if (!PHASES.includes(p)) throw new Error(`--phases: ${p} is not one of ${PHASES.join(", ")}`);
}
const count = (flag: "window" | "tokens" | "top") => {
  const n = Number(values[flag]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} must be a positive integer`);
  return n;
};
const model = values.model ??
  fileURLToPath(new URL("../models/stories260K/stories260K.bin", import.meta.url));

const lm = await TextModel.load(model);
const settings = resolveTempLoraSettings(lm.config, { window: count("window") });
const exampleTokens = settings.trainContext + settings.chunk;
const adapter = new LoraAdapter(lm.gpu, lm.config, settings);
const trainer = await Trainer.create(lm.model, adapter, lm.registry, exampleTokens);
const example = Array.from({ length: exampleTokens }, (_, i) => 3 + (i * 7919) % 500);
const profiler = new DispatchProfiler(lm.gpu);

function report(title: string, wallMs: number, times: KernelTime[]): void {
  const gpuMs = times.reduce((s, t) => s + t.milliseconds, 0);
  const dispatches = times.reduce((s, t) => s + t.dispatches, 0);
  console.log(
    `\n${title}: ${dispatches} dispatches, GPU ${gpuMs.toFixed(1)} ms, wall ${
      wallMs.toFixed(1)
    } ms\n`,
  );
  console.log(
    "|       ms | dispatches | slowest ms | share | kernel |\n| ---: | ---: | ---: | ---: | --- |",
  );
  for (const t of times.slice(0, count("top"))) {
    const share = (100 * t.milliseconds / gpuMs).toFixed(1);
    const slowest = t.slowest.toFixed(2);
    console.log(
      `| ${t.milliseconds.toFixed(2)} | ${t.dispatches} | ${slowest} | ${share}% | ${t.label} |`,
    );
  }
}

if (phases.has("training")) {
  // One unprofiled step first, so compiles and first-use allocations are not timed. Loss on the
  // chunk after the training context, as the writer trains once its text passes the context.
  const from = settings.trainContext;
  await trainer.step(lm.recorder, example, from, settings.optimizer, 0);
  lm.recorder.profiler = profiler;
  const start = performance.now();
  await trainer.step(lm.recorder, example, from, settings.optimizer, 1);
  report(
    `training step, ${exampleTokens} tokens (loss on the last ${settings.chunk}), rank ${settings.rank}`,
    performance.now() - start,
    await profiler.read(),
  );
}

if (phases.has("decode")) {
  // Greedy, as the benchmarks decode (nothing banned: the head then picks each token itself).
  const decode = { maxTokens: count("tokens"), temperature: 0 };
  lm.recorder.profiler = undefined;
  await lm.complete("Once upon a time", decode);
  lm.recorder.profiler = profiler;
  const start = performance.now();
  await lm.complete("Once upon a time", decode);
  report(
    `prompt and ${decode.maxTokens} decoded tokens, no adapter`,
    performance.now() - start,
    await profiler.read(),
  );
}
if (phases.has("writing")) {
  const written = 2 * settings.chunk;
  const write = async (options: WriterRunOptions) => {
    const run = writeWithTempLora(
      lm,
      "Once upon a time",
      { maxTokens: written, temperature: 0, banEos: true },
      settings,
      options,
    );
    let next = await run.next();
    while (!next.done) next = await run.next();
  };
  // Unprofiled first too: the kernels of decoding with an adapter compile on first use, and a
  // compile inside the timed run shows up as one dispatch of seconds.
  lm.recorder.profiler = undefined;
  await write({});
  const start = performance.now();
  await write({ profiler });
  report(
    `writing ${written} tokens with Temp-Lora (window ${settings.window}, chunk ${settings.chunk})`,
    performance.now() - start,
    await profiler.read(),
  );
}
profiler.destroy();
lm.dispose();
