/**
 * Temp-Lora settings sweep on one book with the PG19 test-then-train protocol
 * (evaluatePerplexity). Prints one markdown table row per configuration, so runs can be pasted
 * into bench/SWEEP.md and repeated:
 *
 *   deno run -A bench/sweep.ts [--model F] [--book F] [--tokens N] [--buckets N]
 *     [--config JSON]...
 *
 * Each --config is a JSON object of overrides for resolveTempLoraSettings, e.g. '{}' (the
 * defaults), '{"chunk": 64}', '{"rank": 8, "alpha": 8}', '{"optimizer": {"lr": 3e-3}}'; "lr"
 * and "dropout" may also be given at the top level. Without --config the built-in sweep around
 * the defaults runs. A relative --book is looked up in /work/shared/data/books/.
 */
import { TextModel } from "../src/model/text_model.ts";
import { resolveTempLoraSettings, type TempLoraSettings } from "../src/templora/settings.ts";
import { evaluatePerplexity } from "../src/templora/evaluate.ts";

type Overrides = Parameters<typeof resolveTempLoraSettings>[1] & {
  lr?: number;
  dropout?: number;
};

const SWEEP: Overrides[] = [
  {},
  { lr: 3e-4 },
  { lr: 3e-3 },
  { chunk: 64 },
  { rank: 8, alpha: 8 },
  { epochs: 1 },
  { epochs: 3 },
];

/** `--name value` pairs; --config may repeat. */
function parseFlags(argv: string[]) {
  const flags = {
    model: "/work/shared/models/stories260K/stories260K.bin",
    book: "austen-pride-and-prejudice.txt",
    tokens: "4096",
    buckets: "4",
    config: [] as string[],
  };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    const value = argv[i + 1];
    if (value === undefined || !(name in flags)) throw new Error(`bad argument ${argv[i]}`);
    if (name === "config") flags.config.push(value);
    else flags[name as "model" | "book" | "tokens" | "buckets"] = value;
  }
  return flags;
}

const args = parseFlags(Deno.args);
const bookPath = args.book.includes("/") ? args.book : `/work/shared/data/books/${args.book}`;
const maxTokens = Number(args.tokens);
const buckets = Number(args.buckets);
const configs: Overrides[] = args.config.length ? args.config.map((c) => JSON.parse(c)) : SWEEP;

function settingsOf(lm: TextModel, o: Overrides): TempLoraSettings {
  const { lr, dropout, ...rest } = o;
  const optimizer = { ...rest.optimizer };
  if (lr !== undefined) optimizer.lr = lr;
  if (dropout !== undefined) optimizer.dropout = dropout;
  return resolveTempLoraSettings(lm.config, { ...rest, optimizer });
}

function describe(s: TempLoraSettings): string {
  return `W ${s.window}, Δ ${s.chunk}, ctx ${s.trainContext}, ep ${s.epochs}, ` +
    `r ${s.rank}, α ${s.alpha}, lr ${s.optimizer.lr}, drop ${s.optimizer.dropout}, ` +
    `${s.targets.length} targets`;
}

const lm = await TextModel.load(args.model);
const text = await Deno.readTextFile(bookPath);
// Fail on a bad configuration before spending minutes on the good ones.
const resolved = configs.map((o) => settingsOf(lm, o));

console.log(
  `<!-- ${args.model.split("/").pop()}, ${bookPath.split("/").pop()}, ` +
    `first ${maxTokens} tokens, ${new Date().toISOString()} -->`,
);
console.log(
  "| overrides | settings | base ppl | Temp-Lora ppl | decrease % | base cw | Temp-Lora cw " +
    "| cw decrease % | decrease % by quarter | train s | total s |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
for (let i = 0; i < configs.length; i++) {
  const s = resolved[i];
  const r = await evaluatePerplexity(lm, text, {
    maxTokens,
    buckets,
    onChunk: (c, total) => {
      if ((c.index + 1) % 16 === 0 || c.index + 1 === total) {
        console.error(`  ${JSON.stringify(configs[i])}: chunk ${c.index + 1}/${total}`);
      }
    },
  }, s);
  const trainSeconds = r.chunks.reduce((sum, c) => sum + c.trainSeconds, 0);
  const cwDecrease = (r.base.ppl_chunk_weighted - r.templora.ppl_chunk_weighted) /
    r.base.ppl_chunk_weighted * 100;
  const byBucket = r.buckets
    .map((b) => ((b.base.ppl - b.templora.ppl) / b.base.ppl * 100).toFixed(1))
    .join(" / ");
  console.log(
    `| \`${JSON.stringify(configs[i])}\` | ${describe(s)} | ${r.base.ppl.toFixed(3)} ` +
      `| ${r.templora.ppl.toFixed(3)} | ${r.decrease_pct.toFixed(2)} ` +
      `| ${r.base.ppl_chunk_weighted.toFixed(3)} | ${r.templora.ppl_chunk_weighted.toFixed(3)} ` +
      `| ${cwDecrease.toFixed(2)} | ${byBucket} | ${trainSeconds.toFixed(0)} ` +
      `| ${r.seconds.toFixed(0)} |`,
  );
  // Per-bucket perplexities, for the record (stderr keeps the table clean).
  for (const b of r.buckets) {
    console.error(
      `    tokens ${b.from}..${b.to}: base ${b.base.ppl.toFixed(3)} ` +
        `(cw ${b.base.ppl_chunk_weighted.toFixed(3)}), Temp-Lora ${b.templora.ppl.toFixed(3)} ` +
        `(cw ${b.templora.ppl_chunk_weighted.toFixed(3)})`,
    );
  }
}
