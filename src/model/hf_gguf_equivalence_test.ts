/**
 * The same random weights of each published config (see PUBLISHED_MODELS) written as a Hugging
 * Face folder and as the GGUF file llama.cpp's converter makes of it (Q/K rows permuted to
 * adjacent RoPE pairs for `llama` and `smollm3`, `rope_freqs` for Llama 3's scaling, linear
 * scaling keys, the Qwens as stored): both load to the same config and the GPU computes the same
 * logits from either. For the byte-level BPE families the GGUF file also carries the vocabulary
 * converted from tokenizer.json, which tokenizes as the folder's tokenizer does.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import {
  familyTokenizerFiles,
  PUBLISHED_MODELS,
  writePublishedFolder,
} from "../../kernels_test/model_fixtures.ts";
import type { ModelConfig } from "../formats/config.ts";
import { readGgufModel } from "../formats/gguf_model.ts";
import { hfTokenizerGgufMetadata } from "../formats/gguf_tokenizer.ts";
import { writeGgufModel } from "../formats/gguf_writer.ts";
import { loadModelFiles } from "../formats/load.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import { LlamaModel } from "./llama.ts";

/** Logits of every position of one prefill. */
async function logits(model: LlamaModel, tokens: number[]): Promise<Float32Array> {
  const { gpu, recorder } = await testGpu();
  const t = tokens.length;
  const ids = uploadTensor(gpu, Uint32Array.from(tokens), [t]);
  const cache = model.createCache(t);
  const act = model.createActivations(t);
  model.recordForward(recorder, {
    ids,
    offset: 0,
    tokens: t,
    cache,
    activations: act,
    logits: "all",
  });
  recorder.submit();
  const out = (await readF32(gpu, act.logits)).slice(0, t * model.config.vocabSize);
  for (const x of [ids, cache, act]) x.destroy();
  return out;
}

/** What llama.cpp's converter records differently, by design. */
function comparable(c: ModelConfig, gguf: ModelConfig): Record<string, unknown> {
  return {
    ...c,
    architecture: undefined,
    // GGUF `llama` keeps the converter's adjacent pairs; Mistral's window is not in the file.
    ropePairs: undefined,
    maxSeqLen: c.architecture === "MistralForCausalLM" ? gguf.maxSeqLen : c.maxSeqLen,
    ropeFreqFactors: c.ropeFreqFactors && Array.from(c.ropeFreqFactors),
  };
}

const TEXTS = [
  "The quick brown fox jumps over the lazy dog.",
  "naïve café — 日本語 🦙 12345 don't <|im_start|>user\nHi<|im_end|>",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>",
];

for (const [key, published] of Object.entries(PUBLISHED_MODELS)) {
  gpuTest(`${key}: the HF folder and its GGUF file give the same logits`, async () => {
    const { gpu, registry } = await testGpu();
    const rng = seededRng(`hf vs gguf ${key}`);
    const dir = await Deno.makeTempDir({ prefix: `templora_gguf_${key}_` });
    try {
      const folder = join(dir, "hf");
      const { weights } = await writePublishedFolder(folder, published, rng);
      const file = join(dir, "model.gguf");
      const tokenizer = published.ggufPre === undefined ? undefined : await (async () => {
        const { tokenizerJson, tokenizerConfig } = await familyTokenizerFiles(published.tokenizer);
        return hfTokenizerGgufMetadata(tokenizerJson, tokenizerConfig, {
          pre: published.ggufPre!,
          vocabSize: weights.config.vocabSize,
          bosTokenId: published.config.bos_token_id as number | null,
        });
      })();
      await writeGgufModel(file, weights, { name: published.name, tokenizer });
      const hf = await loadModelFiles(folder);
      const gguf = tokenizer
        ? await loadModelFiles(file)
        : await loadModelFiles(file, { tokenizerPath: folder });
      const header = await readGgufModel(file);
      const arch = header.gguf.string("general.architecture");
      assert.equal(
        arch,
        { Qwen2ForCausalLM: "qwen2", Qwen3ForCausalLM: "qwen3" }[
          hf.config.architecture
        ] ?? (hf.config.architecture === "SmolLM3ForCausalLM" ? "smollm3" : "llama"),
      );
      assert.equal(header.gguf.tensors.has("rope_freqs.weight"), key === "llama-3.2");
      assert.equal(
        gguf.config.ropePairs,
        arch === "qwen2" || arch === "qwen3" ? "half" : "interleaved",
      );
      assert.deepEqual(comparable(gguf.config, gguf.config), comparable(hf.config, gguf.config));

      const v = hf.config.vocabSize;
      const tokens = Array.from({ length: 10 }, () => rng.int(v));
      const fromHf = await LlamaModel.create(gpu, registry, hf.source, folder);
      const want = await logits(fromHf, tokens);
      fromHf.destroy();
      const fromGguf = await LlamaModel.create(gpu, registry, gguf.source, file);
      const got = await logits(fromGguf, tokens);
      fromGguf.destroy();
      assertClose(got, want, `${key}: GGUF vs HF logits`, 1e-6);

      if (tokenizer) {
        // The converted vocabulary tokenizes as the folder's tokenizer.json.
        assert.equal(gguf.tokenizer.bosId, hf.tokenizer.bosId);
        assert.equal(gguf.tokenizer.vocabSize, v);
        for (const text of TEXTS) {
          assert.deepEqual(
            gguf.tokenizer.encode(text, { bos: true }),
            hf.tokenizer.encode(text, { bos: true }),
            text,
          );
        }
        // Each end id of the file ends a reply from the folder too (config.json may add more).
        for (const id of gguf.tokenizer.endIds!) {
          assert.ok(hf.tokenizer.endIds!.includes(id), `${id}`);
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
