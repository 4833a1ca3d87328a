import type { Tokenizer } from "../formats/tokenizer.ts";
import { InvalidSettingError } from "../model/errors.ts";
import type { TextModel } from "../model/text_model.ts";
import { DocumentFormatError, parseStringRecords } from "./jsonl.ts";
import type { TempLoraSettings } from "./settings.ts";
import { deltaBounds, TestThenTrain, windowTokens } from "./test_then_train.ts";

/** One fact of a recall benchmark: stated once at the start of a text, asked much later. */
export interface RecallFact {
  /** The sentence that states the fact; it contains the answer. */
  statement: string;
  /** The words after which the answer should come (for example "The dog's name was"). */
  query: string;
  /** The answer, as it appears in the statement. */
  answer: string;
  /**
   * Another answer with as many words, stated instead of the true one in the control text. When
   * absent, {@link resolveDecoys} takes the answer of another fact with as many words.
   */
  decoy?: string;
}

/** A fact whose decoy is settled. */
export interface ResolvedFact extends RecallFact {
  /** The control's answer. */
  decoy: string;
}

/** Words of a phrase (runs of non-space). */
function words(text: string): number {
  return text.trim().split(/\s+/).filter(Boolean).length;
}

/**
 * Facts from JSON Lines: one object per line, `{"statement", "query", "answer"}` and optionally
 * `"decoy"` (blank lines are skipped). The statement must contain the answer, and a decoy must
 * differ from the answer and have as many words; a {@link DocumentFormatError} names the line.
 */
export function parseRecallFacts(jsonl: string): RecallFact[] {
  return parseStringRecords(
    jsonl,
    "facts",
    ["statement", "query", "answer"],
    ["decoy"],
    (f) => {
      if (!f.statement.includes(f.answer)) return "the statement does not contain the answer";
      if (f.decoy === undefined) return undefined;
      if (f.decoy === f.answer) return "the decoy is the answer";
      if (words(f.decoy) !== words(f.answer)) {
        return `the decoy has ${words(f.decoy)} words, the answer ${words(f.answer)}`;
      }
    },
  );
}

/**
 * Each fact with a decoy: its own, or else the answer of the next fact (in file order, wrapping
 * around) whose answer has as many words and differs; a {@link DocumentFormatError} when there
 * is none.
 */
export function resolveDecoys(facts: readonly RecallFact[]): ResolvedFact[] {
  return facts.map((fact, i) => {
    if (fact.decoy !== undefined) return { ...fact, decoy: fact.decoy };
    for (let k = 1; k < facts.length; k++) {
      const other = facts[(i + k) % facts.length].answer;
      if (other !== fact.answer && words(other) === words(fact.answer)) {
        return { ...fact, decoy: other };
      }
    }
    throw new DocumentFormatError(
      "facts",
      0,
      `no decoy for "${fact.answer}": give it one, or another fact an answer of as many words`,
    );
  });
}

/** The statement with its last occurrence of the answer replaced by the decoy. */
function withDecoy(fact: ResolvedFact): string {
  const at = fact.statement.lastIndexOf(fact.answer);
  return fact.statement.slice(0, at) + fact.decoy + fact.statement.slice(at + fact.answer.length);
}

/**
 * The ids of a query and of its answer as they follow it: the answer's ids are what encoding
 * "query answer" adds after the query's own (so merges at the seam are the text's), or, when
 * the query's ids are not a prefix of that, the answer encoded alone.
 */
export function queryIds(
  tokenizer: Tokenizer,
  query: string,
  answer: string,
): { query: number[]; answer: number[] } {
  const q = tokenizer.encode(query, { bos: false });
  const qa = tokenizer.encode(`${query} ${answer}`, { bos: false });
  const prefix = q.length < qa.length && q.every((id, i) => qa[i] === id);
  const a = prefix ? qa.slice(q.length) : tokenizer.encode(answer, { bos: false });
  if (q.length === 0 || a.length === 0) {
    throw new DocumentFormatError("facts", 0, `"${query}" / "${answer}" encode to no tokens`);
  }
  return { query: q, answer: a };
}

/** How one condition did on one fact at one distance. */
export interface FactScore {
  /** Mean negative log-likelihood (nats) per answer token. */
  nll: number;
  /** Whether greedy decoding after the query writes the answer's tokens exactly. */
  exact: boolean;
  /** What greedy decoding ranks first at each answer token, given the true ones before it. */
  predicted: string;
}

