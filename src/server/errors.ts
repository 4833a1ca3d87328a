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

/** A 400 about one request field. */
export function invalidField(param: string, message: string): ApiError {
  return new ApiError(400, message, "invalid_request_error", param, "invalid_value");
}
