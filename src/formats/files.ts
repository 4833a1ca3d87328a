/**
 * The one place model files are read from disk: a missing file becomes
 * {@link ModelFileNotFoundError}, any other failure a {@link ModelFormatError} naming the file and
 * what was being read.
 */
import { CorruptHeaderError, ModelFileNotFoundError, ModelFormatError } from "./errors.ts";

/** The typed error for a failed read of `path` (`what`: "tokenizer", "checkpoint", ...). */
export function fileReadError(path: string, what: string, error: unknown): ModelFormatError {
  if (error instanceof Deno.errors.NotFound) {
    return new ModelFileNotFoundError(path, "no such file", { cause: error });
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new ModelFormatError(path, `cannot read ${what}: ${reason}`, { cause: error });
}

/** The bytes of a whole (small) file. */
export async function readFileBytes(path: string, what: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw fileReadError(path, what, error);
  }
}

/** The text of a whole file. */
export async function readFileText(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw fileReadError(path, what, error);
  }
}

/** A file opened for positioned reads (large files are never read whole). */
export async function openFileForReading(path: string, what: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (error) {
    throw fileReadError(path, what, error);
  }
}

/** A JSON file parsed; text that is not JSON is a {@link CorruptHeaderError}. */
export async function readJsonFile(path: string, what = "JSON"): Promise<unknown> {
  const text = await readFileText(path, what);
  try {
    return JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new CorruptHeaderError(path, `not valid JSON: ${reason}`, { cause: error });
  }
}

/** Whether something exists at `path` (symbolic links followed); other failures are thrown. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw fileReadError(path, "file information", error);
  }
}
