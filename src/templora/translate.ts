import type { Tokenizer } from "../formats/tokenizer.ts";
import { decodeLoop, endIdsOf } from "../model/decode_loop.ts";
import { DecodeSession } from "../model/decode_session.ts";
import { InvalidSettingError } from "../model/errors.ts";
import { samplingSettings } from "../model/generate.ts";
import type { ModelAdapter } from "../model/adapter.ts";
import type { TextModel } from "../model/text_model.ts";
import { parseStringRecords } from "./jsonl.ts";
import { corpusBleu, corpusChrf } from "./metrics.ts";
import type { TempLoraSettings } from "./settings.ts";
import { TestThenTrain, type WalkChunk, windowTokens } from "./test_then_train.ts";

/** One segment of a document and its translation. */
export interface SegmentPair {
  /** The source segment (one line: no newline). */
  source: string;
  /** Its translation (one line). */
  target: string;
}

/**
 * Segment pairs from JSON Lines: `{"source": "...", "target": "..."}` per line (blank lines
 * skipped); a segment may not hold a newline, which ends segments in the document. Problems are
 * a {@link DocumentFormatError} naming the line.
 */
export function parseSegmentPairs(jsonl: string): SegmentPair[] {
  return parseStringRecords(jsonl, "pairs", ["source", "target"], [], (p) => {
    if (/[\r\n]/.test(p.source) || /[\r\n]/.test(p.target)) return "a segment holds a newline";
  });
}

/** The tokens of one pair as the document holds it: the source line, then the target line. */
export interface EncodedPair {
  /** Token ids of "source\ntarget\n". */
  ids: number[];
  /** Tokens before the target's (the source line and its newline). */
  sourceTokens: number;
}

/**
 * A pair as the document holds it: the source, a newline, the target, a newline. The target's
 * tokens (its newline included, so the model learns where a translation ends) are what encoding
 * the whole adds after the source line's own tokens; when the source line's tokens are not a
 * prefix of the whole, the two lines are encoded apart.
 */
export function encodePair(tokenizer: Tokenizer, source: string, target: string): EncodedPair {
  const head = tokenizer.encode(`${source}\n`, { bos: false });
  const whole = tokenizer.encode(`${source}\n${target}\n`, { bos: false });
  if (whole.length > head.length && head.every((id, i) => whole[i] === id)) {
    return { ids: whole, sourceTokens: head.length };
  }
  return {
    ids: [...head, ...tokenizer.encode(`${target}\n`, { bos: false })],
    sourceTokens: head.length,
  };
}

/** A document of pairs as one token sequence. */
export interface ParallelDocument {
  /** BOS (when the tokenizer has one), then every pair's tokens. */
  ids: number[];
  /** True on the targets' tokens: the only ones scored and trained on. */
  lossMask: boolean[];
  /** Chunk bounds: pair k is tokens [bounds[k], bounds[k + 1]) (the first holds BOS too). */
  bounds: number[];
  /** Where each pair's target begins. */
  targetStarts: number[];
}

/** The pairs in order as one document ({@link encodePair} for each). */
export function encodeParallelDocument(
  tokenizer: Tokenizer,
  pairs: readonly SegmentPair[],
): ParallelDocument {
  const ids = tokenizer.bosId === null ? [] : [tokenizer.bosId];
  const lossMask = ids.map(() => false);
  const bounds = [0];
  const targetStarts: number[] = [];
  for (const p of pairs) {
    const e = encodePair(tokenizer, p.source, p.target);
    targetStarts.push(ids.length + e.sourceTokens);
    ids.push(...e.ids);
    lossMask.push(...e.ids.map((_, i) => i >= e.sourceTokens));
    bounds.push(ids.length);
  }
  // No pairs: the text is BOS alone (or nothing), one chunk without loss (or none).
  if (pairs.length === 0 && ids.length > 0) bounds.push(ids.length);
  return { ids, lossMask, bounds, targetStarts };
}

