import assert from "node:assert/strict";
import { join } from "node:path";
import { Rng } from "../core/random.ts";
import { ropeForward } from "../reference/rope.ts";
import { type ModelConfig, tensorShapes } from "./config.ts";
import {
  InvalidConfigError,
  MissingTensorError,
  TensorShapeMismatchError,
  UnsupportedArchitectureError,
  UnsupportedFeatureError,
} from "./errors.ts";
import {
  interleavedToHalfRows,
  parseHfConfig,
  readHfConfig,
  readHfModel,
  writeHfFolder,
} from "./hf.ts";
import { readLlama2c } from "./llama2c.ts";
import { writeSafetensors } from "./safetensors.ts";
import { convertTensor, type TensorData, tensorToF32 } from "./tensor_data.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";

const MODEL_PATH = STORIES260K;

function seed(): Rng {
  const s = (Math.random() * 2 ** 31) >>> 0;
  console.log(`seed ${s}`);
  return new Rng(s);
}

const LLAMA_JSON = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 48,
  intermediate_size: 100,
  num_hidden_layers: 2,
  num_attention_heads: 6,
  num_key_value_heads: 2,
  vocab_size: 37,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  rope_scaling: null,
  tie_word_embeddings: false,
  hidden_act: "silu",
};

Deno.test("hf config: Llama, defaults, Qwen2 biases, Mistral window, explicit head_dim", () => {
  const llama = parseHfConfig(LLAMA_JSON, "config.json");
  assert.deepEqual(llama, {
    architecture: "LlamaForCausalLM",
    dim: 48,
    hiddenDim: 100,
    nLayers: 2,
    nHeads: 6,
    nKvHeads: 2,
    headDim: 8,
    vocabSize: 37,
    maxSeqLen: 128,
    normEps: 1e-5,
    ropeTheta: 500000,
    ropePairs: "half",
    tiedEmbeddings: false,
    qkvBias: false,
  });
  const bare = { ...LLAMA_JSON } as Record<string, unknown>;
  for (const k of ["num_key_value_heads", "rope_theta", "tie_word_embeddings", "rope_scaling"]) {
    delete bare[k];
  }
  const d = parseHfConfig(bare, "config.json");
  assert.equal(d.nKvHeads, 6);
  assert.equal(d.ropeTheta, 10000);
  assert.equal(d.tiedEmbeddings, false);

  const qwen = parseHfConfig(
    { ...LLAMA_JSON, architectures: ["Qwen2ForCausalLM"], tie_word_embeddings: true },
    "q.json",
  );
  assert.equal(qwen.qkvBias, true);
  assert.equal(qwen.tiedEmbeddings, true);
  const mistral = parseHfConfig(
    { ...LLAMA_JSON, architectures: ["MistralForCausalLM"], sliding_window: 64 },
    "m.json",
  );
  assert.equal(mistral.maxSeqLen, 64);
  assert.equal(
    parseHfConfig(
      { ...LLAMA_JSON, architectures: ["MistralForCausalLM"], sliding_window: null },
      "m",
    )
      .maxSeqLen,
    128,
  );
  const wide = parseHfConfig({ ...LLAMA_JSON, head_dim: 16 }, "c");
  assert.equal(wide.headDim, 16);
  assert.deepEqual(tensorShapes(wide).get("model.layers.0.self_attn.q_proj.weight"), [96, 48]);
  assert.deepEqual(tensorShapes(wide).get("model.layers.0.self_attn.o_proj.weight"), [48, 96]);
  const v5 = parseHfConfig(
    {
      ...LLAMA_JSON,
      rope_theta: undefined,
      rope_parameters: { rope_type: "default", rope_theta: 1e6 },
    },
    "c",
  );
  assert.equal(v5.ropeTheta, 1e6);
});

