/**
 * The one place model files are read from: the thin I/O layer under every format reader. A
 * {@link FileStore} is a read-only tree of files: the local file system (Deno), a web address
 * (fetch, with HTTP range requests for positioned reads) or files a user picked in a browser
 * (`File`/`Blob`). Readers name files by path within a store; a missing file becomes
 * {@link ModelFileNotFoundError}, any other failure a {@link ModelFormatError} naming the file and
 * what was being read. Nothing outside this module touches `Deno` to read a model.
 */
import {
  CorruptHeaderError,
  ModelFileNotFoundError,
  ModelFormatError,
  TruncatedFileError,
} from "./errors.ts";

/** What a path names in a {@link FileStore}. */
export interface FileFacts {
  /** A file (symbolic links are followed). */
  isFile: boolean;
  /** A folder. */
  isDirectory: boolean;
  /** Bytes of a file (0 for a folder, or when a server does not say). */
  size: number;
}

/** One entry of a folder listing. */
export interface FolderEntry extends FileFacts {
  /** The entry's name within the folder. */
  name: string;
}

/**
 * A read-only tree of files that models load from. Paths are the store's own: file system paths
 * for {@link localFiles}, absolute URLs for {@link urlFiles}, relative names for
 * {@link blobFiles}. Methods reject with {@link MissingFileError} for a path that names nothing.
 */
export interface FileStore {
  /** What the store reads from, for messages ("local files", "the web", "the chosen files"). */
  readonly description: string;
  /** Facts of a path, or null when nothing is there. */
  stat(path: string): Promise<FileFacts | null>;
  /** A folder's entries, or null when this store cannot list folders (a web server). */
  list(dir: string): Promise<FolderEntry[] | null>;
  /** A whole file. */
  read(path: string): Promise<Uint8Array>;
  /** Up to `length` bytes from `offset` (fewer only where the file ends). */
  readRange(path: string, offset: number, length: number): Promise<Uint8Array>;
  /** The path with symbolic links resolved (the path itself where there are none). */
  realPath(path: string): Promise<string>;
  /** The path of `name` inside folder `dir`. */
  join(dir: string, name: string): string;
  /** The folder holding `path`. */
  dirname(path: string): string;
  /** The last component of `path`. */
  basename(path: string): string;
}

/** Thrown by a {@link FileStore} for a path that names nothing (turned into ModelFileNotFoundError). */
export class MissingFileError extends Error {
  /** `detail` says how the store knows (for example "HTTP 404 Not Found"). */
  constructor(readonly path: string, readonly detail = "no such file") {
    super(`${path}: ${detail}`);
    this.name = "MissingFileError";
  }
}

/** Whether `error` says that nothing is at the path. */
function isMissing(error: unknown): boolean {
  if (error instanceof MissingFileError) return true;
  return typeof Deno !== "undefined" && error instanceof Deno.errors.NotFound;
}

