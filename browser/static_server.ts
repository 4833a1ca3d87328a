/**
 * A static file server for the browser tests, on 127.0.0.1 and a free port: folders mounted at
 * URL prefixes, built files held in memory, HTTP range requests (so the URL readers' positioned
 * reads are exercised), and `/__manifest.json`, the list of every file served (the harness's
 * statSync). Counts range requests, for the tests that check large files are not read whole.
 */
import { extname } from "node:path";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

/** What {@link serveStatic} serves. */
export interface StaticSite {
  /** URL prefix ("/repo/", "/") -> local folder. */
  mounts?: Readonly<Record<string, string>>;
  /** URL path -> contents, answered before the mounts. */
  files?: ReadonlyMap<string, string | Uint8Array>;
  /** Ignore Range headers (a server that always sends whole files). */
  noRanges?: boolean;
}

/** A running {@link serveStatic} server. */
export interface StaticServer {
  /** "http://127.0.0.1:PORT" */
  origin: string;
  /** Range requests answered with 206 so far. */
  rangeRequests: number;
  /** Every path requested, in order. */
  requested: string[];
  /** Stops the server. */
  close(): Promise<void>;
}

/** Lists the files under `dir` (none when it does not exist: a clone without ../shared). */
async function walk(dir: string, prefix: string, out: string[]): Promise<void> {
  const top = await Deno.stat(dir).catch(() => null);
  if (!top?.isDirectory) return;
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".")) continue;
    const path = `${dir}/${e.name}`;
    const info = e.isSymlink ? await Deno.stat(path).catch(() => null) : e;
    if (info?.isDirectory) await walk(path, `${prefix}${e.name}/`, out);
    else if (info?.isFile) out.push(`${prefix}${e.name}`);
  }
}

/** Starts the server; stop it with close(). */
export function serveStatic(site: StaticSite): Promise<StaticServer> {
  const mounts = Object.entries(site.mounts ?? {}).sort((a, b) => b[0].length - a[0].length);
  const files = site.files ?? new Map();
  let origin = "";
  let manifest: string[] | undefined;
  const state = { rangeRequests: 0, requested: [] as string[] };

  const bodyFor = async (path: string): Promise<Uint8Array<ArrayBuffer> | null> => {
    const held = files.get(path);
    if (held !== undefined) {
      return typeof held === "string" ? new TextEncoder().encode(held) : new Uint8Array(held);
    }
    for (const [prefix, dir] of mounts) {
      if (!path.startsWith(prefix)) continue;
      const rest = path.slice(prefix.length);
      if (rest.split("/").some((part) => part === ".." || part.startsWith("."))) return null;
      try {
        const file = `${dir.replace(/\/$/, "")}/${rest}`;
        if (!(await Deno.stat(file)).isFile) continue;
        return await Deno.readFile(file);
      } catch {
        continue;
      }
    }
    return null;
  };

  const handler = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    let path = decodeURIComponent(url.pathname);
    state.requested.push(path);
    if (path === "/__manifest.json") {
      if (!manifest) {
        const all = [...files.keys()];
        for (const [prefix, dir] of mounts) await walk(dir.replace(/\/$/, ""), prefix, all);
        manifest = all.map((p) => `${origin}${encodeURI(p)}`);
      }
      return Response.json(manifest);
    }
    if (path.endsWith("/")) path += "index.html";
    const body = await bodyFor(path);
    if (!body) return new Response("not found", { status: 404 });
    const headers = new Headers({
      "content-type": TYPES[extname(path)] ?? "application/octet-stream",
      "cache-control": "no-store",
    });
    const range = request.headers.get("range")?.match(/^bytes=(\d+)-(\d*)$/);
    if (range && !site.noRanges) {
      const start = Number(range[1]);
      const end = Math.min(range[2] ? Number(range[2]) : body.length - 1, body.length - 1);
      if (start >= body.length) {
        headers.set("content-range", `bytes */${body.length}`);
        return new Response(null, { status: 416, headers });
      }
      state.rangeRequests++;
      headers.set("content-range", `bytes ${start}-${end}/${body.length}`);
      return new Response(body.slice(start, end + 1), { status: 206, headers });
    }
    if (!site.noRanges) headers.set("accept-ranges", "bytes");
    return new Response(request.method === "HEAD" ? null : body, { headers });
  };

  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: ({ port }) => {
        origin = `http://127.0.0.1:${port}`;
        resolve({
          origin,
          get rangeRequests() {
            return state.rangeRequests;
          },
          requested: state.requested,
          close: () => server.shutdown(),
        });
      },
    }, handler);
  });
}
