/**
 * Document-level translation with Temp-Lora (the paper's GuoFeng protocol): each segment pair is
 * a chunk, scored and trained with loss on the target only, the pairs before it as context.
 *
 *   deno task translate --pairs DOC.jsonl [--json]           evaluate: target PPL, chrF, BLEU
 *   deno task translate --source NEW.txt [--pairs DOC.jsonl]  translate line by line, learning
 *
 * Exit codes: 0 done, 1 run-time error, 2 bad command line, 130 interrupted.
 */
import {
  corpusBleu,
  corpusChrf,
  DocumentFormatError,
  evaluateTranslation,
  parseSegmentPairs,
  type SegmentPair,
  tempLoraSettingsJson,
  translateDocument,
  type TranslatedSegment,
  type TranslationResult,
} from "../mod.ts";
import {
  CommandError,
  type FlagOutput,
  gpuJson,
  loadModel,
  MODEL_HELP,
  MODEL_OPTIONS,
  numberFlag,
  openFlagOutput,
  parseFlags,
  ProgressLine,
  readFlagFile,
  runCommand,
  TEMPLORA_OPTIONS,
  tempLoraFlags,
  tempLoraSettingsFromFlags,
  UsageError,
  writeOut,
} from "./cli.ts";
import { lineChartSvg } from "./svg_plot.ts";

const USAGE = `usage: deno task translate --pairs DOC.jsonl [options]
       deno task translate --source NEW.txt [--pairs DOC.jsonl] [options]

  --pairs DOC.jsonl          a document of segment pairs, {"source": ..., "target": ...} a line;
                             alone: evaluated pair by pair (bench/cipher_pairs.jsonl is one);
                             with --source: the document's opening, learnt first
  --source NEW.txt           translate this document, one segment a line, training on each
                             segment and its own translation as it goes
  --references REF.txt       with --source: reference translations, one a line (chrF, BLEU)
  --no-translations          evaluating: target perplexity only, no greedy translations
${MODEL_HELP}
  --window N                 W: tokens of earlier pairs and the segment the model reads
                             (default: the model's length, at most 1024)
  --sink N                   attention sinks: the document's first N tokens stay in front of
                             the window once it slides (default 0)
  --epochs N                 optimizer steps per pair (default 3 below d_model 1024, else 2)
  --lr X                     learning rate (default: by model size)
  --rank N                   LoRA rank (default: d_model / 4, at most 64)
  --alpha X                  LoRA alpha (default: the rank)
  --buckets N                ranges of pairs in the table (default 4)
  --plot FILE.svg            target perplexity of each pair along the document
  --json                     one JSON object instead of the table or the translations
  --help                     this help`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  pairs: { type: "string" },
  source: { type: "string" },
  references: { type: "string" },
  "no-translations": { type: "boolean" },
  ...TEMPLORA_OPTIONS,
  buckets: { type: "string" },
  plot: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean" },
} as const;

/** Lines of a text file, the last newline aside. */
function lines(text: string): string[] {
  const all = text.replace(/\r\n/g, "\n").split("\n");
  if (all[all.length - 1] === "") all.pop();
  return all;
}

function table(r: TranslationResult): string {
  const rows = [
    "| pairs | target tokens | base PPL | Temp-Lora PPL | change |",
    "| --- | ---: | ---: | ---: | ---: |",
  ];
  const change = (base: number, tl: number) => `${((tl - base) / base * 100).toFixed(1)}%`;
  for (const b of r.buckets) {
    rows.push(
      `| ${b.from}-${b.to} | ${b.tokens} | ${b.base.toFixed(2)} | ${b.templora.toFixed(2)} | ` +
        `${change(b.base, b.templora)} |`,
    );
  }
  const tokens = r.pairs.reduce((s, p) => s + p.tokens, 0);
  rows.push(
    `| all ${r.pairs.length} | ${tokens} | ${r.base.ppl.toFixed(2)} | ` +
      `${r.templora.ppl.toFixed(2)} | ${change(r.base.ppl, r.templora.ppl)} |`,
  );
  if (r.base.chrf !== undefined) {
    rows.push(
      "",
      "| greedy translations | chrF | BLEU |",
      "| --- | ---: | ---: |",
      `| base | ${r.base.chrf.toFixed(2)} | ${r.base.bleu!.toFixed(2)} |`,
      `| Temp-Lora | ${r.templora.chrf!.toFixed(2)} | ${r.templora.bleu!.toFixed(2)} |`,
    );
  }
  return rows.join("\n");
}

/** Target perplexity of each pair along the document, with and without the adapter. */
export function translationPlot(r: TranslationResult, title: string): string {
  const line = (key: "baseNll" | "tempLoraNll") =>
    r.pairs.map((p) => [p.index + 1, Math.exp(p[key] / p.tokens)] as [number, number]);
  return lineChartSvg([
    { label: "base model", color: "#888888", points: line("baseNll") },
    { label: "with Temp-Lora", color: "#d9480f", points: line("tempLoraNll") },
  ], {
    title,
    xLabel: "segment pair in the document",
    yLabel: "target perplexity (log scale)",
    yLog: true,
  });
}

