import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { TextModel } from "../model/text_model.ts";
import { DocumentFormatError } from "./jsonl.ts";
import { resolveTempLoraSettings } from "./settings.ts";
import {
  encodeParallelDocument,
  evaluateTranslation,
  parseSegmentPairs,
  translateDocument,
} from "./translate.ts";

/** The synthetic document of bench/cipher_pairs.jsonl (English and a word cipher). */
const CIPHER = parseSegmentPairs(
  await Deno.readTextFile(new URL("../../bench/cipher_pairs.jsonl", import.meta.url)),
);

Deno.test("segment pairs: JSON Lines of source and target, one line each", () => {
  const pairs = parseSegmentPairs(
    '{"source": "a b", "target": "c d"}\n\n{"source": "e", "target": "f"}',
  );
  assert.deepEqual(pairs, [{ source: "a b", target: "c d" }, { source: "e", target: "f" }]);
  assert.throws(
    () => parseSegmentPairs('{"source": "a", "target": "b"}\n{"source": "a\\nb", "target": "c"}'),
    (e: Error) =>
      e instanceof DocumentFormatError &&
      /^pairs line 2: a segment holds a newline/.test(e.message),
  );
  assert.throws(() => parseSegmentPairs('{"source": "a"}'), /"target" must be a non-empty string/);
});

gpuTest("parallel document: pairs in order, loss on the targets' tokens only", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const pairs = CIPHER.slice(0, 3);
  const doc = encodeParallelDocument(lm.tokenizer, pairs);
  assert.equal(doc.ids[0], lm.tokenizer.bosId);
  assert.equal(doc.bounds.length, 4);
  assert.equal(doc.bounds[3], doc.ids.length);
  for (const [k, p] of pairs.entries()) {
    const start = doc.bounds[k];
    const at = doc.targetStarts[k];
    const end = doc.bounds[k + 1];
    assert.equal(lm.decode(doc.ids.slice(at, end)).trim(), p.target);
    assert.equal(lm.decode(doc.ids.slice(k === 0 ? 1 : start, at)).trim(), p.source);
    for (let i = start; i < end; i++) assert.equal(doc.lossMask[i], i >= at, `token ${i}`);
  }
  const empty = encodeParallelDocument(lm.tokenizer, []);
  assert.deepEqual(empty.bounds, [0, 1]);
  lm.dispose();
});

gpuTest(
  "translation: the target's perplexity falls along the document with Temp-Lora only",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    try {
      const settings = resolveTempLoraSettings(lm.config, {
        window: 128,
        chunk: 32,
        epochs: 3,
        optimizer: { lr: 3e-3 },
      });
      const pairs = CIPHER.slice(0, 12);
      const seen: number[] = [];
      const r = await evaluateTranslation(lm, pairs, {
        buckets: 3,
        onPair: (p) => seen.push(p.index),
      }, settings);
      assert.deepEqual(seen, pairs.map((_, i) => i));
      const first = r.pairs[0];
      assert.equal(first.tempLoraNll, first.baseNll, "nothing trained before the first pair");
      assert.equal(first.tempLoraTranslation, first.baseTranslation);
      const [early, , late] = r.buckets;
      assert.deepEqual([early.from, late.to], [0, 12]);
      assert.ok(late.templora < early.templora / 2, JSON.stringify(r.buckets));
      assert.ok(late.templora < late.base / 4, JSON.stringify(r.buckets));
      assert.ok(r.templora.ppl < r.base.ppl);
      for (const p of r.pairs) assert.equal(typeof p.tempLoraTranslation, "string");
      assert.ok(r.templora.chrf! >= 0 && r.templora.chrf! <= 100);
      assert.ok(r.base.bleu! >= 0 && r.base.bleu! <= 100);
      const quick = await evaluateTranslation(
        lm,
        pairs.slice(0, 2),
        { translate: false },
        settings,
      );
      assert.equal(quick.pairs[0].baseTranslation, undefined);
      assert.equal(quick.base.chrf, undefined);
      assert.equal(quick.pairs[1].baseNll, r.pairs[1].baseNll, "the same context, the same score");
    } finally {
      lm.dispose();
    }
  },
);

gpuTest(
  "translateDocument: learns the opening, then each segment with its own translation",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    try {
      const settings = resolveTempLoraSettings(lm.config, { window: 128, chunk: 32, epochs: 1 });
      const sources = CIPHER.slice(8, 10).map((p) => p.source);
      const out = [];
      for await (const s of translateDocument(lm, sources, CIPHER.slice(0, 4), settings)) {
        out.push(
          s,
        );
      }
      assert.deepEqual(out.map((s) => [s.index, s.source]), [[0, sources[0]], [1, sources[1]]]);
      for (const s of out) {
        assert.equal(typeof s.translation, "string");
        assert.ok(!s.translation.includes("\n"));
        assert.ok(Number.isFinite(s.loss), "each (source, translation) is trained on");
      }
      // Without an opening the first segment is translated by the plain model.
      const alone = [];
      for await (const s of translateDocument(lm, sources.slice(0, 1), [], settings)) alone.push(s);
      assert.equal(alone.length, 1);
    } finally {
      lm.dispose();
    }
  },
);
