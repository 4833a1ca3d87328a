import { TemploraError } from "../gpu/errors.ts";

/** A prompt has more tokens than the model can attend to. */
export class PromptTooLongError extends TemploraError {
  /** `tokens`: the prompt's length; `limit`: the most the model takes. */
  constructor(readonly tokens: number, readonly limit: number) {
    super(`the prompt has ${tokens} tokens; this model takes at most ${limit}`);
  }
}

/** A generation or training setting is out of range. */
export class InvalidSettingError extends TemploraError {}