/** A condition's result over all facts at one distance. */
export interface RecallSummary {
  /** Mean over the facts of the answer's NLL per token. */
  nll: number;
  /** Fraction of facts recalled exactly. */
  exact: number;
}

/** The four conditions of a recall measurement. */
export interface RecallConditions<T> {
  /** The plain model, the window's usual context. */
  base: T;
  /** The adapter trained on the text up to the query. */
  templora: T;
  /** The adapter trained on the same text with decoys stated instead of the answers. */
  control: T;
  /** The plain model with the statements placed inside the window. */
  in_window: T;
}

/** Averages at one distance. */
export interface RecallAtDistance extends RecallConditions<RecallSummary> {
  /** Tokens between the last statement and the query. */
  distance: number;
}

/** One fact's scores. */
export interface FactRecall {
  /** The fact, with the decoy the control used. */
  fact: ResolvedFact;
  /** Tokens of the query. */
  queryTokens: number;
  /** Tokens of the answer (the scored ones). */
  answerTokens: number;
  /** Its scores at each distance. */
  distances: (RecallConditions<FactScore> & { distance: number })[];
}

/** Result of {@link evaluateRecall}. */
export interface RecallResult {
  /** Averages over the facts, one entry per distance (ascending). */
  distances: RecallAtDistance[];
  /** Every fact's scores. */
  facts: FactRecall[];
  /** Tokens of the statements in the text, BOS included. */
  statementTokens: number;
  /** Tokens of the statements in the control text (with the decoys), BOS included. */
  controlStatementTokens: number;
  /** Wall-clock seconds of the whole measurement. */
  seconds: number;
}

/** What {@link evaluateRecall} measures. */
export interface RecallOptions {
  /** Tokens between the last statement and each query (integers >= 1). */
  distances: readonly number[];
  /** Called after each chunk the adapter trained on, in each of the two walks. */
  onChunk?: (walk: "templora" | "control", done: number, total: number) => void;
}

type Scored = RecallConditions<FactScore | undefined>;

/**
 * Recall beyond the window. The statements open the text, then `book` follows from its start;
 * the adapter walks the text test-then-train as in the PG19 evaluation ({@link TestThenTrain}),
 * and at each distance (tokens after the last statement) every fact's query is scored in the
 * window's usual context (the last W − |query| − |answer| tokens before that point, with the
 * settings' sinks), on the answer's tokens only: (a) by the plain model, (b) with the adapter,
 * (c) with an adapter trained the same way on the text with decoys stated instead of the
 * answers (the control: the same style adaptation, the wrong facts), and (d) by the plain model
 * with the statements inside the window (the text's start, then as much of the text before the
 * query as fits). "Exact" means greedy decoding after the query writes the answer's tokens.
 */
