/**
 * What the command-line examples share: numeric flag parsing with clear messages, exit codes
 * (0 done, 1 a run-time error, 2 a bad command line, 130 interrupted), and a progress line on
 * stderr that is drawn only when stderr is a terminal.
 */
import { TemploraError } from "../src/gpu/errors.ts";

/** A command-line mistake: reported with the usage, exit code 2. */
export class UsageError extends Error {}

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
    const wants = [
      check.integer ? "an integer" : "a number",
      check.min !== undefined ? `>= ${check.min}` : "",
      check.above !== undefined ? `> ${check.above}` : "",
      check.max !== undefined ? `<= ${check.max}` : "",
    ].filter(Boolean).join(" ");
    throw new UsageError(`--${flag} must be ${wants}, got "${raw}"`);
  }
  return value;
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
