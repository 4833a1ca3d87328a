/**
 * Writes a long story with Temp-Lora: the model writes in chunks, and a temporary LoRA adapter
 * trains on each finished chunk so the story's names and facts stay in its weights.
 *
 *   deno task novel --prompt "Once upon a time" --tokens 2048 [--model PATH]
 *
 * The story streams to stdout. A progress line (tokens, tokens/s, chunk, last loss) goes to
 * stderr when it is a terminal; when stdout is the same terminal it goes to the window title
 * instead (restored at the end), so it never garbles the story. Ctrl-C stops cleanly: the text
 * so far is written to --out, GPU memory is freed, and the exit code is 130. Exit codes: 0 done,
 * 1 run-time error, 2 bad command line.
 *
 * With --snapshot DIR the run saves a snapshot (the adapter in PEFT's format, the optimizer
 * state, the text so far) every --snapshot-every chunks, on Ctrl-C and at the end; --resume DIR
 * goes on with that story, with its settings, and writes exactly what the run would have.
 */
import { tempLoraSettingsJson, type WriterSummary, writeWithTempLora } from "../mod.ts";
import {
  checkSnapshotTarget,
  loadSnapshot,
  resumeWithTempLora,
  saveSnapshot,
  snapshotExists,
  type SnapshotSchedule,
  TemploraError,
  type TempLoraSnapshot,
} from "../mod.ts";
import {
  CommandError,
  type FlagOutput,
  formatBytes,
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
  separatorFlag,
  TEMPLORA_OPTIONS,
  tempLoraFlags,
  tempLoraSettingsFromFlags,
  UsageError,
  WindowTitle,
  writeOut,
} from "./cli.ts";

const USAGE = `usage: deno task novel [--prompt TEXT | --prompt-file F] [options]

${MODEL_HELP}
  --prompt TEXT              the story's beginning (default: "Once upon a time")
  --prompt-file F            read the beginning from a file instead
  --tokens N                 tokens to write (default 1024)
  --chunk N                  Δ, tokens between adapter updates (default: window / 4)
  --epochs N                 optimizer steps per chunk (default 3 below d_model 1024, else 2)
  --lr X                     learning rate (default: by model size, 1e-3 for small models)
  --rank N                   LoRA rank (default: d_model / 4, at most 64)
  --alpha X                  LoRA alpha (default: same as the rank)
  --window N                 tokens the model attends to (default: its length, at most 1024)
  --sink N                   attention sinks: the first N tokens stay in the window when it
                             slides (default 0; at most a quarter of the window)
  --kv-refresh N             rebuild the KV cache with the new adapter every N chunks (default 7;
                             0 = after every chunk)
  --temperature T            0 = greedy (default 0.8)
  --top-p P                  nucleus sampling, 1 = off (default 0.95)
  --top-k K                  0 = off (default 0)
  --repetition-penalty R     1 = off (default 1.12, as the paper)
  --seed S                   random seed, same seed same story (default 0)
  --separator TEXT           written where the model ends one text and starts another
                             (default: a blank line; \\n is a newline)
  --no-templora              plain generation with the same window, for comparison
  --out FILE                 also write the story to FILE (written on Ctrl-C too)
  --snapshot DIR             save a snapshot to DIR every --snapshot-every chunks, on Ctrl-C
                             and at the end (the adapter in PEFT's format, its optimizer state
                             and the story so far)
  --snapshot-every N         chunks between snapshots (default 8)
  --resume DIR               go on with the story whose snapshot is in DIR, with its settings
                             (--tokens may raise its length; snapshots go on to DIR)
  --json                     print one JSON object at the end instead of streaming
  --help                     this help`;

const OPTIONS = {
  ...MODEL_OPTIONS,
  prompt: { type: "string" },
  "prompt-file": { type: "string" },
  tokens: { type: "string" },
  ...TEMPLORA_OPTIONS,
  "kv-refresh": { type: "string" },
  temperature: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  "repetition-penalty": { type: "string" },
  seed: { type: "string" },
  separator: { type: "string" },
  "no-templora": { type: "boolean" },
  out: { type: "string" },
  snapshot: { type: "string" },
  "snapshot-every": { type: "string" },
  resume: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean" },
} as const;

