/**
 * What the command-line examples share: flag parsing with one-line messages, the model, GPU and
 * Temp-Lora flags, reading and writing the files flags name, exit codes (0 done, 1 a run-time
 * error, 2 a bad command line, 130 interrupted), and a progress line on stderr that is drawn only
 * when stderr is a terminal.
 */
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import {
  acquireGpu,
  GpuUnavailableError,
  InvalidSettingError,
  type ModelConfig,
  ModelFormatError,
  resolveTempLoraSettings,
  TemploraError,
  type TempLoraSettings,
  TextModel,
} from "../mod.ts";

/**
 * The model used when no --model is given: stories260K, which lives in the repository
 * (models/stories260K/, with its tokenizer, source and licence).
 */
export const DEFAULT_MODEL = fileURLToPath(
  new URL("../models/stories260K/stories260K.bin", import.meta.url),
);

/** A command-line mistake: one line, then a hint to run --help; exit code 2. */
export class UsageError extends Error {}

/** A run-time problem the user can fix (a file, a port, the GPU): one line, exit code 1. */
export class CommandError extends Error {}

/** The flag most like `name` among `known`, when one is close enough to be a typo. */
function closestFlag(name: string, known: readonly string[]): string | undefined {
  const distance = (a: string, b: string) => {
    let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const row = [i];
      for (let j = 1; j <= b.length; j++) {
        row[j] = Math.min(
          previous[j] + 1,
          row[j - 1] + 1,
          previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
        );
      }
      previous = row;
    }
    return previous[b.length];
  };
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 4)) + 1;
  for (const flag of known) {
    const d = distance(name, flag);
    if (d < bestDistance || (flag.startsWith(name) && name.length >= 3 && d <= bestDistance)) {
      best = flag;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * The flag values of a command line (no positional arguments, no unknown flags); a
 * {@link UsageError} naming the flag or argument when it does not parse.
 */
export function parseFlags<const T extends ParseArgsOptionsConfig>(
  options: T,
  args: string[] = Deno.args,
) {
  // A negative number after a flag that takes a value is that value, not a flag of its own.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : undefined;
    const next = args[i + 1];
    if (name && options[name]?.type === "string" && next !== undefined && /^-[\d.]/.test(next)) {
      joined.push(`${args[i]}=${next}`);
      i++;
    } else {
      joined.push(args[i]);
    }
  }
  try {
    return parseArgs({ args: joined, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    const quoted = message.match(/'([^']*)'/)?.[1] ?? "";
    const flag = quoted.split(" ")[0];
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const guess = closestFlag(flag.replace(/^-+/, "").split("=")[0], Object.keys(options));
      throw new UsageError(`unknown flag ${flag}${guess ? ` (did you mean --${guess}?)` : ""}`);
    }
    if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
      throw new UsageError(
        `unexpected argument ${JSON.stringify(quoted)}: every value follows its flag, as in ` +
          `--prompt "Once upon a time"`,
      );
    }
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      if (/argument missing/.test(message)) throw new UsageError(`${flag} needs a value`);
      if (/does not take an argument/.test(message)) {
        throw new UsageError(`${flag} is a switch and takes no value`);
      }
    }
    throw new UsageError(message.replaceAll("\n", " "));
  }
}

/** Bounds a numeric flag must respect. */
export interface NumberCheck {
  integer?: boolean;
  min?: number;
  max?: number;
  /** Strictly greater than. */
  above?: number;
}

