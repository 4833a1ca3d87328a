/**
 * Writes the synthetic parallel document of the translation benchmark: simple English sentences
 * (a children's-story vocabulary stories260K knows) and the same sentences under a fixed
 * word-substitution cipher (every word replaced by a made-up word, the same one each time), which
 * a model can learn only from the document itself.
 *
 *   deno run -A bench/cipher_pairs.ts [--seed N] [--pairs N] [--more N]
 *
 * writes bench/cipher_pairs.jsonl (the document: --pairs pairs), bench/cipher_more.jsonl (--more
 * further pairs), and their two sides one sentence a line: bench/cipher_source.txt (English, for
 * `deno task translate --source`) and bench/cipher_reference.txt (the cipher, for --references).
 */
import { parseArgs } from "node:util";
import { Rng } from "../src/core/random.ts";

const SUBJECTS = ["Lily", "Tom", "the dog", "the cat", "the little bird", "Mom", "the king", "Ben"];
const VERBS = ["saw", "found", "liked", "wanted", "took", "gave", "made", "lost"];
const OBJECTS = [
  "a big ball",
  "a red apple",
  "the old box",
  "a small boat",
  "a warm hat",
  "the shiny key",
  "a new toy",
  "the green tree",
];
const PLACES = [
  "in the park",
  "at home",
  "by the river",
  "under the bed",
  "on the hill",
  "after lunch",
];

/** A sentence from the little grammar. */
function sentence(rng: Rng): string {
  const pick = (list: readonly string[]) => list[rng.int(list.length)];
  const s = pick(SUBJECTS);
  const text = rng.int(4) === 0
    ? `${s} was happy ${pick(PLACES)}.`
    : `${s} ${pick(VERBS)} ${pick(OBJECTS)} ${pick(PLACES)}.`;
  return text[0].toUpperCase() + text.slice(1);
}

/** A made-up word of two or three consonant-vowel syllables. */
function codeWord(rng: Rng): string {
  const consonants = "bdfgklmnprstvz";
  const vowels = "aeiou";
  let w = "";
  for (let i = 0, n = 2 + rng.int(2); i < n; i++) {
    w += consonants[rng.int(consonants.length)] + vowels[rng.int(vowels.length)];
  }
  return w;
}

/** The cipher: each distinct word (case aside) gets its own code word. */
function cipher(rng: Rng): (text: string) => string {
  const words = new Set(
    [...SUBJECTS, ...VERBS, ...OBJECTS, ...PLACES, "was happy"].flatMap((p) =>
      p.toLowerCase().split(" ")
    ),
  );
  const table = new Map<string, string>();
  const used = new Set<string>();
  for (const word of [...words].sort()) {
    let code = codeWord(rng);
    while (used.has(code)) code = codeWord(rng);
    used.add(code);
    table.set(word, code);
  }
  return (text) =>
    text.replace(/[A-Za-z]+/g, (w) => {
      const code = table.get(w.toLowerCase())!;
      return w[0] === w[0].toUpperCase() ? code[0].toUpperCase() + code.slice(1) : code;
    });
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      seed: { type: "string", default: "13" },
      pairs: { type: "string", default: "64" },
      more: { type: "string", default: "16" },
    },
  });
  const rng = new Rng(Number(values.seed));
  const encode = cipher(rng);
  const lines = (n: number) =>
    Array.from({ length: n }, () => {
      const source = sentence(rng);
      return { source, target: encode(source) };
    });
  const doc = lines(Number(values.pairs));
  const more = lines(Number(values.more));
  const jsonl = (pairs: { source: string; target: string }[]) =>
    pairs.map((p) => JSON.stringify(p)).join("\n") + "\n";
  const here = (name: string) => new URL(name, import.meta.url);
  await Deno.writeTextFile(here("cipher_pairs.jsonl"), jsonl(doc));
  await Deno.writeTextFile(here("cipher_more.jsonl"), jsonl(more));
  await Deno.writeTextFile(here("cipher_source.txt"), more.map((p) => p.source).join("\n") + "\n");
  await Deno.writeTextFile(
    here("cipher_reference.txt"),
    more.map((p) => p.target).join("\n") + "\n",
  );
  console.log(`${doc.length} + ${more.length} pairs written (seed ${values.seed})`);
}
