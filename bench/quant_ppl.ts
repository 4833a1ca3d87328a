/**
 * Perplexity of stories260K's GGUF forms (F32, Q8_0, Q4_0) in templora and in llama.cpp by one
 * protocol, so that what quantization costs can be told apart from what an engine adds: the
 * text's first tokens (templora's tokenizer, BOS first) in chunks of Δ, each scored with the up to
 * W − Δ tokens before it (TestThenTrain's windows, base model, no training), by both engines.
 *
 *   deno run -A --no-lock bench/quant_ppl.ts [--book austen-emma.txt] [--tokens 4096]
 *
 * llama.cpp runs through node-llama-cpp (`deno task peer:install`), each window from an empty
 * cache, with its unadjusted probabilities.
 */
import { parseArgs } from "node:util";
import { TextModel } from "../src/model/text_model.ts";
import { resolveTempLoraSettings } from "../src/templora/settings.ts";
import { TestThenTrain } from "../src/templora/test_then_train.ts";
import { disposePeerModel, loadPeer, loadPeerModel, peerLogProbs } from "./llama_cpp.ts";

const { values } = parseArgs({
  options: {
    book: { type: "string", default: "austen-emma.txt" },
    tokens: { type: "string", default: "4096" },
  },
});
const SHARED = new URL("../../shared/", import.meta.url);
const shared = (p: string) => new URL(p, SHARED).pathname;
const text = await Deno.readTextFile(shared(`data/books/${values.book}`));
const files = ["f32", "q8_0", "q4_0"].map((t) => shared(`models/gguf/stories260K-${t}.gguf`));

const peer = await loadPeer();
if (!peer.ok) throw new Error(`llama.cpp is not available: ${peer.why}`);
const rows: { file: string; templora: number; llama: number; tokens: number }[] = [];
let window = 0;
for (const file of files) {
  const lm = await TextModel.load(file);
  const settings = { ...resolveTempLoraSettings(lm.config), enabled: false };
  window = settings.window;
  const ids = lm.tokenizer.encode(text, { bos: true }).slice(0, Number(values.tokens));
  const walk = await TestThenTrain.create(lm, ids, settings);
  const peerModel = await loadPeerModel(peer, file, [2], settings.window + 8, 512);
  const ctx = peerModel.contexts.get(2)!;
  let ours = 0, theirs = 0, count = 0;
  try {
    for (const chunk of walk.chunks) {
      const w = walk.window(chunk);
      const from = w.loss.indexOf(true);
      if (from < 0) continue;
      if (from === 0 || w.loss.some((l, i) => l !== (i >= from))) {
        throw new Error(`chunk ${chunk.index}: its loss is not one run after some context`);
      }
      const report = await walk.scoreChunk(chunk, false);
      ours += report!.lossSum;
      const logProbs = await peerLogProbs(ctx, w.tokens, from);
      theirs -= logProbs.reduce((a, b) => a + b, 0);
      count += logProbs.length;
      if (report!.count !== logProbs.length) {
        throw new Error(`chunk ${chunk.index}: ${report!.count} vs ${logProbs.length} tokens`);
      }
    }
  } finally {
    walk.destroy();
    await disposePeerModel(peerModel);
    lm.dispose();
  }
  rows.push({
    file,
    templora: Math.exp(ours / count),
    llama: Math.exp(theirs / count),
    tokens: count,
  });
  console.error(`${file}: ${count} tokens scored`);
}
await peer.llama.dispose();

const f32 = rows[0];
const pct = (v: number, ref: number) =>
  `${v >= ref ? "+" : ""}${((v / ref - 1) * 100).toFixed(2)}%`;
console.log(`${values.book}, first ${values.tokens} tokens, W ${window}\n`);
console.log("| file | templora PPL | vs F32 | llama.cpp PPL | vs F32 | templora / llama.cpp |");
console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
for (const r of rows) {
  const name = r.file.split("/").pop();
  console.log(
    `| ${name} | ${r.templora.toFixed(3)} | ${pct(r.templora, f32.templora)} | ${
      r.llama.toFixed(3)
    } | ${pct(r.llama, f32.llama)} | ${(r.templora / r.llama).toFixed(4)} |`,
  );
}