/** The value of a numeric flag, `fallback` when absent; a {@link UsageError} when malformed. */
export function numberFlag(
  values: Record<string, unknown>,
  flag: string,
  fallback: number,
  check?: NumberCheck,
): number;
export function numberFlag(
  values: Record<string, unknown>,
  flag: string,
  fallback: number | undefined,
  check?: NumberCheck,
): number | undefined;
export function numberFlag(
  values: Record<string, unknown>,
  flag: string,
  fallback: number | undefined,
  check: NumberCheck = {},
): number | undefined {
  const raw = values[flag];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  const bad = typeof raw !== "string" || raw.trim() === "" || !Number.isFinite(value) ||
    (check.integer && !Number.isInteger(value)) ||
    (check.min !== undefined && value < check.min) ||
    (check.max !== undefined && value > check.max) ||
    (check.above !== undefined && !(value > check.above));
  if (bad) {
    const bounds = [
      check.min !== undefined ? `>= ${check.min}` : "",
      check.above !== undefined ? `> ${check.above}` : "",
      check.max !== undefined ? `<= ${check.max}` : "",
    ].filter(Boolean).join(" and ");
    const kind = check.integer ? "an integer" : "a number";
    throw new UsageError(
      `--${flag} must be ${kind}${bounds ? ` ${bounds}` : ""}, got ${JSON.stringify(raw)}`,
    );
  }
  return value;
}

/** The parseArgs options of the flags {@link loadModel} reads. */
export const MODEL_OPTIONS = {
  model: { type: "string" },
  tokenizer: { type: "string" },
  "require-gpu": { type: "boolean" },
  "kv-cache": { type: "string" },
} as const;

/** Help lines of {@link MODEL_OPTIONS}, aligned like the commands' other flags. */
export const MODEL_HELP =
  `  --model PATH               llama2.c checkpoint (.bin, tokenizer beside it) or Hugging Face
                             folder (default: the stories260K model in models/stories260K/)
  --tokenizer PATH           tokenizer file or folder, when it is not beside the model
  --require-gpu              refuse to run on an OpenGL fallback or a software (CPU) adapter
  --kv-cache f32|f16         how the KV cache stores keys and values (default f32; f16 halves
                             its memory, each value rounded to half precision)`;

/** A loaded model and the GPU it owns; `close` frees both. */
export interface LoadedModel {
  lm: TextModel;
  /** The --model path (or the default). */
  path: string;
  close(): void;
}

/**
 * Acquires the GPU (refusing an OpenGL or software adapter with --require-gpu) and loads the
 * --model (default: the embedded stories260K) with its tokenizer; a file or GPU problem is a
 * {@link CommandError} naming the flag.
 */
export async function loadModel(values: {
  model?: string;
  tokenizer?: string;
  "require-gpu"?: boolean;
  "kv-cache"?: string;
}): Promise<LoadedModel> {
  const path = values.model ?? DEFAULT_MODEL;
  if (path === "") throw new UsageError("--model needs a path");
  const kvCache = values["kv-cache"] ?? "f32";
  if (kvCache !== "f32" && kvCache !== "f16") {
    throw new UsageError(`--kv-cache must be f32 or f16, got ${JSON.stringify(kvCache)}`);
  }
  let gpu;
  try {
    gpu = await acquireGpu({ requireGpu: values["require-gpu"] });
  } catch (error) {
    if (error instanceof GpuUnavailableError && values["require-gpu"]) {
      throw new CommandError(`--require-gpu: ${error.message}`);
    }
    throw error;
  }
  try {
    const lm = await TextModel.load(path, {
      gpu,
      tokenizerPath: values.tokenizer,
      kvCacheDtype: kvCache,
    });
    return {
      lm,
      path,
      close() {
        lm.dispose();
        gpu.destroy();
      },
    };
  } catch (error) {
    gpu.destroy();
    if (
      error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.IsADirectory
    ) {
      throw new CommandError(`--model ${path}: cannot read it (${fileProblem(error, false)})`);
    }
    if (error instanceof ModelFormatError) {
      const flag = values.tokenizer !== undefined && error.file === values.tokenizer
        ? "--tokenizer"
        : "--model";
      const named = error.file.startsWith(path) ||
        (values.tokenizer !== undefined && error.file.startsWith(values.tokenizer));
      throw new CommandError(
        named ? `${flag} ${error.message}` : `${flag} ${path}: ${error.message}`,
      );
    }
    throw error;
  }
}

/** Why a file operation failed, in a few words. */
function fileProblem(error: unknown, writing: boolean): string {
  if (error instanceof Deno.errors.NotFound) {
    return writing ? "its folder does not exist" : "no such file";
  }
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "is a folder, not a file";
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/ \(os error \d+\).*$/, "").replace(/:.*$/, "");
}

