/**
 * Test plumbing for the server tests: the app on a loopback port, JSON requests, server-sent
 * event streams read event by event, and waiting for a condition the server reaches by itself.
 */
import type { TextModel } from "../src/model/text_model.ts";
import { createApp, type ServerOptions } from "../src/server/app.ts";

/** The app on a free loopback port. */
export interface Served {
  base: string;
  /** POST a JSON body (or raw text) to `path`. */
  post(path: string, body: unknown): Promise<Response>;
  /** GET `path` as JSON. */
  get(path: string): Promise<any>;
  close(): Promise<void>;
}

/** Serves `createApp(lm, options)` on 127.0.0.1 at a free port. */
export function serveApp(lm: TextModel, options: ServerOptions = {}): Served {
  const app = createApp(lm, { modelId: "stories", ...options });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  return {
    base,
    post: (path, body) =>
      fetch(`${base}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    get: async (path) => await (await fetch(`${base}${path}`)).json(),
    close: () => server.shutdown(),
  };
}

/** A server-sent event stream read one `data:` payload at a time. */
export class EventReader {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(response: Response) {
    this.#reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event's data (parsed JSON, or the raw text such as "[DONE]"); null at the end. */
  async next(): Promise<any> {
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const event = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6))
          .join("\n");
        try {
          return JSON.parse(data);
        } catch {
          return data;
        }
      }
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#buffer += value;
    }
  }

  /** Every remaining event. */
  async rest(): Promise<any[]> {
    const out = [];
    for (let e = await this.next(); e !== null; e = await this.next()) out.push(e);
    return out;
  }

  /** Stops reading (the client goes away). */
  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }
}

/** The text of a completion stream's events. */
export function streamedText(events: any[]): string {
  return events.map((e) => e?.choices?.[0]?.text ?? "").join("");
}

/**
 * Polls `check` until it holds, at most `tries` times with a short pause between: for states the
 * server reaches on its own (a session freed after a disconnect). Fails naming `what`.
 */
export async function eventually(
  what: string,
  check: () => Promise<boolean> | boolean,
  tries = 500,
): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`never reached: ${what}`);
}

/** Prometheus text as a map from series (name and labels as written) to value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}
