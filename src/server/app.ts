/**
 * An OpenAI-compatible HTTP API over a {@link TextModel}, built on Hono. Every completion gets
 * its own temporary Temp-Lora session (adapter, optimizer state, KV cache) on the shared base
 * weights, freed when the request ends, fails, or the client disconnects.
 *
 * Routes: `GET /health`, `GET /v1/models`, `GET /v1/models/:id`, `POST /v1/completions`
 * (OpenAI's legacy completions, with `stream` as server-sent events, plus a `templora` object),
 * and `POST /v1/chat/completions` (the same fields with `messages` instead of `prompt`, streamed
 * as `chat.completion.chunk`s). Chat needs the tokenizer's chat template (a Hugging Face
 * folder's tokenizer_config.json `chat_template`, rendered with Jinja); without one, and for
 * llama2.c tokenizers, it answers 400 `chat_template_missing`.
 *
 * Differences from OpenAI: `model` is not checked (any name is served by the one model and the
 * response names the served one); `n`, `best_of`, `echo`, `logprobs`, penalties, `logit_bias` and
 * `suffix` are accepted only at their neutral values; `top_k` and `repetition_penalty` are
 * extensions; without `seed` the server draws one. The per-request time limit starts when the
 * request gets a session (time in the queue does not count); reaching it ends the text with
 * finish_reason "length". Chat messages take the roles system, user and assistant with text
 * content (no tools or images); without `max_completion_tokens` / `max_tokens` a reply may fill
 * the context (capped by the server's `maxTokens`).
 */
import { type Context, Hono } from "hono";
import { InvalidSettingError, PromptTooLongError } from "../model/errors.ts";
import type { TextModel } from "../model/text_model.ts";
import { resolveTempLoraSettings, type TempLoraSettings } from "../templora/settings.ts";
import { renderChat } from "./chat.ts";
import { type CompletionOutcome, type OpenAiFinishReason, runCompletion } from "./completion.ts";
import { ApiError } from "./errors.ts";
import { SessionLimiter } from "./limiter.ts";
import {
  parseChatRequest,
  parseCompletionRequest,
  type SamplingRequest,
  type TempLoraRequest,
} from "./request.ts";

export { ApiError, type OpenAiErrorBody } from "./errors.ts";
export type { ChatMessage, TempLoraRequest } from "./request.ts";

/** Settings of {@link createApp}; every one has a default. */
export interface ServerOptions {
  /** The id /v1/models lists and responses name (default: the model file's name). */
  modelId?: string;
  /** Writing sessions at once (default 4). */
  maxSessions?: number;
  /** Requests that may wait for a session; past it, 429 (default 16). */
  maxQueue?: number;
  /** Seconds a 429 asks the client to wait (Retry-After; default 1). */
  retryAfterSeconds?: number;
  /** Largest request body in bytes; past it, 413 (default 1 MiB). */
  maxBodyBytes?: number;
  /** Largest `max_tokens` (default 4096). */
  maxTokens?: number;
  /** Wall-clock limit of one completion once it runs, in ms (default 300 000). */
  requestTimeoutMs?: number;
  /** Decode steps per GPU submission; small values interleave requests finely (default 4). */
  stepsPerSubmit?: number;
  /** Server-wide Temp-Lora defaults; a request's `templora` fields override them. */
  templora?: TempLoraRequest;
  /** Called with errors answered as 500 (default: console.error). */
  onServerError?: (error: unknown) => void;
  /** Aborting it stops every running and queued request and frees their sessions (shutdown). */
  signal?: AbortSignal;
}

const encoder = new TextEncoder();

