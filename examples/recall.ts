/**
 * Measures what the adapter remembers: facts stated once at the start of a text, asked after
 * many windows of a book, scored on the answer's tokens for the plain model, Temp-Lora, a
 * Temp-Lora control trained on decoy facts, and the plain model with the facts in its window.
 *
 *   deno task recall --text-file BOOK.txt --facts FACTS.jsonl --distance 2048,4096 [--json]
 *
 * Prints a table by distance (or one JSON object with --json). Exit codes: 0 done, 1 run-time
 * error, 2 bad command line, 130 interrupted.
 */
import {
  DocumentFormatError,
  evaluateRecall,
  parseRecallFacts,
  type RecallFact,
  type RecallResult,
  tempLoraSettingsJson,
} from "../mod.ts";
import {
  CommandError,
  type FlagOutput,
  gpuJson,
  loadModel,
  MODEL_HELP,
  MODEL_OPTIONS,
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

const USAGE = `usage: deno task recall --text-file F --facts FACTS.jsonl [options]

  --text-file F              the book that follows the statements (UTF-8)
  --facts FACTS.jsonl        one fact a line: {"statement", "query", "answer"[, "decoy"]}
                             (bench/recall_facts.jsonl has 20)
  --distance N[,N...]        tokens between the last statement and the queries (default: 4
                             windows)
${MODEL_HELP}
  --window N                 W: each query is read with the W - |query| - |answer| tokens before
                             it (default: the model's length, at most 1024)
  --sink N                   attention sinks: the text's first N tokens stand in front of each
                             query's window (default 0)
  --chunk N                  Δ, tokens per training chunk (default: window / 4)
  --epochs N                 optimizer steps per chunk (default 3 below d_model 1024, else 2)
  --lr X                     learning rate (default: by model size)
  --rank N                   LoRA rank (default: d_model / 4, at most 64)
  --alpha X                  LoRA alpha (default: the rank)
  --plot FILE.svg            answer NLL by distance for the four conditions
  --json                     one JSON object instead of the table
  --help                     this help`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  "text-file": { type: "string" },
  facts: { type: "string" },
  distance: { type: "string" },
  ...TEMPLORA_OPTIONS,
  plot: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean" },
} as const;

/** The --distance list: positive integers separated by commas. */
function distancesFlag(raw: string): number[] {
  const parts = raw.split(",").map((p) => p.trim());
  const values = parts.map(Number);
  if (parts.some((p, i) => p === "" || !Number.isInteger(values[i]) || values[i] < 1)) {
    throw new UsageError(
      `--distance must be integers >= 1 separated by commas, got ${JSON.stringify(raw)}`,
    );
  }
  return values;
}

const CONDITIONS = [
  ["base", "plain model", "#888888"],
  ["templora", "Temp-Lora", "#d9480f"],
  ["control", "Temp-Lora on decoy facts", "#1971c2"],
  ["in_window", "plain model, facts in the window", "#2f9e44"],
] as const;

function table(r: RecallResult): string {
  const rows = [
    "| distance | base NLL | Temp-Lora NLL | control NLL | in-window NLL | control − Temp-Lora | " +
    "exact (base / Temp-Lora / control / in-window) |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const d of r.distances) {
    const exact = CONDITIONS.map(([key]) => `${(d[key].exact * 100).toFixed(0)}%`).join(" / ");
    rows.push(
      `| ${d.distance} | ${d.base.nll.toFixed(3)} | ${d.templora.nll.toFixed(3)} | ` +
        `${d.control.nll.toFixed(3)} | ${d.in_window.nll.toFixed(3)} | ` +
        `${(d.control.nll - d.templora.nll).toFixed(3)} | ${exact} |`,
    );
  }
  return rows.join("\n");
}

/** Answer NLL per token by distance, one line per condition. */
export function recallPlot(r: RecallResult, title: string): string {
  return lineChartSvg(
    CONDITIONS.map(([key, label, color]) => ({
      label,
      color,
      points: r.distances.map((d) => [d.distance, d[key].nll] as [number, number]),
    })),
    {
      title,
      xLabel: "tokens between the statements and the query",
      yLabel: "answer NLL per token (nats)",
      yMin:
        Math.floor(Math.min(...r.distances.flatMap((d) => CONDITIONS.map(([k]) => d[k].nll))) * 2) /
        2,
    },
  );
}

function factsJson(r: RecallResult) {
  return r.facts.map((f) => ({
    ...f.fact,
    query_tokens: f.queryTokens,
    answer_tokens: f.answerTokens,
    distances: f.distances,
  }));
}

async function main(): Promise<number> {
  const v = parseFlags(OPTIONS);
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (!v["text-file"]) throw new UsageError("--text-file is required: the book to read");
  if (!v.facts) throw new UsageError("--facts is required: a JSON Lines file of facts");
  const given = v.distance === undefined ? undefined : distancesFlag(v.distance);
  const overrides = tempLoraFlags(v);
  const text = await readFlagFile("text-file", v["text-file"]);
  let facts: RecallFact[];
  try {
    facts = parseRecallFacts(await readFlagFile("facts", v.facts));
  } catch (error) {
    if (error instanceof DocumentFormatError) {
      throw new CommandError(`--facts ${v.facts}: ${error.message}`);
    }
    throw error;
  }
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
    const distances = given ?? [4 * settings.window];
    const progress = new ProgressLine();
    const started = performance.now();
    const result = await evaluateRecall(lm, text, facts, {
      distances,
      onChunk: (walk, done, total) => {
        const s = (performance.now() - started) / 1000;
        progress.show(
          `${walk === "templora" ? "text" : "control text"}: chunk ${done}/${total} ` +
            `(${s.toFixed(0)} s)`,
        );
      },
    }, settings);
    progress.clear();
    const name = v["text-file"].split("/").pop();
    if (plot) {
      await plot.write(recallPlot(result, `${name}: recall of ${facts.length} facts`));
    }
    if (v.json) {
      console.log(JSON.stringify({
        distances: result.distances,
        facts: factsJson(result),
        statement_tokens: result.statementTokens,
        control_statement_tokens: result.controlStatementTokens,
        seconds: result.seconds,
        settings: {
          model: loaded.path,
          text_file: v["text-file"],
          facts_file: v.facts,
          facts: facts.length,
          distances: result.distances.map((d) => d.distance),
          templora: tempLoraSettingsJson(settings),
        },
        gpu: gpuJson(lm),
      }));
    } else {
      console.log(table(result));
      console.log(
        `\n${facts.length} facts (${result.statementTokens} tokens of statements) before ` +
          `${name}, window ${settings.window}, in ${result.seconds.toFixed(0)} s` +
          (v.plot ? `; plot written to ${v.plot}` : ""),
      );
    }
    return 0;
  } finally {
    plot?.close();
    loaded.close();
  }
}

if (import.meta.main) await runCommand("recall", main);
