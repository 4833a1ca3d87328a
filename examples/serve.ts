/**
 * Serves a model over an OpenAI-compatible HTTP API; every completion writes with its own
 * temporary Temp-Lora adapter, freed when the request ends.
 *
 *   deno task serve --model PATH [--port 8080] [--host 127.0.0.1] [--max-sessions N]
 *                   [--max-queue N]
 *
 * Then point any OpenAI client at http://HOST:PORT/v1 (the API key is not checked). Ctrl-C shuts
 * down: running requests are stopped, their sessions freed. Exit codes: 0 after Ctrl-C, 1 the
 * model could not be loaded, 2 bad command line.
 */
import { TextModel } from "../src/model/text_model.ts";
import { createApp } from "../src/server/app.ts";
import { numberFlag, parseFlags, runCommand, UsageError } from "./cli.ts";

const USAGE = `usage: deno task serve --model PATH [options]

  --model PATH               llama2.c checkpoint (.bin, tokenizer beside it) or Hugging Face folder
  --port N                   TCP port (default 8080; 0 = any free port)
  --host H                   address to listen on (default 127.0.0.1, this machine only)
  --max-sessions N           completions written at once (default 4)
  --max-queue N              requests waiting for a session before 429 (default 16)
  --max-tokens N             largest max_tokens a request may ask for (default 4096)
  --timeout S                seconds one completion may run (default 300)
  --help                     this help

Endpoints: GET /health, GET /v1/models, POST /v1/completions (with an optional "templora"
object: enabled, chunk, epochs, lr, rank, alpha, window, train_context, kv_refresh).`;

async function main(): Promise<number> {
  const v = parseFlags({
    model: { type: "string" },
    port: { type: "string" },
    host: { type: "string" },
    "max-sessions": { type: "string" },
    "max-queue": { type: "string" },
    "max-tokens": { type: "string" },
    timeout: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (!v.model) throw new UsageError("--model is required");
  const port = numberFlag(v, "port", 8080, { integer: true, min: 0, max: 65535 });
  const hostname = v.host ?? "127.0.0.1";
  const options = {
    maxSessions: numberFlag(v, "max-sessions", 4, { integer: true, min: 1 }),
    maxQueue: numberFlag(v, "max-queue", 16, { integer: true, min: 0 }),
    maxTokens: numberFlag(v, "max-tokens", 4096, { integer: true, min: 1 }),
    requestTimeoutMs: 1000 * numberFlag(v, "timeout", 300, { above: 0 }),
  };

  const lm = await TextModel.load(v.model);
  const shutdown = new AbortController();
  const app = createApp(lm, { ...options, signal: shutdown.signal });
  const onSigint = () => {
    if (shutdown.signal.aborted) Deno.exit(130); // a second Ctrl-C does not wait
    console.error("templora: stopping");
    shutdown.abort();
  };
  Deno.addSignalListener("SIGINT", onSigint);
  const server = Deno.serve({
    hostname,
    port,
    signal: shutdown.signal,
    onListen: ({ hostname, port }) => {
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(`templora: serving ${v.model} at http://${host}:${port}/v1 (Ctrl-C stops)`);
    },
  }, app.fetch);
  await server.finished;
  Deno.removeSignalListener("SIGINT", onSigint);
  lm.dispose();
  console.error("templora: stopped");
  return 0;
}

if (import.meta.main) await runCommand(USAGE, main);
