/**
 * Measures what Temp-Lora buys on a model and a text, by the PG19 protocol (test-then-train):
 * each chunk is scored with the adapter off and on, then the adapter trains on it.
 *
 *   deno task perplexity --text-file BOOK.txt --max-tokens 16384 [--model PATH] [--plot out.svg]
 *
 * Prints a table by position in the text (or one JSON object with --json). Exit codes: 0 done,
 * 1 run-time error, 2 bad command line, 130 interrupted.
 */
import { evaluatePerplexity, type EvaluationResult, tempLoraSettingsJson } from "../mod.ts";
import {
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
} from "./cli.ts";
import { lineChartSvg } from "./svg_plot.ts";

const USAGE = `usage: deno task perplexity --text-file F [options]

  --text-file F              the text to walk (UTF-8)
${MODEL_HELP}
  --max-tokens N             tokens of the text to use (default 4096)
  --chunk N                  Δ, tokens per chunk (default: window / 4)
  --window N                 W: a chunk is scored given up to W - Δ tokens before it (default:
                             the model's length, at most 1024)
  --sink N                   attention sinks: once the window no longer reaches the text's
                             start, its first N tokens stand in front of it (default 0)
  --epochs N                 optimizer steps per chunk (default 3 below d_model 1024, else 2)
  --lr X                     learning rate (default: by model size)
  --rank N                   LoRA rank (default: d_model / 4, at most 64)
  --alpha X                  LoRA alpha (default: the rank)
  --buckets N                position buckets in the table (default 4)
  --plot FILE.svg            per-chunk perplexity with and without the adapter along the text
  --json                     one JSON object instead of the table
  --help                     this help`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  "text-file": { type: "string" },
  "max-tokens": { type: "string" },
  ...TEMPLORA_OPTIONS,
  buckets: { type: "string" },
  plot: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean" },
} as const;

function table(r: EvaluationResult): string {
  const rows = [
    "| tokens | base PPL | Temp-Lora PPL | change |",
    "| --- | ---: | ---: | ---: |",
  ];
  const line = (label: string, base: number, tl: number) =>
    `| ${label} | ${base.toFixed(2)} | ${tl.toFixed(2)} | ${
      ((tl - base) / base * 100).toFixed(1)
    }% |`;
  for (const b of r.buckets) rows.push(line(`${b.from}-${b.to}`, b.base.ppl, b.templora.ppl));
  rows.push(line(`all ${r.tokens}`, r.base.ppl, r.templora.ppl));
  rows.push(
    line("all, chunk-weighted", r.base.ppl_chunk_weighted, r.templora.ppl_chunk_weighted),
  );
  return rows.join("\n");
}

/** The per-chunk plot. */
export function perplexityPlot(r: EvaluationResult, chunk: number, title: string): string {
  const at = (i: number) => (i + 1) * chunk;
  return lineChartSvg([
    {
      label: "base model",
      color: "#888888",
      points: r.chunks.map((c) => [at(c.index), Math.exp(c.baseNll / c.tokens)]),
    },
    {
      label: "with Temp-Lora",
      color: "#d9480f",
      points: r.chunks.map((c) => [at(c.index), Math.exp(c.tempLoraNll / c.tokens)]),
    },
  ], {
    title,
    xLabel: "position in the text (tokens)",
    yLabel: "perplexity of the chunk (log scale)",
    yLog: true,
  });
}

async function main(): Promise<number> {
  const v = parseFlags(OPTIONS);
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (!v["text-file"]) {
    throw new UsageError("--text-file is required: the text to measure perplexity on");
  }
  const maxTokens = numberFlag(v, "max-tokens", 4096, { integer: true, min: 2 });
  const buckets = numberFlag(v, "buckets", 4, { integer: true, min: 1 });
  const overrides = tempLoraFlags(v);
  const text = await readFlagFile("text-file", v["text-file"]);
  let plot: FlagOutput | undefined;
  if (v.plot !== undefined) plot = await openFlagOutput("plot", v.plot);
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
    const result = await evaluatePerplexity(lm, text, {
      maxTokens,
      buckets,
      onChunk: (c, total) => {
        const s = (performance.now() - started) / 1000;
        progress.show(
          `chunk ${c.index + 1}/${total}: base ${Math.exp(c.baseNll / c.tokens).toFixed(2)}, ` +
            `Temp-Lora ${Math.exp(c.tempLoraNll / c.tokens).toFixed(2)} (${s.toFixed(0)} s)`,
        );
      },
    }, settings);
    progress.clear();
    if (plot) {
      const name = v["text-file"].split("/").pop();
      const svg = perplexityPlot(
        result,
        settings.chunk,
        `${name}: perplexity per chunk of ${settings.chunk} tokens`,
      );
      await plot.write(svg);
    }
    if (v.json) {
      console.log(JSON.stringify({
        tokens: result.tokens,
        base: result.base,
        templora: result.templora,
        decrease_pct: result.decrease_pct,
        buckets: result.buckets,
        seconds: result.seconds,
        settings: {
          model: loaded.path,
          text_file: v["text-file"],
          max_tokens: maxTokens,
          buckets,
          templora: tempLoraSettingsJson(settings),
        },
        gpu: gpuJson(lm),
        chunks: result.chunks.map((c) => ({
          index: c.index,
          tokens: c.tokens,
          base_nll: c.baseNll,
          templora_nll: c.tempLoraNll,
          train_seconds: c.trainSeconds,
        })),
      }));
    } else {
      console.log(table(result));
      console.log(
        `\nperplexity ${result.base.ppl.toFixed(2)} -> ${result.templora.ppl.toFixed(2)} ` +
          `(${result.decrease_pct.toFixed(1)}% lower) over ${result.tokens} tokens in ` +
          `${result.seconds.toFixed(0)} s` + (v.plot ? `; plot written to ${v.plot}` : ""),
      );
    }
    return 0;
  } finally {
    plot?.close();
    loaded.close();
  }
}

if (import.meta.main) await runCommand("perplexity", main);
