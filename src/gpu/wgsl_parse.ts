/**
 * Just enough WGSL reading for the kernel registry: `//!include` directives, specialisation of
 * `override` constants, the bindings an entry point uses, and the layout of its uniform parameter
 * struct. It understands the subset our shaders are written in (see shaders/README.md), not WGSL
 * at large.
 */
import { KernelUsageError, ShaderCompileError } from "./errors.ts";

/** Where a line of an expanded shader came from. */
export interface SourceLine {
  /** The shader file the line is in. */
  file: string;
  /** Its 1-based line number there. */
  line: number;
  /** The include directive that pulled the file in; absent in the top-level file. */
  includedFrom?: SourceLine;
}

/** A shader with its includes spliced in, and the origin of every line of the result. */
export interface ExpandedSource {
  /** The WGSL text. */
  code: string;
  /** origins[i] is where line i + 1 of `code` came from. */
  origins: SourceLine[];
}

/** `//!include "name"` on a line of its own: a WGSL comment, so a shader stays valid-looking. */
const INCLUDE = /^\s*\/\/!include\b(.*)$/;
const INCLUDE_ARGUMENT = /^\s+"([^"]+)"\s*$/;

/** "reduce.wgsl:12 (included from softmax.wgsl:5)": how messages show a line's origin. */
export function describeLine(origin: SourceLine, column?: number): string {
  let text = `${origin.file}:${origin.line}${column === undefined ? "" : `:${column}`}`;
  for (let from = origin.includedFrom; from; from = from.includedFrom) {
    text += ` (included from ${from.file}:${from.line})`;
  }
  return text;
}

/**
 * Replaces every `//!include "name"` line by the text of `includes[name]`, recursively. Each file is
 * spliced in once, where it is first named; later directives naming it (or the top-level file) add
 * nothing, so diamonds and cycles are harmless. The directive lines stay, as comments, so every
 * line of the result maps to one line of one file. An unknown name or a malformed directive throws
 * {@link ShaderCompileError} pointing at the directive.
 */
export function expandIncludes(
  file: string,
  source: string,
  includes: Readonly<Record<string, string>> = {},
): ExpandedSource {
  const lines: string[] = [];
  const origins: SourceLine[] = [];
  const included = new Set<string>([file]);
  const splice = (name: string, text: string, includedFrom: SourceLine | undefined) => {
    text.split("\n").forEach((content, i) => {
      const origin: SourceLine = { file: name, line: i + 1, includedFrom };
      lines.push(content);
      origins.push(origin);
      const directive = content.match(INCLUDE);
      if (!directive) return;
      const argument = directive[1].match(INCLUDE_ARGUMENT);
      if (!argument) {
        throw new ShaderCompileError(
          `${
            describeLine(origin)
          }: an include directive is //!include "file.wgsl", got ${content.trim()}`,
        );
      }
      const target = argument[1];
      if (included.has(target)) return;
      if (!Object.hasOwn(includes, target)) {
        const known = Object.keys(includes).join(", ") || "none";
        throw new ShaderCompileError(
          `${describeLine(origin)}: no shader "${target}" to include (given: ${known})`,
        );
      }
      included.add(target);
      splice(target, includes[target], origin);
    });
  };
  splice(file, source, undefined);
  return { code: lines.join("\n"), origins };
}

/** A scalar value a specialisation constant can take. */
export type ConstantValue = number | boolean;

/**
 * Replaces `override NAME: T = default;` declarations by `const NAME: T = value;`, keeping the
 * line count (a declaration over several lines leaves its line breaks), so lines keep their origin.
 */
export function specialise(
  source: string,
  constants: Record<string, ConstantValue>,
  file: string,
): string {
  const seen = new Set<string>();
  const out = source.replace(
    /override\s+(\w+)\s*:\s*(\w+)\s*(?:=\s*([^;]+))?;/g,
    (declaration, name: string, type: string, fallback: string | undefined) => {
      seen.add(name);
      const value = name in constants ? constants[name] : fallback?.trim();
      if (value === undefined) {
        throw new KernelUsageError(`${file}: constant ${name} has no default and was not given`);
      }
      const lineBreaks = declaration.replace(/[^\n]/g, "");
      return `const ${name}: ${type} = ${formatConstant(value, type)};${lineBreaks}`;
    },
  );
  for (const name of Object.keys(constants)) {
    if (!seen.has(name)) throw new KernelUsageError(`${file} has no override constant ${name}`);
  }
  return out;
}

