/**
 * The writing page on `deno task serve`: `/` answers with the page (built from examples/web/ with
 * esbuild on the first request), `/models/stories260K/` with the embedded model (the page's
 * default), and everything else goes to the API. Origins given with --allow-origin may call the
 * API from pages served elsewhere (CORS), for example the page from a static server.
 */
import { fileURLToPath } from "node:url";

const MODEL_DIR = fileURLToPath(new URL("../../models/stories260K/", import.meta.url));
const MODEL_FILES = new Set(["stories260K.bin", "tok512.bin", "LICENSE"]);

const TYPES: Record<string, string> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "style.css": "text/css; charset=utf-8",
};

/** A request handler as Deno.serve takes it. */
export type Handler = (
  request: Request,
  info: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

/** Options of {@link withWritingPage}. */
export interface WritingPageOptions {
  /** Origins whose pages may call the API ("*" for any); none by default. */
  allowOrigins?: readonly string[];
}

let built: Promise<Map<string, string>> | undefined;

/** The page's files, built once per process. */
function pageFiles(): Promise<Map<string, string>> {
  built ??= import("../../tools/web_build.ts").then(async (tools) => {
    try {
      return await tools.buildPage();
    } finally {
      await tools.stopBundler();
    }
  });
  built.catch(() => built = undefined);
  return built;
}

function corsHeaders(origin: string): Headers {
  return new Headers({
    "access-control-allow-origin": origin,
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": "content-type, authorization",
    "access-control-max-age": "600",
    "vary": "origin",
  });
}

/** `api` with the page in front of it and CORS for the allowed origins. */
export function withWritingPage(api: Handler, options: WritingPageOptions = {}): Handler {
  const allowed = new Set(options.allowOrigins ?? []);
  return async (request, info) => {
    const url = new URL(request.url);
    const isRead = request.method === "GET" || request.method === "HEAD";
    const name = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
    if (isRead && name in TYPES) {
      let files: Map<string, string>;
      try {
        files = await pageFiles();
      } catch (error) {
        console.error(`templora: the writing page could not be built: ${error}`);
        return new Response("the page could not be built; see the server's log", { status: 500 });
      }
      return new Response(request.method === "HEAD" ? null : files.get(name)!, {
        headers: { "content-type": TYPES[name], "cache-control": "no-cache" },
      });
    }
    const model = url.pathname.match(/^\/models\/stories260K\/([^/]+)$/)?.[1];
    if (isRead && model && MODEL_FILES.has(model)) {
      const bytes = await Deno.readFile(`${MODEL_DIR}${model}`);
      return rangeResponse(request, bytes);
    }
    const origin = request.headers.get("origin");
    const cors = origin && (allowed.has("*") || allowed.has(origin))
      ? corsHeaders(allowed.has("*") ? "*" : origin)
      : undefined;
    if (request.method === "OPTIONS" && cors) {
      return new Response(null, { status: 204, headers: cors });
    }
    const response = await api(request, info);
    if (!cors) return response;
    const headers = new Headers(response.headers);
    for (const [k, v] of cors) headers.set(k, v);
    return new Response(response.body, { status: response.status, headers });
  };
}

/** A file's bytes, honouring one `Range: bytes=a-b` (the page's URL reader asks for ranges). */
function rangeResponse(request: Request, bytes: Uint8Array<ArrayBuffer>): Response {
  const headers = new Headers({
    "content-type": "application/octet-stream",
    "accept-ranges": "bytes",
    "cache-control": "no-cache",
  });
  const range = request.headers.get("range")?.match(/^bytes=(\d+)-(\d*)$/);
  if (!range) return new Response(request.method === "HEAD" ? null : bytes, { headers });
  const start = Number(range[1]);
  const end = Math.min(range[2] ? Number(range[2]) : bytes.length - 1, bytes.length - 1);
  if (start >= bytes.length) {
    headers.set("content-range", `bytes */${bytes.length}`);
    return new Response(null, { status: 416, headers });
  }
  headers.set("content-range", `bytes ${start}-${end}/${bytes.length}`);
  return new Response(bytes.slice(start, end + 1), { status: 206, headers });
}