/** The Hono app serving `lm`; mount it in any server, or pass `app.fetch` to Deno.serve. */
export function createApp(lm: TextModel, options: ServerOptions = {}): Hono {
  const modelId = options.modelId ?? lm.path.split(/[\\/]/).filter(Boolean).pop() ?? "model";
  const limiter = new SessionLimiter(
    options.maxSessions ?? 4,
    options.maxQueue ?? 16,
    options.retryAfterSeconds ?? 1,
  );
  const maxBodyBytes = options.maxBodyBytes ?? 1 << 20;
  const maxTokens = options.maxTokens ?? 4096;
  const timeoutMs = options.requestTimeoutMs ?? 300_000;
  const stepsPerSubmit = options.stepsPerSubmit ?? 4;
  const onServerError = options.onServerError ?? ((e: unknown) => console.error(e));
  const created = Math.floor(Date.now() / 1000);

  const toApiError = (error: unknown): ApiError => {
    if (error instanceof ApiError) return error;
    if (error instanceof PromptTooLongError) {
      return new ApiError(
        400,
        error.message,
        "invalid_request_error",
        "prompt",
        "context_length_exceeded",
      );
    }
    if (error instanceof DOMException && error.name === "AbortError") {
      return new ApiError(
        400,
        "the client closed the request",
        "invalid_request_error",
        null,
        "client_closed",
      );
    }
    if (error instanceof InvalidSettingError) {
      return new ApiError(400, error.message, "invalid_request_error", null, "invalid_value");
    }
    onServerError(error);
    const message = error instanceof Error ? error.message : String(error);
    return new ApiError(500, `internal error: ${message}`, "server_error", null, "internal_error");
  };

  const app = new Hono();
  app.onError((error, c) => {
    const e = toApiError(error);
    return c.json(e.toJSON(), e.status, e.headers);
  });
  app.notFound((c) => {
    const e = new ApiError(
      404,
      `no route ${c.req.method} ${c.req.path}`,
      "invalid_request_error",
      null,
      "not_found",
    );
    return c.json(e.toJSON(), 404);
  });

  app.get("/health", (c) =>
    c.json({
      status: "ok",
      model: modelId,
      sessions: {
        active: limiter.active,
        queued: limiter.queued,
        max_sessions: limiter.maxSessions,
        max_queue: limiter.maxQueue,
      },
    }));

  const modelCard = () => ({ id: modelId, object: "model", created, owned_by: "templora" });
  app.get("/v1/models", (c) => c.json({ object: "list", data: [modelCard()] }));
  app.get("/v1/models/:id", (c) => {
    if (c.req.param("id") !== modelId) {
      throw new ApiError(
        404,
        `the model '${c.req.param("id")}' does not exist`,
        "invalid_request_error",
        "model",
        "model_not_found",
      );
    }
    return c.json(modelCard());
  });

  app.post("/v1/chat/completions", async (c) => {
    const body = await readJson(c.req.raw, maxBodyBytes);
    const chatTemplate = lm.tokenizer.chatTemplate;
    if (!chatTemplate) {
      throw new ApiError(
        400,
        `the model '${modelId}' has no chat template (its tokenizer defines none), so chat ` +
          `completions are not available; use POST /v1/completions with a plain prompt`,
        "invalid_request_error",
        "messages",
        "chat_template_missing",
      );
    }
    const request = parseChatRequest(body, { maxTokens });
    const settings = resolveSettings(lm, { ...options.templora, ...request.templora }, request);
    // The template writes BOS itself where it wants one.
    const promptIds = lm.encode(renderChat(chatTemplate, request.messages), false);
    checkPrompt(
      promptIds,
      "messages",
      "the chat template rendered an empty prompt for these messages",
    );
    // Without a limit the reply may fill the context, as OpenAI's chat completions do.
    const untilFull = Math.max(1, lm.config.maxSeqLen - promptIds.length);
    const limited = { ...request, maxTokens: request.maxTokens ?? Math.min(maxTokens, untilFull) };
    return await respond(c, limited, promptIds, settings, CHAT_SHAPE);
  });

  app.post("/v1/completions", async (c) => {
    const request = parseCompletionRequest(await readJson(c.req.raw, maxBodyBytes), { maxTokens });
    const settings = resolveSettings(lm, { ...options.templora, ...request.templora }, request);
    const promptIds = lm.encode(request.prompt);
    checkPrompt(promptIds, "prompt", "the prompt is empty and this tokenizer has no BOS token");
    return await respond(c, request, promptIds, settings, TEXT_SHAPE);
  });

  /** A 400 naming `param` when the prompt is empty or longer than the context. */
  const checkPrompt = (promptIds: readonly number[], param: string, emptyMessage: string) => {
    if (promptIds.length === 0) {
      throw new ApiError(400, emptyMessage, "invalid_request_error", param, "invalid_value");
    }
    if (promptIds.length > lm.config.maxSeqLen) {
      const tooLong = new PromptTooLongError(promptIds.length, lm.config.maxSeqLen);
      throw new ApiError(
        400,
        tooLong.message,
        "invalid_request_error",
        param,
        "context_length_exceeded",
      );
    }
  };

  /** Runs one completion of `promptIds` and answers it whole or streamed, in `shape`. */
  const respond = async (
    c: Context,
    request: SamplingRequest,
    promptIds: readonly number[],
    settings: TempLoraSettings,
    shape: ResponseShape,
  ): Promise<Response> => {
    // Stops the run when the client goes away or the server shuts down. Plain listeners, removed
    // when the request is done (Deno aborts request.signal after a successful response too).
    const client = new AbortController();
    const sources = [c.req.raw.signal, options.signal].filter((s) => s !== undefined);
    const onStop = () => client.abort();
    for (const s of sources) s.addEventListener("abort", onStop, { once: true });
    if (sources.some((s) => s.aborted)) client.abort();
    const unlisten = () => {
      for (const s of sources) s.removeEventListener("abort", onStop);
    };
    let release: () => void;
    try {
      release = await limiter.acquire(client.signal);
    } catch (error) {
      unlisten();
      throw error;
    }
    const done = () => {
      unlisten();
      release();
    };
    const id = `${shape.idPrefix}${crypto.randomUUID().replaceAll("-", "")}`;
    const createdAt = Math.floor(Date.now() / 1000);
    const seed = request.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
    const run = (onText: (text: string) => void) =>
      runCompletion(lm, promptIds, request, settings, {
        clientSignal: client.signal,
        timeoutMs,
        stepsPerSubmit,
        seed,
      }, onText);
    const head = (object: string) => ({ id, object, created: createdAt, model: modelId });
    const usage = (o: CompletionOutcome) => ({
      prompt_tokens: o.promptTokens,
      completion_tokens: o.completionTokens,
      total_tokens: o.promptTokens + o.completionTokens,
    });
    const echo = (o: CompletionOutcome) => temploraEcho(settings, o);

    if (!request.stream) {
      try {
        const outcome = await run(() => {});
        if (!outcome) throw new DOMException("client gone", "AbortError");
        return c.json({
          ...head(shape.object),
          choices: [shape.choice(outcome.text, outcome.finishReason)],
          usage: usage(outcome),
          templora: echo(outcome),
        });
      } finally {
        done();
      }
    }

    const chunk = head(shape.chunkObject);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (data: unknown) => {
          try {
            const text = typeof data === "string" ? data : JSON.stringify(data);
            controller.enqueue(encoder.encode(`data: ${text}\n\n`));
          } catch {
            // The stream was cancelled: the client is gone and the run is stopping.
          }
        };
        (async () => {
          try {
            const opening = shape.opening();
            if (opening) send({ ...chunk, choices: [opening] });
            const outcome = await run((text) => send({ ...chunk, choices: [shape.piece(text)] }));
            if (!outcome) return;
            send({ ...chunk, choices: [shape.end(outcome.finishReason)], templora: echo(outcome) });
            if (request.includeUsage) send({ ...chunk, choices: [], usage: usage(outcome) });
            send("[DONE]");
          } catch (error) {
            send(toApiError(error).toJSON());
          } finally {
            done();
            try {
              controller.close();
            } catch {
              // Already cancelled.
            }
          }
        })();
      },
      cancel() {
        client.abort();
      },
    });
    return c.body(body, 200, {
      "Content-Type": "text/event-stream",
      "Cache-Control": "no-cache",
      "Connection": "keep-alive",
    });
  };

  return app;
}