/** The text of the file a flag names; a {@link CommandError} naming flag and file otherwise. */
export async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    if ((await Deno.stat(path)).isDirectory) {
      throw new CommandError(`--${flag} ${path}: is a folder, not a file`);
    }
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof CommandError) throw error;
    throw new CommandError(`--${flag} ${path}: cannot read it (${fileProblem(error, false)})`);
  }
}

/** A file a flag names, opened (created or emptied) up front so a bad path fails at once. */
export interface FlagOutput {
  /** Replaces the file's content with `text`. */
  write(text: string): Promise<void>;
  close(): void;
}

/** Opens the file a flag names for writing; a {@link CommandError} naming flag and file. */
export async function openFlagOutput(flag: string, path: string): Promise<FlagOutput> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { write: true, create: true, truncate: true });
  } catch (error) {
    throw new CommandError(`--${flag} ${path}: cannot write it (${fileProblem(error, true)})`);
  }
  return {
    async write(text) {
      try {
        await file.truncate(0);
        await file.seek(0, Deno.SeekMode.Start);
        const bytes = new TextEncoder().encode(text);
        for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
      } catch (error) {
        throw new CommandError(`--${flag} ${path}: writing failed (${fileProblem(error, true)})`);
      }
    },
    close() {
      file.close();
    },
  };
}

/** The parseArgs options of the flags {@link tempLoraFlags} reads. */
export const TEMPLORA_OPTIONS = {
  chunk: { type: "string" },
  epochs: { type: "string" },
  lr: { type: "string" },
  rank: { type: "string" },
  alpha: { type: "string" },
  window: { type: "string" },
  sink: { type: "string" },
} as const;

/** Temp-Lora overrides from the command line; undefined where the flag is absent. */
export interface TempLoraFlags extends Partial<Omit<TempLoraSettings, "optimizer">> {
  lr?: number;
}

/**
 * The --chunk, --epochs, --rank, --alpha, --window, --sink and --lr flags, each checked on its
 * own.
 */
export function tempLoraFlags(values: Record<string, unknown>): TempLoraFlags {
  return {
    chunk: numberFlag(values, "chunk", undefined, { integer: true, min: 1 }),
    epochs: numberFlag(values, "epochs", undefined, { integer: true, min: 0 }),
    rank: numberFlag(values, "rank", undefined, { integer: true, min: 1 }),
    alpha: numberFlag(values, "alpha", undefined, { above: 0 }),
    window: numberFlag(values, "window", undefined, { integer: true, min: 2 }),
    sink: numberFlag(values, "sink", undefined, { integer: true, min: 0 }),
    lr: numberFlag(values, "lr", undefined, { min: 0 }),
  };
}

/** The flag of each Temp-Lora setting a library message may name. */
const SETTING_FLAGS: Record<string, string> = {
  window: "--window",
  chunk: "--chunk",
  epochs: "--epochs",
  kvRefresh: "--kv-refresh",
  sink: "--sink",
  rank: "--rank",
  alpha: "--alpha",
  lr: "--lr",
  trainContext: "the training context (--window minus --chunk)",
};

/**
 * An {@link InvalidSettingError} from the library as a {@link UsageError}: a message that starts
 * with a setting's name starts with its flag instead.
 */
export function settingUsageError(error: InvalidSettingError): UsageError {
  if (error.message.startsWith("the prompt ")) return new UsageError(`--prompt: ${error.message}`);
  const [, name, rest] = error.message.match(/^(\w+) (.*)$/s) ?? [];
  const flag = name ? SETTING_FLAGS[name] : undefined;
  return new UsageError(flag ? `${flag} ${rest}` : error.message);
}

/**
 * The model's Temp-Lora settings with the given overrides, by the library's rules (absent flags
 * keep the defaults; --alpha follows --rank unless given too); settings that do not fit together
 * or the model are a {@link UsageError}.
 */
