import { TemploraError } from "../core/errors.ts";

/**
 * A document an evaluation reads (a facts file for recall, a parallel document for translation)
 * is malformed; `line` is the 1-based line at fault (0: the document as a whole).
 */
export class DocumentFormatError extends TemploraError {
  /** `what` names the document ("facts", "pairs"), `line` the line, `problem` what is wrong. */
  constructor(readonly what: string, readonly line: number, problem: string) {
    super(line > 0 ? `${what} line ${line}: ${problem}` : `${what}: ${problem}`);
  }
}

/**
 * The objects of a JSON Lines document whose values are strings: one object per line (blank
 * lines skipped), every key in `required` a non-empty string, those in `optional` strings when
 * present, no other keys. `check` may reject an object with a message; every problem is a
 * {@link DocumentFormatError} naming the line.
 */
export function parseStringRecords<K extends string, O extends string = never>(
  text: string,
  what: string,
  required: readonly K[],
  optional: readonly O[] = [],
  check?: (record: Record<K, string> & Partial<Record<O, string>>) => string | undefined,
): (Record<K, string> & Partial<Record<O, string>>)[] {
  const keys: string[] = [...required, ...optional];
  const records: (Record<K, string> & Partial<Record<O, string>>)[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const fail = (problem: string): never => {
      throw new DocumentFormatError(what, i + 1, problem);
    };
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      fail("not a JSON object");
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      fail("not a JSON object");
    }
    const o = value as Record<string, unknown>;
    for (const key of Object.keys(o)) {
      if (!keys.includes(key)) fail(`unknown key "${key}" (keys: ${keys.join(", ")})`);
    }
    for (const key of keys) {
      const optionalKey = (optional as readonly string[]).includes(key);
      if (optionalKey && o[key] === undefined) continue;
      if (typeof o[key] !== "string" || (!optionalKey && !(o[key] as string).trim())) {
        fail(`"${key}" must be a ${optionalKey ? "" : "non-empty "}string`);
      }
    }
    const record = o as Record<K, string> & Partial<Record<O, string>>;
    const problem = check?.(record);
    if (problem) fail(problem);
    records.push(record);
  });
  if (records.length === 0) throw new DocumentFormatError(what, 0, "empty");
  return records;
}
