import assert from "node:assert/strict";
import { sharedDataTest, sharedPath } from "../kernels_test/test_data.ts";

const BOOK = "data/books/melville-moby-dick.txt";

function recall(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "examples/recall.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

const FACTS = [
  { statement: "The dog was called Biscuit.", query: "The dog was called", answer: "Biscuit" },
  { statement: "The cat was called Mittens.", query: "The cat was called", answer: "Mittens" },
].map((f) => JSON.stringify(f)).join("\n");

sharedDataTest({
  name: "recall --json: four conditions at each distance, per-fact details, settings, a plot",
  needs: [BOOK],
  async fn() {
    const facts = await Deno.makeTempFile({ suffix: ".jsonl" });
    const plot = await Deno.makeTempFile({ suffix: ".svg" });
    await Deno.writeTextFile(facts, FACTS);
    const out = await recall([
      "--text-file",
      sharedPath(BOOK),
      "--facts",
      facts,
      "--distance",
      "200,150",
      "--window",
      "128",
      "--chunk",
      "32",
      "--epochs",
      "1",
      "--sink",
      "2",
      "--json",
      "--plot",
      plot,
    ]);
    assert.equal(out.code, 0, text(out.stderr));
    const r = JSON.parse(text(out.stdout));
    assert.deepEqual(r.distances.map((d: { distance: number }) => d.distance), [150, 200]);
    for (const d of r.distances) {
      assert.deepEqual(Object.keys(d), ["distance", "base", "templora", "control", "in_window"]);
      for (const key of ["base", "templora", "control", "in_window"]) {
        assert.ok(d[key].nll > 0 && Number.isFinite(d[key].nll), key);
        assert.ok(d[key].exact >= 0 && d[key].exact <= 1, key);
      }
    }
    assert.equal(r.facts.length, 2);
    assert.equal(r.facts[0].answer, "Biscuit");
    assert.equal(r.facts[0].decoy, "Mittens", "a missing decoy is another fact's answer");
    assert.ok(r.facts[1].answer_tokens >= 1);
    assert.equal(r.facts[1].distances[1].distance, 200);
    assert.equal(typeof r.facts[1].distances[1].control.predicted, "string");
    assert.equal(r.settings.facts, 2);
    assert.deepEqual(r.settings.distances, [150, 200]);
    assert.equal(r.settings.templora.window, 128);
    assert.equal(r.settings.templora.epochs, 1);
    assert.equal(r.settings.templora.sink, 2);
    const svg = await Deno.readTextFile(plot);
    assert.equal(svg.match(/<polyline /g)?.length, 4);
    assert.match(svg, /answer NLL per token/);
    await Deno.remove(facts);
    await Deno.remove(plot);
  },
});

Deno.test("recall: a missing --facts or a bad --distance is a usage error (exit 2)", async () => {
  const missing = await recall(["--text-file", "book.txt"]);
  assert.equal(missing.code, 2);
  assert.match(text(missing.stderr), /--facts is required/);
  const bad = await recall(["--text-file", "book.txt", "--facts", "f.jsonl", "--distance", "9,x"]);
  assert.equal(bad.code, 2);
  assert.match(text(bad.stderr), /--distance must be integers >= 1 separated by commas/);
});

Deno.test("recall: a malformed facts file is named with its line (exit 1)", async () => {
  const facts = await Deno.makeTempFile({ suffix: ".jsonl" });
  const book = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(facts, `${FACTS}\n{"statement": "x", "query": "y"}\n`);
  await Deno.writeTextFile(book, "A short book.");
  const out = await recall(["--text-file", book, "--facts", facts]);
  assert.equal(out.code, 1);
  assert.match(text(out.stderr), /^error: --facts .*: facts line 3: "answer" must be a non-empty/m);
  await Deno.remove(facts);
  await Deno.remove(book);
});
