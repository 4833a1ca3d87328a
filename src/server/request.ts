import { ApiError, invalidField } from "./errors.ts";

/** Temp-Lora fields a request may set (the `templora` object, snake_case on the wire). */
export interface TempLoraRequest {
  /** Train the adapter while writing (false: plain generation with the same window). */
  enabled?: boolean;
  /** Tokens generated between two adapter updates (Δ). */
  chunk?: number;
  /** Optimizer steps per chunk. */
  epochs?: number;
  /** Learning rate of the adapter. */
  lr?: number;
  /** LoRA rank; alpha follows it unless given. */
  rank?: number;
  /** LoRA alpha (the update is scaled by alpha / rank). */
  alpha?: number;
  /** KV window in tokens. */
  window?: number;
  /** Tokens of preceding text in front of each chunk's training example (`train_context`). */
  trainContext?: number;
  /** Rebuild the KV cache with the new adapter every this many chunks (`kv_refresh`). */
  kvRefresh?: number;
}

/** A checked `POST /v1/completions` body. */
export interface CompletionRequest {
  /** The `model` field as sent (not checked against the served model). */
  model: string | undefined;
  prompt: string;
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  /** Undefined when the request gave none (the server draws one). */
  seed: number | undefined;
  stop: string[];
  stream: boolean;
  /** `stream_options.include_usage`: a last chunk with usage before `[DONE]`. */
  includeUsage: boolean;
  templora: TempLoraRequest;
}

/** Bounds the request is checked against. */
export interface RequestLimits {
  /** Largest `max_tokens`. */
  maxTokens: number;
}

/** Fields OpenAI defines that this server takes only at their neutral value. */
const NEUTRAL: Record<string, (v: unknown) => boolean> = {
  n: (v) => v === 1,
  best_of: (v) => v === 1,
  echo: (v) => v === false,
  logprobs: (v) => v === 0,
  presence_penalty: (v) => v === 0,
  frequency_penalty: (v) => v === 0,
  logit_bias: (v) => typeof v === "object" && v !== null && Object.keys(v).length === 0,
  suffix: (v) => v === "",
};

const KNOWN = new Set([
  "model",
  "prompt",
  "max_tokens",
  "temperature",
  "top_p",
  "top_k",
  "repetition_penalty",
  "seed",
  "stop",
  "stream",
  "stream_options",
  "templora",
  "user",
  ...Object.keys(NEUTRAL),
]);

const TEMPLORA_FIELDS: Record<string, keyof TempLoraRequest> = {
  enabled: "enabled",
  chunk: "chunk",
  epochs: "epochs",
  lr: "lr",
  rank: "rank",
  alpha: "alpha",
  window: "window",
  train_context: "trainContext",
  kv_refresh: "kvRefresh",
};

function kind(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

interface NumberRule {
  integer?: boolean;
  min?: number;
  max?: number;
  /** Strictly greater than. */
  above?: number;
}

function number(param: string, v: unknown, rule: NumberRule): number {
  const what = rule.integer ? "an integer" : "a number";
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw invalidField(param, `'${param}' must be ${what}, got ${kind(v)}`);
  }
  const bad = (rule.integer && !Number.isInteger(v)) ||
    (rule.min !== undefined && v < rule.min) ||
    (rule.max !== undefined && v > rule.max) ||
    (rule.above !== undefined && !(v > rule.above));
  if (bad) {
    const bounds = [
      rule.min !== undefined ? `>= ${rule.min}` : "",
      rule.above !== undefined ? `> ${rule.above}` : "",
      rule.max !== undefined ? `<= ${rule.max}` : "",
    ].filter(Boolean).join(" and ");
    throw invalidField(param, `'${param}' must be ${what} ${bounds}, got ${v}`);
  }
  return v;
}

function optionalNumber(
  body: Record<string, unknown>,
  param: string,
  fallback: number,
  rule: NumberRule,
): number {
  const v = body[param];
  return v === undefined || v === null ? fallback : number(param, v, rule);
}

function boolean(param: string, v: unknown): boolean {
  if (typeof v !== "boolean") {
    throw invalidField(param, `'${param}' must be a boolean, got ${kind(v)}`);
  }
  return v;
}

