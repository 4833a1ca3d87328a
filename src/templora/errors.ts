import { TemploraError } from "../core/errors.ts";

/** A snapshot or adapter folder that cannot be used. The message starts with the path. */
export class SnapshotError extends TemploraError {
  /** `problem` is appended to the path in the message. */
  constructor(
    /** The folder or file at fault. */
    readonly path: string,
    /** What is wrong with it. */
    readonly problem: string,
    options?: ErrorOptions,
  ) {
    super(`${path}: ${problem}`, options);
  }
}

/**
 * Snapshot or adapter files that are damaged, truncated, missing, not what they claim to be, or
 * left behind by an interrupted write.
 */
export class CorruptSnapshotError extends SnapshotError {}

/**
 * A snapshot or adapter made for another model (other sizes or other weights), or with features
 * templora does not implement (DoRA, rsLoRA, per-module ranks, ...).
 */
export class SnapshotMismatchError extends SnapshotError {}
