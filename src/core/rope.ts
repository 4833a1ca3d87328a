/** Which elements of a head RoPE rotates together. */
export type RopePairs =
  /** (x[2i], x[2i+1]): llama2.c, and GGUF files of architecture `llama`. */
  | "interleaved"
  /** (x[i], x[i + headDim/2]): Hugging Face Llama/Qwen, GGUF `qwen2`/`qwen3` (NeoX). */
  | "half";
