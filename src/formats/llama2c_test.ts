import assert from "node:assert/strict";
import { Rng } from "../core/random.ts";
import type { ModelConfig } from "./config.ts";
import {
  CorruptHeaderError,
  TrailingBytesError,
  TruncatedFileError,
  UnsupportedFeatureError,
} from "./errors.ts";
import { llama2cFileBytes, parseLlama2c, readLlama2c, writeLlama2c } from "./llama2c.ts";
import type { ModelWeights, TensorData } from "./tensor_data.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";

const MODEL_PATH = STORIES260K;

function seed(): Rng {
  const s = (Math.random() * 2 ** 31) >>> 0;
  console.log(`seed ${s}`);
  return new Rng(s);
}

function tinyConfig(tied: boolean): ModelConfig {
  return {
    architecture: "llama2c",
    dim: 12,
    hiddenDim: 7,
    nLayers: 3,
    nHeads: 3,
    nKvHeads: 1,
    headDim: 4,
    vocabSize: 11,
    maxSeqLen: 5,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropePairs: "interleaved",
    tiedEmbeddings: tied,
    qkvBias: false,
  };
}

/** Random weights for every tensor a llama2.c model has, under HF names. */
function randomWeights(config: ModelConfig, rng: Rng): ModelWeights {
  const { dim: d, hiddenDim: h, vocabSize: v } = config;
  const kv = config.nKvHeads * config.headDim;
  const tensors = new Map<string, TensorData>();
  const add = (name: string, shape: number[]) =>
    tensors.set(name, { dtype: "F32", shape, data: rng.normals(shape.reduce((a, b) => a * b)) });
  add("model.embed_tokens.weight", [v, d]);
  for (let i = 0; i < config.nLayers; i++) {
    const p = `model.layers.${i}.`;
    add(p + "input_layernorm.weight", [d]);
    add(p + "self_attn.q_proj.weight", [d, d]);
    add(p + "self_attn.k_proj.weight", [kv, d]);
    add(p + "self_attn.v_proj.weight", [kv, d]);
    add(p + "self_attn.o_proj.weight", [d, d]);
    add(p + "post_attention_layernorm.weight", [d]);
    add(p + "mlp.gate_proj.weight", [h, d]);
    add(p + "mlp.down_proj.weight", [d, h]);
    add(p + "mlp.up_proj.weight", [h, d]);
  }
  add("model.norm.weight", [d]);
  if (!config.tiedEmbeddings) add("lm_head.weight", [v, d]);
  return { config, tensors };
}

/** A header followed by `floats` float32 values (all 0.5). */
function fileWithHeader(header: number[], floats: number): Uint8Array {
  const out = new Uint8Array(28 + 4 * floats);
  new Int32Array(out.buffer, 0, 7).set(header);
  new Float32Array(out.buffer, 28).fill(0.5);
  return out;
}

Deno.test("llama2c: stories260K loads with the README's header and HF names", async () => {
  const bytes = await Deno.readFile(MODEL_PATH);
  const { config, tensors } = parseLlama2c(bytes, MODEL_PATH);
  assert.deepEqual(
    [config.dim, config.hiddenDim, config.nLayers, config.nHeads, config.nKvHeads],
    [64, 172, 5, 8, 4],
  );
  assert.equal(config.vocabSize, 512);
  assert.equal(config.maxSeqLen, 512);
  assert.equal(config.headDim, 8);
  assert.equal(config.tiedEmbeddings, true);
  assert.equal(config.ropePairs, "interleaved");
  assert.equal(tensors.size, 1 + 5 * 9 + 1);
  assert.ok(!tensors.has("lm_head.weight"));
  assert.deepEqual(tensors.get("model.layers.4.self_attn.k_proj.weight")!.shape, [32, 64]);
  assert.deepEqual(tensors.get("model.layers.0.mlp.down_proj.weight")!.shape, [64, 172]);
  const embed = tensors.get("model.embed_tokens.weight")!;
  // Views into the file, not copies.
  assert.equal(embed.data.buffer, bytes.buffer);
  assert.equal(embed.data[0], new DataView(bytes.buffer).getFloat32(28, true));
  for (const [name, t] of tensors) {
    assert.ok(t.data.every(Number.isFinite), `${name} has non-finite values`);
    assert.ok(t.data.some((x) => x !== 0), `${name} is all zeros`);
  }
  assert.equal(bytes.length, llama2cFileBytes(config));
  const viaPath = await readLlama2c(MODEL_PATH);
  assert.deepEqual(viaPath.config, config);
});