/** Greedy continuation of `prompt` up to the end of the line, with an adapter or without. */
async function translateLine(
  lm: TextModel,
  prompt: readonly number[],
  adapter: ModelAdapter | undefined,
  maxTokens: number,
): Promise<string> {
  const session = await DecodeSession.create(lm.model, lm.registry, {
    capacity: Math.min(lm.config.maxSeqLen, prompt.length + maxTokens),
    maxTokens: prompt.length + maxTokens,
  });
  session.adapter = adapter;
  try {
    const loop = decodeLoop<never>(session, lm.recorder, lm.tokenizer, prompt, {
      maxTokens,
      sampling: samplingSettings({ maxTokens, temperature: 0 }, endIdsOf(lm.tokenizer)),
      stepsPerSubmit: 8,
      stop: ["\n"],
      keep: session.capacity >> 1,
      chunk: Infinity,
    });
    for (;;) {
      const next = await loop.next();
      if (next.done) return next.value.text.trim();
    }
  } finally {
    lm.recorder.submit();
    session.destroy();
  }
}

/** The tokens a translation of a pair's source is written after: earlier pairs, the source. */
function translationPrompt(
  ids: readonly number[],
  chunk: WalkChunk,
  targetStart: number,
  settings: TempLoraSettings,
  maxNew: number,
): number[] {
  const head = targetStart - chunk.start;
  const budget = Math.max(0, settings.window - head - maxNew);
  return windowTokens(ids, chunk.start, targetStart, budget, settings.sink).tokens;
}

/** Most tokens a translation of a source of `sourceTokens` tokens may take. */
function translationLimit(sourceTokens: number, window: number): number {
  return Math.min(2 * sourceTokens + 8, Math.floor(window / 2));
}

/** One pair's scores. */
export interface PairScore {
  /** Pair number (0-based). */
  index: number;
  /** Tokens of its target (the scored ones, its newline included). */
  tokens: number;
  /** Summed NLL of the target without the adapter. */
  baseNll: number;
  /** Summed NLL of the target with the adapter trained on the pairs before it. */
  tempLoraNll: number;
  /** The plain model's greedy translation, after the same context (when asked for). */
  baseTranslation?: string;
  /** The adapter's greedy translation, after the same context (when asked for). */
  tempLoraTranslation?: string;
}

/** Target perplexity and translation quality of one condition. */
export interface TranslationQuality {
  /** exp(total target NLL / total target tokens). */
  ppl: number;
  /** Corpus chrF of the greedy translations (sacreBLEU's definition), when made. */
  chrf?: number;
  /** Corpus BLEU of the greedy translations (sacreBLEU's defaults), when made. */
  bleu?: number;
}

/** Result of {@link evaluateTranslation}. */
export interface TranslationResult {
  /** The plain model, earlier pairs as context. */
  base: TranslationQuality;
  /** The adapter trained pair by pair. */
  templora: TranslationQuality;
  /** Target perplexity over equal ranges of pairs, in order. */
  buckets: { from: number; to: number; tokens: number; base: number; templora: number }[];
  /** Each pair's scores. */
  pairs: PairScore[];
  /** Wall-clock seconds. */
  seconds: number;
}

/** What {@link evaluateTranslation} does. */
export interface TranslationOptions {
  /** Equal ranges of pairs to report separately (default 4). */
  buckets?: number;
  /** Write greedy translations with and without the adapter and score them (default true). */
  translate?: boolean;
  /** Called after each pair. */
  onPair?: (score: PairScore, total: number) => void;
}

/**
 * Document-level translation with Temp-Lora (the paper's GuoFeng protocol): the pairs form one
 * document, each pair a chunk. Pair k's target is scored given the pairs before it in the window
 * (the target's tokens only), with the adapter off and on; with `translate`, its source is also
 * translated greedily both ways after the same context; then the adapter trains on the pair,
 * loss on the target only, with the preceding pairs as context.
 */
