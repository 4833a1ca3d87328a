import { InvalidSettingError } from "../model/errors.ts";
import type { TextModel } from "../model/text_model.ts";
import type { TempLoraSettings } from "./settings.ts";
import { TestThenTrain } from "./test_then_train.ts";

/** Scores of one chunk of the text. */
export interface ChunkScore {
  /** Chunk number (0-based); it covers tokens [index * chunk, (index + 1) * chunk). */
  index: number;
  /** Scored tokens. */
  tokens: number;
  /** Summed negative log-likelihood (nats) without the adapter. */
  baseNll: number;
  /** Summed negative log-likelihood (nats) with the adapter trained on everything before. */
  tempLoraNll: number;
  /** Seconds spent training on this chunk afterwards. */
  trainSeconds: number;
}

/** Perplexities of a set of chunks, two ways. */
export interface Perplexity {
  /** exp(total NLL / total tokens). */
  ppl: number;
  /** The paper's figure: sum(exp(mean NLL of chunk) * tokens) / sum(tokens). */
  ppl_chunk_weighted: number;
}

/** Result of {@link evaluatePerplexity}. */
export interface EvaluationResult {
  /** Tokens of the text walked. */
  tokens: number;
  /** Perplexity of the plain model. */
  base: Perplexity;
  /** Perplexity with the adapter trained on everything before each chunk. */
  templora: Perplexity;
  /** (base.ppl - templora.ppl) / base.ppl * 100. */
  decrease_pct: number;
  /** The same, over equal ranges of the text (by chunk position). */
  buckets: { from: number; to: number; tokens: number; base: Perplexity; templora: Perplexity }[];
  /** Each chunk's scores. */
  chunks: ChunkScore[];
  /** Wall-clock seconds of the whole evaluation. */
  seconds: number;
}

/** Perplexities of chunks from their NLL sums. */
export function perplexityOf(
  chunks: readonly ChunkScore[],
  which: "baseNll" | "tempLoraNll",
): Perplexity {
  let nll = 0;
  let tokens = 0;
  let weighted = 0;
  for (const c of chunks) {
    nll += c[which];
    tokens += c.tokens;
    weighted += Math.exp(c[which] / c.tokens) * c.tokens;
  }
  return { ppl: Math.exp(nll / tokens), ppl_chunk_weighted: weighted / tokens };
}

/** Progress callback of {@link evaluatePerplexity}. */
export type EvaluationProgress = (done: ChunkScore, total: number) => void;

/** What {@link evaluatePerplexity} walks and reports. */
export interface EvaluationOptions {
  /** Tokens of the text to use, from its start (BOS first). */
  maxTokens: number;
  /** Equal ranges of the text to report separately (default 4). */
  buckets?: number;
  /** Called after each chunk is scored and trained on. */
  onChunk?: EvaluationProgress;
}

/**
 * The PG19 protocol (test-then-train): tokenize the text once (BOS first), take its first
 * `maxTokens` tokens, and walk them in chunks of Δ. Chunk k is scored given the up to W - Δ
 * tokens before it (with the settings' attention sinks in front once those no longer reach the
 * text's start), with the adapter off and on; then the adapter trains on it (with up to
 * `trainContext` preceding tokens as context) for `epochs` steps. Reports exp(total NLL / total
 * tokens) and the paper's token-weighted mean of per-chunk perplexity, overall and in `buckets`
 * equal ranges of the text.
 */
export async function evaluatePerplexity(
  lm: TextModel,
  text: string,
  options: EvaluationOptions,
  settings: TempLoraSettings,
): Promise<EvaluationResult> {
  const started = performance.now();
  const all = lm.tokenizer.encode(text, { bos: true });
  const ids = all.slice(0, options.maxTokens);
  const delta = settings.chunk;
  if (ids.length < 2) throw new InvalidSettingError("the text has fewer than 2 tokens");
  const walk = await TestThenTrain.create(lm, ids, settings);
  const chunks: ChunkScore[] = [];
  try {
    for (const chunk of walk.chunks) {
      const base = await walk.scoreChunk(chunk, false);
      const tuned = await walk.scoreChunk(chunk, true);
      if (!base || !tuned) continue;
      const { seconds } = await walk.train(chunk);
      const score: ChunkScore = {
        index: chunk.index,
        tokens: base.count,
        baseNll: base.lossSum,
        tempLoraNll: tuned.lossSum,
        trainSeconds: seconds,
      };
      chunks.push(score);
      options.onChunk?.(score, walk.chunks.length);
    }
  } finally {
    walk.destroy();
  }
  const nBuckets = Math.max(1, Math.min(options.buckets ?? 4, chunks.length));
  const buckets = [];
  for (let b = 0; b < nBuckets; b++) {
    const part = chunks.slice(
      Math.floor(b * chunks.length / nBuckets),
      Math.floor((b + 1) * chunks.length / nBuckets),
    );
    buckets.push({
      from: part[0].index * delta,
      to: Math.min(ids.length, (part[part.length - 1].index + 1) * delta),
      tokens: part.reduce((s, c) => s + c.tokens, 0),
      base: perplexityOf(part, "baseNll"),
      templora: perplexityOf(part, "tempLoraNll"),
    });
  }
  const base = perplexityOf(chunks, "baseNll");
  const templora = perplexityOf(chunks, "tempLoraNll");
  return {
    tokens: ids.length,
    base,
    templora,
    decrease_pct: (base.ppl - templora.ppl) / base.ppl * 100,
    buckets,
    chunks,
    seconds: (performance.now() - started) / 1000,
  };
}
