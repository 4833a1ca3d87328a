/**
 * Serves a model over an OpenAI-compatible HTTP API; every completion writes with its own
 * temporary Temp-Lora adapter, freed when the request ends.
 *
 *   deno task serve [--model PATH] [--port 8080] [--host 127.0.0.1] [--max-sessions N]
 *                   [--max-queue N] [--allow-origin ORIGINS]
 *
 * Then point any OpenAI client at http://HOST:PORT/v1 (the API key is not checked); the writing
 * page (examples/web/) is at http://HOST:PORT/. Ctrl-C or
 * SIGTERM shuts down: no new connections, running requests are stopped (streams end with a
 * `server_shutdown` error event), their sessions and the model freed. When the GPU device is lost
 * the model is loaded again on a new one, requests getting 503 meanwhile. Exit codes: 0 after
 * Ctrl-C or SIGTERM, 1 the model could not be loaded or the address not listened on, 2 bad
 * command line.
 */
import { createApp } from "../src/server/app.ts";
import { withWritingPage } from "./web/page_route.ts";
import {
  CommandError,
  loadModel,
  MODEL_HELP,
  MODEL_OPTIONS,
  numberFlag,
  parseFlags,
  runCommand,
  UsageError,
} from "./cli.ts";

const USAGE = `usage: deno task serve [options]

${MODEL_HELP}
  --port N                   TCP port (default 8080; 0 = any free port)
  --host H                   address to listen on (default 127.0.0.1, this machine only)
  --max-sessions N           completions written at once (default 4)
  --max-queue N              requests waiting for a session before 429 (default 16)
  --max-tokens N             largest max_tokens a request may ask for (default 4096)
  --timeout S                seconds one completion may run (default 300)
  --allow-origin ORIGINS     comma-separated origins whose pages may call the API (CORS), or *
  --help                     this help

Endpoints: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions (for
models with a chat template), each with an optional "templora" object: enabled, chunk, epochs,
lr, rank, alpha, window, train_context, kv_refresh, sink. The README lists every field. GET /
is the writing page.`;

/** --allow-origin's origins ("*", or scheme://host[:port] each). */
function allowedOrigins(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value.split(",").map((o) => o.trim()).filter(Boolean).map((o) => {
    let origin: string | undefined;
    try {
      origin = new URL(o).origin;
    } catch { /* not a URL */ }
    if (o !== "*" && origin !== o) {
      throw new UsageError(
        `--allow-origin must be * or origins like http://127.0.0.1:8000 (scheme, host and ` +
          `port, no path), got ${o}`,
      );
    }
    return o;
  });
}

/** Why the server cannot listen at `hostname`:`port`, as a {@link CommandError} naming the flag. */
function listenError(error: unknown, hostname: string, port: number): unknown {
  const at = `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  if (error instanceof Deno.errors.AddrInUse) {
    return new CommandError(
      `--port ${port}: ${at} is already in use; stop what listens there or pick another port ` +
        "(--port 0 takes any free one)",
    );
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return new CommandError(
      `--port ${port}: not allowed to listen at ${at} (ports below 1024 need privileges)`,
    );
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return new CommandError(
      `--host ${hostname}: not an address of this machine (127.0.0.1 is this machine only, ` +
        "0.0.0.0 every interface)",
    );
  }
  if (error instanceof Error && /lookup address/.test(error.message)) {
    return new CommandError(`--host ${hostname}: no such host name`);
  }
  return error;
}

/** Fails early, before a long model load, when the address cannot be listened on. */
function checkListen(hostname: string, port: number): void {
  if (port === 0) return;
  try {
    Deno.listen({ hostname, port }).close();
  } catch (error) {
    throw listenError(error, hostname, port);
  }
}

async function main(): Promise<number> {
  const v = parseFlags({
    ...MODEL_OPTIONS,
    port: { type: "string" },
    host: { type: "string" },
    "max-sessions": { type: "string" },
    "max-queue": { type: "string" },
    "max-tokens": { type: "string" },
    timeout: { type: "string" },
    "allow-origin": { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  const port = numberFlag(v, "port", 8080, { integer: true, min: 0, max: 65535 });
  const hostname = v.host ?? "127.0.0.1";
  const options = {
    maxSessions: numberFlag(v, "max-sessions", 4, { integer: true, min: 1 }),
    maxQueue: numberFlag(v, "max-queue", 16, { integer: true, min: 0 }),
    maxTokens: numberFlag(v, "max-tokens", 4096, { integer: true, min: 1 }),
    requestTimeoutMs: 1000 * numberFlag(v, "timeout", 300, { above: 0 }),
  };

  const allowOrigins = allowedOrigins(v["allow-origin"] as string | undefined);
  checkListen(hostname, port);
  const loaded = await loadModel(v);
  const { lm } = loaded;
  const shutdown = new AbortController();
  const app = createApp(lm, {
    ...options,
    signal: shutdown.signal,
    reload: () => loadModel(v),
  });
  let server: Deno.HttpServer | undefined;
  const onStop = () => {
    if (shutdown.signal.aborted) Deno.exit(130); // a second signal does not wait
    console.error("templora: stopping");
    // The app ends its streams with an error event and frees their sessions; the server stops
    // accepting and waits for those last events to go out (aborting Deno.serve's own signal
    // would cut the streams instead).
    shutdown.abort();
    server?.shutdown();
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  try {
    server = Deno.serve({
      hostname,
      port,
      onListen: ({ hostname, port }) => {
        const host = hostname.includes(":") ? `[${hostname}]` : hostname;
        console.log(
          `templora: serving ${loaded.path} at http://${host}:${port}/v1 and the writing ` +
            `page at http://${host}:${port}/ (Ctrl-C stops)`,
        );
      },
    }, withWritingPage(app.fetch, { allowOrigins }));
  } catch (error) {
    loaded.close();
    throw listenError(error, hostname, port);
  }
  for (const s of signals) Deno.addSignalListener(s, onStop);
  await server.finished;
  for (const s of signals) Deno.removeSignalListener(s, onStop);
  loaded.close();
  console.error("templora: stopped");
  return 0;
}

if (import.meta.main) await runCommand("serve", main);
