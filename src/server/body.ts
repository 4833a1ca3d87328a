import { ApiError } from "./errors.ts";

/** The body parsed as JSON, at most `limit` bytes (413 past it, 400 when not JSON). */
export async function readJson(request: Request, limit: number): Promise<unknown> {
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
    const why = error instanceof SyntaxError
      ? error.message
      : error instanceof RangeError
      ? "it is nested too deeply"
      : "the body is not UTF-8";
    throw new ApiError(
      400,
      `could not parse the JSON body: ${why}`,
      "invalid_request_error",
      null,
      "invalid_json",
    );
  }
}
