import { TemploraError } from "../gpu/errors.ts";

/** A model, weight or tokenizer file that cannot be used. The message starts with the file. */
export class ModelFormatError extends TemploraError {
  /** `problem` is appended to the file name in the message. */
  constructor(
    /** The file (or folder) at fault. */
    readonly file: string,
    /** What is wrong with it. */
    readonly problem: string,
    options?: ErrorOptions,
  ) {
    super(`${file}: ${problem}`, options);
  }
}

/** A path that names no usable model, weight or tokenizer file. */
export class ModelFileNotFoundError extends ModelFormatError {}

/** The file ends before the data its header announces. */
export class TruncatedFileError extends ModelFormatError {
  /** `what` names the source of the expectation (a header, a tensor's offsets). */
  constructor(
    file: string,
    readonly expectedBytes: number,
    readonly actualBytes: number,
    what = "the header",
  ) {
    super(
      file,
      `truncated: ${what} implies ${expectedBytes} bytes but the file has ${actualBytes}` +
        ` (${expectedBytes - actualBytes} missing)`,
    );
  }
}

/** The file goes on past the data its header announces (wrong header or a different format). */
export class TrailingBytesError extends ModelFormatError {
  /** `what` names the source of the expectation. */
  constructor(
    file: string,
    readonly expectedBytes: number,
    readonly actualBytes: number,
    what = "the header",
  ) {
    super(
      file,
      `too long: ${what} implies ${expectedBytes} bytes but the file has ${actualBytes}` +
        ` (${actualBytes - expectedBytes} extra)`,
    );
  }
}

/** A header (binary or JSON) with impossible or inconsistent values. */
export class CorruptHeaderError extends ModelFormatError {}

/** A model configuration with impossible or inconsistent hyperparameters. */
export class InvalidConfigError extends ModelFormatError {}

/** A model architecture templora does not implement. */
export class UnsupportedArchitectureError extends ModelFormatError {}

/** A known model feature templora does not implement yet (rope_scaling, biases, ...). */
export class UnsupportedFeatureError extends ModelFormatError {}

/** A tensor element type templora cannot read. */
export class UnsupportedDtypeError extends ModelFormatError {}

/** A tensor the architecture needs is absent. */
export class MissingTensorError extends ModelFormatError {
  /** `detail` says why the tensor is needed or where it was expected. */
  constructor(file: string, readonly tensor: string, detail = "") {
    super(file, `missing tensor ${tensor}${detail ? ` (${detail})` : ""}`);
  }
}

/** A tensor is present but its shape is not the one the configuration implies. */
export class TensorShapeMismatchError extends ModelFormatError {
  /** Shapes outermost first. */
  constructor(
    file: string,
    readonly tensor: string,
    readonly expected: readonly number[],
    readonly actual: readonly number[],
  ) {
    super(file, `tensor ${tensor} has shape [${actual}] but the config implies [${expected}]`);
  }
}

/** A tokenizer that does not fit the model (vocabulary size, special tokens). */
export class TokenizerMismatchError extends ModelFormatError {}

/** A token id outside the tokenizer's vocabulary was passed to decode. */
export class InvalidTokenIdError extends TemploraError {}

/** The file does not start with its format's magic bytes (another format, or not a model). */
export class BadMagicError extends ModelFormatError {
  /** `found` are the file's first bytes, `expected` the magic as text. */
  constructor(file: string, readonly found: Uint8Array, readonly expected: string) {
    super(
      file,
      `not a ${expected} file: it starts with bytes ${
        [...found].map((b) => b.toString(16).padStart(2, "0")).join(" ")
      } (${JSON.stringify(String.fromCharCode(...found))}), not ${JSON.stringify(expected)}`,
    );
  }
}

/** A format version this reader does not take. */
export class UnsupportedVersionError extends ModelFormatError {
  /** `problem` says which versions are read. */
  constructor(file: string, readonly version: number, problem: string) {
    super(file, problem);
  }
}

/** A metadata key (GGUF) the model or tokenizer needs is absent. */
export class MissingMetadataError extends ModelFormatError {
  /** `detail` says why the key is needed. */
  constructor(file: string, readonly key: string, detail = "") {
    super(file, `missing metadata key ${key}${detail ? ` (${detail})` : ""}`);
  }
}

/**
 * Block-quantized weights (GGUF Q8_0, Q4_K, ...) where a float model is being built: the file
 * parses, but the runtime asked for F32/F16/BF16 tensors.
 */
export class QuantizedWeightsError extends UnsupportedDtypeError {
  /** `tensors` lists the quantized tensors with their types (e.g. "blk.0.attn_q.weight Q8_0"). */
  constructor(file: string, readonly tensors: readonly string[], detail: string) {
    super(file, detail);
  }
}