async function readPairs(path: string): Promise<SegmentPair[]> {
  try {
    return parseSegmentPairs(await readFlagFile("pairs", path));
  } catch (error) {
    if (error instanceof DocumentFormatError) {
      throw new CommandError(`--pairs ${path}: ${error.message}`);
    }
    throw error;
  }
}

async function main(): Promise<number> {
  const v = parseFlags(OPTIONS);
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (!v.pairs && !v.source) {
    throw new UsageError("--pairs or --source is required: the document to evaluate or translate");
  }
  if (v.references && !v.source) throw new UsageError("--references goes with --source");
  if (v["no-translations"] && v.source) {
    throw new UsageError("--no-translations goes with evaluating (--pairs without --source)");
  }
  const buckets = numberFlag(v, "buckets", 4, { integer: true, min: 1 });
  const overrides = tempLoraFlags(v);
  const pairs = v.pairs ? await readPairs(v.pairs) : [];
  const sources = v.source ? lines(await readFlagFile("source", v.source)) : undefined;
  const references = v.references ? lines(await readFlagFile("references", v.references)) : [];
  if (sources && v.references && references.length !== sources.length) {
    throw new CommandError(
      `--references ${v.references}: ${references.length} lines for ${sources.length} sources`,
    );
  }
  let plot: FlagOutput | undefined;
  if (v.plot !== undefined) {
    if (sources) throw new UsageError("--plot goes with evaluating (--pairs without --source)");
    plot = await openFlagOutput("plot", v.plot);
  }
  let loaded;
  try {
    loaded = await loadModel(v);
  } catch (error) {
    plot?.close();
    throw error;
  }
  const { lm } = loaded;
  try {
    const settings = tempLoraSettingsFromFlags(overrides, lm.config);
    const progress = new ProgressLine();
    const started = performance.now();
    const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)} s`;
    const settingsJson = {
      model: loaded.path,
      pairs_file: v.pairs ?? null,
      source_file: v.source ?? null,
      templora: tempLoraSettingsJson(settings),
    };
    if (sources) {
      const done: TranslatedSegment[] = [];
      for await (const segment of translateDocument(lm, sources, pairs, settings)) {
        done.push(segment);
        if (v.json) progress.show(`segment ${done.length}/${sources.length} (${elapsed()})`);
        else writeOut(`${segment.translation}\n`);
      }
      progress.clear();
      const hyps = done.map((s) => s.translation);
      const scores = references.length
        ? { chrf: corpusChrf(hyps, references), bleu: corpusBleu(hyps, references).score }
        : undefined;
      if (v.json) {
        console.log(JSON.stringify({
          translations: done.map((s) => ({
            source: s.source,
            translation: s.translation,
            loss: s.loss ?? null,
          })),
          ...(scores ?? {}),
          seconds: (performance.now() - started) / 1000,
          settings: { ...settingsJson, references_file: v.references ?? null },
          gpu: gpuJson(lm),
        }));
      } else if (scores) {
        console.error(
          `chrF ${scores.chrf.toFixed(2)}, BLEU ${scores.bleu.toFixed(2)} against ${v.references}`,
        );
      }
      return 0;
    }
    const result = await evaluateTranslation(lm, pairs, {
      buckets,
      translate: !v["no-translations"],
      onPair: (p, total) => {
        progress.show(
          `pair ${p.index + 1}/${total}: base ${Math.exp(p.baseNll / p.tokens).toFixed(2)}, ` +
            `Temp-Lora ${Math.exp(p.tempLoraNll / p.tokens).toFixed(2)} (${elapsed()})`,
        );
      },
    }, settings);
    progress.clear();
    if (plot) {
      const name = v.pairs!.split("/").pop();
      await plot.write(translationPlot(result, `${name}: target perplexity along the document`));
    }
    if (v.json) {
      console.log(JSON.stringify({
        pairs: result.pairs.length,
        base: result.base,
        templora: result.templora,
        buckets: result.buckets,
        seconds: result.seconds,
        settings: { ...settingsJson, buckets },
        gpu: gpuJson(lm),
        per_pair: result.pairs.map((p) => ({
          index: p.index,
          tokens: p.tokens,
          base_nll: p.baseNll,
          templora_nll: p.tempLoraNll,
          base_translation: p.baseTranslation ?? null,
          templora_translation: p.tempLoraTranslation ?? null,
        })),
      }));
    } else {
      console.log(table(result));
      console.log(
        `\n${result.pairs.length} pairs in ${result.seconds.toFixed(0)} s` +
          (v.plot ? `; plot written to ${v.plot}` : ""),
      );
    }
    return 0;
  } finally {
    plot?.close();
    loaded.close();
  }
}

if (import.meta.main) await runCommand("translate", main);