Deno.test("hf config: Llama 3 and linear RoPE scaling, Qwen3 head norms, SmolLM3 layers", () => {
  // Llama 3.2's scaling on a 16-wide head at theta 500000: the divisors llama.cpp's converter
  // writes as rope_freqs for the same settings (../shared/models/gguf/README.md).
  const scaled = parseHfConfig({
    ...LLAMA_JSON,
    hidden_size: 64,
    num_attention_heads: 4,
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  }, "c");
  const expected = [1, 1, 1, 1, 3.2923, 32, 32, 32];
  assert.equal(scaled.ropeFreqFactors?.length, 8);
  scaled.ropeFreqFactors!.forEach((d, i) =>
    assert.ok(Math.abs(d - expected[i]) < 1e-4, `${i}: ${d}`)
  );
  // The newer layout: theta and scaling in rope_parameters.
  const v5 = parseHfConfig({
    ...LLAMA_JSON,
    rope_theta: undefined,
    rope_parameters: { rope_type: "linear", factor: 4, rope_theta: 1e6 },
  }, "c");
  assert.equal(v5.ropeTheta, 1e6);
  assert.deepEqual([...v5.ropeFreqFactors!], [4, 4, 4, 4]);
  const qwen3 = parseHfConfig(
    { ...LLAMA_JSON, architectures: ["Qwen3ForCausalLM"], head_dim: 16 },
    "c",
  );
  assert.equal(qwen3.qkNorm, true);
  assert.equal(qwen3.qkvBias, false);
  assert.equal(qwen3.headDim, 16);
  assert.deepEqual(tensorShapes(qwen3).get("model.layers.1.self_attn.k_norm.weight"), [16]);
  const smol3 = parseHfConfig(
    { ...LLAMA_JSON, architectures: ["SmolLM3ForCausalLM"], no_rope_layers: [1, 0] },
    "c",
  );
  assert.deepEqual(smol3.ropeLayers, [true, false]);
});

Deno.test("hf config: unsupported and invalid configs name the file and the problem", () => {
  const F = "/m/config.json";
  const bad = (json: Record<string, unknown>, type: new (...a: any[]) => Error, re: RegExp) =>
    assert.throws(() => parseHfConfig(json, F), (e: unknown) => {
      assert.ok(e instanceof type, `${type.name} expected, got ${e}`);
      assert.ok(e.message.startsWith(F + ": "), e.message);
      assert.match(e.message, re);
      return true;
    });
  bad(
    { ...LLAMA_JSON, architectures: ["GPT2LMHeadModel"] },
    UnsupportedArchitectureError,
    /GPT2LMHeadModel.*LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3/,
  );
  bad({ ...LLAMA_JSON, architectures: undefined }, UnsupportedArchitectureError, /architectures/);
  bad(
    { ...LLAMA_JSON, rope_scaling: { rope_type: "dynamic", factor: 2 } },
    UnsupportedFeatureError,
    /rope_scaling with rope_type "dynamic" is not supported/,
  );
  bad(
    { ...LLAMA_JSON, rope_scaling: { rope_type: "llama3", factor: 8 } },
    InvalidConfigError,
    /rope_scaling.low_freq_factor/,
  );
  bad(
    { ...LLAMA_JSON, architectures: ["SmolLM3ForCausalLM"], no_rope_layers: [1] },
    InvalidConfigError,
    /no_rope_layers/,
  );
  bad(
    { ...LLAMA_JSON, rope_parameters: { rope_type: "yarn", factor: 4 } },
    UnsupportedFeatureError,
    /yarn/,
  );
  bad({ ...LLAMA_JSON, hidden_act: "gelu" }, UnsupportedFeatureError, /gelu/);
  bad({ ...LLAMA_JSON, attention_bias: true }, UnsupportedFeatureError, /attention_bias/);
  bad({ ...LLAMA_JSON, hidden_size: undefined }, InvalidConfigError, /hidden_size is missing/);
  bad({ ...LLAMA_JSON, vocab_size: -3 }, InvalidConfigError, /vocab_size/);
  bad({ ...LLAMA_JSON, num_hidden_layers: 2.5 }, InvalidConfigError, /num_hidden_layers/);
  bad({ ...LLAMA_JSON, num_key_value_heads: 4 }, InvalidConfigError, /multiple of nKvHeads/);
  bad({ ...LLAMA_JSON, num_attention_heads: 5 }, InvalidConfigError, /not divisible/);
  bad({ ...LLAMA_JSON, rms_norm_eps: 0 }, InvalidConfigError, /normEps/);
  bad({ ...LLAMA_JSON, head_dim: 7 }, InvalidConfigError, /even/);
});

