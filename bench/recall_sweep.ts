/**
 * The sweep behind the recall defaults (bench/RECALL.md): recall of bench/recall_facts.jsonl
 * after a book, and optionally the book's perplexity, for named Temp-Lora settings.
 *
 *   deno run -A bench/recall_sweep.ts --book ../shared/data/books/austen-emma.txt \
 *     --distances 2048 [--ppl-tokens 4096] [--only name,name] [--sink N]
 *
 * Prints one JSON line per setting (on stdout) as it finishes, then a Markdown table.
 */
import { parseArgs } from "node:util";
import {
  evaluatePerplexity,
  evaluateRecall,
  LORA_TARGETS,
  parseRecallFacts,
  resolveTempLoraSettings,
  type TempLoraOverrides,
  TextModel,
} from "../mod.ts";

/** The settings tried: today's defaults and one change at a time, then combinations. */
const CONFIGS: Record<string, TempLoraOverrides> = {
  defaults: {},
  "lr 2e-3": { optimizer: { lr: 2e-3 } },
  "lr 5e-4": { optimizer: { lr: 5e-4 } },
  "epochs 5": { epochs: 5 },
  "rank 32": { rank: 32 },
  "rank 8": { rank: 8 },
  "chunk 64": { chunk: 64 },
  "mlp only": { targets: ["gate", "up", "down"] },
  "attention only": { targets: ["q", "k", "v", "o"] },
  "lr 2e-3, epochs 5": { optimizer: { lr: 2e-3 }, epochs: 5 },
  "lr 2e-3, chunk 64": { optimizer: { lr: 2e-3 }, chunk: 64 },
  "chunk 64, epochs 5": { chunk: 64, epochs: 5 },
};

const { values } = parseArgs({
  options: {
    book: { type: "string" },
    facts: { type: "string", default: new URL("recall_facts.jsonl", import.meta.url).pathname },
    model: {
      type: "string",
      default: new URL("../models/stories260K/stories260K.bin", import.meta.url).pathname,
    },
    distances: { type: "string", default: "2048" },
    "ppl-tokens": { type: "string", default: "0" },
    only: { type: "string" },
    sink: { type: "string", default: "0" },
  },
});
if (!values.book) throw new Error("--book is required");
const names = values.only ? values.only.split(",") : Object.keys(CONFIGS);
for (const name of names) if (!CONFIGS[name]) throw new Error(`no setting named "${name}"`);
const lm = await TextModel.load(values.model);
const book = await Deno.readTextFile(values.book);
const facts = parseRecallFacts(await Deno.readTextFile(values.facts));
const distances = values.distances.split(",").map(Number);
const pplTokens = Number(values["ppl-tokens"]);
const rows: string[] = [];
for (const name of names) {
  const settings = resolveTempLoraSettings(lm.config, {
    ...CONFIGS[name],
    sink: Number(values.sink),
  });
  const started = performance.now();
  const r = await evaluateRecall(lm, book, facts, { distances }, settings);
  const ppl = pplTokens > 0
    ? await evaluatePerplexity(lm, book, { maxTokens: pplTokens }, settings)
    : undefined;
  const seconds = (performance.now() - started) / 1000;
  const line = {
    name,
    targets: settings.targets.length === LORA_TARGETS.length ? "all" : settings.targets.join(","),
    distances: r.distances,
    ppl: ppl ? { base: ppl.base.ppl, templora: ppl.templora.ppl } : undefined,
    seconds,
  };
  console.log(JSON.stringify(line));
  for (const d of r.distances) {
    rows.push(
      `| ${name} | ${d.distance} | ${d.base.nll.toFixed(3)} | ${d.templora.nll.toFixed(3)} | ` +
        `${d.control.nll.toFixed(3)} | ${(d.control.nll - d.templora.nll).toFixed(3)} | ` +
        `${ppl ? ppl.templora.ppl.toFixed(2) : ""} | ${seconds.toFixed(0)} |`,
    );
  }
}
console.log(
  "\n| setting | distance | base NLL | Temp-Lora NLL | control NLL | margin | book PPL | s |\n" +
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + rows.join("\n"),
);
lm.dispose();