function formatConstant(value: ConstantValue | string, type: string): string {
  if (typeof value === "string") return value;
  if (type === "bool") return value ? "true" : "false";
  const n = Number(value);
  if (type === "u32" || type === "i32") {
    if (!Number.isInteger(n)) throw new KernelUsageError(`constant of type ${type} got ${value}`);
    return type === "u32" ? `${n}u` : `${n}i`;
  }
  const s = String(n);
  return /[.eE]/.test(s) ? s : `${s}.0`;
}

/** One `@group(0) @binding(n) var<...> name: type;` declaration. */
export interface BindingDecl {
  /** The `@binding` index. */
  binding: number;
  /** The variable name, used to bind by name. */
  name: string;
  /** What kind of buffer binding it is. */
  kind: "uniform" | "read-only-storage" | "storage";
  /** The declared type, e.g. `array<f32>` or `Params`. */
  type: string;
}

/** Every group-0 binding declared in the source. */
export function parseBindings(source: string): BindingDecl[] {
  const re =
    /@group\(\s*0\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var<\s*(uniform|storage)\s*(?:,\s*(read|read_write)\s*)?>\s*(\w+)\s*:\s*([^;]+);/g;
  const out: BindingDecl[] = [];
  for (const m of source.matchAll(re)) {
    const kind = m[2] === "uniform"
      ? "uniform"
      : m[3] === "read_write"
      ? "storage"
      : "read-only-storage";
    out.push({ binding: Number(m[1]), name: m[4], kind, type: m[5].trim() });
  }
  return out;
}

/** Bodies of every function, by name. */
function functionBodies(source: string): Map<string, string> {
  const bodies = new Map<string, string>();
  const re = /fn\s+(\w+)\s*\(/g;
  for (const m of source.matchAll(re)) {
    const open = source.indexOf("{", m.index);
    if (open < 0) continue;
    const end = matchingBracket(source, open);
    bodies.set(m[1], source.slice(open, end < 0 ? source.length : end));
  }
  return bodies;
}

function stripComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
}

/** Names of the bindings an entry point reaches, directly or through the functions it calls. */
export function bindingsUsedBy(source: string, entryPoint: string, file: string): BindingDecl[] {
  const code = stripComments(source);
  const bodies = functionBodies(code);
  if (!bodies.has(entryPoint)) {
    throw new KernelUsageError(`${file} has no entry point ${entryPoint}`);
  }
  const reached = new Set<string>([entryPoint]);
  const todo = [entryPoint];
  const text: string[] = [];
  while (todo.length) {
    const body = bodies.get(todo.pop()!)!;
    text.push(body);
    for (const m of body.matchAll(/\b(\w+)\s*\(/g)) {
      if (bodies.has(m[1]) && !reached.has(m[1])) {
        reached.add(m[1]);
        todo.push(m[1]);
      }
    }
  }
  const all = text.join("\n");
  // A name right after a `.` is a member (v.x), not a use of a binding called x.
  return parseBindings(code).filter((b) => new RegExp(`(?<![.\\w])${b.name}\\b`).test(all));
}

/** A field of a uniform parameter struct: every field is a 4-byte scalar. */
export interface ParamField {
  /** Field name. */
  name: string;
  /** Scalar type. */
  type: "u32" | "i32" | "f32";
}

/** Fields of `struct name { ... }`, in order; only 4-byte scalar fields are allowed. */
export function parseParamStruct(source: string, structName: string, file: string): ParamField[] {
  const m = stripComments(source).match(new RegExp(`struct\\s+${structName}\\s*\\{([^}]*)\\}`));
  if (!m) throw new KernelUsageError(`${file}: uniform struct ${structName} not found`);
  const fields: ParamField[] = [];
  for (const part of m[1].split(",")) {
    const f = part.trim();
    if (!f) continue;
    const fm = f.match(/^(\w+)\s*:\s*(\w+)$/);
    if (!fm || !["u32", "i32", "f32"].includes(fm[2])) {
      throw new KernelUsageError(`${file}: uniform field "${f}" must be a u32, i32 or f32 scalar`);
    }
    fields.push({ name: fm[1], type: fm[2] as ParamField["type"] });
  }
  return fields;
}

/**
 * The index just after the bracket that closes the `(` or `{` at `open` in `code`, or -1 when it
 * is not closed. `code` should have its comments masked ({@link maskComments}).
 */
export function matchingBracket(code: string, open: number): number {
  const [a, b] = code[open] === "(" ? ["(", ")"] : ["{", "}"];
  let depth = 0;
  for (let p = open; p < code.length; p++) {
    if (code[p] === a) depth++;
    else if (code[p] === b && --depth === 0) return p + 1;
  }
  return -1;
}

/** `code` with every comment but `//!` directives blanked to spaces (same length, same lines). */
export function maskComments(code: string): string {
  return code.replace(/\/\/(?!!).*$/gm, (c) => " ".repeat(c.length)).replace(
    /\/\*[\s\S]*?\*\//g,
    (c) => c.replace(/[^\n]/g, " "),
  );
}

type Folded = boolean | number | undefined;

/** A WGSL scalar literal's value: true, false, 3, 3u, 2.5; undefined for anything else. */
function literalValue(text: string): Folded {
  if (text === "true") return true;
  if (text === "false") return false;
  const m = text.match(/^(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)[uif]?$/);
  return m ? Number(m[1]) : undefined;
}

/**
 * The value of a condition made of known constants, literals, `!`, comparisons, `&&`, `||` and
 * parentheses; undefined when any part that decides it is unknown (a variable, a call, an index)
 * or the text is not of that form. `false && x` is false and `true || x` true whatever x is.
 */
function evaluateCondition(text: string, known: ReadonlyMap<string, boolean | number>): Folded {
  const tokens = text.match(/\d+(?:\.\d*)?(?:[eE][-+]?\d+)?[uif]?|\w+|&&|\|\||[=!<>]=|<<|>>|\S/g) ??
    [];
  let i = 0;
  let broken = false;
  const peek = () => tokens[i];
  // An operand we cannot read: a name with member accesses, indexes and calls after it.
  const skipGroup = (open: string, close: string) => {
    let depth = 0;
    do {
      const t = tokens[i++];
      if (t === undefined) {
        broken = true;
        return;
      }
      if (t === open) depth++;
      if (t === close) depth--;
    } while (depth > 0);
  };
  const primary = (): Folded => {
    const t = tokens[i++];
    if (t === undefined) {
      broken = true;
      return undefined;
    }
    if (t === "(") {
      const v = or();
      if (tokens[i++] !== ")") broken = true;
      return v;
    }
    if (t === "!") {
      const v = primary();
      return typeof v === "boolean" ? !v : undefined;
    }
    if (t === "-") {
      const v = primary();
      return typeof v === "number" ? -v : undefined;
    }
    const literal = literalValue(t);
    if (literal !== undefined) return literal;
    if (!/^\w+$/.test(t)) {
      broken = true;
      return undefined;
    }
    let value: Folded = known.get(t);
    for (;;) {
      if (peek() === ".") {
        i += 2;
        value = undefined;
      } else if (peek() === "[") {
        skipGroup("[", "]");
        value = undefined;
      } else if (peek() === "(") {
        skipGroup("(", ")");
        value = undefined;
      } else break;
    }
    return value;
  };
  const arith = (): Folded => {
    let v = primary();
    while (["+", "-", "*", "/", "%", "&", "|", "^", "<<", ">>"].includes(peek())) {
      i++;
      primary();
      v = undefined;
    }
    return v;
  };
  const relation = (): Folded => {
    const a = arith();
    const op = peek();
    if (!["==", "!=", "<", ">", "<=", ">="].includes(op)) return a;
    i++;
    const b = arith();
    if (a === undefined || b === undefined) return undefined;
    switch (op) {
      case "==":
        return a === b;
      case "!=":
        return a !== b;
      case "<":
        return a < b;
      case ">":
        return a > b;
      case "<=":
        return a <= b;
      default:
        return a >= b;
    }
  };
  const chain = (op: string, absorbing: boolean): Folded => {
    let v = relation();
    while (peek() === op) {
      i++;
      const next = relation();
      if (v === absorbing || next === absorbing) v = absorbing;
      else if (v === undefined || next === undefined) v = undefined;
      else v = next;
    }
    return v;
  };
  const or = (): Folded => {
    const v = chain("&&", false);
    if (peek() !== "||") return v;
    let acc = v;
    while (peek() === "||") {
      i++;
      const next = chain("&&", false);
      if (acc === true || next === true) acc = true;
      else if (acc === undefined || next === undefined) acc = undefined;
      else acc = false;
    }
    return acc;
  };
  const value = or();
  return broken || i !== tokens.length || typeof value !== "boolean" ? undefined : value;
}

/**
 * Removes the branches of `if` statements whose condition the specialisation constants decide:
 * `if (NORM) { ... }` with NORM false disappears (or leaves its `else`), with NORM true becomes
 * its block. Conditions may use `constants`, the file's own `const NAME: T = literal;`
 * declarations, literals, `!`, comparisons, `&&` and `||`; anything else keeps the statement.
 * Removed text becomes spaces, so line numbers do not move. The point is WebGPU's rule that a
 * pipeline's layout must hold every binding its entry point statically uses, dead branches
 * included: one source with flags can then leave out the bindings a variant does not use.
 */
export function foldConstantBranches(
  source: string,
  constants: Readonly<Record<string, ConstantValue>>,
): string {
  const masked = maskComments(source);
  const known = new Map<string, boolean | number>(Object.entries(constants));
  for (const m of masked.matchAll(/\bconst\s+(\w+)\s*:\s*\w+\s*=\s*([^;]+);/g)) {
    const v = literalValue(m[2].trim());
    if (v !== undefined && !known.has(m[1])) known.set(m[1], v);
  }
  const skipSpace = (p: number) => {
    while (p < masked.length && /\s/.test(masked[p])) p++;
    return p;
  };
  /** The index after the bracket matching the one at `open`. */
  const matching = (open: number): number => {
    const end = matchingBracket(masked, open);
    if (end < 0) throw new ShaderCompileError(`unbalanced ${masked[open]} at character ${open}`);
    return end;
  };
  interface IfStatement {
    start: number; // at "if"
    cond: string;
    blockStart: number; // at "{"
    blockEnd: number; // after "}"
    elseAt?: number; // at "else"
    elseTarget?: number; // at the "if" or "{" after it
    end: number; // after the whole chain
  }
  const parse = (start: number): IfStatement | undefined => {
    const open = masked.indexOf("(", start);
    const close = matching(open);
    const blockStart = skipSpace(close);
    if (masked[blockStart] !== "{") return undefined;
    const blockEnd = matching(blockStart);
    const s: IfStatement = {
      start,
      cond: masked.slice(open + 1, close - 1),
      blockStart,
      blockEnd,
      end: blockEnd,
    };
    const e = skipSpace(blockEnd);
    if (/^else\b/.test(masked.slice(e, e + 5)) && !/\w/.test(masked[e + 4] ?? "")) {
      const target = skipSpace(e + 4);
      s.elseAt = e;
      s.elseTarget = target;
      if (masked[target] === "{") s.end = matching(target);
      else {
        const next = parse(target);
        if (!next) return undefined;
        s.end = next.end;
      }
    }
    return s;
  };
  const out = source.split("");
  const blank = (from: number, to: number) => {
    for (let p = from; p < to; p++) if (out[p] !== "\n") out[p] = " ";
  };
  const ifPattern = /\bif\s*\(/g;
  let at = 0;
  for (;;) {
    ifPattern.lastIndex = at;
    const m = ifPattern.exec(masked);
    if (!m) break;
    const s = parse(m.index);
    const value = s && evaluateCondition(s.cond, known);
    if (!s || value === undefined) {
      at = m.index + 2;
      continue;
    }
    const afterElse = /\belse\s*$/.test(masked.slice(Math.max(0, s.start - 16), s.start));
    if (value) {
      // Keep the block; drop the condition and every else.
      blank(s.start, s.blockStart);
      blank(s.blockEnd, s.end);
      at = s.blockStart + 1;
    } else if (s.elseTarget !== undefined) {
      blank(s.start, s.elseTarget);
      at = s.elseTarget;
    } else {
      blank(s.start, s.end);
      // `else if (false) { }` leaves an else that needs a statement.
      if (afterElse) {
        out[s.start] = "{";
        out[s.start + 1] = "}";
      }
      at = s.end;
    }
  }
  return out.join("");
}