export async function evaluateTranslation(
  lm: TextModel,
  pairs: readonly SegmentPair[],
  options: TranslationOptions,
  settings: TempLoraSettings,
): Promise<TranslationResult> {
  const started = performance.now();
  if (pairs.length === 0) throw new InvalidSettingError("pairs: none given");
  const doc = encodeParallelDocument(lm.tokenizer, pairs);
  const translate = options.translate ?? true;
  const walk = await TestThenTrain.create(lm, doc.ids, settings, {
    bounds: doc.bounds,
    lossMask: doc.lossMask,
  });
  const scores: PairScore[] = [];
  try {
    for (const chunk of walk.chunks) {
      const base = await walk.scoreChunk(chunk, false);
      const tuned = await walk.scoreChunk(chunk, true);
      const score: PairScore = {
        index: chunk.index,
        tokens: base!.count,
        baseNll: base!.lossSum,
        tempLoraNll: tuned!.lossSum,
      };
      if (translate) {
        const targetStart = doc.targetStarts[chunk.index];
        const maxNew = translationLimit(targetStart - chunk.start, settings.window);
        const prompt = translationPrompt(doc.ids, chunk, targetStart, settings, maxNew);
        score.baseTranslation = await translateLine(lm, prompt, undefined, maxNew);
        score.tempLoraTranslation = await translateLine(lm, prompt, walk.adapter, maxNew);
      }
      await walk.train(chunk);
      scores.push(score);
      options.onPair?.(score, pairs.length);
    }
  } finally {
    walk.destroy();
  }
  const ppl = (part: readonly PairScore[], key: "baseNll" | "tempLoraNll") =>
    Math.exp(part.reduce((s, p) => s + p[key], 0) / part.reduce((s, p) => s + p.tokens, 0));
  const quality = (key: "baseNll" | "tempLoraNll"): TranslationQuality => {
    const q: TranslationQuality = { ppl: ppl(scores, key) };
    if (translate) {
      const field = key === "baseNll" ? "baseTranslation" : "tempLoraTranslation";
      const hyps = scores.map((s) => s[field] ?? "");
      const refs = pairs.map((p) => p.target);
      q.chrf = corpusChrf(hyps, refs);
      q.bleu = corpusBleu(hyps, refs).score;
    }
    return q;
  };
  const n = Math.max(1, Math.min(options.buckets ?? 4, scores.length));
  const buckets = [];
  for (let b = 0; b < n; b++) {
    const part = scores.slice(
      Math.floor(b * scores.length / n),
      Math.floor((b + 1) * scores.length / n),
    );
    buckets.push({
      from: part[0].index,
      to: part[part.length - 1].index + 1,
      tokens: part.reduce((s, p) => s + p.tokens, 0),
      base: ppl(part, "baseNll"),
      templora: ppl(part, "tempLoraNll"),
    });
  }
  return {
    base: quality("baseNll"),
    templora: quality("tempLoraNll"),
    buckets,
    pairs: scores,
    seconds: (performance.now() - started) / 1000,
  };
}

/** One segment translated by {@link translateDocument}. */
export interface TranslatedSegment {
  /** Segment number (0-based) among the sources. */
  index: number;
  /** The source segment. */
  source: string;
  /** Its greedy translation. */
  translation: string;
  /** Mean training loss of the last step on (source, translation); undefined when none ran. */
  loss?: number;
}

/**
 * Translates a document segment by segment with Temp-Lora: each source line is translated
 * greedily after the pairs before it (in the window), then the adapter trains on the source and
 * its own translation (loss on the translation). `opening` pairs, when given, are the document's
 * start: the adapter trains on them first, as on a document translated so far.
 */
export async function* translateDocument(
  lm: TextModel,
  sources: readonly string[],
  opening: readonly SegmentPair[],
  settings: TempLoraSettings,
): AsyncGenerator<TranslatedSegment, void> {
  for (const s of sources) {
    if (/[\r\n]/.test(s)) throw new InvalidSettingError("a source segment holds a newline");
  }
  const tokenizer = lm.tokenizer;
  const doc = encodeParallelDocument(tokenizer, opening);
  const longestSource = Math.max(
    0,
    ...sources.map((s) => tokenizer.encode(`${s}\n`, { bos: false }).length),
  );
  const walk = await TestThenTrain.create(lm, doc.ids, settings, {
    bounds: doc.bounds,
    lossMask: doc.lossMask,
    maxChunkTokens: Math.min(
      lm.config.maxSeqLen,
      longestSource + translationLimit(longestSource, settings.window) + 2,
    ),
  });
  try {
    for (const chunk of walk.chunks) await walk.train(chunk);
    for (const [index, source] of sources.entries()) {
      const head = tokenizer.encode(`${source}\n`, { bos: false });
      const maxNew = translationLimit(head.length, settings.window);
      const ids = [...walk.ids, ...head];
      const at = walk.ids.length;
      const prompt = translationPrompt(
        ids,
        { index: -1, start: at, end: ids.length },
        ids.length,
        settings,
        maxNew,
      );
      const translation = await translateLine(lm, prompt, walk.adapter, maxNew);
      const pair = encodePair(tokenizer, source, translation);
      const chunk = walk.append(pair.ids, pair.ids.map((_, i) => i >= pair.sourceTokens));
      const { reports } = await walk.train(chunk);
      yield { index, source, translation, loss: reports[reports.length - 1]?.loss };
    }
  } finally {
    walk.destroy();
  }
}
