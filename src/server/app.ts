/**
 * An OpenAI-compatible HTTP API over a {@link TextModel}, built on Hono. Every completion gets
 * its own temporary Temp-Lora session (adapter, optimizer state, KV cache) on the shared base
 * weights, freed when the request ends, fails, or the client disconnects.
 *
 * Routes: `GET /health`, `GET /metrics` (Prometheus text: sessions, tokens, training steps, GPU
 * bytes, latencies), `GET /v1/models`, `GET /v1/models/:id`, `POST /v1/completions`
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
 *
 * Each session records its GPU work with a recorder of its own and is accounted for in GPU bytes
 * (/health lists them). When the GPU device is lost, requests get a 503 `gpu_device_lost` while
 * the model is loaded on a new device (`reload`), then succeed again; aborting `signal` shuts
 * down gracefully (streams end with a `server_shutdown` error event, everything is freed).
 */
import { Hono } from "hono";
import { InvalidSettingError, PromptTooLongError } from "../model/errors.ts";
import { checkPrompt } from "../model/decode_loop.ts";
import { acquireGpu } from "../gpu/device.ts";
import { TextModel } from "../model/text_model.ts";
import { resolveTempLoraSettings, type TempLoraSettings } from "../templora/settings.ts";
import { readJson } from "./body.ts";
import { renderChat } from "./chat.ts";
import { ApiError, apiErrorOf, deviceLostError, shutdownError } from "./errors.ts";
import { ModelHost, type ModelLease, type ServedModel } from "./host.ts";
import { SessionLimiter } from "./limiter.ts";
import { parseChatRequest, parseCompletionRequest, type TempLoraRequest } from "./request.ts";
import { METRICS_CONTENT_TYPE, ServerMetrics } from "./metrics.ts";
import {
  CHAT_SHAPE,
  respond,
  type ResponderContext,
  type RunningSession,
  TEXT_SHAPE,
} from "./respond.ts";

export { ApiError, type OpenAiErrorBody } from "./errors.ts";
export type { ServedModel } from "./host.ts";
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
  /**
   * Aborting it shuts the server down: new requests get a 503 `server_shutdown`, running and
   * queued ones are stopped (streams end with a `server_shutdown` error event) and their sessions
   * freed, and models loaded after a device loss are closed once unused.
   */
  signal?: AbortSignal;
  /**
   * Loads the model on a newly acquired GPU device after the device is lost; requests get a 503
   * `gpu_device_lost` until it is done (retried with a growing pause while it fails). Default:
   * acquire a device and load the served model's path with default options. The server closes
   * what this returns once it is replaced or the server has shut down and it is unused.
   */
  reload?: () => Promise<ServedModel>;
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
  const host = new ModelHost(lm, options.reload ?? (() => reloadFrom(lm.path)), onServerError);
  options.signal?.addEventListener("abort", () => host.close(), { once: true });
  if (options.signal?.aborted) host.close();
  const sessions = new Map<string, RunningSession>();
  const sessionGpuBytes = () => [...sessions.values()].reduce((n, s) => n + s.gpuBytes(), 0);
  const gpuFigures = () => ({
    bytesInUse: host.lm.gpu.memory.bytesInUse,
    peakBytes: host.lm.gpu.memory.highestBytes,
    available: host.available,
  });
  const metrics = new ServerMetrics({
    sessions: () => ({ active: limiter.active, queued: limiter.queued }),
    sessionGpuBytes,
    gpu: gpuFigures,
    recoveries: () => ({ losses: host.losses, recoveries: host.recoveries }),
  });

  const toApiError = (error: unknown, model?: TextModel) =>
    model?.gpu.lostReason !== undefined && !(error instanceof ApiError)
      ? deviceLostError(model.gpu.lostReason)
      : apiErrorOf(error, onServerError);
  const responder: ResponderContext = {
    modelId,
    limiter,
    timeoutMs,
    stepsPerSubmit,
    signal: options.signal,
    sessions,
    metrics,
    toApiError,
  };
  /** Runs `answer` with the model held for the request (a 503 while the GPU is recovering). */
  const withModel = async (answer: (lease: ModelLease) => Promise<Response>) => {
    if (options.signal?.aborted) throw shutdownError();
    const lease = host.acquire();
    try {
      return await answer(lease);
    } catch (error) {
      lease.release();
      throw error;
    }
  };

  const app = new Hono();
  app.use("*", async (c, next) => {
    const t0 = performance.now();
    await next();
    const route = routeLabel(c.req.method, c.req.path);
    metrics.requests.inc({ route, status: String(c.res.status) });
    metrics.requestSeconds.observe((performance.now() - t0) / 1000, { route });
  });
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

  app.get("/health", (c) => {
    const gpu = gpuFigures();
    return c.json({
      status: options.signal?.aborted ? "shutting_down" : gpu.available ? "ok" : "recovering",
      model: modelId,
      sessions: {
        active: limiter.active,
        queued: limiter.queued,
        max_sessions: limiter.maxSessions,
        max_queue: limiter.maxQueue,
        gpu_bytes: sessionGpuBytes(),
        running: [...sessions.values()].map((s) => ({
          id: s.id,
          tokens: s.tokens,
          gpu_bytes: s.gpuBytes(),
          seconds: (performance.now() - s.startedAt) / 1000,
        })),
      },
      gpu: {
        available: gpu.available,
        lost_reason: host.lostReason ?? null,
        bytes_in_use: gpu.bytesInUse,
        peak_bytes: gpu.peakBytes,
      },
    });
  });
  app.get(
    "/metrics",
    (c) => c.body(metrics.registry.render(), 200, { "Content-Type": METRICS_CONTENT_TYPE }),
  );

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
    return await withModel(async (lease) => {
      const lm = lease.lm;
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
      const limited = {
        ...request,
        maxTokens: request.maxTokens ?? Math.min(maxTokens, untilFull),
      };
      return await respond(responder, c, lease, limited, promptIds, settings, CHAT_SHAPE);
    });
  });

  app.post("/v1/completions", async (c) => {
    const request = parseCompletionRequest(await readJson(c.req.raw, maxBodyBytes), { maxTokens });
    return await withModel(async (lease) => {
      const settings = resolveSettings(lease.lm, options.templora, request.templora);
      const promptIds = lease.lm.encode(request.prompt);
      checkRequestPrompt(lease.lm, promptIds, "prompt");
      return await respond(responder, c, lease, request, promptIds, settings, TEXT_SHAPE);
    });
  });

  return app;
}

/** The route a request is counted under in /metrics (a fixed set, so labels stay few). */
function routeLabel(method: string, path: string): string {
  const known = ["/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"];
  if (known.includes(path)) return `${method} ${path}`;
  if (path.startsWith("/v1/models/")) return `${method} /v1/models/:id`;
  return "other";
}

/** Loads the model at `path` again on a newly acquired device (the default `reload`). */
async function reloadFrom(path: string): Promise<ServedModel> {
  const gpu = await acquireGpu({ onWarning: false });
  try {
    const lm = await TextModel.load(path, { gpu });
    return {
      lm,
      close() {
        lm.dispose();
        gpu.destroy();
      },
    };
  } catch (error) {
    gpu.destroy();
    throw error;
  }
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