/** Random tensors for every name the config implies. */
function randomTensors(config: ModelConfig, rng: Rng): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  for (const [name, shape] of tensorShapes(config)) {
    out.set(name, { dtype: "F32", shape, data: rng.normals(shape.reduce((a, b) => a * b, 1)) });
  }
  return out;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "templora_hf_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("hf model: a sharded BF16 Qwen2 folder loads; missing or misshapen tensors are named", async () => {
  await withTempDir(async (dir) => {
    const json = { ...LLAMA_JSON, architectures: ["Qwen2ForCausalLM"], tie_word_embeddings: true };
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json));
    const config = parseHfConfig(json, "c");
    const f32 = randomTensors(config, seed());
    const all = new Map([...f32].map(([n, t]) => [n, convertTensor(t, "BF16")]));
    all.set("lm_head.weight", all.get("model.embed_tokens.weight")!); // ignored: tied
    const names = [...all.keys()];
    const half = Math.floor(names.length / 2);
    const weightMap: Record<string, string> = {};
    const writeShard = async (file: string, part: string[]) => {
      await Deno.writeFile(
        join(dir, file),
        writeSafetensors(new Map(part.map((n) => [n, all.get(n)!]))),
      );
      for (const n of part) weightMap[n] = file;
    };
    await writeShard("a.safetensors", names.slice(0, half));
    await writeShard("b.safetensors", names.slice(half));
    const index = join(dir, "model.safetensors.index.json");
    await Deno.writeTextFile(index, JSON.stringify({ weight_map: weightMap }));

    const model = await readHfModel(dir);
    assert.deepEqual(model.config, await readHfConfig(dir));
    assert.equal(model.tensors.size, f32.size);
    assert.ok(model.tensors.has("model.layers.1.self_attn.k_proj.bias"));
    for (const [name, t] of model.tensors) {
      assert.equal(t.dtype, "BF16");
      assert.deepEqual(tensorToF32(t), tensorToF32(all.get(name)!), name);
    }

    // A missing bias.
    const gone = "model.layers.1.self_attn.v_proj.bias";
    const { [gone]: _, ...withoutBias } = weightMap;
    await Deno.writeTextFile(index, JSON.stringify({ weight_map: withoutBias }));
    await assert.rejects(readHfModel(dir), (e: unknown) => {
      return e instanceof MissingTensorError && e.tensor === gone && e.message.includes(index);
    });
    // A misshapen tensor: k_proj transposed.
    const o = "model.layers.0.self_attn.k_proj.weight";
    const t = all.get(o)!;
    all.set(o, { ...t, shape: [t.shape[1], t.shape[0]] } as TensorData);
    await Deno.remove(index);
    await Deno.writeFile(join(dir, "model.safetensors"), writeSafetensors(all));
    await assert.rejects(readHfModel(dir), (e: unknown) => {
      return e instanceof TensorShapeMismatchError && e.tensor === o &&
        /shape \[48,16\] but the config implies \[16,48\]/.test(e.message) &&
        /model\.safetensors/.test(e.message);
    });
    // Not tied and no lm_head.
    all.set(o, t);
    all.delete("lm_head.weight");
    await Deno.writeFile(join(dir, "model.safetensors"), writeSafetensors(all));
    await Deno.writeTextFile(
      join(dir, "config.json"),
      JSON.stringify({ ...json, tie_word_embeddings: false }),
    );
    await assert.rejects(readHfModel(dir), /missing tensor lm_head\.weight/);
  });
});

/** Attention logits q_h(x1 at p1) . k_g(x2 at p2) for every query head, RoPE applied. */
function ropeScores(
  wq: Float32Array,
  wk: Float32Array,
  config: ModelConfig,
  pairs: "interleaved" | "half",
  x1: Float32Array,
  x2: Float32Array,
  p1: number,
  p2: number,
): number[] {
  const { dim, nHeads, nKvHeads, headDim, ropeTheta } = config;
  const matvec = (w: Float32Array, x: Float32Array, rows: number) => {
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < dim; c++) out[r] += w[r * dim + c] * x[c];
    }
    return out;
  };
  const q = ropeForward(matvec(wq, x1, nHeads * headDim), 1, p1, {
    heads: nHeads,
    headDim,
    base: ropeTheta,
    pairs,
  });
  const k = ropeForward(matvec(wk, x2, nKvHeads * headDim), 1, p2, {
    heads: nKvHeads,
    headDim,
    base: ropeTheta,
    pairs,
  });
  const scores: number[] = [];
  for (let h = 0; h < nHeads; h++) {
    const g = Math.floor(h / (nHeads / nKvHeads));
    let s = 0;
    for (let i = 0; i < headDim; i++) s += q[h * headDim + i] * k[g * headDim + i];
    scores.push(s);
  }
  return scores;
}

