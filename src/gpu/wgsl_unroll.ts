import { KernelUsageError } from "./errors.ts";
import { maskComments, matchingBracket } from "./wgsl_parse.ts";

/** Most copies of a body one marked loop may expand to (a guard against runaway shader sizes). */
export const MAX_UNROLL = 256;

const MARKER = "//!unroll";

/**
 * Expands every loop marked `//!unroll` (on its own line just before the `for`, or at the start of
 * the `for` line) into copies of its body, one per iteration, with the loop variable replaced by
 * its value. Runs on specialised source (overrides already `const`s), so bounds such as `HD4` or
 * `BK` are known. The header must read `for (var i = START; i < END; i++)` (or `i += STEP`) with
 * START, END and STEP constant integer expressions of literals and `const`s.
 *
 * Why: Mesa's llvmpipe does not unroll such loops, so a private array indexed by the loop
 * variable (a row of a head held in registers) is spilled to memory and every access becomes a
 * per-lane load or store; with constant indices it stays in registers. The expansion keeps the
 * line count (each loop's copies stand on its first line), so compile messages keep their lines.
 */
export function unrollLoops(code: string, file: string): string {
  if (!code.includes(MARKER)) return code;
  const constants = constantValues(code, file);
  let out = code;
  // Innermost first: a nested marked loop stands after its outer one, so take markers from the end.
  for (let at = out.lastIndexOf(MARKER); at >= 0; at = out.lastIndexOf(MARKER, at - 1)) {
    out = expandAt(out, at, constants, file);
    if (at === 0) break;
  }
  return out;
}

function expandAt(code: string, at: number, constants: Map<string, number>, file: string): string {
  const line = code.slice(0, at).split("\n").length;
  const where = `${file}:${line}`;
  const header =
    /^\/\/!unroll[^\S\n]*\n?[^\S\n]*for\s*\(\s*var\s+(\w+)\s*(?::\s*(\w+)\s*)?=\s*([^;]+);\s*(\w+)\s*<\s*([^;]+);\s*(\w+)\s*(\+\+|\+=\s*([^)]+))\s*\)\s*\{/
      .exec(code.slice(at));
  if (!header) {
    throw new KernelUsageError(
      `${where}: //!unroll must stand before a loop "for (var i = START; i < END; i++ or i += STEP) {"`,
    );
  }
  const [whole, name, declaredType, startText, testName, endText, stepName, , stepText] = header;
  if (testName !== name || stepName !== name) {
    throw new KernelUsageError(`${where}: the unrolled loop must test and step its own variable`);
  }
  const value = (text: string) => evaluate(text, constants, where);
  const start = value(startText);
  const end = value(endText);
  const step = stepText === undefined ? 1 : value(stepText);
  if (step <= 0) throw new KernelUsageError(`${where}: an unrolled loop needs a positive step`);
  const count = Math.max(0, Math.ceil((end - start) / step));
  if (count > MAX_UNROLL) {
    throw new KernelUsageError(`${where}: ${count} iterations; at most ${MAX_UNROLL} unroll`);
  }
  const open = at + whole.length - 1;
  const masked = maskComments(code);
  const close = matchingBracket(masked, open) - 1;
  if (close < 0) throw new KernelUsageError(`${where}: the unrolled loop's body is not closed`);
  const body = masked.slice(open + 1, close);
  if (/\b(break|continue)\b/.test(body)) {
    throw new KernelUsageError(`${where}: an unrolled loop body may not break or continue`);
  }
  if (new RegExp(`(?<![\\w.])${name}\\s*(?:[-+*/%&|^]?=(?!=)|\\+\\+|--)`).test(body)) {
    throw new KernelUsageError(`${where}: an unrolled loop body may not assign ${name}`);
  }
  // The variable's type: declared, or a literal start's (a bare integer literal makes an i32).
  const literalStart = /^\d+([ui]?)$/.exec(startText.trim());
  const type = declaredType ?? (literalStart ? (literalStart[1] === "u" ? "u32" : "i32") : "");
  if (type !== "u32" && type !== "i32") {
    throw new KernelUsageError(
      `${where}: give ${name} a type (var ${name}: u32 = ...) or start it at an integer literal`,
    );
  }
  const suffix = type === "u32" ? "u" : "i";
  const use = new RegExp(`(?<![\\w.])${name}(?!\\w)`, "g");
  const oneLine = body.replace(/\s+/g, " ").trim();
  const copies: string[] = [];
  for (let i = 0; i < count; i++) {
    const literal = `${start + i * step}${suffix}`;
    copies.push(`{ ${oneLine.replace(use, `(${literal})`)} }`);
  }
  const original = code.slice(at, close + 1);
  const newlines = original.replace(/[^\n]/g, "");
  return code.slice(0, at) + copies.join(" ") + newlines + code.slice(close + 1);
}

/** Values of the integer `const` declarations that can be evaluated, by name. */
function constantValues(code: string, file: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const m of code.matchAll(/\bconst\s+(\w+)\s*(?::\s*(\w+)\s*)?=\s*([^;]+);/g)) {
    const [, name, type, expression] = m;
    if (type && type !== "u32" && type !== "i32") continue;
    try {
      values.set(name, evaluate(expression, values, file));
    } catch {
      // not an integer expression (a float, a vector, a function call): not a loop bound
    }
  }
  return values;
}

/**
 * An integer constant expression: literals (with u or i suffix), known constants, + - * / %,
 * parentheses, min() and max(). Division truncates, as for WGSL integers.
 */
function evaluate(text: string, constants: Map<string, number>, where: string): number {
  const tokens = text.match(/\d+[ui]?|\w+|[-+*/%(),]/g) ?? [];
  if (tokens.join("") !== text.replace(/\s+/g, "")) {
    throw new KernelUsageError(`${where}: "${text.trim()}" is not an integer constant expression`);
  }
  let i = 0;
  const fail = (): never => {
    throw new KernelUsageError(`${where}: "${text.trim()}" is not an integer constant expression`);
  };
  const primary = (): number => {
    const t = tokens[i++];
    if (t === undefined) return fail();
    if (t === "(") {
      const v = sum();
      if (tokens[i++] !== ")") fail();
      return v;
    }
    if (t === "-") return -primary();
    if (/^\d/.test(t)) return parseInt(t, 10);
    if (t === "min" || t === "max") {
      if (tokens[i++] !== "(") fail();
      const a = sum();
      if (tokens[i++] !== ",") fail();
      const b = sum();
      if (tokens[i++] !== ")") fail();
      return t === "min" ? Math.min(a, b) : Math.max(a, b);
    }
    const v = constants.get(t);
    return v === undefined ? fail() : v;
  };
  const product = (): number => {
    let v = primary();
    while (tokens[i] === "*" || tokens[i] === "/" || tokens[i] === "%") {
      const op = tokens[i++];
      const r = primary();
      if (op !== "*" && r === 0) fail();
      v = op === "*" ? v * r : op === "/" ? Math.trunc(v / r) : v % r;
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (tokens[i] === "+" || tokens[i] === "-") {
      const op = tokens[i++];
      const r = product();
      v = op === "+" ? v + r : v - r;
    }
    return v;
  };
  const v = sum();
  if (i !== tokens.length) fail();
  return v;
}