async function main(): Promise<number> {
  const v = parseFlags(OPTIONS);
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (v.prompt !== undefined && v["prompt-file"] !== undefined) {
    throw new UsageError("give --prompt or --prompt-file, not both");
  }
  const resumed = v.resume === undefined ? undefined : await resumeFlags(v);
  const snapshotDir = v.snapshot ?? v.resume;
  const snapshotEvery = numberFlag(v, "snapshot-every", 8, { integer: true, min: 1 });
  if (v["snapshot-every"] !== undefined && snapshotDir === undefined) {
    throw new UsageError("--snapshot-every needs --snapshot DIR");
  }
  if (snapshotDir !== undefined) await checkSnapshotFlag(snapshotDir, v.resume);
  const tokens = numberFlag(v, "tokens", resumed?.generation.maxTokens ?? 1024, {
    integer: true,
    min: 1,
  });
  const separator = resumed ? resumed.generation.separator : separatorFlag(v.separator);
  const generation = resumed ? { ...resumed.generation, maxTokens: tokens } : {
    maxTokens: tokens,
    temperature: numberFlag(v, "temperature", 0.8, { min: 0 }),
    topP: numberFlag(v, "top-p", 0.95, { above: 0, max: 1 }),
    topK: numberFlag(v, "top-k", 0, { integer: true, min: 0 }),
    repetitionPenalty: numberFlag(v, "repetition-penalty", 1.12, { above: 0 }),
    seed: numberFlag(v, "seed", 0, { integer: true, min: 0, max: 0xffffffff }),
    // A story may end and another begin: the separator marks where, and writing goes on.
    separator,
  };
  const overrides = {
    ...tempLoraFlags(v),
    enabled: !v["no-templora"],
    kvRefresh: numberFlag(v, "kv-refresh", undefined, { integer: true, min: 0 }),
  };
  const prompt = resumed
    ? resumed.promptText ?? ""
    : v["prompt-file"] !== undefined
    ? await readFlagFile("prompt-file", v["prompt-file"])
    : v.prompt ?? "Once upon a time";
  let out: FlagOutput | undefined;
  if (v.out !== undefined) out = await openFlagOutput("out", v.out);

  const title = new WindowTitle();
  let loaded;
  try {
    loaded = await loadModel(v);
  } catch (error) {
    out?.close();
    throw error;
  }
  const { lm } = loaded;
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  Deno.addSignalListener("SIGINT", onSigint);
  try {
    const settings = resumed?.settings ?? tempLoraSettingsFromFlags(overrides, lm.config);
    const progress = new ProgressLine();
    const sameTerminal = Deno.stdout.isTerminal() && progress.enabled;
    const status = (text: string) => {
      if (v.json) return;
      if (sameTerminal) title.set(text);
      else progress.show(text);
    };
    const chunks: { chunk: number; losses: number[]; seconds: number }[] = [];
    const started = performance.now();
    let written = 0;
    let lastLoss = NaN;
    const snapshots: SnapshotSchedule | undefined = snapshotDir === undefined ? undefined : {
      everyChunks: snapshotEvery,
      save: (snapshot) => saveSnapshot(snapshotDir, snapshot),
    };
    const run = resumed
      ? resumeWithTempLora(lm, resumed, {
        maxTokens: tokens,
        signal: controller.signal,
        snapshots,
      })
      : writeWithTempLora(
        lm,
        prompt,
        { ...generation, signal: controller.signal },
        settings,
        { snapshots },
      );
    let summary: WriterSummary;
    let text = "";
    if (!v.json) writeOut(prompt);
    for (;;) {
      const next = await run.next();
      if (next.done) {
        summary = next.value;
        break;
      }
      const e = next.value;
      if (e.type === "token") {
        text += e.text;
        written = e.index + 1;
        if (!v.json) writeOut(e.text);
      } else if (e.type === "train") {
        lastLoss = e.loss;
        if (e.epoch === 0) chunks.push({ chunk: e.chunk, losses: [], seconds: 0 });
        const c = chunks[chunks.length - 1];
        c.losses.push(e.loss);
        c.seconds += e.seconds;
      }
      const seconds = (performance.now() - started) / 1000;
      status(
        `templora: ${written}/${tokens} tokens, ${(written / seconds).toFixed(1)} tok/s, ` +
          `chunk ${Math.floor(written / settings.chunk) + 1}` +
          (Number.isNaN(lastLoss) ? "" : `, last loss ${lastLoss.toFixed(3)}`),
      );
    }
    progress.clear();
    title.restore();
    await out?.write(prompt + text);
    const interrupted = summary.finishReason === "abort";
    const totals = {
      tokens: summary.tokens.length,
      prompt_tokens: summary.promptTokens,
      seconds: summary.seconds,
      tokens_per_second: summary.tokensPerSecond,
      training_seconds: summary.trainingSeconds,
      training_share: summary.trainingShare,
      chunks_trained: summary.chunksTrained,
      skipped_steps: summary.skippedSteps,
      peak_gpu_bytes: summary.peakGpuBytes,
      finish_reason: summary.finishReason,
      resumed_tokens: summary.resumedTokens,
    };
    if (v.json) {
      console.log(JSON.stringify({
        prompt,
        text,
        settings: {
          model: loaded.path,
          max_tokens: generation.maxTokens,
          temperature: generation.temperature,
          top_p: generation.topP,
          top_k: generation.topK,
          repetition_penalty: generation.repetitionPenalty,
          seed: generation.seed,
          separator,
          templora: tempLoraSettingsJson(settings),
        },
        gpu: gpuJson(lm),
        chunks,
        totals,
      }));
    } else {
      writeOut("\n");
      console.error(
        `\n${interrupted ? "interrupted" : "done"}: ${totals.tokens} tokens` +
          (totals.resumed_tokens ? ` (${totals.resumed_tokens} from the snapshot)` : "") +
          ` in ` +
          `${totals.seconds.toFixed(1)} s (${totals.tokens_per_second.toFixed(1)} tok/s), ` +
          `training ${(100 * totals.training_share).toFixed(0)}% of the time over ` +
          `${totals.chunks_trained} chunks, peak GPU memory ${formatBytes(totals.peak_gpu_bytes)}` +
          (settings.enabled ? "" : " (Temp-Lora off)") + (v.out ? `; written to ${v.out}` : "") +
          (snapshotDir === undefined ? "" : `; snapshot in ${snapshotDir}`),
      );
    }
    return interrupted ? 130 : 0;
  } finally {
    title.restore();
    Deno.removeSignalListener("SIGINT", onSigint);
    out?.close();
    loaded.close();
  }
}

