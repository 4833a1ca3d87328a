/**
 * node:assert/strict for the browser test bundles: the assertions the tests use, with strict
 * semantics (Object.is for values, deep equality with prototypes and own keys). node:assert is
 * bundled from this module too: its legacy loose `equal`/`deepEqual` are strict here, which can
 * only fail a test that Deno passes, never pass one that Deno fails.
 */

/** Raised by every failed assertion. */
export class AssertionError extends Error {
  override name = "AssertionError";
}

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (ArrayBuffer.isView(value)) {
    const items = Array.from(value as unknown as ArrayLike<number>).slice(0, 16);
    return `${value.constructor.name}(${(value as unknown as ArrayLike<number>).length}) [${
      items.join(", ")
    }${(value as unknown as ArrayLike<number>).length > 16 ? ", ..." : ""}]`;
  }
  try {
    const text = JSON.stringify(value);
    if (text !== undefined) return text.length > 400 ? `${text.slice(0, 400)}...` : text;
  } catch { /* cyclic */ }
  return String(value);
}

function fail(message: string | Error | undefined, fallback: string): never {
  if (message instanceof Error) throw message;
  throw new AssertionError(message ?? fallback);
}

/** Strict deep equality: Object.is on primitives, same prototype and own enumerable keys. */
function deepEqualValues(a: unknown, b: unknown, seen = new Map<object, object>()): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (seen.get(a) === b) return true;
  seen.set(a, b);
  if (a instanceof Date) return Object.is(a.getTime(), (b as Date).getTime());
  if (a instanceof RegExp) return String(a) === String(b);
  if (ArrayBuffer.isView(a)) {
    const x = a as unknown as ArrayLike<unknown>;
    const y = b as unknown as ArrayLike<unknown>;
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) return false;
    return true;
  }
  if (a instanceof Map) {
    const m = b as Map<unknown, unknown>;
    if (a.size !== m.size) return false;
    for (const [k, v] of a) if (!m.has(k) || !deepEqualValues(v, m.get(k), seen)) return false;
    return true;
  }
  if (a instanceof Set) {
    const s = b as Set<unknown>;
    if (a.size !== s.size) return false;
    for (const v of a) if (!s.has(v)) return false;
    return true;
  }
  if (a instanceof Error && (a.message !== (b as Error).message || a.name !== (b as Error).name)) {
    return false;
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    if (
      !deepEqualValues((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], seen)
    ) {
      return false;
    }
  }
  return true;
}

/** Throws unless `value` is truthy. */
export function ok(value: unknown, message?: string | Error): asserts value {
  if (!value) fail(message, `expected a truthy value, got ${show(value)}`);
}

/** Throws unless Object.is(actual, expected). */
export function equal(actual: unknown, expected: unknown, message?: string | Error): void {
  if (!Object.is(actual, expected)) {
    fail(message, `expected ${show(expected)}, got ${show(actual)}`);
  }
}

/** Throws when Object.is(actual, expected). */
export function notEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  if (Object.is(actual, expected)) fail(message, `expected anything but ${show(expected)}`);
}

/** Throws unless the two are deeply (strictly) equal. */
export function deepEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  if (!deepEqualValues(actual, expected)) {
    fail(
      message,
      `expected deep equality:\n  actual   ${show(actual)}\n  expected ${show(expected)}`,
    );
  }
}

/** Throws when the two are deeply (strictly) equal. */
export function notDeepEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  if (deepEqualValues(actual, expected)) {
    fail(message, `expected a difference from ${show(expected)}`);
  }
}

/** Throws unless `text` matches `pattern`. */
export function match(text: string, pattern: RegExp, message?: string | Error): void {
  if (typeof text !== "string" || !pattern.test(text)) {
    fail(message, `expected ${show(text)} to match ${pattern}`);
  }
}

/** Throws when `text` matches `pattern`. */
export function doesNotMatch(text: string, pattern: RegExp, message?: string | Error): void {
  if (typeof text === "string" && pattern.test(text)) {
    fail(message, `expected ${show(text)} not to match ${pattern}`);
  }
}

type Expected =
  | (new (...args: never[]) => unknown)
  | RegExp
  | ((error: unknown) => boolean)
  | Record<string, unknown>;

/** Whether a thrown `error` is what `expected` describes (as node:assert's throws decides). */
function checkThrown(error: unknown, expected: Expected | undefined, message?: string | Error) {
  if (expected === undefined) return;
  if (expected instanceof RegExp) {
    if (!expected.test(String(error))) {
      fail(message, `the error ${show(String(error))} does not match ${expected}`);
    }
    return;
  }
  if (typeof expected === "function") {
    const isClass = expected.prototype !== undefined &&
      (expected === Error || expected.prototype instanceof Error);
    if (isClass) {
      if (!(error instanceof (expected as new () => unknown))) {
        fail(message, `expected a ${expected.name}, got ${describe(error)}`);
      }
      return;
    }
    if ((expected as (e: unknown) => boolean)(error) !== true) {
      fail(message, `the validation function rejected ${describe(error)}`);
    }
    return;
  }
  for (const [key, want] of Object.entries(expected)) {
    const got = (error as Record<string, unknown>)?.[key];
    const same = want instanceof RegExp && typeof got === "string"
      ? want.test(got)
      : deepEqualValues(got, want);
    if (!same) fail(message, `the error's ${key} is ${show(got)}, expected ${show(want)}`);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : show(error);
}

/** Throws unless `fn` throws what `expected` describes. */
export function throws(fn: () => unknown, expected?: Expected | string, message?: string): void {
  if (typeof expected === "string") [message, expected] = [expected, undefined];
  try {
    fn();
  } catch (error) {
    checkThrown(error, expected, message);
    return;
  }
  fail(message, "expected the function to throw");
}

/** Throws when `fn` throws. */
export function doesNotThrow(fn: () => unknown, message?: string): void {
  try {
    fn();
  } catch (error) {
    fail(message, `expected no error, got ${describe(error)}`);
  }
}

/** Rejects unless the promise (or what `fn` returns) rejects with what `expected` describes. */
export async function rejects(
  promise: Promise<unknown> | (() => Promise<unknown>),
  expected?: Expected | string,
  message?: string,
): Promise<void> {
  if (typeof expected === "string") [message, expected] = [expected, undefined];
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    checkThrown(error, expected, message);
    return;
  }
  fail(message, "expected the promise to reject");
}

/** Always throws. */
export function failNow(message = "failed"): never {
  throw new AssertionError(message);
}

/** node:assert's default export: ok() with every assertion as a property. */
const assert = Object.assign(
  (value: unknown, message?: string | Error) => ok(value, message),
  {
    ok,
    equal,
    strictEqual: equal,
    notEqual,
    notStrictEqual: notEqual,
    deepEqual,
    deepStrictEqual: deepEqual,
    notDeepEqual,
    notDeepStrictEqual: notDeepEqual,
    match,
    doesNotMatch,
    throws,
    doesNotThrow,
    rejects,
    fail: failNow,
    AssertionError,
    strict: undefined as unknown,
  },
);
assert.strict = assert;

export { deepEqual as deepStrictEqual, equal as strictEqual, failNow as fail };
export default assert;
