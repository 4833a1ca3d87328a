/**
 * Corpus-level BLEU and chrF with sacreBLEU's default definitions (its 2.x releases): BLEU on
 * the "13a" tokenization, n-grams up to 4, the closest reference length for the brevity penalty
 * and "exp" smoothing; chrF on character 6-grams with whitespace removed, beta 2, averaging
 * precision and recall over the orders both sides have. One reference per segment.
 */

/** The text of a segment split as sacreBLEU's "13a" tokenizer (mteval-v13a) splits it. */
export function tokenize13a(line: string): string[] {
  let s = line.replaceAll("<skipped>", "").replaceAll("-\n", "").replaceAll("\n", " ");
  if (s.includes("&")) {
    s = s.replaceAll("&quot;", '"').replaceAll("&amp;", "&").replaceAll("&lt;", "<")
      .replaceAll("&gt;", ">");
  }
  s = ` ${s} `;
  // Punctuation and symbols become words of their own.
  s = s.replace(/([{-~[-` -&(-+:-@\/])/g, " $1 ");
  // Periods and commas too, unless between digits.
  s = s.replace(/([^0-9])([.,])/g, "$1 $2 ");
  s = s.replace(/([.,])([^0-9])/g, " $1 $2");
  // A dash after a digit.
  s = s.replace(/([0-9])(-)/g, "$1 $2 ");
  return splitWhitespace(s);
}

function splitWhitespace(s: string): string[] {
  return s.split(/\s+/).filter((w) => w.length > 0);
}

/** Counts of the n-grams of `items` (joined with a separator no item holds). */
function ngramCounts(items: readonly string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= items.length; i++) {
    const key = items.slice(i, i + n).join("\u0000");
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** A corpus BLEU score and what it is made of. */
export interface BleuScore {
  /** BLEU, 0..100. */
  score: number;
  /** Modified n-gram precisions (1..4-grams), 0..100, smoothed. */
  precisions: number[];
  /** Brevity penalty. */
  bp: number;
  /** Words in the hypotheses. */
  hypLength: number;
  /** Words in the references. */
  refLength: number;
}

function checkCorpus(hypotheses: readonly string[], references: readonly string[]): void {
  if (hypotheses.length !== references.length) {
    throw new RangeError(
      `${hypotheses.length} hypotheses for ${references.length} references`,
    );
  }
}

/** Corpus BLEU of `hypotheses` against one reference each (sacreBLEU's defaults). */
export function corpusBleu(
  hypotheses: readonly string[],
  references: readonly string[],
): BleuScore {
  checkCorpus(hypotheses, references);
  const order = 4;
  const correct = new Array(order).fill(0);
  const total = new Array(order).fill(0);
  let hypLength = 0;
  let refLength = 0;
  hypotheses.forEach((hyp, s) => {
    const h = tokenize13a(hyp);
    const r = tokenize13a(references[s]);
    hypLength += h.length;
    refLength += r.length;
    for (let n = 1; n <= order; n++) {
      const refCounts = ngramCounts(r, n);
      for (const [gram, count] of ngramCounts(h, n)) {
        total[n - 1] += count;
        correct[n - 1] += Math.min(count, refCounts.get(gram) ?? 0);
      }
    }
  });
  const bp = hypLength < refLength ? (hypLength > 0 ? Math.exp(1 - refLength / hypLength) : 0) : 1;
  const precisions = new Array(order).fill(0);
  if (!correct.some((c) => c > 0)) {
    return { score: 0, precisions, bp, hypLength, refLength };
  }
  let smooth = 1;
  for (let n = 0; n < order; n++) {
    if (total[n] === 0) break;
    if (correct[n] === 0) {
      smooth *= 2;
      precisions[n] = 100 / (smooth * total[n]);
    } else {
      precisions[n] = 100 * correct[n] / total[n];
    }
  }
  // A zero precision (an order with no n-grams at all) counts as log 0 and ends at 0.
  const logs = precisions.map((p) => (p === 0 ? -9999999999 : Math.log(p)));
  const score = bp * Math.exp(logs.reduce((a, b) => a + b, 0) / order);
  return { score, precisions, bp, hypLength, refLength };
}

/** Corpus chrF (character 6-grams, beta 2) of `hypotheses` against one reference each. */
export function corpusChrf(hypotheses: readonly string[], references: readonly string[]): number {
  checkCorpus(hypotheses, references);
  const order = 6;
  const beta = 2;
  // Per order: characters n-grams in the hypotheses, in the references, matched.
  const stats = Array.from({ length: order }, () => [0, 0, 0]);
  hypotheses.forEach((hyp, s) => {
    const h = Array.from(splitWhitespace(hyp).join(""));
    const r = Array.from(splitWhitespace(references[s]).join(""));
    for (let n = 1; n <= order; n++) {
      const refCounts = ngramCounts(r, n);
      let hypCount = 0;
      let matched = 0;
      let refCount = 0;
      for (const count of refCounts.values()) refCount += count;
      for (const [gram, count] of ngramCounts(h, n)) {
        hypCount += count;
        matched += Math.min(count, refCounts.get(gram) ?? 0);
      }
      const st = stats[n - 1];
      st[0] += refCounts.size > 0 ? hypCount : 0;
      st[1] += refCount;
      st[2] += matched;
    }
  });
  let precision = 0;
  let recall = 0;
  let effective = 0;
  for (const [nHyp, nRef, nMatch] of stats) {
    if (nHyp > 0 && nRef > 0) {
      precision += nMatch / nHyp;
      recall += nMatch / nRef;
      effective++;
    }
  }
  if (effective === 0) return 0;
  precision /= effective;
  recall /= effective;
  if (precision + recall === 0) return 0;
  const f = beta * beta;
  return 100 * (1 + f) * precision * recall / (f * precision + recall);
}
