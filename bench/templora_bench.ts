/**
 * Temp-Lora costs, side by side in one run: training tokens/s (one optimizer step on a full
 * example), and writing speed with Temp-Lora against without it at the same window; also with
 * Temp-Lora on a second copy of the model that decodes with the layer kernel's own adapter stages
 * instead of weights with the adapter merged in (`mergeAdapter: false`). Run with
 * `deno bench -A bench/templora_bench.ts`; the table at the end gives tokens/s and the ratios.
 */
import { TextModel } from "../src/model/text_model.ts";
import { LoraAdapter } from "../src/templora/adapter.ts";
import { resolveTempLoraSettings } from "../src/templora/settings.ts";
import { Trainer } from "../src/templora/trainer.ts";
import { writeWithTempLora } from "../src/templora/writer.ts";
import { gpu } from "./harness.ts";

const MODEL = "../shared/models/stories260K/stories260K.bin";
const lm = await TextModel.load(MODEL, { gpu });
const unmerged = await TextModel.load(MODEL, { gpu, mergeAdapter: false });
const settings = resolveTempLoraSettings(lm.config, { window: 256 });
const exampleTokens = settings.trainContext + settings.chunk;
const adapter = new LoraAdapter(gpu, lm.config, settings);
const trainer = await Trainer.create(lm.model, adapter, lm.registry, exampleTokens);
const example = Array.from({ length: exampleTokens }, (_, i) => 3 + (i * 7919) % 500);

const rates: Record<string, number[]> = {};
const record = (name: string, value: number) => (rates[name] ??= []).push(value);

Deno.bench({
  name: `train step, ${exampleTokens}-token example (stories260K, r=${settings.rank})`,
  group: "training",
  n: 5,
  warmup: 1,
  async fn(b) {
    b.start();
    const t0 = performance.now();
    await trainer.step(lm.recorder, example, 1, settings.optimizer, 0);
    record("train tokens/s", exampleTokens / ((performance.now() - t0) / 1000));
    b.end();
  },
});

const cases = [
  { enabled: false, model: lm, label: "off" },
  { enabled: true, model: lm, label: "on" },
  { enabled: true, model: unmerged, label: "on, adapter unmerged" },
];
for (const { enabled, model, label } of cases) {
  const name = `write 256 tokens, W=${settings.window}, Temp-Lora ${label}`;
  Deno.bench({
    name,
    group: "writing",
    n: 3,
    warmup: 1,
    async fn(b) {
      b.start();
      const run = writeWithTempLora(model, "Once upon a time", {
        maxTokens: 256,
        temperature: 0.8,
        banEos: true,
      }, { ...settings, enabled });
      let next = await run.next();
      while (!next.done) next = await run.next();
      record(`writing tokens/s, Temp-Lora ${label}`, next.value.tokensPerSecond);
      b.end();
    },
  });
}

globalThis.addEventListener("unload", () => {
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const lines = ["\n| measure | median |", "| --- | ---: |"];
  for (const [name, values] of Object.entries(rates)) {
    lines.push(`| ${name} | ${median(values).toFixed(1)} |`);
  }
  const on = rates["writing tokens/s, Temp-Lora on"];
  const off = rates["writing tokens/s, Temp-Lora off"];
  const onUnmerged = rates["writing tokens/s, Temp-Lora on, adapter unmerged"];
  if (on && off) {
    lines.push(
      `| writing slowdown with Temp-Lora (off / on) | ${(median(off) / median(on)).toFixed(2)}x |`,
    );
  }
  if (on && onUnmerged) {
    lines.push(
      `| Temp-Lora writing, merged / unmerged adapter | ${
        (median(on) / median(onUnmerged)).toFixed(2)
      }x |`,
    );
  }
  console.log(lines.join("\n"));
});
