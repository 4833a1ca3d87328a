/**
 * Loads GGUF files in llama.cpp (node-llama-cpp's prebuilt CPU build) and prints one JSON line
 * per file: whether it loaded, the ids llama.cpp's tokenizer gives `--text` (no BOS), and `--tokens`
 * greedy tokens after BOS and those ids. bench/make_gguf_test.ts runs it as a subprocess.
 *
 *   deno run -A --no-lock bench/llama_cpp_check.ts [--text T] [--tokens N] FILE...
 *
 * Exit code 3 when node-llama-cpp cannot be loaded (the first line of stderr says why).
 */
import { parseArgs } from "node:util";
import { disposePeerModel, loadPeer, loadPeerModel, peerDecode } from "./llama_cpp.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    text: { type: "string", default: "Once upon a time, there was a little girl named Lily." },
    tokens: { type: "string", default: "4" },
  },
});
const peer = await loadPeer();
if (!peer.ok) {
  console.error(peer.why);
  Deno.exit(3);
}
for (const file of positionals) {
  try {
    const m = await loadPeerModel(peer, file, [1], 128, 64);
    const ids = m.model.tokenize(values.text!);
    const bos = m.model.tokens.bos;
    const prompt = bos === null ? ids : [bos, ...ids];
    const generated = await peerDecode(m.contexts.get(1)!, prompt, Number(values.tokens), () => {});
    console.log(JSON.stringify({ file, loaded: true, bos, ids, generated }));
    await disposePeerModel(m);
  } catch (error) {
    console.log(JSON.stringify({ file, loaded: false, error: String(error) }));
  }
}
await peer.llama.dispose();
