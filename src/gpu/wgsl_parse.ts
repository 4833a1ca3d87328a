/**
 * Just enough WGSL reading for the kernel registry: specialisation of `override` constants,
 * the bindings an entry point uses, and the layout of its uniform parameter struct. It understands
 * the subset our shaders are written in (see shaders/README.md), not WGSL at large.
 */
import { KernelUsageError } from "./errors.ts";

/** A scalar value a specialisation constant can take. */
export type ConstantValue = number | boolean;

/** Replaces `override NAME: T = default;` declarations by `const NAME: T = value;`. */
export function specialise(
  source: string,
  constants: Record<string, ConstantValue>,
  file: string,
): string {
  const seen = new Set<string>();
  const out = source.replace(
    /override\s+(\w+)\s*:\s*(\w+)\s*(?:=\s*([^;]+))?;/g,
    (_m, name: string, type: string, fallback: string | undefined) => {
      seen.add(name);
      const value = name in constants ? constants[name] : fallback?.trim();
      if (value === undefined) {
        throw new KernelUsageError(`${file}: constant ${name} has no default and was not given`);
      }
      return `const ${name}: ${type} = ${formatConstant(value, type)};`;
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
    let depth = 0;
    let end = open;
    for (; end < source.length; end++) {
      if (source[end] === "{") depth++;
      else if (source[end] === "}" && --depth === 0) break;
    }
    bodies.set(m[1], source.slice(open, end + 1));
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
