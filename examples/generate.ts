/**
 * Generates text with a model on the GPU.
 *
 *   deno task generate [--model PATH] [--prompt TEXT] [--max-tokens N] [--temperature T] [--json]
 *
 * Streams the text to stdout as it is written and prints a one-line summary to stderr; with
 * --json prints one JSON object instead. Exit codes: 0 done, 1 the model could not be loaded or
 * run, 2 bad command line.
 */
import type { GenerateOptions } from "../mod.ts";
import {
  gpuJson,
  loadModel,
  MODEL_HELP,
  MODEL_OPTIONS,
  numberFlag,
  parseFlags,
  runCommand,
  writeOut,
} from "./cli.ts";

const USAGE = `usage: deno task generate [options]

${MODEL_HELP}
  --prompt TEXT              text to continue (default: "", start from BOS)
  --max-tokens N             tokens to generate at most (default 256)
  --temperature T            0 = greedy (default 0.8)
  --top-p P                  nucleus sampling, 1 = off (default 0.95)
  --top-k K                  0 = off (default 0)
  --repetition-penalty R     1 = off (default 1; the Temp-Lora paper uses 1.12)
  --seed S                   random seed, same seed same text (default 0)
  --window N                 KV window in tokens (default: the model's trained length)
  --sink N                   attention sinks: the first N tokens stay in the window when it
                             slides (default 0; at most a quarter of the window)
  --ban-eos                  never end at the end-of-text token
  --stop S                   stop before this text (repeatable)
  --json                     print one JSON object {text, tokens, tokens_per_second, ...}
  --help                     this help`;

interface Settings {
  model: { model?: string; tokenizer?: string; "require-gpu"?: boolean };
  prompt: string;
  json: boolean;
  options: GenerateOptions;
}

function parseSettings(args: string[]): Settings | "help" {
  const v = parseFlags({
    ...MODEL_OPTIONS,
    prompt: { type: "string", default: "" },
    "max-tokens": { type: "string" },
    temperature: { type: "string" },
    "top-p": { type: "string" },
    "top-k": { type: "string" },
    "repetition-penalty": { type: "string" },
    seed: { type: "string" },
    window: { type: "string" },
    sink: { type: "string" },
    "ban-eos": { type: "boolean", default: false },
    stop: { type: "string", multiple: true },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  }, args);
  if (v.help) return "help";
  const options: GenerateOptions = {
    maxTokens: numberFlag(v, "max-tokens", 256, { integer: true, min: 0 }),
    temperature: numberFlag(v, "temperature", 0.8, { min: 0 }),
    topP: numberFlag(v, "top-p", 0.95, { above: 0, max: 1 }),
    topK: numberFlag(v, "top-k", 0, { integer: true, min: 0 }),
    repetitionPenalty: numberFlag(v, "repetition-penalty", 1, { above: 0 }),
    seed: numberFlag(v, "seed", 0, { integer: true, min: 0, max: 0xffffffff }),
    window: numberFlag(v, "window", undefined, { integer: true, min: 2 }),
    sink: numberFlag(v, "sink", undefined, { integer: true, min: 0 }),
    banEos: v["ban-eos"],
    stop: v.stop ?? [],
  };
  return { model: v, prompt: v.prompt, json: v.json, options };
}

async function run(settings: Settings): Promise<void> {
  const loaded = await loadModel(settings.model);
  const { lm } = loaded;
  try {
    const it = lm.generate(settings.prompt, settings.options);
    let step = await it.next();
    while (!step.done) {
      if (!settings.json && step.value.text) writeOut(step.value.text);
      step = await it.next();
    }
    const result = step.value;
    const o = settings.options;
    if (settings.json) {
      const out = {
        text: result.text,
        tokens: result.tokens,
        tokens_per_second: result.tokensPerSecond,
        prompt_tokens: result.promptTokens,
        finish_reason: result.finishReason,
        dispatches_per_token: result.counts?.dispatchesPerToken,
        weight_bytes_per_token: result.counts?.weightBytesPerToken,
        min_weight_bytes_per_token: result.counts?.minWeightBytesPerToken,
        settings: {
          model: loaded.path,
          prompt: settings.prompt,
          max_tokens: o.maxTokens,
          temperature: o.temperature,
          top_p: o.topP,
          top_k: o.topK,
          repetition_penalty: o.repetitionPenalty,
          seed: o.seed,
          window: o.window ?? lm.config.maxSeqLen,
          sink: o.sink ?? 0,
          ban_eos: o.banEos,
          stop: o.stop,
        },
        gpu: gpuJson(lm),
      };
      console.log(JSON.stringify(out));
    } else {
      writeOut("\n");
      console.error(
        `${result.tokens.length} tokens in ${result.seconds.toFixed(2)} s ` +
          `(${
            result.tokensPerSecond.toFixed(1)
          } tokens/s), prompt ${result.promptTokens} tokens, ` +
          `finish: ${result.finishReason}`,
      );
    }
  } finally {
    loaded.close();
  }
}

async function main(): Promise<number> {
  const settings = parseSettings(Deno.args);
  if (settings === "help") {
    console.log(USAGE);
    return 0;
  }
  await run(settings);
  return 0;
}

if (import.meta.main) await runCommand("generate", main);