Deno.test("llama2c: tensors come from llama2.c's offsets (independent arithmetic)", () => {
  const rng = seed();
  for (const tied of [true, false]) {
    const w = randomWeights(tinyConfig(tied), rng);
    const bytes = writeLlama2c(w);
    const floats = new Float32Array(bytes.buffer, 28);
    const [v, d, h, L, kv, s, hs] = [11, 12, 7, 3, 4, 5, 4];
    // Offsets in floats, written out from the format's description.
    const wvLayer2 = v * d + L * d + L * d * d + L * kv * d + 2 * kv * d;
    const w3Layer1 = v * d + L * d + L * d * d + 2 * L * kv * d + L * d * d + L * d +
      L * h * d + L * d * h + 1 * h * d;
    const final = v * d + L * d + 2 * L * d * d + 2 * L * kv * d + L * d + 3 * L * h * d;
    const wcls = final + d + 2 * s * (hs / 2);
    const expectSlice = (name: string, at: number) => {
      const t = w.tensors.get(name)!;
      assert.deepEqual(floats.subarray(at, at + t.data.length), t.data, name);
    };
    expectSlice("model.layers.2.self_attn.v_proj.weight", wvLayer2);
    expectSlice("model.layers.1.mlp.up_proj.weight", w3Layer1);
    expectSlice("model.norm.weight", final);
    // freq_cis_real[pos=1][i=0] = cos(1).
    assert.ok(Math.abs(floats[final + d + hs / 2] - Math.cos(1)) < 1e-6);
    if (!tied) expectSlice("lm_head.weight", wcls);
    assert.equal(floats.length, tied ? wcls : wcls + v * d);
    assert.equal(new Int32Array(bytes.buffer, 0, 7)[5], tied ? 11 : -11);

    const back = parseLlama2c(bytes, "tiny.bin");
    assert.deepEqual(back.config, w.config);
    assert.deepEqual([...back.tensors.keys()].sort(), [...w.tensors.keys()].sort());
    for (const [name, t] of w.tensors) assert.deepEqual(back.tensors.get(name), t, name);
  }
});

Deno.test("llama2c: an unaligned buffer is copied, not misread", () => {
  const w = randomWeights(tinyConfig(false), seed());
  const bytes = writeLlama2c(w);
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  const back = parseLlama2c(shifted.subarray(1), "shifted.bin");
  for (const [name, t] of w.tensors) assert.deepEqual(back.tensors.get(name)!.data, t.data, name);
});

Deno.test("llama2c: truncated and overlong files say expected vs actual bytes", () => {
  const bytes = writeLlama2c(randomWeights(tinyConfig(true), seed()));
  const n = bytes.length;
  assert.throws(() => parseLlama2c(bytes.subarray(0, n - 1), "cut.bin"), (e: unknown) => {
    assert.ok(e instanceof TruncatedFileError);
    assert.equal(e.expectedBytes, n);
    assert.equal(e.actualBytes, n - 1);
    assert.match(e.message, new RegExp(`^cut\\.bin: truncated.*${n} bytes.*${n - 1}`));
    return true;
  });
  assert.throws(() => parseLlama2c(bytes.subarray(0, 27), "cut.bin"), TruncatedFileError);
  assert.throws(() => parseLlama2c(new Uint8Array(0), "empty.bin"), TruncatedFileError);
  const longer = new Uint8Array(n + 4);
  longer.set(bytes);
  assert.throws(() => parseLlama2c(longer, "long.bin"), (e: unknown) => {
    assert.ok(e instanceof TrailingBytesError);
    assert.equal(e.expectedBytes, n);
    assert.equal(e.actualBytes, n + 4);
    return true;
  });
});

Deno.test("llama2c: absurd headers are CorruptHeaderError", () => {
  const good = [12, 7, 3, 3, 1, 11, 5];
  const cases: [string, number[]][] = [
    ["negative dim", [-12, 7, 3, 3, 1, 11, 5]],
    ["zero layers", [12, 7, 0, 3, 1, 11, 5]],
    ["zero heads", [12, 7, 3, 0, 1, 11, 5]],
    ["zero vocab", [12, 7, 3, 3, 1, 0, 5]],
    ["negative seq_len", [12, 7, 3, 3, 1, 11, -5]],
    ["dim not divisible by heads", [12, 7, 3, 5, 1, 11, 5]],
    ["heads not a multiple of kv heads", [12, 7, 3, 3, 2, 11, 5]],
    ["more kv heads than heads", [12, 7, 3, 3, 6, 11, 5]],
    ["odd head size", [12, 7, 3, 4, 1, 11, 5]],
    ["huge vocab (overflowing sizes)", [12, 7, 3, 3, 1, 0x7fffffff, 5]],
    ["huge negative vocab", [12, 7, 3, 3, 1, -0x7fffffff, 5]],
    ["huge dim", [1 << 30, 7, 3, 2, 1, 11, 5]],
    ["huge layers", [12, 7, 1 << 20, 3, 1, 11, 5]],
  ];
  const floats = (llama2cFileBytes({ ...tinyConfig(true) }) - 28) / 4;
  assert.doesNotThrow(() => parseLlama2c(fileWithHeader(good, floats), "ok.bin"));
  for (const [what, header] of cases) {
    assert.throws(
      () => parseLlama2c(fileWithHeader(header, floats), "bad.bin"),
      (e: unknown) => e instanceof CorruptHeaderError && e.message.startsWith("bad.bin: "),
      what,
    );
  }
  const ak42 = fileWithHeader([0x616b3432, 1, 0, 0, 0, 0, 0], 10);
  assert.throws(() => parseLlama2c(ak42, "v1.bin"), UnsupportedFeatureError);
  // A text file is not a checkpoint, and the message says what is read instead.
  const text = new TextEncoder().encode("# templora\n\nLong text with Temp-Lora on WebGPU.\n");
  assert.throws(
    () => parseLlama2c(text, "README.md"),
    (e: unknown) =>
      e instanceof CorruptHeaderError &&
      /^README\.md: not a llama2\.c checkpoint: its header field dim = \d+ is not plausible/
        .test(e.message) &&
      /reads llama2\.c \.bin checkpoints, GGUF files and Hugging Face model folders$/
        .test(e.message),
  );
});
