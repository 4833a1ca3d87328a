import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { isGgmlQuantType } from "../src/core/quant.ts";
import { readGguf } from "../src/formats/gguf.ts";
import { readGgufModel } from "../src/formats/gguf_model.ts";
import { ggufTokenizer } from "../src/formats/gguf_tokenizer.ts";
import { dequantizeMatrix, halfValue } from "../src/reference/quant.ts";
import { seededRng } from "../kernels_test/helpers.ts";
import { sharedDataTest } from "../kernels_test/test_data.ts";
import {
  BENCH_FILE_TYPES,
  type BenchShape,
  tensorType,
  tensorValues,
  TOKENIZER_SOURCE,
  tokenizerMetadata,
  useMoreBits,
  writeBenchModel,
} from "./make_gguf.ts";

const TOKENIZER_FIXTURE = "models/gguf/tiny-llama-spm-q4_k_m.gguf";

/** GGUF name -> [stem, layer]. */
function stemOf(name: string): [string, number] {
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(name);
  return m ? [m[2], Number(m[1])] : [name.replace(/\.weight$/, ""), -1];
}

sharedDataTest({
  name: "bench models: the Q4_K_M rules give llama-quantize's types for its own Q4_K_M fixture",
  needs: [TOKENIZER_FIXTURE],
  async fn() {
    const g = await readGguf(TOKENIZER_SOURCE);
    const layers = g.int("llama.block_count");
    for (const t of g.tensors.values()) {
      const [stem, layer] = stemOf(t.name);
      const want = tensorType("Q4_K_M", stem, t.dims[0], layer, layers, t.dims.length === 1);
      assert.equal(want.type, t.type.name, t.name);
    }
    // SmolLM2-135M's 30 layers: Q6_K-worthy attn_v / ffn_down in 14 of them.
    const more = Array.from({ length: 30 }, (_, l) => l).filter((l) => useMoreBits(l, 30));
    assert.deepEqual(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    assert.deepEqual(tensorType("Q4_K_M", "attn_q", 576, 3, 30, false), {
      type: "Q5_0",
      wanted: "Q4_K",
    });
    assert.deepEqual(tensorType("Q4_K_M", "attn_v", 576, 2, 30, false), {
      type: "Q8_0",
      wanted: "Q6_K",
    });
    assert.deepEqual(tensorType("Q4_K_M", "ffn_down", 1536, 4, 30, false), { type: "Q4_K" });
    assert.deepEqual(tensorType("Q4_K_M", "token_embd", 576, -1, 30, false), {
      type: "Q8_0",
      wanted: "Q6_K",
    });
  },
});

/** SmolLM2's pattern at a small size: rows of 96 (no K-quants) except ffn_down's of 256. */
const SMALL: BenchShape = {
  name: "small bench-shaped test model",
  dim: 96,
  hiddenDim: 256,
  nLayers: 4,
  nHeads: 3,
  nKvHeads: 1,
  headDim: 32,
  contextLength: 256,
  ropeTheta: 100000,
  normEps: 1e-5,
};

/** ||x - y|| / ||x|| bound for N(0, 0.02) values of each stored type. */
const ERROR_BOUND: Record<string, number> = {
  F32: 0,
  F16: 5e-4,
  Q8_0: 0.006,
  Q5_0: 0.05,
  Q4_K: 0.1,
  Q6_K: 0.025,
};

/** The stored tensor decoded to float64. */
function decode(type: string, bytes: Uint8Array, dims: number[]): Float64Array {
  const n = dims.reduce((a, b) => a * b, 1);
  if (type === "F32") return Float64Array.from(new Float32Array(bytes.slice().buffer));
  if (type === "F16") return Float64Array.from(new Uint16Array(bytes.slice().buffer), halfValue);
  if (!isGgmlQuantType(type)) throw new Error(`unexpected type ${type}`);
  return dequantizeMatrix(type, bytes, n / dims[0], dims[0]);
}

/** Runs bench/llama_cpp_check.ts; undefined (with a notice) when node-llama-cpp is not cached. */
async function llamaCpp(files: string[], text: string) {
  const script = fileURLToPath(new URL("./llama_cpp_check.ts", import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", "--cached-only", script, "--text", text, ...files],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.code === 3 || /not found in cache|--cached-only/.test(stderr)) {
    console.error(
      "templora tests: llama.cpp check skipped: node-llama-cpp is not in the Deno cache " +
        "(`deno task peer:install` fetches it): " + stderr.trim().split("\n").at(-1),
    );
    return undefined;
  }
  assert.equal(out.code, 0, `llama_cpp_check.ts failed:\n${stderr}`);
  return new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
}

sharedDataTest({
  name: "bench models: every file type holds the generator's model; llama.cpp loads and runs them",
  needs: [TOKENIZER_FIXTURE],
  sanitizeResources: false,
  async fn() {
    const seed = seededRng("bench model weights").int(2 ** 31);
    const tokenizer = await tokenizerMetadata();
    assert.equal(tokenizer.vocab, 32000);
    const dir = await Deno.makeTempDir({ prefix: "templora_bench_models_" });
    try {
      const files: string[] = [];
      for (const type of BENCH_FILE_TYPES) {
        const path = join(dir, `small-${type}.gguf`);
        files.push(path);
        const written = await writeBenchModel(path, type, SMALL, tokenizer, seed);
        const model = await readGgufModel(path);
        const c = model.config;
        assert.deepEqual(
          [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.headDim, c.vocabSize],
          [96, 256, 4, 3, 1, 32, 32000],
        );
        assert.equal(c.ropeTheta, 100000);
        assert.equal(c.normEps, 1e-5);
        assert.equal(c.tiedEmbeddings, true);
        assert.equal(c.ropePairs, "interleaved");
        let count = 0;
        for (const w of model.tensors.values()) {
          const [stem, layer] = stemOf(w.ggufName);
          const dims = [...w.shape].reverse();
          const want = tensorType(type, stem, dims[0], layer, SMALL.nLayers, dims.length === 1);
          assert.equal(w.type.name, want.type, `${type} ${w.ggufName}`);
          const x = tensorValues(seed, w.ggufName, dims);
          const y = decode(w.type.name, await w.read(), dims);
          let num = 0, den = 0;
          for (let i = 0; i < x.length; i++) {
            num += (x[i] - y[i]) ** 2;
            den += x[i] ** 2;
          }
          const rel = Math.sqrt(num / den);
          assert.ok(rel <= ERROR_BOUND[w.type.name], `${type} ${w.ggufName}: error ${rel}`);
          count++;
        }
        assert.equal(count, 2 + 9 * SMALL.nLayers);
        assert.equal((await Deno.stat(path)).size, written.bytes);
        if (type === "Q4_K_M") {
          assert.deepEqual(written.types, { Q8_0: 3, F32: 9, Q5_0: 22, Q4_K: 2, Q6_K: 2 });
        }
      }
      const text = "Once upon a time, there was a little girl named Lily. She loved to play.";
      const ours = (await ggufTokenizer((await readGgufModel(files[0])).gguf, 32000))
        .encode(text, { bos: false });
      const results = await llamaCpp(files, text);
      if (!results) return;
      assert.equal(results.length, files.length);
      for (const r of results) {
        assert.equal(r.loaded, true, `${r.file}: ${r.error}`);
        assert.deepEqual(r.ids, ours, `${r.file}: llama.cpp's tokens`);
        assert.equal(r.bos, 1);
        assert.equal(r.generated.length, 4);
        for (const id of r.generated) assert.ok(Number.isInteger(id) && id >= 0 && id < 32000);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