export function tempLoraSettingsFromFlags(
  flags: TempLoraFlags,
  config: ModelConfig,
): TempLoraSettings {
  const { lr, ...overrides } = flags;
  try {
    return resolveTempLoraSettings(config, { ...overrides, optimizer: { lr } });
  } catch (error) {
    if (error instanceof InvalidSettingError) throw settingUsageError(error);
    throw error;
  }
}

/**
 * The --separator value: `\n`, `\t` and `\\` in it stand for a newline, a tab and a
 * backslash; absent, a blank line.
 */
export function separatorFlag(raw: string | undefined): string {
  if (raw === undefined) return "\n\n";
  return raw.replace(/\\(.)/g, (all, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c as string] ?? all);
}

/** The adapter a model runs on, for --json output. */
export function gpuJson(lm: TextModel) {
  const c = lm.gpu.capabilities;
  return {
    adapter: c.description,
    backend: c.backend,
    software: c.isFallbackAdapter,
    shader_f16: c.shaderF16,
  };
}

/** The usage text, or the one-line error and its hint, as {@link runCommand} prints them. */
export function usageErrorText(command: string, message: string): string {
  return `error: ${message}\nrun \`deno task ${command} --help\` to see every flag`;
}

/**
 * Runs a command's main function and exits with its code: a {@link UsageError} prints its line
 * and a hint to run --help (exit 2); a {@link CommandError} or a TemploraError prints one line
 * (exit 1); anything else is a bug and keeps its stack.
 */
export async function runCommand(command: string, main: () => Promise<number>): Promise<never> {
  let code: number;
  try {
    code = await main();
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(usageErrorText(command, error.message));
      code = 2;
    } else if (error instanceof InvalidSettingError) {
      console.error(usageErrorText(command, settingUsageError(error).message));
      code = 2;
    } else if (error instanceof CommandError || error instanceof TemploraError) {
      console.error(`error: ${error.message.split("\n")[0]}`);
      code = 1;
    } else {
      throw error;
    }
  }
  Deno.exit(code);
}

const encoder = new TextEncoder();

/** A single status line on stderr, redrawn in place; silent when stderr is not a terminal. */
export class ProgressLine {
  readonly enabled = Deno.stderr.isTerminal();
  #shown = false;

  /** Replaces the status line. */
  show(text: string): void {
    if (!this.enabled) return;
    const width = Deno.consoleSize?.().columns ?? 100;
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${text.slice(0, width - 1)}`));
    this.#shown = true;
  }

  /** Removes the status line so other output starts on a clean line. */
  clear(): void {
    if (!this.#shown) return;
    Deno.stderr.writeSync(encoder.encode("\r\x1b[2K"));
    this.#shown = false;
  }
}

/**
 * The terminal window's title, set while a command runs: the title it had is saved on the
 * terminal's title stack first and restored by {@link WindowTitle.restore} (terminals without
 * the stack are left with an empty title, which they show as their default).
 */
export class WindowTitle {
  #saved = false;

  /** `write` sends the escape sequences to the terminal (default: stderr). */
  constructor(
    private readonly write: (bytes: Uint8Array) => void = (b) => {
      for (let at = 0; at < b.length;) at += Deno.stderr.writeSync(b.subarray(at));
    },
  ) {}

  /** Shows `text` as the window title, saving the previous title on first use. */
  set(text: string): void {
    const printable = [...text].map((c) => c < " " ? " " : c).join("");
    const save = this.#saved ? "" : "\x1b[22;0t";
    this.#saved = true;
    this.write(encoder.encode(`${save}\x1b]0;${printable}\x07`));
  }

  /** Puts the saved title back (nothing when the title was never set). */
  restore(): void {
    if (!this.#saved) return;
    this.#saved = false;
    this.write(encoder.encode("\x1b]0;\x07\x1b[23;0t"));
  }
}

/** Writes text to stdout without a newline. */
export function writeOut(text: string): void {
  const bytes = encoder.encode(text);
  for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
}

/** Bytes as "12.3 MiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}
