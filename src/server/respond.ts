import type { Context } from "hono";
import type { TextModel } from "../model/text_model.ts";
import type { TempLoraSettings } from "../templora/settings.ts";
import { tempLoraSettingsJson } from "../templora/settings_json.ts";
import { type CompletionOutcome, type OpenAiFinishReason, runCompletion } from "./completion.ts";
import type { ApiError } from "./errors.ts";
import type { SessionLimiter } from "./limiter.ts";
import type { SamplingRequest } from "./request.ts";

/** How a response and its stream chunks look: legacy completions or chat completions. */
export interface ResponseShape {
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

/** `POST /v1/completions`. */
export const TEXT_SHAPE: ResponseShape = {
  idPrefix: "cmpl-",
  object: "text_completion",
  chunkObject: "text_completion",
  choice: (text, finishReason) => ({ text, index: 0, logprobs: null, finish_reason: finishReason }),
  opening: () => null,
  piece: (text) => ({ text, index: 0, logprobs: null, finish_reason: null }),
  end: (finishReason) => ({ text: "", index: 0, logprobs: null, finish_reason: finishReason }),
};

/** `POST /v1/chat/completions`. */
export const CHAT_SHAPE: ResponseShape = {
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

/** What answering a completion needs from the app. */
export interface ResponderContext {
  lm: TextModel;
  modelId: string;
  limiter: SessionLimiter;
  timeoutMs: number;
  stepsPerSubmit: number;
  /** Server shutdown: stops every run. */
  signal?: AbortSignal;
  toApiError(error: unknown): ApiError;
}

const encoder = new TextEncoder();

/**
 * Runs one completion of `promptIds` once a session is free and answers it whole or as
 * server-sent events, in `shape`. The run stops when the client goes away or the server shuts
 * down; the session is released when the response is done.
 */
export async function respond(
  ctx: ResponderContext,
  c: Context,
  request: SamplingRequest,
  promptIds: readonly number[],
  settings: TempLoraSettings,
  shape: ResponseShape,
): Promise<Response> {
  // Plain listeners, removed when the request is done (Deno aborts request.signal after a
  // successful response too).
  const client = new AbortController();
  const sources = [c.req.raw.signal, ctx.signal].filter((s) => s !== undefined);
  const onStop = () => client.abort();
  for (const s of sources) s.addEventListener("abort", onStop, { once: true });
  if (sources.some((s) => s.aborted)) client.abort();
  const unlisten = () => {
    for (const s of sources) s.removeEventListener("abort", onStop);
  };
  let release: () => void;
  try {
    release = await ctx.limiter.acquire(client.signal);
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
    runCompletion(ctx.lm, promptIds, request, settings, {
      clientSignal: client.signal,
      timeoutMs: ctx.timeoutMs,
      stepsPerSubmit: ctx.stepsPerSubmit,
      seed,
    }, onText);
  const head = (object: string) => ({ id, object, created: createdAt, model: ctx.modelId });
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
          send(ctx.toApiError(error).toJSON());
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
}

/** OpenAI's usage object. */
function usage(o: CompletionOutcome) {
  return {
    prompt_tokens: o.promptTokens,
    completion_tokens: o.completionTokens,
    total_tokens: o.promptTokens + o.completionTokens,
  };
}

/** The resolved Temp-Lora settings and what the run did with them, as the response echoes them. */
function temploraEcho(s: TempLoraSettings, o: CompletionOutcome) {
  return {
    ...tempLoraSettingsJson(s),
    chunks_trained: o.chunksTrained,
    training_seconds: o.trainingSeconds,
    timed_out: o.timedOut,
  };
}