function prompt(v: unknown): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === "string") return v[0];
  if (Array.isArray(v) && v.every((p) => typeof p === "string")) {
    throw invalidField("prompt", "'prompt' may hold one string only (batches are not supported)");
  }
  throw invalidField(
    "prompt",
    `'prompt' must be a string or an array of one string, got ${kind(v)}`,
  );
}

function stops(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
    throw invalidField("stop", `'stop' must be a string or an array of strings, got ${kind(v)}`);
  }
  if (list.length > 4) throw invalidField("stop", `'stop' takes at most 4 sequences`);
  if (list.some((s) => s === "")) throw invalidField("stop", "'stop' sequences must not be empty");
  return list;
}

function templora(v: unknown): TempLoraRequest {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw invalidField("templora", `'templora' must be an object, got ${kind(v)}`);
  const out: TempLoraRequest = {};
  for (const [key, value] of Object.entries(v)) {
    const field = TEMPLORA_FIELDS[key];
    const param = `templora.${key}`;
    if (!field) {
      const known = Object.keys(TEMPLORA_FIELDS).join(", ");
      throw invalidField(param, `unknown field '${param}' (known: ${known})`);
    }
    if (value === null) continue;
    if (field === "enabled") out.enabled = boolean(param, value);
    else if (field === "lr") out.lr = number(param, value, { min: 0 });
    else if (field === "alpha") out.alpha = number(param, value, { above: 0 });
    else {
      const min = { chunk: 1, epochs: 0, rank: 1, window: 2, trainContext: 0, kvRefresh: 0 }[field];
      out[field] = number(param, value, { integer: true, min });
    }
  }
  return out;
}

/** Checks a completion request body; throws a 400 {@link ApiError} naming the bad field. */
export function parseCompletionRequest(body: unknown, limits: RequestLimits): CompletionRequest {
  if (!isObject(body)) {
    throw new ApiError(400, `the request body must be a JSON object, got ${kind(body)}`);
  }
  for (const key of Object.keys(body)) {
    if (!KNOWN.has(key)) {
      throw new ApiError(
        400,
        `Unrecognized request argument supplied: ${key}`,
        "invalid_request_error",
        key,
        "unknown_parameter",
      );
    }
    const neutral = NEUTRAL[key];
    const value = body[key];
    if (neutral && value !== null && !neutral(value)) {
      throw invalidField(
        key,
        `'${key}' is not supported by this server (got ${JSON.stringify(value)})`,
      );
    }
  }
  if (body.model !== undefined && typeof body.model !== "string") {
    throw invalidField("model", `'model' must be a string, got ${kind(body.model)}`);
  }
  if (body.user !== undefined && typeof body.user !== "string") {
    throw invalidField("user", `'user' must be a string, got ${kind(body.user)}`);
  }
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && !isObject(streamOptions)) {
    throw invalidField(
      "stream_options",
      `'stream_options' must be an object, got ${kind(streamOptions)}`,
    );
  }
  const includeUsage = streamOptions?.include_usage;
  return {
    model: body.model as string | undefined,
    prompt: prompt(body.prompt),
    maxTokens: optionalNumber(body, "max_tokens", Math.min(16, limits.maxTokens), {
      integer: true,
      min: 0,
      max: limits.maxTokens,
    }),
    temperature: optionalNumber(body, "temperature", 1, { min: 0, max: 2 }),
    topP: optionalNumber(body, "top_p", 1, { above: 0, max: 1 }),
    topK: optionalNumber(body, "top_k", 0, { integer: true, min: 0 }),
    repetitionPenalty: optionalNumber(body, "repetition_penalty", 1, { above: 0, max: 10 }),
    seed: body.seed === undefined || body.seed === null
      ? undefined
      : number("seed", body.seed, { integer: true, min: 0, max: 0xffffffff }),
    stop: stops(body.stop),
    stream: body.stream === undefined || body.stream === null
      ? false
      : boolean("stream", body.stream),
    includeUsage: includeUsage === undefined || includeUsage === null
      ? false
      : boolean("stream_options.include_usage", includeUsage),
    templora: templora(body.templora),
  };
}