/** How a response and its stream chunks look: legacy completions or chat completions. */
interface ResponseShape {
  idPrefix: string;
  /** `object` of a whole response, and of a stream chunk. */
  object: string;
  chunkObject: string;
  /** The choice of a whole response. */
  choice(text: string, finishReason: OpenAiFinishReason): unknown;
  /** The choice of the first chunk, or null when the stream starts with text. */
  opening(): unknown;
  /** The choice of a chunk carrying a piece of text. */
  piece(text: string): unknown;
  /** The choice of the last chunk, with the finish reason. */
  end(finishReason: OpenAiFinishReason): unknown;
}

const TEXT_SHAPE: ResponseShape = {
  idPrefix: "cmpl-",
  object: "text_completion",
  chunkObject: "text_completion",
  choice: (text, finishReason) => ({ text, index: 0, logprobs: null, finish_reason: finishReason }),
  opening: () => null,
  piece: (text) => ({ text, index: 0, logprobs: null, finish_reason: null }),
  end: (finishReason) => ({ text: "", index: 0, logprobs: null, finish_reason: finishReason }),
};

const CHAT_SHAPE: ResponseShape = {
  idPrefix: "chatcmpl-",
  object: "chat.completion",
  chunkObject: "chat.completion.chunk",
  choice: (content, finishReason) => ({
    index: 0,
    message: { role: "assistant", content, refusal: null },
    logprobs: null,
    finish_reason: finishReason,
  }),
  opening: () => ({
    index: 0,
    delta: { role: "assistant", content: "" },
    logprobs: null,
    finish_reason: null,
  }),
  piece: (content) => ({ index: 0, delta: { content }, logprobs: null, finish_reason: null }),
  end: (finishReason) => ({ index: 0, delta: {}, logprobs: null, finish_reason: finishReason }),
};

