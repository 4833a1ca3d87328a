/**
 * The writing page's two engines, behind one interface: templora itself in the page (the
 * browser's WebGPU), or a templora server through its OpenAI-compatible API, streaming.
 */
import {
  type ModelSource,
  resolveTempLoraSettings,
  type TempLoraOverrides,
  TextModel,
  writeWithTempLora,
} from "../../mod.ts";

/** What the page asks an engine to write. */
export interface WriteRequest {
  prompt: string;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed?: number;
  /** Temp-Lora on or off, and the settings given (the rest are the model's defaults). */
  templora: {
    enabled: boolean;
    chunk?: number;
    epochs?: number;
    lr?: number;
    rank?: number;
    window?: number;
  };
}

/** What an engine reports while it writes. */
export type EngineEvent =
  | { type: "text"; text: string; tokens: number }
  | { type: "train"; chunk: number; epoch: number; loss: number }
  | { type: "end"; reason: string };

/** Something that writes a story. */
export interface Engine {
  /** A line for the status bar: what it runs on. */
  readonly description: string;
  /** Writes, stopping early when `signal` aborts. */
  write(request: WriteRequest, signal: AbortSignal): AsyncGenerator<EngineEvent>;
  /** Frees what it holds. */
  dispose(): void;
}

/** templora in the page: the model on the browser's WebGPU. */
export class PageEngine implements Engine {
  private constructor(readonly lm: TextModel, readonly description: string) {}

  /** Loads a model from a URL or from files the user chose. */
  static async load(source: ModelSource): Promise<PageEngine> {
    const lm = await TextModel.load(source);
    const c = lm.gpu.capabilities;
    return new PageEngine(lm, `${lm.path} on ${c.description} (in this page)`);
  }

  async *write(request: WriteRequest, signal: AbortSignal): AsyncGenerator<EngineEvent> {
    const { enabled, lr, ...rest } = request.templora;
    const overrides: TempLoraOverrides = { ...rest, enabled };
    if (lr !== undefined) overrides.optimizer = { lr };
    const settings = resolveTempLoraSettings(this.lm.config, overrides);
    const run = writeWithTempLora(this.lm, request.prompt, {
      maxTokens: request.maxTokens,
      temperature: request.temperature,
      topP: request.topP,
      seed: request.seed,
      signal,
    }, settings);
    let tokens = 0;
    for (;;) {
      const step = await run.next();
      if (step.done) {
        yield { type: "end", reason: step.value.finishReason };
        return;
      }
      const event = step.value;
      if (event.type === "token") {
        if (event.id >= 0) tokens++;
        if (event.text) yield { type: "text", text: event.text, tokens };
      } else if (event.type === "train") {
        yield { type: "train", chunk: event.chunk, epoch: event.epoch, loss: event.loss };
      }
    }
  }

  dispose(): void {
    this.lm.dispose();
  }
}

/** A templora server's OpenAI-compatible API, streamed (POST /v1/completions). */
export class ServerEngine implements Engine {
  readonly description: string;

  /** `base`: the API's address, for example http://127.0.0.1:8080/v1. */
  constructor(readonly base: string) {
    this.description = `the server at ${base}`;
  }

  async *write(request: WriteRequest, signal: AbortSignal): AsyncGenerator<EngineEvent> {
    const { enabled, ...rest } = request.templora;
    const templora: Record<string, unknown> = { enabled };
    for (const [k, v] of Object.entries(rest)) if (v !== undefined) templora[k] = v;
    const url = `${this.base.replace(/\/$/, "")}/completions`;
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      signal,
      body: JSON.stringify({
        prompt: request.prompt,
        max_tokens: request.maxTokens,
        temperature: request.temperature,
        top_p: request.topP,
        seed: request.seed,
        stream: true,
        stream_options: { include_usage: true, include_training: true },
        templora,
      }),
    });
    if (!response.ok || !response.body) {
      const text = await response.text();
      let message = text;
      try {
        message = JSON.parse(text).error?.message ?? text;
      } catch { /* not JSON */ }
      throw new Error(`the server answered ${response.status}: ${message}`);
    }
    let tokens = 0;
    let reason = "stop";
    for await (const data of serverSentEvents(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`the server stopped: ${chunk.error.message}`);
      const t = chunk.templora_training;
      if (t) yield { type: "train", chunk: t.chunk, epoch: t.epoch, loss: t.loss };
      const choice = chunk.choices?.[0];
      if (choice?.text) {
        tokens++; // one streamed piece per token that completed text
        yield { type: "text", text: choice.text, tokens };
      }
      if (choice?.finish_reason) reason = choice.finish_reason;
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
    yield { type: "end", reason };
  }

  dispose(): void {}
}

/** The `data:` payloads of a server-sent event stream. */
async function* serverSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6)).join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}
