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
  /** Attention sinks: the text's first this many tokens stay in the window when it slides. */
  sink?: number;
}

/** What both endpoints take besides the prompt: sampling, streaming and Temp-Lora fields. */
export interface SamplingRequest {
  /** The `model` field as sent (not checked against the served model). */
  model: string | undefined;
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
  /**
   * `stream_options.include_training` (an extension): after each training step, a chunk with
   * empty `choices` and a `templora_training` object (chunk, epoch, loss, tokens, seconds).
   */
  includeTraining: boolean;
  templora: TempLoraRequest;
}

/** A checked `POST /v1/completions` body. */
export interface CompletionRequest extends SamplingRequest {
  prompt: string;
}

/** One message of a chat; text parts of an array `content` are joined. */
export interface ChatMessage {
  /** Who speaks. */
  role: "system" | "user" | "assistant";
  /** The message's text. */
  content: string;
  /** OpenAI's optional participant name, passed on to the template. */
  name?: string;
}

/** A checked `POST /v1/chat/completions` body. */
export interface ChatRequest extends Omit<SamplingRequest, "maxTokens"> {
  messages: ChatMessage[];
  /** `max_completion_tokens` (or `max_tokens`); undefined: until the context is full. */
  maxTokens: number | undefined;
}

/** Bounds the request is checked against. */
export interface RequestLimits {
  /** Largest `max_tokens`. */
  maxTokens: number;
}

type Neutral = Record<string, (v: unknown) => boolean>;

const emptyObject = (v: unknown) => isObject(v) && Object.keys(v).length === 0;

/** Completion fields OpenAI defines that this server takes only at their neutral value. */
const NEUTRAL: Neutral = {
  n: (v) => v === 1,
  best_of: (v) => v === 1,
  echo: (v) => v === false,
  logprobs: (v) => v === 0,
  presence_penalty: (v) => v === 0,
  frequency_penalty: (v) => v === 0,
  logit_bias: emptyObject,
  suffix: (v) => v === "",
};

/** The same for chat completions. */
const CHAT_NEUTRAL: Neutral = {
  n: (v) => v === 1,
  logprobs: (v) => v === false,
  top_logprobs: (v) => v === 0,
  presence_penalty: (v) => v === 0,
  frequency_penalty: (v) => v === 0,
  logit_bias: emptyObject,
  response_format: (v) => isObject(v) && v.type === "text" && Object.keys(v).length === 1,
};

/** Fields both endpoints know besides their prompt and neutral ones. */
const SAMPLING_FIELDS = [
  "model",
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
];

const KNOWN = new Set([...SAMPLING_FIELDS, "prompt", ...Object.keys(NEUTRAL)]);
const CHAT_KNOWN = new Set([
  ...SAMPLING_FIELDS,
  "messages",
  "max_completion_tokens",
  ...Object.keys(CHAT_NEUTRAL),
]);
const ROLES: readonly string[] = ["system", "user", "assistant"];

/** The most optimizer steps per chunk a request may ask for (`templora.epochs`). */
export const MAX_EPOCHS = 100;

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
  sink: "sink",
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
      const min = {
        chunk: 1,
        epochs: 0,
        rank: 1,
        window: 2,
        trainContext: 0,
        kvRefresh: 0,
        sink: 0,
      }[field];
      // A request may not ask for unbounded training work per chunk.
      const max = field === "epochs" ? MAX_EPOCHS : undefined;
      out[field] = number(param, value, { integer: true, min, max });
    }
  }
  return out;
}

function messages(v: unknown): ChatMessage[] {
  if (v === undefined || v === null) throw invalidField("messages", "'messages' is required");
  if (!Array.isArray(v)) {
    throw invalidField("messages", `'messages' must be an array of messages, got ${kind(v)}`);
  }
  if (v.length === 0) throw invalidField("messages", "'messages' must hold at least one message");
  return v.map((m, i) => {
    const param = `messages[${i}]`;
    if (!isObject(m)) throw invalidField(param, `'${param}' must be an object, got ${kind(m)}`);
    for (const [key, value] of Object.entries(m)) {
      if (!["role", "content", "name"].includes(key) && value !== null) {
        throw invalidField(
          `${param}.${key}`,
          `'${param}.${key}' is not supported (messages take role, content and name)`,
        );
      }
    }
    if (typeof m.role !== "string" || !ROLES.includes(m.role)) {
      throw invalidField(
        `${param}.role`,
        `'${param}.role' must be one of ${ROLES.join(", ")}, got ${JSON.stringify(m.role)}`,
      );
    }
    if (m.name !== undefined && m.name !== null && typeof m.name !== "string") {
      throw invalidField(`${param}.name`, `'${param}.name' must be a string, got ${kind(m.name)}`);
    }
    const message: ChatMessage = {
      role: m.role as ChatMessage["role"],
      content: messageContent(`${param}.content`, m.content),
    };
    if (typeof m.name === "string") message.name = m.name;
    return message;
  });
}

