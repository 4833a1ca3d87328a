/** What generation and training need from any tokenizer (llama2.c tokenizer.bin, HF tokenizer.json). */
export interface Tokenizer {
  /** Number of ids the tokenizer can produce (ids are 0..vocabSize-1). */
  readonly vocabSize: number;
  /** Beginning-of-sequence id, or null when the tokenizer has none (Qwen2). */
  readonly bosId: number | null;
  /** End-of-sequence id, or null when the tokenizer has none. */
  readonly eosId: number | null;
  /**
   * Every id that ends a text or a reply when the model writes it: EOS, and the end-of-turn
   * tokens a chat template writes (Llama 3's `<|eot_id|>`, Qwen's `<|im_end|>`) or a generation
   * config lists. Absent: EOS alone.
   */
  readonly endIds?: readonly number[];
  /** The chat template the tokenizer ships (Hugging Face tokenizer_config.json), if any. */
  readonly chatTemplate?: ChatTemplate;
  /** Token ids of `text`, with BOS first / EOS last when asked (and the tokenizer has them). */
  encode(text: string, options: EncodeOptions): number[];
  /** Text of `ids`; BOS and EOS are dropped. Invalid UTF-8 becomes U+FFFD. */
  decode(ids: readonly number[]): string;
  /**
   * A decoder for ids that arrive one at a time. `context` holds ids already shown (the prompt),
   * so the first new piece is spaced as it would be in the full text.
   */
  streamDecoder(context?: readonly number[]): StreamDecoder;
}

/**
 * A Jinja chat template (Hugging Face's `chat_template`) with the special-token strings it is
 * rendered with. The rendered text holds BOS itself when the template wants it, so it is encoded
 * without adding another.
 */
export interface ChatTemplate {
  /** The Jinja source. */
  template: string;
  /** Passed to the template as `bos_token`. */
  bosToken?: string;
  /** Passed to the template as `eos_token`. */
  eosToken?: string;
}

/** Options of Tokenizer.encode. */
export interface EncodeOptions {
  /** Prepend the BOS id. */
  bos: boolean;
  /** Append the EOS id. */
  eos?: boolean;
}

/**
 * Turns ids into text as they arrive. The concatenation of every push() and the final flush()
 * equals decode(all ids pushed); a character split across tokens (byte fallback) is held back
 * until it is complete.
 */
export interface StreamDecoder {
  /** Text that became final with this id ("" while a character is incomplete). */
  push(id: number): string;
  /** Whatever is still held back (an incomplete character becomes U+FFFD). */
  flush(): string;
}
