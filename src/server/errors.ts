import { GpuDeviceLostError } from "../gpu/errors.ts";
import { InvalidSettingError, PromptTooLongError } from "../model/errors.ts";

/** An error answered in OpenAI's shape: `{error: {message, type, param, code}}` with a status. */
export class ApiError extends Error {
  /** An error with its HTTP status and OpenAI's `type`, `param` (the field) and `code`. */
  constructor(
    readonly status: 400 | 404 | 405 | 413 | 429 | 500 | 503,
    message: string,
    readonly type: string = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After on 429). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  /** The JSON body OpenAI's clients parse. */
  toJSON(): OpenAiErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

/** OpenAI's error body. */
export interface OpenAiErrorBody {
  /** What went wrong, the kind of error, the request field at fault and a short code. */
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** The 503 of a request the GPU cannot serve: its device was lost and is being acquired again. */
export function deviceLostError(reason: string): ApiError {
  return new ApiError(
    503,
    `the GPU device was lost (${reason}); the server is acquiring it again, retry shortly`,
    "server_error",
    null,
    "gpu_device_lost",
    { "Retry-After": "1" },
  );
}

/** The 503 of a request the server will not finish because it is shutting down. */
export function shutdownError(): ApiError {
  return new ApiError(503, "the server is shutting down", "server_error", null, "server_shutdown");
}

/** A 400 about one request field. */
export function invalidField(param: string, message: string): ApiError {
  return new ApiError(400, message, "invalid_request_error", param, "invalid_value");
}

/**
 * The API error to answer for anything a route throws: library errors a request caused become
 * 400s naming what was wrong; anything else is reported to `onServerError` and answered 500.
 */
export function apiErrorOf(error: unknown, onServerError: (error: unknown) => void): ApiError {
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
  if (error instanceof GpuDeviceLostError) return deviceLostError(error.reason);
  if (error instanceof InvalidSettingError) {
    return new ApiError(400, error.message, "invalid_request_error", null, "invalid_value");
  }
  onServerError(error);
  const message = error instanceof Error ? error.message : String(error);
  return new ApiError(500, `internal error: ${message}`, "server_error", null, "internal_error");
}
