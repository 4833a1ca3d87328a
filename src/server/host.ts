import type { TextModel } from "../model/text_model.ts";
import { type ApiError, deviceLostError, shutdownError } from "./errors.ts";

/** A model the server can run on, and how to free it (and the GPU device it was loaded on). */
export interface ServedModel {
  /** The model. */
  lm: TextModel;
  /** Frees the model and its device. */
  close(): void;
}

interface Entry {
  served: ServedModel;
  /** Requests using it now. */
  users: number;
  /** Closed by the host once unused (false for the model the app was given: its owner's). */
  owned: boolean;
  /** Its device was lost. */
  lost: boolean;
  /** The host is done with it: a loss reported from now on is its own closing. */
  retired: boolean;
}

/** One request's hold on the model; `release` exactly once. */
export interface ModelLease {
  /** The model to answer with. */
  lm: TextModel;
  /** Ends the hold. */
  release(): void;
}

/**
 * The model a server answers with, and what happens when its GPU device is lost: requests get a
 * 503 `gpu_device_lost` while `reload` acquires a new device and loads the model again (retried
 * with a growing pause when it fails), and then go on without a restart. Models the host loaded
 * are closed once nothing uses them (after another loss, or after {@link close}); the model it
 * was given stays its owner's.
 */
export class ModelHost {
  #current: Entry;
  #lostReason: string | undefined;
  #closed = false;
  #wake: (() => void) | undefined;
  /** Device losses seen. */
  losses = 0;
  /** Models loaded again after a loss. */
  recoveries = 0;

  constructor(
    lm: TextModel,
    private readonly reload: () => Promise<ServedModel>,
    private readonly onError: (error: unknown) => void,
  ) {
    this.#current = this.#watch({ lm, close: () => {} }, false);
  }

  /** The model in use now (a lost one until the new one is loaded). */
  get lm(): TextModel {
    return this.#current.served.lm;
  }

  /** False while the device is lost and a new one is being acquired. */
  get available(): boolean {
    return !this.#current.lost;
  }

  /** Why the device was lost, while it is being acquired again. */
  get lostReason(): string | undefined {
    return this.#current.lost ? this.#lostReason : undefined;
  }

  /** Whether `lm` is a model whose device was lost. */
  isLost(lm: TextModel): boolean {
    return lm.gpu.lostReason !== undefined ||
      (lm === this.#current.served.lm && this.#current.lost);
  }

  /** The model for one request; a 503 {@link ApiError} while the device is being acquired. */
  acquire(): ModelLease {
    const entry = this.#current;
    if (entry.lost || this.#closed) throw this.unavailable();
    entry.users++;
    let released = false;
    return {
      lm: entry.served.lm,
      release: () => {
        if (released) return;
        released = true;
        entry.users--;
        this.#retireIfDone(entry);
      },
    };
  }

  /** The 503 a request gets while the model cannot be used. */
  unavailable(): ApiError {
    return this.#closed ? shutdownError() : deviceLostError(this.#lostReason ?? "unknown reason");
  }

  /** Stops recovering; models the host loaded are closed once unused. */
  close(): void {
    this.#closed = true;
    this.#wake?.();
    this.#retireIfDone(this.#current);
  }

  #watch(served: ServedModel, owned: boolean): Entry {
    const entry: Entry = { served, users: 0, owned, lost: false, retired: false };
    served.lm.gpu.device.lost.then((info) => {
      if (entry.retired || this.#closed || entry !== this.#current) return;
      entry.lost = true;
      this.losses++;
      this.#lostReason = `${info.reason}: ${info.message}`;
      this.#recover();
    });
    return entry;
  }

  async #recover(): Promise<void> {
    const lost = this.#current;
    let pause = 200;
    while (!this.#closed) {
      try {
        const served = await this.reload();
        if (this.#closed) {
          served.close();
          return;
        }
        this.#current = this.#watch(served, true);
        this.recoveries++;
        this.#retireIfDone(lost);
        return;
      } catch (error) {
        this.onError(error);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, pause);
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#wake = undefined;
        pause = Math.min(2 * pause, 10_000);
      }
    }
  }

  /** Closes a model the host loaded once it is replaced (or the host closed) and unused. */
  #retireIfDone(entry: Entry): void {
    if (entry.users > 0 || entry.retired || !(entry !== this.#current || this.#closed)) return;
    entry.retired = true;
    if (entry.owned) entry.served.close();
  }
}
