import type { Context } from "hono";
import type { TextModel } from "../model/text_model.ts";
import type { TempLoraSettings } from "../templora/settings.ts";
import { tempLoraSettingsJson } from "../templora/settings_json.ts";
import type { TrainEvent, WriterSession } from "../templora/writer.ts";
import { type CompletionOutcome, type OpenAiFinishReason, runCompletion } from "./completion.ts";
import { ApiError, shutdownError } from "./errors.ts";
import type { ModelLease } from "./host.ts";
import type { SessionLimiter } from "./limiter.ts";
import type { ServerMetrics } from "./metrics.ts";
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

/** A session that is writing now, as /health and /metrics report it. */
export interface RunningSession {
  /** The response's id. */
  id: string;
  /** Tokens written so far. */
  tokens: number;
  /** When it was admitted (performance.now()). */
  startedAt: number;
  /** GPU bytes it holds now (0 until its buffers exist). */
  gpuBytes(): number;
}

/** What answering a completion needs from the app. */
export interface ResponderContext {
  modelId: string;
  limiter: SessionLimiter;
  timeoutMs: number;
  stepsPerSubmit: number;
  /** Server shutdown: stops every run, whose streams end with a `server_shutdown` error. */
  signal?: AbortSignal;
  /** The running sessions, by id. */
  sessions: Map<string, RunningSession>;
  metrics: ServerMetrics;
  /** The API error for a failure of a run on `lm` (a 503 when its device was lost). */
  toApiError(error: unknown, lm?: TextModel): ApiError;
}

const encoder = new TextEncoder();

/**
 * Runs one completion of `promptIds` on the leased model once a session is free and answers it
 * whole or as server-sent events, in `shape`. The run stops when the client goes away or the
 * server shuts down; the session and the lease are released when the response is done (also
 * when this throws).
 */
export async function respond(
  ctx: ResponderContext,
  c: Context,
  lease: ModelLease,
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
  const shuttingDown = () => ctx.signal?.aborted === true;
  const unlisten = () => {
    for (const s of sources) s.removeEventListener("abort", onStop);
  };
  let release: () => void;
  try {
    if (shuttingDown()) throw shutdownError();
    release = await ctx.limiter.acquire(client.signal);
  } catch (error) {
    unlisten();
    lease.release();
    throw shuttingDown() ? shutdownError() : error;
  }
  const id = `${shape.idPrefix}${crypto.randomUUID().replaceAll("-", "")}`;
  const route = c.req.path;
  let session: WriterSession | undefined;
  const running: RunningSession = {
    id,
    tokens: 0,
    startedAt: performance.now(),
    gpuBytes: () => session?.gpuBytes ?? 0,
  };
  ctx.sessions.set(id, running);
  const m = ctx.metrics;
  m.promptTokens.inc({}, promptIds.length);
  const done = (outcome: string) => {
    ctx.sessions.delete(id);
    m.sessionsEnded.inc({ outcome });
    m.sessionSeconds.observe((performance.now() - running.startedAt) / 1000, { route });
    unlisten();
    release();
    lease.release();
  };
  const ended = (outcome: CompletionOutcome | null) =>
    outcome ? "completed" : shuttingDown() ? "shutdown" : "disconnected";
  const createdAt = Math.floor(Date.now() / 1000);
  const seed = request.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
  // Set while a stream with stream_options.include_training runs.
  let onTraining: ((event: TrainEvent) => void) | undefined;
  const run = (onText: (text: string) => void) =>
    runCompletion(lease.lm, promptIds, request, settings, {
      clientSignal: client.signal,
      timeoutMs: ctx.timeoutMs,
      stepsPerSubmit: ctx.stepsPerSubmit,
      seed,
      onSession: (s) => session = s,
      onEvent: (e) => {
        if (e.type === "token" && e.id >= 0) {
          running.tokens++;
          m.tokens.inc();
        } else if (e.type === "train") {
          m.trainingSteps.inc();
          if (e.skipped) m.skippedSteps.inc();
          onTraining?.(e);
        }
      },
    }, onText);
  const head = (object: string) => ({ id, object, created: createdAt, model: ctx.modelId });
  const echo = (o: CompletionOutcome) => temploraEcho(settings, o);

  if (!request.stream) {
    let outcome: CompletionOutcome | null = null;
    let failed = false;
    try {
      outcome = await run(() => {});
      if (!outcome) throw shuttingDown() ? shutdownError() : new DOMException("gone", "AbortError");
      return c.json({
        ...head(shape.object),
        choices: [shape.choice(outcome.text, outcome.finishReason)],
        usage: usage(outcome),
        templora: echo(outcome),
      });
    } catch (error) {
      if (outcome || error instanceof ApiError || error instanceof DOMException) throw error;
      failed = true;
      throw ctx.toApiError(error, lease.lm);
    } finally {
      done(failed ? "failed" : ended(outcome));
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
        let outcome: CompletionOutcome | null = null;
        let failed = false;
        try {
          if (request.includeTraining) {
            onTraining = (e) =>
              send({
                ...chunk,
                choices: [],
                templora_training: {
                  chunk: e.chunk,
                  epoch: e.epoch,
                  loss: e.loss,
                  tokens: e.exampleTokens,
                  seconds: e.seconds,
                  skipped: e.skipped ?? false,
                },
              });
          }
          const opening = shape.opening();
          if (opening) send({ ...chunk, choices: [opening] });
          outcome = await run((text) => send({ ...chunk, choices: [shape.piece(text)] }));
          if (!outcome) {
            // A shutdown ends the stream with an error event; a client that left gets nothing.
            if (shuttingDown()) send(shutdownError().toJSON());
            return;
          }
          send({ ...chunk, choices: [shape.end(outcome.finishReason)], templora: echo(outcome) });
          if (request.includeUsage) send({ ...chunk, choices: [], usage: usage(outcome) });
          send("[DONE]");
        } catch (error) {
          failed = true;
          send(ctx.toApiError(error, lease.lm).toJSON());
        } finally {
          done(failed ? "failed" : ended(outcome));
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