/** The typed error for a failed read of `path` (`what`: "tokenizer", "checkpoint", ...). */
export function fileReadError(path: string, what: string, error: unknown): ModelFormatError {
  if (error instanceof ModelFormatError) return error;
  if (isMissing(error)) {
    const detail = error instanceof MissingFileError ? error.detail : "no such file";
    return new ModelFileNotFoundError(path, detail, { cause: error });
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new ModelFormatError(path, `cannot read ${what}: ${reason}`, { cause: error });
}

/** Whether `path` is a web address (http or https) rather than a file system path. */
export function isUrlPath(path: string): boolean {
  return /^https?:\/\//i.test(path);
}

/** The store a bare path belongs to: {@link urlFiles} for http(s) addresses, else {@link localFiles}. */
export function storeFor(path: string): FileStore {
  return isUrlPath(path) ? urlFiles : localFiles;
}

/** The bytes of a whole (small) file. */
export async function readFileBytes(
  path: string,
  what: string,
  store: FileStore = storeFor(path),
): Promise<Uint8Array> {
  try {
    return await store.read(path);
  } catch (error) {
    throw fileReadError(path, what, error);
  }
}

/** The text of a whole file (UTF-8). */
export async function readFileText(
  path: string,
  what: string,
  store: FileStore = storeFor(path),
): Promise<string> {
  return new TextDecoder().decode(await readFileBytes(path, what, store));
}

/** A JSON file parsed; text that is not JSON is a {@link CorruptHeaderError}. */
export async function readJsonFile(
  path: string,
  what = "JSON",
  store: FileStore = storeFor(path),
): Promise<unknown> {
  const text = await readFileText(path, what, store);
  try {
    return JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new CorruptHeaderError(path, `not valid JSON: ${reason}`, { cause: error });
  }
}

/** Facts of `path`, or null when nothing is there; other failures are thrown as typed errors. */
export async function statPath(
  path: string,
  store: FileStore = storeFor(path),
): Promise<FileFacts | null> {
  try {
    return await store.stat(path);
  } catch (error) {
    throw fileReadError(path, "file information", error);
  }
}

/** Whether something exists at `path` (symbolic links followed); other failures are thrown. */
export async function pathExists(
  path: string,
  store: FileStore = storeFor(path),
): Promise<boolean> {
  return (await statPath(path, store)) !== null;
}

/** A file opened for positioned reads (large files are never read whole). */
export interface RandomAccessFile {
  /** The file's path in its store. */
  readonly path: string;
  /** Its size in bytes when it was opened. */
  readonly size: number;
  /** Bytes [at, at + n): exactly n of them, else a {@link TruncatedFileError} naming the file. */
  read(at: number, n: number): Promise<Uint8Array>;
}

/** Opens `path` for positioned reads: a missing file is {@link ModelFileNotFoundError}. */
export async function openFileForReading(
  path: string,
  what: string,
  store: FileStore = storeFor(path),
): Promise<RandomAccessFile> {
  const facts = await statPath(path, store);
  if (!facts) throw new ModelFileNotFoundError(path, "no such file");
  if (!facts.isFile) throw new ModelFormatError(path, `cannot read ${what}: not a file`);
  return {
    path,
    size: facts.size,
    async read(at: number, n: number): Promise<Uint8Array> {
      let bytes: Uint8Array;
      try {
        bytes = await store.readRange(path, at, n);
      } catch (error) {
        throw fileReadError(path, what, error);
      }
      if (bytes.byteLength !== n) {
        throw new TruncatedFileError(path, at + n, at + bytes.byteLength, "a read");
      }
      return bytes;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Paths: POSIX rules ("/"; on Windows "\" too), as node:path's join, dirname and basename.

function isSeparator(c: string): boolean {
  return c === "/" || (c === "\\" && typeof Deno !== "undefined" && Deno.build.os === "windows");
}

function splitPath(path: string): string[] {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || isSeparator(path[i])) {
      parts.push(path.slice(start, i));
      start = i + 1;
    }
  }
  return parts;
}

/** `path` with "." and empty segments removed and ".." applied (node:path's normalize). */
export function normalizePath(path: string): string {
  if (path === "") return ".";
  const absolute = isSeparator(path[0]);
  const trailing = isSeparator(path[path.length - 1]);
  const out: string[] = [];
  for (const part of splitPath(path)) {
    if (part === "" || part === ".") continue;
    if (part === ".." && out.length > 0 && out[out.length - 1] !== "..") out.pop();
    else if (part === ".." && absolute) continue;
    else out.push(part);
  }
  let joined = (absolute ? "/" : "") + out.join("/");
  if (joined === "") joined = absolute ? "/" : ".";
  if (trailing && joined !== "/") joined += "/";
  return joined;
}

/** The parts joined with "/" and normalized (node:path's join). */
export function joinPath(...parts: string[]): string {
  const nonEmpty = parts.filter((p) => p !== "");
  return nonEmpty.length === 0 ? "." : normalizePath(nonEmpty.join("/"));
}

function trimTrailing(path: string): string {
  let end = path.length;
  while (end > 1 && isSeparator(path[end - 1])) end--;
  return path.slice(0, end);
}

/** The folder of `path` (node:path's dirname). */
export function dirnamePath(path: string): string {
  const p = trimTrailing(path);
  for (let i = p.length - 1; i >= 0; i--) {
    if (isSeparator(p[i])) return i === 0 ? p[0] : trimTrailing(p.slice(0, i));
  }
  return ".";
}

/** The last component of `path` (node:path's basename). */
export function basenamePath(path: string): string {
  const p = trimTrailing(path);
  for (let i = p.length - 1; i >= 0; i--) if (isSeparator(p[i])) return p.slice(i + 1);
  return p;
}

/** `path` made absolute against the working folder (Deno only; node:path's resolve). */
export function absolutePath(path: string): string {
  const absolute = path.length > 0 && (isSeparator(path[0]) || /^[A-Za-z]:[\\/]/.test(path));
  return absolute ? normalizePath(path) : joinPath(requireDeno("a relative path").cwd(), path);
}

// ---------------------------------------------------------------------------------------------
// Writing to the local file system (Deno only: fixtures, folders of weights).

/** Makes a local folder and its parents (Deno only). */
export async function makeLocalFolder(path: string): Promise<void> {
  await requireDeno(path).mkdir(path, { recursive: true });
}

/** Writes a local file, replacing it (Deno only). */
export async function writeLocalFile(path: string, data: Uint8Array | string): Promise<void> {
  const deno = requireDeno(path);
  if (typeof data === "string") await deno.writeTextFile(path, data);
  else await deno.writeFile(path, data);
}

/** Copies a local file (Deno only). */
export async function copyLocalFile(from: string, to: string): Promise<void> {
  await requireDeno(from).copyFile(from, to);
}

// ---------------------------------------------------------------------------------------------
// The stores.

/** The Deno namespace, or a typed error saying that `what` needs it (in a browser). */
function requireDeno(what: string): typeof Deno {
  if (typeof Deno === "undefined") {
    throw new ModelFormatError(
      what,
      "reading files by path needs Deno; in a browser load the model from a URL or from files " +
        "the user picked (File or Blob)",
    );
  }
  return Deno;
}

function factsOf(info: Deno.FileInfo): FileFacts {
  return { isFile: info.isFile, isDirectory: info.isDirectory, size: info.size };
}

/** The local file system, through Deno (in a browser every method rejects with a typed error). */
export const localFiles: FileStore = {
  description: "local files",
  async stat(path) {
    try {
      return factsOf(await requireDeno(path).stat(path));
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  },
  async list(dir) {
    const deno = requireDeno(dir);
    const entries: FolderEntry[] = [];
    for await (const e of deno.readDir(dir)) {
      let facts: FileFacts = { isFile: e.isFile, isDirectory: e.isDirectory, size: 0 };
      if (e.isSymlink) {
        // A link counts as what it points to; a dangling one as nothing.
        const target = await localFiles.stat(joinPath(dir, e.name));
        if (!target) continue;
        facts = target;
      }
      entries.push({ name: e.name, ...facts });
    }
    return entries;
  },
  read(path) {
    return requireDeno(path).readFile(path);
  },
  async readRange(path, offset, length) {
    const f = await requireDeno(path).open(path, { read: true });
    try {
      await f.seek(offset, Deno.SeekMode.Start);
      const out = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const r = await f.read(out.subarray(got));
        if (r === null) break;
        got += r;
      }
      return got === length ? out : out.slice(0, got);
    } finally {
      f.close();
    }
  },
  realPath(path) {
    return requireDeno(path).realPath(path);
  },
  join: (dir, name) => joinPath(dir, name),
  dirname: dirnamePath,
  basename: basenamePath,
};

/** A fetch that is not a success, as the store's error. */
function httpError(url: string, response: Response): Error {
  const status = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  if (response.status === 404 || response.status === 410) return new MissingFileError(url, status);
  return new Error(status);
}

/** The total size in a Content-Range header ("bytes 0-0/1234"), or undefined. */
function totalOfContentRange(header: string | null): number | undefined {
  const m = header?.match(/\/(\d+)\s*$/);
  return m ? Number(m[1]) : undefined;
}

/**
 * Files on the web, by absolute URL, through fetch: a positioned read is one HTTP range request
 * (a server that ignores ranges sends the whole file, of which the range is kept). Folders are
 * URLs ending in "/"; they cannot be listed.
 */
export const urlFiles: FileStore = {
  description: "the web",
  async stat(url) {
    if (url.endsWith("/")) return { isFile: false, isDirectory: true, size: 0 };
    const response = await fetch(url, { headers: { Range: "bytes=0-0" } });
    await response.body?.cancel();
    if (response.status === 404 || response.status === 410) return null;
    if (response.status === 416) return { isFile: true, isDirectory: false, size: 0 };
    if (!response.ok) throw httpError(url, response);
    const size = response.status === 206
      ? totalOfContentRange(response.headers.get("content-range"))
      : Number(response.headers.get("content-length") ?? NaN);
    return { isFile: true, isDirectory: false, size: Number.isFinite(size) ? size! : 0 };
  },
  list() {
    return Promise.resolve(null);
  },
  async read(url) {
    const response = await fetch(url);
    if (!response.ok) {
      await response.body?.cancel();
      throw httpError(url, response);
    }
    return new Uint8Array(await response.arrayBuffer());
  },
  async readRange(url, offset, length) {
    if (length === 0) return new Uint8Array(0);
    const response = await fetch(url, {
      headers: { Range: `bytes=${offset}-${offset + length - 1}` },
    });
    if (response.status === 416) {
      await response.body?.cancel();
      return new Uint8Array(0);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw httpError(url, response);
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (response.status === 206) return bytes.subarray(0, length);
    return bytes.slice(offset, offset + length); // the server sent the whole file
  },
  realPath(url) {
    return Promise.resolve(url);
  },
  join(dir, name) {
    return new URL(name, dir.endsWith("/") ? dir : `${dir}/`).href;
  },
  dirname(url) {
    return new URL(".", url.endsWith("/") ? url.slice(0, -1) : url).href;
  },
  basename(url) {
    const path = new URL(url).pathname.replace(/\/+$/, "");
    return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
  },
};

/** A file a {@link blobFiles} store can hold: a browser `File` (its relative path or name) or a named `Blob`. */
export type NamedBlob = Blob & { readonly name?: string; readonly webkitRelativePath?: string };

/**
 * Files held in memory or picked by a user (`<input type="file">`, drag and drop): a tree of
 * relative names ("stories260K.bin", or "SmolLM2/config.json" from a folder picker) to blobs.
 * Pass an iterable of `File`s (a FileList works) or a record of names to blobs.
 */
export function blobFiles(files: Iterable<NamedBlob> | Readonly<Record<string, Blob>>): FileStore {
  const byName = new Map<string, Blob>();
  const entries: [string, Blob][] = Symbol.iterator in files
    ? [...(files as Iterable<NamedBlob>)].map((f, i) => [
      f.webkitRelativePath || f.name || `file-${i}`,
      f,
    ])
    : Object.entries(files as Record<string, Blob>);
  for (const [name, blob] of entries) byName.set(normalizeName(name), blob);
  const blob = (path: string): Blob => {
    const b = byName.get(normalizeName(path));
    if (!b) throw new MissingFileError(path, "not among the chosen files");
    return b;
  };
  const isFolder = (path: string) => {
    const dir = normalizeName(path);
    return dir === "" || [...byName.keys()].some((n) => n.startsWith(`${dir}/`));
  };
  return {
    description: "the chosen files",
    stat(path) {
      const b = byName.get(normalizeName(path));
      if (b) return Promise.resolve({ isFile: true, isDirectory: false, size: b.size });
      if (isFolder(path)) return Promise.resolve({ isFile: false, isDirectory: true, size: 0 });
      return Promise.resolve(null);
    },
    list(dir) {
      const prefix = normalizeName(dir) === "" ? "" : `${normalizeName(dir)}/`;
      const out = new Map<string, FolderEntry>();
      for (const [name, b] of byName) {
        if (!name.startsWith(prefix)) continue;
        const rest = name.slice(prefix.length);
        const slash = rest.indexOf("/");
        if (slash < 0) {
          out.set(rest, { name: rest, isFile: true, isDirectory: false, size: b.size });
        } else {
          const sub = rest.slice(0, slash);
          out.set(sub, { name: sub, isFile: false, isDirectory: true, size: 0 });
        }
      }
      return Promise.resolve(out.size > 0 || prefix === "" ? [...out.values()] : null);
    },
    async read(path) {
      return new Uint8Array(await blob(path).arrayBuffer());
    },
    async readRange(path, offset, length) {
      return new Uint8Array(await blob(path).slice(offset, offset + length).arrayBuffer());
    },
    realPath(path) {
      return Promise.resolve(path);
    },
    join(dir, name) {
      const d = normalizeName(dir);
      return d === "" ? normalizeName(name) : normalizeName(`${d}/${name}`);
    },
    dirname(path) {
      const n = normalizeName(path);
      return n.includes("/") ? n.slice(0, n.lastIndexOf("/")) : ".";
    },
    basename(path) {
      const n = normalizeName(path);
      return n.slice(n.lastIndexOf("/") + 1);
    },
  };
}

/** A relative name in a blob store: "/" separators, no "." segments, no leading or trailing "/". */
function normalizeName(name: string): string {
  const n = normalizePath(name.replaceAll("\\", "/")).replace(/^\/+|\/+$/g, "");
  return n === "." ? "" : n;
}

/** Where a model comes from: a path (Deno) or URL string, a URL, a `File`/`Blob`, or several. */
export type ModelSource = string | URL | NamedBlob | Iterable<NamedBlob>;

/** A model's path within the store that reads it. */
export interface StoredPath {
  /** The store. */
  store: FileStore;
  /** The path within it (for blobs: which one is the model is decided by the loader). */
  path: string;
}

/**
 * The store and path of a {@link ModelSource}: http(s) addresses read through fetch, `file:` URLs
 * and other strings from the local file system (Deno), blobs from memory. For several blobs the
 * path is the root folder "" (the loader finds the model among them).
 */
export function storedPath(source: ModelSource): StoredPath {
  if (typeof source === "string") return { store: storeFor(source), path: source };
  if (source instanceof URL) {
    if (source.protocol === "file:") return { store: localFiles, path: pathOfFileUrl(source) };
    return { store: urlFiles, path: source.href };
  }
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    const store = blobFiles([source]);
    const named = source as NamedBlob;
    return { store, path: normalizeName(named.webkitRelativePath || named.name || "file-0") };
  }
  return { store: blobFiles(source as Iterable<NamedBlob>), path: "" };
}

/** The file system path of a file: URL (POSIX, or a Windows drive path). */
function pathOfFileUrl(url: URL): string {
  const path = decodeURIComponent(url.pathname);
  return /^\/[A-Za-z]:\//.test(path) ? path.slice(1) : path;
}