/** A string, or an array of `{type: "text", text}` parts (joined). */
function messageContent(param: string, v: unknown): string {
  if (typeof v === "string") return v;
  const isTextPart = (p: unknown) => isObject(p) && p.type === "text" && typeof p.text === "string";
  if (Array.isArray(v) && v.every(isTextPart)) {
    return v.map((p) => (p as { text: string }).text).join("");
  }
  throw invalidField(
    param,
    `'${param}' must be a string or an array of text parts, got ${kind(v)}`,
  );
}

/** Checks a completion request body; throws a 400 {@link ApiError} naming the bad field. */
export function parseCompletionRequest(body: unknown, limits: RequestLimits): CompletionRequest {
  const checked = checkFields(body, KNOWN, NEUTRAL);
  return {
    ...samplingFields(checked, limits),
    prompt: prompt(checked.prompt),
  };
}

/**
 * Checks a chat completion request body (`messages`, and `max_completion_tokens` beside
 * `max_tokens`); throws a 400 {@link ApiError} naming the bad field.
 */
export function parseChatRequest(body: unknown, limits: RequestLimits): ChatRequest {
  const checked = checkFields(body, CHAT_KNOWN, CHAT_NEUTRAL);
  const given = (["max_completion_tokens", "max_tokens"] as const).filter((k) =>
    checked[k] !== undefined && checked[k] !== null
  );
  const rule = { integer: true, min: 0, max: limits.maxTokens };
  const values = given.map((k) => number(k, checked[k], rule));
  if (values.length === 2 && values[0] !== values[1]) {
    throw invalidField(
      "max_completion_tokens",
      `'max_completion_tokens' (${values[0]}) and 'max_tokens' (${values[1]}) disagree`,
    );
  }
  return {
    ...samplingFields(checked, limits),
    messages: messages(checked.messages),
    maxTokens: values[0],
  };
}

/** The body as an object whose fields are all known and neutral where they must be. */
function checkFields(
  body: unknown,
  known: Set<string>,
  neutrals: Neutral,
): Record<string, unknown> {
  if (!isObject(body)) {
    throw new ApiError(400, `the request body must be a JSON object, got ${kind(body)}`);
  }
  for (const key of Object.keys(body)) {
    if (!known.has(key)) {
      throw new ApiError(
        400,
        `Unrecognized request argument supplied: ${key}`,
        "invalid_request_error",
        key,
        "unknown_parameter",
      );
    }
    const neutral = neutrals[key];
    const value = body[key];
    if (neutral && value !== null && !neutral(value)) {
      throw invalidField(
        key,
        `'${key}' is not supported by this server (got ${JSON.stringify(value)})`,
      );
    }
  }
  return body;
}

/** The fields both endpoints share (`max_tokens` defaults to 16 as in OpenAI's completions). */
function samplingFields(body: Record<string, unknown>, limits: RequestLimits): SamplingRequest {
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
  const includeTraining = streamOptions?.include_training;
  return {
    model: body.model as string | undefined,
    maxTokens: optionalNumber(body, "max_tokens", Math.min(16, limits.maxTokens), {
      integer: true,
      min: 0,
      max: limits.maxTokens,
    }),
    temperature: optionalNumber(body, "temperature", 1, { min: 0, max: 2 }),
    topP: optionalNumber(body, "top_p", 1, { above: 0, max: 1 }),
    topK: optionalNumber(body, "top_k", 0, { integer: true, min: 0, max: 0xffffffff }),
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
    includeTraining: includeTraining === undefined || includeTraining === null
      ? false
      : boolean("stream_options.include_training", includeTraining),
    templora: templora(body.templora),
  };
}
