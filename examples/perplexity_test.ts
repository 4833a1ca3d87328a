import assert from "node:assert/strict";
import { sharedDataTest, sharedPath } from "../kernels_test/test_data.ts";
import { usageErrorText } from "./cli.ts";
import { runTask } from "./testing.ts";

const BOOK = "data/books/melville-moby-dick.txt";

const perplexity = (args: string[]) => runTask("perplexity", args);

sharedDataTest({
  name: "perplexity --json reports both perplexities and writes an SVG plot",
  needs: [BOOK],
  async fn() {
    const plot = await Deno.makeTempFile({ suffix: ".svg" });
    const out = await perplexity([
      "--text-file",
      sharedPath(BOOK),
      "--max-tokens",
      "320",
      "--window",
      "128",
      "--json",
      "--plot",
      plot,
    ]);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stderr, "");
    const r = JSON.parse(out.stdout);
    assert.equal(r.tokens, 320);
    for (const key of ["base", "templora"]) {
      assert.ok(r[key].ppl > 1 && Number.isFinite(r[key].ppl));
      assert.ok(r[key].ppl_chunk_weighted > 1);
    }
    assert.equal(typeof r.decrease_pct, "number");
    assert.match(r.settings.model, /models\/stories260K\/stories260K\.bin$/);
    assert.equal(r.settings.max_tokens, 320);
    const t = r.settings.templora;
    assert.equal(t.window, 128);
    assert.equal(t.chunk, 32);
    assert.equal(t.train_context, 96);
    assert.ok(t.lr > 0 && t.rank > 0 && t.epochs > 0);
    // The first chunk is scored before any training: with and without the adapter agree.
    assert.equal(r.chunks[0].base_nll, r.chunks[0].templora_nll);
    const svg = await Deno.readTextFile(plot);
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.equal(svg.match(/<polyline /g)?.length, 2);
    assert.match(svg, /position in the text/);
    assert.match(svg, /perplexity of the chunk/);
    await Deno.remove(plot);
  },
});

Deno.test("perplexity: a missing --text-file is a usage error; an unreadable one a file error", async () => {
  const none = await perplexity([]);
  assert.equal(none.code, 2);
  assert.equal(
    none.stderr,
    usageErrorText("perplexity", "--text-file is required: the text to measure perplexity on") +
      "\n",
  );
  const missing = await perplexity(["--text-file", "nope.txt"]);
  assert.equal(missing.code, 1);
  assert.equal(missing.stderr, "error: --text-file nope.txt: cannot read it (no such file)\n");
  const plot = await perplexity(["--text-file", "README.md", "--plot", "/nonexistent/p.svg"]);
  assert.equal(plot.code, 1);
  assert.equal(
    plot.stderr,
    "error: --plot /nonexistent/p.svg: cannot write it (its folder does not exist)\n",
  );
});
