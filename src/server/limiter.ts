import { ApiError } from "./errors.ts";

/**
 * Bounds the writing sessions that run at once; requests past the bound wait in a FIFO queue of
 * bounded length, and past that are refused with 429. Sessions that run at once share the GPU at
 * decode-batch granularity: each awaits the GPU once per batch, so JS interleaves them.
 */
export class SessionLimiter {
  #active = 0;
  #waiting: { admit: () => void }[] = [];

  constructor(
    readonly maxSessions: number,
    readonly maxQueue: number,
    readonly retryAfterSeconds = 1,
  ) {
    if (!Number.isInteger(maxSessions) || maxSessions < 1) {
      throw new RangeError(`maxSessions must be an integer >= 1, got ${maxSessions}`);
    }
    if (!Number.isInteger(maxQueue) || maxQueue < 0) {
      throw new RangeError(`maxQueue must be an integer >= 0, got ${maxQueue}`);
    }
  }

  /** Sessions running now. */
  get active(): number {
    return this.#active;
  }

  /** Requests waiting for a session. */
  get queued(): number {
    return this.#waiting.length;
  }

  /**
   * Waits for a free session and returns its release function (call it exactly once). Throws a
   * 429 {@link ApiError} when the queue is full, and `signal`'s reason when it aborts while queued.
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#active < this.maxSessions) {
      this.#active++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#waiting.length >= this.maxQueue) {
      return Promise.reject(
        new ApiError(
          429,
          `the server is busy (${this.#active} sessions running, ${this.#waiting.length} ` +
            `queued); retry later`,
          "rate_limit_error",
          null,
          "server_busy",
          { "Retry-After": String(this.retryAfterSeconds) },
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const entry = {
        admit: () => {
          signal?.removeEventListener("abort", onAbort);
          this.#active++;
          resolve(this.#releaser());
        },
      };
      const onAbort = () => {
        const at = this.#waiting.indexOf(entry);
        if (at >= 0) this.#waiting.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(entry);
    });
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active--;
      this.#waiting.shift()?.admit();
    };
  }
}
