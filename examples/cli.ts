/**
 * What the command-line examples share: flag parsing with clear one-line messages, the Temp-Lora
 * flags, exit codes (0 done, 1 a run-time error, 2 a bad command line, 130 interrupted), and a
 * progress line on stderr that is drawn only when stderr is a terminal.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import type { ModelConfig } from "../src/formats/config.ts";
import { TemploraError } from "../src/gpu/errors.ts";
import { InvalidSettingError } from "../src/model/errors.ts";
import { resolveTempLoraSettings, type TempLoraSettings } from "../src/templora/settings.ts";

/** A command-line mistake: reported with the usage, exit code 2. */
export class UsageError extends Error {}

/**
 * The flag values of a command line (no positional arguments, no unknown flags); a
 * {@link UsageError} with parseArgs' message on one line when it does not parse.
 */
export function parseFlags<const T extends ParseArgsOptionsConfig>(
  options: T,
  args: string[] = Deno.args,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new UsageError((error as Error).message.replaceAll("\n", " "));
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

/**
 * The model's Temp-Lora settings with the given overrides. --alpha follows --rank unless given
 * too; settings that do not fit together or the model are a {@link UsageError}.
 */
export function tempLoraSettingsFromFlags(
  flags: TempLoraFlags,
  config: ModelConfig,
): TempLoraSettings {
  const { lr, ...overrides } = flags;
  const defined = Object.fromEntries(
    Object.entries(overrides).filter(([, value]) => value !== undefined),
  );
  if (defined.rank !== undefined && overrides.alpha === undefined) defined.alpha = defined.rank;
  try {
    return resolveTempLoraSettings(config, {
      ...defined,
      optimizer: lr === undefined ? {} : { lr },
    });
  } catch (error) {
    if (error instanceof InvalidSettingError) throw new UsageError(error.message);
    throw error;
  }
}

/**
 * Runs a command's main function: a {@link UsageError} prints the message and the usage (exit 2),
 * a TemploraError or a missing file one line (exit 1); anything else is a bug and keeps its stack.
 */
export async function runCommand(usage: string, main: () => Promise<number>): Promise<never> {
  let code: number;
  try {
    code = await main();
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}\n\n${usage}`);
      code = 2;
    } else if (error instanceof TemploraError || error instanceof Deno.errors.NotFound) {
      console.error(`error: ${error.message}`);
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

/** Writes text to stdout without a newline. */
export function writeOut(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text));
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