export async function evaluateRecall(
  lm: TextModel,
  book: string,
  facts: readonly RecallFact[],
  options: RecallOptions,
  settings: TempLoraSettings,
): Promise<RecallResult> {
  const started = performance.now();
  const distances = [...new Set(options.distances)].sort((a, b) => a - b);
  if (distances.length === 0) throw new InvalidSettingError("distances: none given");
  for (const d of distances) {
    if (!Number.isInteger(d) || d < 1) {
      throw new InvalidSettingError(`distances must be integers >= 1, got ${d}`);
    }
  }
  const resolved = resolveDecoys(facts);
  const tokenizer = lm.tokenizer;
  const W = settings.window;
  const asked = resolved.map((f) => queryIds(tokenizer, f.query, f.answer));
  for (const [i, q] of asked.entries()) {
    if (q.query.length + q.answer.length >= W) {
      throw new InvalidSettingError(
        `window ${W} cannot hold fact ${i + 1}'s query and answer ` +
          `(${q.query.length + q.answer.length} tokens) with any context`,
      );
    }
  }
  const maxDistance = distances[distances.length - 1];
  const bookIds = encodePrefix(tokenizer, book, maxDistance);
  const encodeStatements = (text: string) => tokenizer.encode(text, { bos: true });
  const trueStatements = encodeStatements(resolved.map((f) => f.statement).join(" "));
  const decoyStatements = encodeStatements(resolved.map(withDecoy).join(" "));
  for (const q of asked) {
    const fill = W - trueStatements.length - q.query.length - q.answer.length;
    if (fill < 0) {
      throw new InvalidSettingError(
        `window ${W} cannot hold the statements (${trueStatements.length} tokens) with a query ` +
          `and its answer (${q.query.length + q.answer.length}): use fewer facts or a wider window`,
      );
    }
  }
  const scores: Scored[][] = distances.map(() => resolved.map(() => emptyScored()));

  /** One fact's score on a sequence whose last answer.length tokens are the answer. */
  const scoreAnswer = async (
    walk: TestThenTrain,
    context: readonly number[],
    q: { query: number[]; answer: number[] },
    withAdapter: boolean,
  ): Promise<FactScore> => {
    const tokens = [...context, ...q.query, ...q.answer];
    const r = await walk.score(tokens, tokens.length - q.answer.length, withAdapter, {
      predictions: true,
    });
    const predicted = r.predicted ?? [];
    return {
      nll: r.loss,
      exact: predicted.every((id, i) => id === q.answer[i]),
      predicted: tokenizer.decode(predicted),
    };
  };

  const walkText = async (kind: "templora" | "control", statements: number[]) => {
    const ids = [...statements, ...bookIds.slice(0, maxDistance)];
    const points = distances.map((d) => statements.length + d);
    // Chunks of Δ, also cut at each query's point, so every query follows training on all the
    // text before it (and a distance scores the same alone or among others).
    const bounds = [...new Set([...deltaBounds(ids.length, settings.chunk), ...points])]
      .sort((a, b) => a - b);
    const walk = await TestThenTrain.create(lm, ids, settings, { bounds });
    const scoreAt = async (j: number) => {
      const p = points[j];
      for (const [i, q] of asked.entries()) {
        const budget = W - q.query.length - q.answer.length;
        const context = windowTokens(ids, p, p, budget, settings.sink).tokens;
        const s = scores[j][i];
        s[kind] = await scoreAnswer(walk, context, q, true);
        if (kind === "control") continue;
        s.base = await scoreAnswer(walk, context, q, false);
        const fill = budget - statements.length;
        s.in_window = await scoreAnswer(
          walk,
          [...statements, ...ids.slice(p - fill, p)],
          q,
          false,
        );
      }
    };
    try {
      let j = 0;
      for (const chunk of walk.chunks) {
        while (j < points.length && points[j] <= chunk.start) await scoreAt(j++);
        await walk.train(chunk);
        options.onChunk?.(kind, chunk.index + 1, walk.chunks.length);
      }
      while (j < points.length) await scoreAt(j++);
    } finally {
      walk.destroy();
    }
  };
  await walkText("templora", trueStatements);
  await walkText("control", decoyStatements);

  const conditions = ["base", "templora", "control", "in_window"] as const;
  const complete = (s: Scored) => s as RecallConditions<FactScore>;
  return {
    distances: distances.map((distance, j) => {
      const at = scores[j].map(complete);
      const summary = (c: typeof conditions[number]): RecallSummary => ({
        nll: at.reduce((sum, s) => sum + s[c].nll, 0) / at.length,
        exact: at.filter((s) => s[c].exact).length / at.length,
      });
      return {
        distance,
        base: summary("base"),
        templora: summary("templora"),
        control: summary("control"),
        in_window: summary("in_window"),
      };
    }),
    facts: resolved.map((fact, i) => ({
      fact,
      queryTokens: asked[i].query.length,
      answerTokens: asked[i].answer.length,
      distances: distances.map((distance, j) => ({ distance, ...complete(scores[j][i]) })),
    })),
    statementTokens: trueStatements.length,
    controlStatementTokens: decoyStatements.length,
    seconds: (performance.now() - started) / 1000,
  };
}

function emptyScored(): Scored {
  return { base: undefined, templora: undefined, control: undefined, in_window: undefined };
}

/**
 * The ids of the text's first `count` tokens (no BOS), encoding only as much of its start as
 * needed; an {@link InvalidSettingError} when the whole text is shorter.
 */
function encodePrefix(tokenizer: Tokenizer, text: string, count: number): number[] {
  for (let chars = count * 6;; chars *= 2) {
    const whole = chars >= text.length;
    const cut = whole ? text : text.slice(0, text.lastIndexOf(" ", chars) + 1 || chars);
    const ids = tokenizer.encode(cut, { bos: false });
    // The last few tokens of a cut may merge differently in the full text: keep a margin.
    if (ids.length >= count + (whole ? 0 : 16)) return ids.slice(0, count);
    if (whole) {
      throw new InvalidSettingError(
        `the text has ${ids.length} tokens; a distance of ${count} needs ${count}`,
      );
    }
  }
}
