/**
 * The paper's memory/latency trade-off on one model: a window of W tokens without Temp-Lora
 * against W/2 with it. For each: perplexity on a book by the PG19 protocol, and the peak GPU
 * bytes and seconds of writing the same number of tokens. Prints a markdown table.
 *
 *   deno run -A bench/tradeoff.ts [--model PATH] [--book F] [--tokens N] [--write N] [--window W]
 */
import { parseArgs } from "node:util";
import { TextModel } from "../src/model/text_model.ts";
import { evaluatePerplexity } from "../src/templora/evaluate.ts";
import { resolveTempLoraSettings } from "../src/templora/settings.ts";
import { writeWithTempLora } from "../src/templora/writer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "../shared/models/stories260K/stories260K.bin" },
    book: { type: "string", default: "../shared/data/books/melville-moby-dick.txt" },
    tokens: { type: "string", default: "4096" },
    write: { type: "string", default: "1024" },
    window: { type: "string" },
  },
});
const lm = await TextModel.load(values.model!);
const text = await Deno.readTextFile(values.book!);
const W = Number(values.window ?? Math.min(lm.config.maxSeqLen, 1024));
const cases = [
  { label: `W = ${W}, no Temp-Lora`, window: W, enabled: false },
  { label: `W = ${W / 2}, Temp-Lora`, window: W / 2, enabled: true },
];
const rows = [];
for (const c of cases) {
  const settings = resolveTempLoraSettings(lm.config, { window: c.window, enabled: c.enabled });
  const evaluation = await evaluatePerplexity(
    lm,
    text,
    { maxTokens: Number(values.tokens) },
    settings,
  );
  const ppl = c.enabled ? evaluation.templora : evaluation.base;
  const writing = writeWithTempLora(lm, "Once upon a time", {
    maxTokens: Number(values.write),
    temperature: 0.8,
    banEos: true,
  }, settings);
  let summary;
  for (;;) {
    const next = await writing.next();
    if (next.done) {
      summary = next.value;
      break;
    }
  }
  rows.push(
    `| ${c.label} | ${ppl.ppl.toFixed(2)} | ${ppl.ppl_chunk_weighted.toFixed(2)} | ` +
      `${(summary.peakGpuBytes / 2 ** 20).toFixed(2)} | ${summary.seconds.toFixed(1)} | ` +
      `${summary.tokensPerSecond.toFixed(1)} |`,
  );
  console.error(`${c.label}: done`);
}
console.log(
  `model ${values.model}, book ${values.book} (first ${values.tokens} tokens), ` +
    `writing ${values.write} tokens; adapter: ${lm.gpu.capabilities.description}`,
);
console.log(
  "| setting | PPL | PPL (chunk-weighted) | peak GPU MiB (writing) | seconds (writing) | tokens/s |",
);
console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
for (const r of rows) console.log(r);
lm.dispose();
