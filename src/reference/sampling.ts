/**
 * Float64 twins of shaders/sampling.wgsl, and the GPU's random number formula in TypeScript
 * (bit-exact: the same draw for the same (seed, counter)).
 */

/** The 32-bit PCG hash (RXS-M-XS output of one LCG step) the sampler's generator is built on. */
export function pcgHash(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul((state >>> ((state >>> 28) + 4)) ^ state, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** Uniform in [0, 1) with 24 random bits: exactly the GPU's uniform01(seed, counter). */
export function uniform01(seed: number, counter: number): number {
  const h = pcgHash((pcgHash(seed) ^ counter) >>> 0);
  return (h >>> 8) / 16777216;
}

/** Index of the largest value; ties go to the lowest index. */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The logits after a llama.cpp/HF repetition penalty: each distinct id in `history` (ids outside
 * the vocabulary are ignored) has x > 0 ? x / penalty : x * penalty applied once.
 */
export function repetitionPenalty(
  logits: ArrayLike<number>,
  history: ArrayLike<number>,
  penalty: number,
): Float64Array {
  const out = Float64Array.from(logits);
  for (const id of new Set(Array.from(history))) {
    if (id < out.length) out[id] = out[id] > 0 ? out[id] / penalty : out[id] * penalty;
  }
  return out;
}

/** Sampling settings: temperature > 0; topK 0 = off; topP >= 1 = off. */
export interface SamplingSettings {
  /** Divides the logits; > 0. */
  temperature: number;
  /** Keep the k largest logits (and ties with the k-th); 0 = off. */
  topK: number;
  /** Keep the smallest head of the sorted top-k distribution with this mass; >= 1 = off. */
  topP: number;
}

/** The distribution the sampler draws from. */
export interface KeptDistribution {
  /** [V]: renormalised probability of each token, 0 outside the kept set. */
  probs: Float64Array;
  /**
   * How far the top-p cut is from flipping, as a fraction of the top-k mass (Infinity when top-p
   * is off); near zero the float32 kernel may legitimately cut one token differently.
   */
  cutMargin: number;
}

/**
 * Temperature, then top-k (every token tied with the k-th largest logit is kept), then top-p on
 * the renormalised top-k distribution: the smallest head of the sorted tokens whose mass reaches
 * topP, again keeping every token tied with the last one.
 */
export function keptDistribution(
  logits: ArrayLike<number>,
  { temperature, topK, topP }: SamplingSettings,
): KeptDistribution {
  const V = logits.length;
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a]);
  const max = logits[order[0]];
  const weight = (i: number) => Math.exp((logits[i] - max) / temperature);
  let threshold = logits[order[V - 1]];
  if (topK > 0 && topK < V) threshold = logits[order[topK - 1]];
  let cutMargin = Infinity;
  if (topP < 1) {
    let topKMass = 0;
    for (const i of order) if (logits[i] >= threshold) topKMass += weight(i);
    const goal = topP * topKMass;
    let cum = 0;
    for (const i of order) {
      const before = cum;
      cum += weight(i);
      if (cum >= goal) {
        threshold = Math.max(threshold, logits[i]);
        // The most likely token is always kept, so only a later cut can flip.
        cutMargin = Math.min(before > 0 ? goal - before : Infinity, cum - goal) / topKMass;
        break;
      }
    }
  }
  const probs = new Float64Array(V);
  let total = 0;
  for (let i = 0; i < V; i++) if (logits[i] >= threshold) total += probs[i] = weight(i);
  for (let i = 0; i < V; i++) probs[i] /= total;
  return { probs, cutMargin };
}

/** A drawn token, and how far the draw was from picking a neighbour. */
export interface Draw {
  /** The drawn token id. */
  token: number;
  /** Distance of `u` from the nearest CDF step; near zero float32 rounding may pick a neighbour. */
  margin: number;
}

/** Inverse CDF in vocabulary order: the first token whose cumulative probability exceeds u. */
export function drawFrom(probs: ArrayLike<number>, u: number): Draw {
  let cum = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    const before = cum;
    cum += probs[i];
    last = i;
    if (cum > u) return { token: i, margin: Math.min(u - before, cum - u) };
  }
  return { token: last, margin: 0 };
}

/** The token the GPU sampler draws for logits, settings and the uniform number u. */
export function sampleToken(
  logits: ArrayLike<number>,
  settings: SamplingSettings,
  u: number,
): Draw & { cutMargin: number } {
  const { probs, cutMargin } = keptDistribution(logits, settings);
  return { ...drawFrom(probs, u), cutMargin };
}