/** Flags that shape a story, which --resume takes from the snapshot instead. */
const STORY_FLAGS = [
  "prompt",
  "prompt-file",
  ...Object.keys(TEMPLORA_OPTIONS),
  "kv-refresh",
  "temperature",
  "top-p",
  "top-k",
  "repetition-penalty",
  "seed",
  "separator",
  "no-templora",
];

/** The snapshot --resume names, after checking no flag tries to change its story. */
async function resumeFlags(v: Record<string, unknown>): Promise<TempLoraSnapshot> {
  const given = STORY_FLAGS.find((flag) => v[flag] !== undefined);
  if (given) {
    throw new UsageError(
      `--resume goes on with the story's own settings; --${given} cannot be given with it`,
    );
  }
  return await loadSnapshot(v.resume as string);
}

/**
 * Fails early when --snapshot (or --resume) names a folder that cannot take snapshots, or, for
 * a new story, one that already holds another story's snapshot.
 */
async function checkSnapshotFlag(dir: string, resume: string | undefined): Promise<void> {
  const flag = resume === undefined ? "--snapshot" : "--resume";
  try {
    await checkSnapshotTarget(dir);
  } catch (error) {
    if (error instanceof TemploraError) throw new CommandError(`${flag} ${error.message}`);
    throw error;
  }
  if (dir !== resume && await snapshotExists(dir)) {
    throw new CommandError(
      `--snapshot ${dir}: it holds the snapshot of another story; go on with that one with ` +
        `--resume ${dir}, or give another folder`,
    );
  }
}

if (import.meta.main) await runCommand("novel", main);
