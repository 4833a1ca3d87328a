/**
 * Watches generated text for stop sequences. Text that could still turn into a stop sequence is
 * held back until it cannot, so what was released never contains any part of a stop.
 */
export class StopWatcher {
  #pending = "";
  #stopped = false;

  /** A watcher for the given stop sequences. */
  constructor(readonly stops: readonly string[]) {}

  /** Whether a stop sequence has been seen. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Adds text; returns what can be released now (everything before a stop, once one is seen). */
  push(text: string): string {
    if (this.#stopped) return "";
    this.#pending += text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.#pending.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#stopped = true;
      const out = this.#pending.slice(0, cut);
      this.#pending = "";
      return out;
    }
    const hold = this.#heldBack();
    const out = this.#pending.slice(0, this.#pending.length - hold);
    this.#pending = this.#pending.slice(this.#pending.length - hold);
    return out;
  }

  /** Releases whatever is held back (the text ended without a stop). */
  flush(): string {
    const out = this.#pending;
    this.#pending = "";
    return out;
  }

  /** Length of the longest suffix of the pending text that is a proper prefix of a stop. */
  #heldBack(): number {
    let hold = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.#pending.length); n > hold; n--) {
        if (this.#pending.endsWith(stop.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }
}
