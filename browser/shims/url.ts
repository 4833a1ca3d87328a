/**
 * node:url for the browser test bundles: fileURLToPath keeps http(s) URLs as they are, so that a
 * test's `fileURLToPath(new URL("x.gguf", import.meta.url))` names the served file, which the
 * format readers then fetch.
 */

/** The path of a file: URL; any other URL as its text. */
export function fileURLToPath(url: string | URL): string {
  const u = new URL(String(url));
  return u.protocol === "file:" ? decodeURIComponent(u.pathname) : u.href;
}

/** A path (or URL text) as a URL against the page's address. */
export function pathToFileURL(path: string): URL {
  return new URL(path, globalThis.location?.href);
}
