import assert from "node:assert/strict";

function translate(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "examples/translate.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const CIPHER = "bench/cipher_pairs.jsonl";
const SMALL = ["--window", "128", "--chunk", "32", "--epochs", "1"];

/** The first `n` pairs of the synthetic document, in a file of their own. */
async function firstPairs(n: number): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  const lines = (await Deno.readTextFile(CIPHER)).split("\n").slice(0, n);
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return path;
}

Deno.test("translate --pairs --json: target perplexity by position, chrF and BLEU, a plot", async () => {
  const pairs = await firstPairs(4);
  const plot = await Deno.makeTempFile({ suffix: ".svg" });
  const out = await translate([
    "--pairs",
    pairs,
    ...SMALL,
    "--buckets",
    "2",
    "--json",
    "--plot",
    plot,
  ]);
  assert.equal(out.code, 0, text(out.stderr));
  const r = JSON.parse(text(out.stdout));
  assert.equal(r.pairs, 4);
  for (const key of ["base", "templora"]) {
    assert.ok(r[key].ppl > 1, key);
    assert.ok(r[key].chrf >= 0 && r[key].chrf <= 100, key);
    assert.ok(r[key].bleu >= 0 && r[key].bleu <= 100, key);
  }
  assert.deepEqual(r.buckets.map((b: { from: number; to: number }) => [b.from, b.to]), [[0, 2], [
    2,
    4,
  ]]);
  assert.equal(r.per_pair.length, 4);
  assert.equal(r.per_pair[0].base_nll, r.per_pair[0].templora_nll);
  assert.equal(typeof r.per_pair[3].templora_translation, "string");
  assert.equal(r.settings.templora.window, 128);
  assert.equal((await Deno.readTextFile(plot)).match(/<polyline /g)?.length, 2);
  await Deno.remove(pairs);
  await Deno.remove(plot);
});

Deno.test("translate --source: one translation a line, scored against --references", async () => {
  const pairs = await firstPairs(3);
  const source = await Deno.makeTempFile({ suffix: ".txt" });
  const refs = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(source, "Tom saw a big ball.\nThe cat was happy at home.\n");
  await Deno.writeTextFile(refs, "Xa ya za.\nXe ye ze.\n");
  const plain = await translate(["--source", source, "--pairs", pairs, ...SMALL]);
  assert.equal(plain.code, 0, text(plain.stderr));
  assert.equal(text(plain.stdout).split("\n").length, 3, "two lines and the last newline");
  const json = await translate(["--source", source, "--references", refs, ...SMALL, "--json"]);
  assert.equal(json.code, 0, text(json.stderr));
  const r = JSON.parse(text(json.stdout));
  assert.deepEqual(r.translations.map((t: { source: string }) => t.source), [
    "Tom saw a big ball.",
    "The cat was happy at home.",
  ]);
  assert.ok(Number.isFinite(r.translations[0].loss));
  assert.ok(r.chrf >= 0 && r.bleu >= 0);
  assert.equal(r.settings.references_file, refs);
  for (const f of [pairs, source, refs]) await Deno.remove(f);
});

Deno.test("translate: usage errors exit 2, a malformed document exits 1 naming its line", async () => {
  const none = await translate([]);
  assert.equal(none.code, 2);
  assert.match(text(none.stderr), /--pairs or --source is required/);
  const refs = await translate(["--pairs", CIPHER, "--references", "r.txt"]);
  assert.equal(refs.code, 2);
  assert.match(text(refs.stderr), /--references goes with --source/);
  const bad = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(bad, '{"source": "a", "target": "b"}\n{"source": "a"}\n');
  const out = await translate(["--pairs", bad]);
  assert.equal(out.code, 1);
  assert.match(text(out.stderr), /^error: --pairs .*: pairs line 2: "target" must be a non-empty/m);
  await Deno.remove(bad);
});