Deno.test("hf converter: stories260K as an HF folder, q/k rows permuted so RoPE agrees", async () => {
  const src = await readLlama2c(MODEL_PATH);
  const rng = seed();
  await withTempDir(async (dir) => {
    await writeHfFolder(dir, src, { dtype: "F32" });
    const hf = await readHfModel(dir);
    assert.deepEqual(hf.config, {
      ...src.config,
      architecture: "LlamaForCausalLM",
      ropePairs: "half",
    });
    const order = interleavedToHalfRows(src.config.nHeads, src.config.headDim);
    assert.deepEqual([...order.slice(0, 8)], [0, 2, 4, 6, 1, 3, 5, 7]);
    assert.equal(order[8], 8);
    for (const [name, t] of src.tensors) {
      const back = hf.tensors.get(name)!;
      if (/[qk]_proj/.test(name)) {
        assert.notDeepEqual(back.data, t.data);
        const dim = src.config.dim;
        // Row 1 of the HF q/k is row 2 of llama2.c's; row 4 (second half of head 0) is row 1.
        assert.deepEqual(back.data.subarray(dim, 2 * dim), t.data.subarray(2 * dim, 3 * dim));
        assert.deepEqual(back.data.subarray(4 * dim, 5 * dim), t.data.subarray(dim, 2 * dim));
      } else {
        assert.deepEqual(back.data, t.data, name);
      }
    }
    // Same attention logits: llama2.c weights with interleaved RoPE vs HF weights with half RoPE.
    for (const layer of [0, 4]) {
      const p = `model.layers.${layer}.self_attn.`;
      const x1 = rng.normals(64);
      const x2 = rng.normals(64);
      const [p1, p2] = [rng.int(512), rng.int(512)];
      const ref = ropeScores(
        tensorToF32(src.tensors.get(p + "q_proj.weight")!),
        tensorToF32(src.tensors.get(p + "k_proj.weight")!),
        src.config,
        "interleaved",
        x1,
        x2,
        p1,
        p2,
      );
      const got = ropeScores(
        tensorToF32(hf.tensors.get(p + "q_proj.weight")!),
        tensorToF32(hf.tensors.get(p + "k_proj.weight")!),
        hf.config,
        "half",
        x1,
        x2,
        p1,
        p2,
      );
      for (let h = 0; h < ref.length; h++) {
        assert.ok(Math.abs(ref[h] - got[h]) <= 1e-9 * (1 + Math.abs(ref[h])), `head ${h}`);
      }
      // And unpermuted weights with half RoPE would disagree (the test can tell).
      const wrong = ropeScores(
        tensorToF32(src.tensors.get(p + "q_proj.weight")!),
        tensorToF32(src.tensors.get(p + "k_proj.weight")!),
        src.config,
        "half",
        x1,
        x2,
        p1 + 1,
        p2,
      );
      assert.ok(wrong.some((s, h) => Math.abs(s - ref[h]) > 1e-6));
    }

    // F16 and BF16 folders hold the rounded F32 values.
    for (const dtype of ["F16", "BF16"] as const) {
      const sub = join(dir, dtype);
      await writeHfFolder(sub, src, { dtype });
      const low = await readHfModel(sub);
      const cfg = JSON.parse(await Deno.readTextFile(join(sub, "config.json")));
      assert.equal(cfg.torch_dtype, dtype === "F16" ? "float16" : "bfloat16");
      for (const [name, t] of low.tensors) {
        assert.equal(t.dtype, dtype);
        assert.deepEqual(t.data, convertTensor(hf.tensors.get(name)!, dtype).data, name);
      }
    }
  });
});
