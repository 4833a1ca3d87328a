import assert from "node:assert/strict";
import { corpusBleu, corpusChrf, tokenize13a } from "./metrics.ts";

/**
 * Reference values computed once, offline, with sacreBLEU 2.6.0 (Python):
 * `sacrebleu.corpus_bleu(hyp, [ref])`, `sacrebleu.corpus_chrf(hyp, [ref])` and its Tokenizer13a,
 * all with their defaults.
 */
const SACREBLEU = {
  "corpora": {
    "simple": {
      "hyp": [
        "the cat sat on the mat",
        "a quick brown fox",
      ],
      "ref": [
        "the cat is on the mat",
        "the quick brown fox jumps",
      ],
      "bleu": 34.3763879968285,
      "bleu_precisions": [
        80.0,
        62.5,
        33.333333333333336,
        12.5,
      ],
      "bp": 0.9048374180359595,
      "chrf": 62.69316718733337,
    },
    "punctuation": {
      "hyp": [
        "Hello, world! It's 3.14 -- or 3,000 (approx.).",
        'Mr. Smith\'s dog-house & "yard"; fine?',
      ],
      "ref": [
        "Hello world! It is 3.14, or 3,000 (about).",
        'Mr. Smith\'s doghouse and "yard": fine.',
      ],
      "bleu": 17.268211401919455,
      "bleu_precisions": [
        68.0,
        34.78260869565217,
        14.285714285714286,
        2.6315789473684212,
      ],
      "bp": 1.0,
      "chrf": 55.538004129332265,
    },
    "numbers": {
      "hyp": [
        "In 1999-2000 there were 5-6 cats.",
        "Rates rose 4.5% to $1,200.",
      ],
      "ref": [
        "In 1999 - 2000 there were 5 - 6 cats.",
        "Rates rose 4.5 % to $ 1,200 .",
      ],
      "bleu": 100.00000000000004,
      "bleu_precisions": [
        100.0,
        100.0,
        100.0,
        100.0,
      ],
      "bp": 1.0,
      "chrf": 100.0,
    },
    "empty hypothesis": {
      "hyp": [
        "",
        "some words here",
      ],
      "ref": [
        "nothing matches",
        "some words here too",
      ],
      "bleu": 0.0,
      "bleu_precisions": [
        100.0,
        100.0,
        100.0,
        0.0,
      ],
      "bp": 0.36787944117144233,
      "chrf": 47.35324873526835,
    },
    "no match": {
      "hyp": [
        "xyz",
      ],
      "ref": [
        "abc def",
      ],
      "bleu": 0.0,
      "bleu_precisions": [
        0.0,
        0.0,
        0.0,
        0.0,
      ],
      "bp": 0.36787944117144233,
      "chrf": 0.0,
    },
    "longer than reference": {
      "hyp": [
        "the the the the the the the",
        "once upon a time there was a little girl named lily",
      ],
      "ref": [
        "the cat",
        "once upon a time there was a girl called lily",
      ],
      "bleu": 39.684404630431075,
      "bleu_precisions": [
        55.55555555555556,
        37.5,
        35.714285714285715,
        33.333333333333336,
      ],
      "bp": 1.0,
      "chrf": 64.04684771882856,
    },
    "unicode": {
      "hyp": [
        "Über die Brücke gingen zwölf Männer — schnell.",
        "naïve café résumé",
      ],
      "ref": [
        "Über die Brücke liefen zwölf Männer, schnell.",
        "naive cafe resume",
      ],
      "bleu": 22.20375302942354,
      "bleu_precisions": [
        58.333333333333336,
        40.0,
        12.5,
        8.333333333333334,
      ],
      "bp": 1.0,
      "chrf": 61.9489877406544,
    },
    "identical": {
      "hyp": [
        "a b c d e f",
        "the same sentence here.",
      ],
      "ref": [
        "a b c d e f",
        "the same sentence here.",
      ],
      "bleu": 100.00000000000004,
      "bleu_precisions": [
        100.0,
        100.0,
        100.0,
        100.0,
      ],
      "bp": 1.0,
      "chrf": 100.0,
    },
    "html entities": {
      "hyp": [
        "a &amp; b &lt; c",
        "x-\ny",
      ],
      "ref": [
        "a & b < c",
        "xy",
      ],
      "bleu": 100.00000000000004,
      "bleu_precisions": [
        100.0,
        100.0,
        100.0,
        100.0,
      ],
      "bp": 1.0,
      "chrf": 17.0051890289103,
    },
  },
  "tokenize13a": {
    "Hello, world! It's 3.14 -- or 3,000 (approx.).": [
      "Hello",
      ",",
      "world",
      "!",
      "It's",
      "3.14",
      "--",
      "or",
      "3,000",
      "(",
      "approx",
      ".",
      ")",
      ".",
    ],
    "In 1999-2000: 5-6 cats; a/b {x} [y] `z` ~q @r #s $t %u ^v &w *y +z =a |b \\c": [
      "In",
      "1999",
      "-",
      "2000",
      ":",
      "5",
      "-",
      "6",
      "cats",
      ";",
      "a",
      "/",
      "b",
      "{",
      "x",
      "}",
      "[",
      "y",
      "]",
      "`",
      "z",
      "`",
      "~",
      "q",
      "@",
      "r",
      "#",
      "s",
      "$",
      "t",
      "%",
      "u",
      "^",
      "v",
      "&",
      "w",
      "*",
      "y",
      "+",
      "z",
      "=",
      "a",
      "|",
      "b",
      "\\",
      "c",
    ],
  },
} as const;

Deno.test("tokenize13a splits as sacreBLEU's 13a tokenizer does", () => {
  for (const [line, tokens] of Object.entries(SACREBLEU.tokenize13a)) {
    assert.deepEqual(tokenize13a(line), tokens, line);
  }
});

Deno.test("corpus BLEU and chrF match sacreBLEU's on every corpus", () => {
  for (const [name, c] of Object.entries(SACREBLEU.corpora)) {
    const bleu = corpusBleu(c.hyp, c.ref);
    const close = (a: number, b: number, what: string) =>
      assert.ok(
        Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)),
        `${name} ${what}: ${a} vs ${b}`,
      );
    close(bleu.score, c.bleu, "BLEU");
    close(bleu.bp, c.bp, "brevity penalty");
    c.bleu_precisions.forEach((p, i) => close(bleu.precisions[i], p, `precision ${i + 1}`));
    close(corpusChrf(c.hyp, c.ref), c.chrf, "chrF");
  }
});

Deno.test("corpus metrics: identical text scores 100, mismatched corpora are refused", () => {
  const text = ["Once upon a time, there was a little girl named Lily."];
  assert.ok(Math.abs(corpusBleu(text, text).score - 100) < 1e-9);
  assert.ok(Math.abs(corpusChrf(text, text) - 100) < 1e-9);
  assert.throws(() => corpusBleu(["a"], ["a", "b"]), /1 hypotheses for 2 references/);
  assert.throws(() => corpusChrf([], ["a"]), /0 hypotheses for 1 references/);
});