/** The request's Temp-Lora settings resolved against the model's defaults (a 400 when invalid). */
function resolveSettings(
  lm: TextModel,
  t: TempLoraRequest,
  request: { templora: TempLoraRequest },
): TempLoraSettings {
  const { lr, ...rest } = t;
  const overrides: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) overrides[k] = v;
  if (request.templora.rank !== undefined && request.templora.alpha === undefined) {
    overrides.alpha = request.templora.rank;
  }
  try {
    return resolveTempLoraSettings(lm.config, {
      ...overrides,
      optimizer: lr === undefined ? {} : { lr },
    });
  } catch (error) {
    if (error instanceof InvalidSettingError) {
      throw new ApiError(
        400,
        `templora: ${error.message}`,
        "invalid_request_error",
        "templora",
        "invalid_value",
      );
    }
    throw error;
  }
}

/** The resolved Temp-Lora settings and what the run did with them, as the response echoes them. */
function temploraEcho(s: TempLoraSettings, o: CompletionOutcome) {
  return {
    enabled: s.enabled,
    chunk: s.chunk,
    epochs: s.epochs,
    lr: s.optimizer.lr,
    rank: s.rank,
    alpha: s.alpha,
    window: s.window,
    train_context: s.trainContext,
    kv_refresh: s.kvRefresh,
    chunks_trained: o.chunksTrained,
    training_seconds: o.trainingSeconds,
    timed_out: o.timedOut,
  };
}

/** The body parsed as JSON, at most `limit` bytes (413 past it, 400 when not JSON). */
async function readJson(request: Request, limit: number): Promise<unknown> {
  const tooLarge = () =>
    new ApiError(
      413,
      `the request body exceeds ${limit} bytes`,
      "invalid_request_error",
      null,
      "request_too_large",
    );
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > limit) throw tooLarge();
  if (!request.body) throw new ApiError(400, "the request needs a JSON body");
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    const why = error instanceof SyntaxError ? error.message : "the body is not UTF-8";
    throw new ApiError(
      400,
      `could not parse the JSON body: ${why}`,
      "invalid_request_error",
      null,
      "invalid_json",
    );
  }
}
