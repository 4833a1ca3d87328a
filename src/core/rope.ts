/** Which elements of a head RoPE rotates together. */
export type RopePairs =
  /** (x[2i], x[2i+1]): llama2.c, and GGUF files of architecture `llama`. */
  | "interleaved"
  /** (x[i], x[i + headDim/2]): Hugging Face Llama/Qwen, GGUF `qwen2`/`qwen3` (NeoX). */
  | "half";

/** Llama 3's RoPE scaling (`rope_type` "llama3" in Hugging Face configs). */
export interface Llama3RopeScaling {
  /** How much longer the context became: the lowest frequencies are divided by it. */
  factor: number;
  /** Wavelengths above original / lowFreqFactor are divided by the factor. */
  lowFreqFactor: number;
  /** Wavelengths below original / highFreqFactor are left alone. */
  highFreqFactor: number;
  /** The context length the model was first trained for (original_max_position_embeddings). */
  originalMaxPositions: number;
}

/**
 * Per-pair frequency divisors of Llama 3's RoPE scaling, for a head of `headDim` and base
 * `base`: 1 for short wavelengths, `factor` for long ones, and a smooth blend between (the
 * divisor d of pair i makes its frequency base^(-2i/headDim) / d).
 */
export function llama3FrequencyDivisors(
  headDim: number,
  base: number,
  scaling: Llama3RopeScaling,
): Float32Array {
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositions } = scaling;
  const divisors = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) {
    const wavelength = 2 * Math.PI * Math.pow(base, (2 * i) / headDim);
    if (wavelength < originalMaxPositions / high) divisors[i] = 1;
    else if (wavelength > originalMaxPositions / low) divisors[i] = factor;
    else {
      const s = (originalMaxPositions / wavelength - low) / (high - low);
      divisors[i] = 1 / ((1 - s) / factor + s);
    }
  }
  return divisors;
}
