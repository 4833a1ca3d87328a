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
import { Hono } from "hono";
import { InvalidSettingError, PromptTooLongError } from "../model/errors.ts";
import { checkPrompt } from "../model/decode_loop.ts";
import type { TextModel } from "../model/text_model.ts";
import { resolveTempLoraSettings, type TempLoraSettings } from "../templora/settings.ts";
import { readJson } from "./body.ts";
import { renderChat } from "./chat.ts";
import { ApiError, apiErrorOf } from "./errors.ts";
import { SessionLimiter } from "./limiter.ts";
import { parseChatRequest, parseCompletionRequest, type TempLoraRequest } from "./request.ts";
import { CHAT_SHAPE, respond, type ResponderContext, TEXT_SHAPE } from "./respond.ts";

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

  const toApiError = (error: unknown) => apiErrorOf(error, onServerError);
  const responder: ResponderContext = {
    lm,
    modelId,
    limiter,
    timeoutMs,
    stepsPerSubmit,
    signal: options.signal,
    toApiError,
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
    const settings = resolveSettings(lm, options.templora, request.templora);
    // The template writes BOS itself where it wants one.
    const promptIds = lm.encode(renderChat(chatTemplate, request.messages), false);
    checkRequestPrompt(lm, promptIds, "messages");
    // Without a limit the reply may fill the context, as OpenAI's chat completions do.
    const untilFull = Math.max(1, lm.config.maxSeqLen - promptIds.length);
    const limited = { ...request, maxTokens: request.maxTokens ?? Math.min(maxTokens, untilFull) };
    return await respond(responder, c, limited, promptIds, settings, CHAT_SHAPE);
  });

  app.post("/v1/completions", async (c) => {
    const request = parseCompletionRequest(await readJson(c.req.raw, maxBodyBytes), { maxTokens });
    const settings = resolveSettings(lm, options.templora, request.templora);
    const promptIds = lm.encode(request.prompt);
    checkRequestPrompt(lm, promptIds, "prompt");
    return await respond(responder, c, request, promptIds, settings, TEXT_SHAPE);
  });

  return app;
}

/** The prompt checks of the library, as 400s naming the request field `param`. */
function checkRequestPrompt(lm: TextModel, promptIds: readonly number[], param: string): void {
  try {
    checkPrompt(promptIds, lm.config.maxSeqLen);
  } catch (error) {
    if (error instanceof PromptTooLongError) {
      throw new ApiError(
        400,
        error.message,
        "invalid_request_error",
        param,
        "context_length_exceeded",
      );
    }
    if (error instanceof InvalidSettingError) {
      throw new ApiError(400, error.message, "invalid_request_error", param, "invalid_value");
    }
    throw error;
  }
}

/**
 * A request's Temp-Lora settings: its `templora` fields over the server's defaults, resolved by
 * the library (a 400 when invalid). A request that sets the rank without alpha gets alpha = rank,
 * whatever alpha the server's defaults name.
 */
function resolveSettings(
  lm: TextModel,
  serverDefaults: TempLoraRequest = {},
  requested: TempLoraRequest,
): TempLoraSettings {
  const merged: TempLoraRequest = { ...serverDefaults, ...requested };
  if (requested.rank !== undefined && requested.alpha === undefined) delete merged.alpha;
  const { lr, ...overrides } = merged;
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
