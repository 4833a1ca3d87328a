import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { InvalidSettingError } from "../model/errors.ts";
import { TextModel } from "../model/text_model.ts";
import { DocumentFormatError } from "./jsonl.ts";
import { evaluateRecall, parseRecallFacts, queryIds, resolveDecoys } from "./recall.ts";
import { resolveTempLoraSettings } from "./settings.ts";

const FACTS = [
  { statement: "The dog was called Biscuit.", query: "The dog was called", answer: "Biscuit" },
  { statement: "The cat was called Mittens.", query: "The cat was called", answer: "Mittens" },
  {
    statement: "The boat had a purple sail.",
    query: "The boat had a",
    answer: "purple sail",
    decoy: "white flag",
  },
];
const JSONL = FACTS.map((f) => JSON.stringify(f)).join("\n\n") + "\n";

Deno.test("recall facts: JSON Lines, blank lines skipped, problems named by line", () => {
  assert.deepEqual(parseRecallFacts(JSONL), FACTS);
  const bad = (text: string, pattern: RegExp) => {
    assert.throws(() => parseRecallFacts(text), (e: Error) => {
      assert.ok(e instanceof DocumentFormatError, String(e));
      assert.match(e.message, pattern);
      return true;
    });
  };
  const line = (o: Record<string, unknown>) => JSON.stringify(o);
  bad(`${line(FACTS[0])}\n[1, 2]`, /^facts line 2: not a JSON object/);
  bad(`${line(FACTS[0])}\n{"statement": `, /^facts line 2: not a JSON object/);
  bad(line({ ...FACTS[0], answer: "Rex" }), /line 1: the statement does not contain the answer/);
  bad(line({ ...FACTS[0], answer: 3 }), /"answer" must be a non-empty string/);
  bad(line({ ...FACTS[0], query: " " }), /"query" must be a non-empty string/);
  bad(line({ ...FACTS[0], hint: "x" }), /unknown key "hint"/);
  bad(line({ ...FACTS[2], decoy: "red" }), /the decoy has 1 words, the answer 2/);
  bad(line({ ...FACTS[0], decoy: "Biscuit" }), /the decoy is the answer/);
  bad("\n\n", /^facts: empty/);
});

Deno.test("recall decoys: a fact's own, else the next answer with as many words", () => {
  const resolved = resolveDecoys(FACTS);
  assert.deepEqual(resolved.map((f) => f.decoy), ["Mittens", "Biscuit", "white flag"]);
  assert.throws(
    () => resolveDecoys([FACTS[0], { ...FACTS[2], decoy: undefined }]),
    /no decoy for "Biscuit"/,
  );
});

gpuTest("recall: queries and answers split where the text's own tokens split", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  for (const f of FACTS) {
    const { query, answer } = queryIds(lm.tokenizer, f.query, f.answer);
    assert.deepEqual([...query, ...answer], lm.encode(`${f.query} ${f.answer}`, false));
    assert.equal(lm.decode([...query, ...answer]).trim(), `${f.query} ${f.answer}`);
    assert.ok(answer.length >= 1);
  }
  lm.dispose();
});

gpuTest(
  "recall: without training the three walks agree; with it the adapter remembers",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    try {
      // The "book": the model's own greedy story, long enough for the farthest query.
      const book = (await lm.complete("", { maxTokens: 300, temperature: 0, banEos: true })).text;
      const distances = [256, 192];
      const off = resolveTempLoraSettings(lm.config, { window: 128, chunk: 32, epochs: 0 });
      const still = await evaluateRecall(lm, book, FACTS, { distances }, off);
      assert.deepEqual(still.distances.map((d) => d.distance), [192, 256]);
      for (const d of still.distances) {
        assert.equal(d.templora.nll, d.base.nll, "a fresh adapter changes nothing");
        assert.equal(d.control.nll, d.base.nll, "the book before the query is the same");
        assert.notEqual(d.in_window.nll, d.base.nll, "the statements in the window change it");
      }
      const on = resolveTempLoraSettings(lm.config, {
        window: 128,
        chunk: 32,
        epochs: 2,
        optimizer: { lr: 4e-3 },
      });
      const walks: string[] = [];
      const r = await evaluateRecall(lm, book, FACTS, {
        distances: [192],
        onChunk: (walk, done, total) => walks.push(`${walk} ${done}/${total}`),
      }, on);
      for (const walk of ["templora", "control"]) {
        const n = Math.ceil(
          ((walk === "templora" ? r.statementTokens : r.controlStatementTokens) + 192) / 32,
        );
        assert.ok(
          walks.includes(`${walk} 1/${n}`) && walks.includes(`${walk} ${n}/${n}`),
          walks.join(),
        );
      }
      assert.equal(r.facts.length, 3);
      assert.equal(r.facts[0].fact.decoy, "Mittens");
      assert.ok(r.controlStatementTokens > 0 && r.statementTokens > 0);
      for (const [j, d] of r.distances.entries()) {
        // The plain model's scores do not depend on what the adapter learnt.
        assert.equal(d.base.nll, still.distances[j].base.nll);
        assert.equal(d.in_window.nll, still.distances[j].in_window.nll);
        for (const key of ["base", "templora", "control", "in_window"] as const) {
          const perFact = r.facts.map((f) => f.distances[j][key]);
          const mean = perFact.reduce((s, x) => s + x.nll, 0) / perFact.length;
          assert.ok(Math.abs(d[key].nll - mean) < 1e-9);
          assert.equal(d[key].exact, perFact.filter((x) => x.exact).length / perFact.length);
          for (const [i, x] of perFact.entries()) {
            const answer = lm.decode(
              queryIds(lm.tokenizer, FACTS[i].query, FACTS[i].answer).answer,
            );
            assert.equal(x.exact, x.predicted === answer, `${key}: ${x.predicted}`);
          }
        }
      }
      // Trained on the true statements, the adapter predicts the true answers better than the
      // one trained on the decoys, a window and a half after the statements.
      for (const d of r.distances) {
        assert.ok(d.templora.nll < d.control.nll, JSON.stringify(d));
      }
      const narrow = resolveTempLoraSettings(lm.config, { window: 48, chunk: 12 });
      await assert.rejects(
        () => evaluateRecall(lm, book, FACTS, { distances }, narrow),
        (e: Error) =>
          e instanceof InvalidSettingError && /cannot hold the statements/.test(e.message),
      );
      await assert.rejects(
        () => evaluateRecall(lm, book, FACTS, { distances: [5000] }, off),
        /a distance of 5000 needs 5000/,
      );
    } finally {
      lm.dispose();
    }
  },
);
