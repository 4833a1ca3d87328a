import assert from "node:assert/strict";

const MODEL = "../shared/models/stories260K/stories260K.bin";
const BOOK = "../shared/data/books/melville-moby-dick.txt";

function perplexity(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "examples/perplexity.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("perplexity --json reports both perplexities and writes an SVG plot", async () => {
  const plot = await Deno.makeTempFile({ suffix: ".svg" });
  const out = await perplexity([
    "--model",
    MODEL,
    "--text-file",
    BOOK,
    "--max-tokens",
    "320",
    "--window",
    "128",
    "--json",
    "--plot",
    plot,
  ]);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(r.tokens, 320);
  for (const key of ["base", "templora"]) {
    assert.ok(r[key].ppl > 1 && Number.isFinite(r[key].ppl));
    assert.ok(r[key].ppl_chunk_weighted > 1);
  }
  assert.equal(typeof r.decrease_pct, "number");
  assert.equal(r.settings.window, 128);
  assert.equal(r.settings.chunk, 32);
  assert.ok("lr" in r.settings.optimizer && "rank" in r.settings && "epochs" in r.settings);
  // The first chunk is scored before any training: with and without the adapter agree.
  assert.equal(r.chunks[0].baseNll, r.chunks[0].tempLoraNll);
  const svg = await Deno.readTextFile(plot);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal(svg.match(/<polyline /g)?.length, 2);
  assert.match(svg, /position in the text/);
  assert.match(svg, /perplexity of the chunk/);
  await Deno.remove(plot);
});

Deno.test("perplexity rejects a missing --text-file with exit code 2", async () => {
  const out = await perplexity(["--model", MODEL]);
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /--text-file is required/);
});
