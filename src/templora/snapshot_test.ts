import assert from "node:assert/strict";
import { join } from "node:path";
import { assertClose, gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K, STORIES260K_TOKENIZER } from "../../kernels_test/test_data.ts";
import { writeHfFolder } from "../formats/hf.ts";
import { readLlama2c } from "../formats/llama2c.ts";
import { readSafetensors, writeSafetensors } from "../formats/safetensors.ts";
import {
  convertTensor,
  f32ArrayToBf16,
  type TensorData,
  tensorToF32,
} from "../formats/tensor_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { uploadTensor } from "../gpu/tensor.ts";
import { referenceForward, type ReferenceLora } from "../reference/model.ts";
import { TextModel } from "../model/text_model.ts";
import { CorruptSnapshotError, SnapshotMismatchError } from "./errors.ts";
import { resolveTempLoraSettings } from "./settings.ts";
import {
  loadPeftAdapter,
  loadSnapshot,
  restoreAdapter,
  savePeftAdapter,
  saveSnapshot,
  type TempLoraSnapshot,
} from "./snapshot.ts";
import {
  resumeWithTempLora,
  type WriterEvent,
  type WriterSummary,
  writeWithTempLora,
} from "./writer.ts";

async function drain(it: AsyncGenerator<WriterEvent, WriterSummary>) {
  const events: WriterEvent[] = [];
  for (;;) {
    const next = await it.next();
    if (next.done) return { events, summary: next.value };
    events.push(next.value);
  }
}

/** PEFT's name of a Llama projection's LoRA matrix, spelled out independently of the library. */
function peftName(layer: number, module: string, matrix: "A" | "B"): string {
  const group = ["gate_proj", "up_proj", "down_proj"].includes(module) ? "mlp" : "self_attn";
  return `base_model.model.model.layers.${layer}.${group}.${module}.lora_${matrix}.weight`;
}

/** [in, out] of each stories260K projection (dim 64, hidden 172, 8 heads, 4 KV heads of 8). */
const STORIES_SHAPES: Record<string, [number, number]> = {
  q_proj: [64, 64],
  k_proj: [64, 32],
  v_proj: [64, 32],
  o_proj: [64, 64],
  gate_proj: [64, 172],
  up_proj: [64, 172],
  down_proj: [172, 64],
};

const SETTINGS = { window: 64, chunk: 16, epochs: 2, kvRefresh: 3, rank: 4 };
const OPTIONS = { maxTokens: 72, temperature: 0.9, seed: 7, banEos: true };

gpuTest("snapshot: PEFT's files, names and shapes; loading returns what was saved", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const dir = await Deno.makeTempDir({ prefix: "templora_snapshot_" });
  try {
    const settings = resolveTempLoraSettings(lm.config, SETTINGS);
    const saved: TempLoraSnapshot[] = [];
    const { events, summary } = await drain(
      writeWithTempLora(lm, "Once upon a time", OPTIONS, settings, {
        snapshots: {
          everyChunks: 2,
          save: async (s) => {
            saved.push(s);
            await saveSnapshot(dir, s);
          },
        },
      }),
    );
    // 72 tokens are four chunks of 16 and 8 more: snapshots after chunks 2 and 4, and at the end.
    const taken = events.flatMap((e) => e.type === "snapshot" ? [[e.reason, e.tokens]] : []);
    assert.deepEqual(taken, [["schedule", 32], ["schedule", 64], ["end", 72]]);
    assert.equal(summary.chunksTrained, 4);

    const config = JSON.parse(await Deno.readTextFile(join(dir, "adapter_config.json")));
    assert.equal(config.peft_type, "LORA");
    assert.equal(config.task_type, "CAUSAL_LM");
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 4);
    assert.equal(config.lora_dropout, 0.05);
    assert.equal(config.base_model_name_or_path, STORIES260K);
    assert.deepEqual(config.target_modules, Object.keys(STORIES_SHAPES));
    assert.equal(config.use_dora, false);
    assert.equal(config.bias, "none");

    const weights = await readSafetensors(join(dir, "adapter_model.safetensors"));
    const expected = new Map<string, number[]>();
    for (let layer = 0; layer < 5; layer++) {
      for (const [module, [inDim, outDim]] of Object.entries(STORIES_SHAPES)) {
        expected.set(peftName(layer, module, "A"), [4, inDim]);
        expected.set(peftName(layer, module, "B"), [outDim, 4]);
      }
    }
    assert.deepEqual(weights.names().sort(), [...expected.keys()].sort());
    for (const [name, shape] of expected) {
      assert.deepEqual(weights.entries.get(name)!.shape, shape, name);
      assert.equal(weights.entries.get(name)!.dtype, "F32", name);
    }
    // B has moved away from zero after eight optimizer steps.
    assert.ok(weights.f32(peftName(4, "down_proj", "B")).some((x) => x !== 0));

    const last = saved[saved.length - 1];
    assert.deepEqual(await loadSnapshot(dir), last);

    // Settings JSON cannot spell (an infinite clip) and text that looks like a number survive.
    const odd: TempLoraSnapshot = {
      ...last,
      promptText: "Infinity",
      settings: {
        ...last.settings,
        optimizer: { ...last.settings.optimizer, maxGradNorm: Infinity },
      },
      generation: { ...last.generation, stop: ["Infinity", "NaN"] },
    };
    const oddDir = `${dir}-odd`;
    await saveSnapshot(oddDir, odd);
    assert.deepEqual(await loadSnapshot(oddDir), odd);
    await Deno.remove(oddDir, { recursive: true });

    // An adapter alone (no optimizer state) round-trips through PEFT's two files.
    const peftDir = `${dir}-peft`;
    const adapterOnly = { config: last.adapter!.config, weights: last.adapter!.weights };
    await savePeftAdapter(peftDir, adapterOnly);
    assert.deepEqual(await loadPeftAdapter(peftDir), adapterOnly);
    await Deno.remove(peftDir, { recursive: true });
    assert.deepEqual([...last.tokens.subarray(last.promptTokens)], summary.tokens);
    assert.equal(last.tokens.length, last.promptTokens + 72);
    assert.equal(last.adapter?.optimizer?.steps, 8);
    assert.equal(last.progress.stepIndex, 8);
    assert.deepEqual(last.progress.chunkLosses, summary.chunkLosses);
    assert.equal(last.chunkStart, last.promptTokens + 64);
    assert.equal(last.cache.k.length, 5);
  } finally {
    lm.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest(
  "a PEFT adapter written elsewhere (q_proj and v_proj, BF16) runs as PEFT runs it",
  async () => {
    const { gpu, registry, recorder } = await testGpu();
    const rng = seededRng("peft adapter");
    const weights = await readLlama2c(STORIES260K);
    const config = weights.config;
    const dir = await Deno.makeTempDir({ prefix: "templora_peft_" });
    const rank = 8;
    const tensors = new Map<string, TensorData>();
    const lora: ReferenceLora = { rank, scale: 16 / rank, a: new Map(), b: new Map() };
    for (let layer = 0; layer < config.nLayers; layer++) {
      for (const module of ["q_proj", "v_proj"]) {
        const [inDim, outDim] = STORIES_SHAPES[module];
        const a = f32ArrayToBf16(rng.normals(rank * inDim, 0.3));
        const b = f32ArrayToBf16(rng.normals(outDim * rank, 0.3));
        tensors.set(peftName(layer, module, "A"), { dtype: "BF16", shape: [rank, inDim], data: a });
        tensors.set(peftName(layer, module, "B"), {
          dtype: "BF16",
          shape: [outDim, rank],
          data: b,
        });
        const hf = `model.layers.${layer}.self_attn.${module}`;
        const f64 = (bits: Uint16Array, shape: number[]) =>
          Float64Array.from(tensorToF32({ dtype: "BF16", shape, data: bits }));
        lora.a.set(hf, f64(a, [rank, inDim]));
        lora.b.set(hf, f64(b, [outDim, rank]));
      }
    }
    try {
      await Deno.writeFile(join(dir, "adapter_model.safetensors"), writeSafetensors(tensors));
      // What PEFT 0.13 writes, unknown keys included.
      await Deno.writeTextFile(
        join(dir, "adapter_config.json"),
        JSON.stringify({
          alpha_pattern: {},
          auto_mapping: null,
          base_model_name_or_path: "karpathy/tinyllamas",
          bias: "none",
          fan_in_fan_out: false,
          inference_mode: true,
          init_lora_weights: true,
          layer_replication: null,
          layers_pattern: null,
          layers_to_transform: null,
          loftq_config: {},
          lora_alpha: 16,
          lora_dropout: 0.1,
          megatron_config: null,
          megatron_core: "megatron.core",
          modules_to_save: null,
          peft_type: "LORA",
          r: rank,
          rank_pattern: {},
          revision: null,
          target_modules: ["v_proj", "q_proj"],
          task_type: "CAUSAL_LM",
          use_dora: false,
          use_rslora: false,
        }),
      );
      const peft = await loadPeftAdapter(dir);
      assert.equal(peft.config.lora_alpha, 16);
      assert.equal(peft.optimizer, undefined);
      const adapter = restoreAdapter(gpu, config, peft);
      assert.deepEqual(adapter.projections.map((p) => p.target).slice(0, 2), ["q", "v"]);
      assert.equal(adapter.scale, 2);

      const { LlamaModel } = await import("../model/llama.ts");
      const model = await LlamaModel.create(gpu, registry, weights, STORIES260K);
      const t = 20;
      const tokens = [1, ...Array.from({ length: t - 1 }, () => rng.int(config.vocabSize))];
      const lookup = (name: string) => tensorToF32(weights.tensors.get(name)!);
      const ref = referenceForward(
        config,
        lookup,
        () => lookup("model.embed_tokens.weight"),
        tokens,
        lora,
      ).logits;
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
        adapter,
      });
      recorder.submit();
      assertClose(await readF32(gpu, act.logits), ref, "logits with the PEFT adapter");
      for (const x of [ids, cache, act, adapter, model]) x.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest("snapshot errors: damaged, truncated, mixed and foreign files, other models", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const root = await Deno.makeTempDir({ prefix: "templora_snapshot_errors_" });
  const dir = join(root, "snap");
  try {
    const settings = resolveTempLoraSettings(lm.config, SETTINGS);
    const options = { ...OPTIONS, maxTokens: 20 };
    let first: TempLoraSnapshot | undefined;
    await drain(
      writeWithTempLora(lm, "Once", options, settings, {
        snapshots: { save: async (s) => void (first = s, await saveSnapshot(dir, s)) },
      }),
    );
    const snapshot = first!;
    const pristine = new Map<string, Uint8Array>();
    for (
      const name of [
        "adapter_config.json",
        "adapter_model.safetensors",
        "templora_state.safetensors",
      ]
    ) {
      pristine.set(name, await Deno.readFile(join(dir, name)));
    }
    const restore = async () => {
      for (const [name, bytes] of pristine) await Deno.writeFile(join(dir, name), bytes);
    };
    const rejects = async (
      pattern: RegExp,
      type: typeof CorruptSnapshotError = CorruptSnapshotError,
    ) =>
      await assert.rejects(loadSnapshot(dir), (e: unknown) => {
        assert.ok(e instanceof type, `${e}`);
        assert.match((e as Error).message, pattern);
        return true;
      });

    // One flipped byte in the middle of the state's tensor data.
    const state = pristine.get("templora_state.safetensors")!;
    const flipped = state.slice();
    flipped[Math.floor(state.length * 0.7)] ^= 0x10;
    await Deno.writeFile(join(dir, "templora_state.safetensors"), flipped);
    await rejects(/damaged/);
    await Deno.writeFile(
      join(dir, "templora_state.safetensors"),
      state.subarray(0, state.length - 100),
    );
    await rejects(/truncated/);
    await restore();

    const weights = pristine.get("adapter_model.safetensors")!;
    const damaged = weights.slice();
    damaged[weights.length - 3] ^= 1;
    await Deno.writeFile(join(dir, "adapter_model.safetensors"), damaged);
    await rejects(/adapter_model\.safetensors: does not match/);
    await restore();
    await Deno.remove(join(dir, "adapter_config.json"));
    await rejects(/adapter_config\.json: cannot be read \(no such file\)/);
    await restore();
    assert.deepEqual(await loadSnapshot(dir), snapshot);

    await assert.rejects(loadSnapshot(join(root, "nothing")), CorruptSnapshotError);
    const foreign = join(root, "foreign");
    await Deno.mkdir(foreign);
    await Deno.writeTextFile(join(foreign, "notes.txt"), "mine");
    await assert.rejects(saveSnapshot(foreign, snapshot), /refusing to replace it/);
    assert.equal(await Deno.readTextFile(join(foreign, "notes.txt")), "mine");

    // Another model of the same sizes (its weights rounded to bfloat16) and one of other sizes.
    const hf = join(root, "hf");
    await writeHfFolder(hf, await readLlama2c(STORIES260K), { dtype: "BF16" });
    const other = await TextModel.load(hf, { gpu, tokenizerPath: STORIES260K_TOKENIZER });
    try {
      const resumeOn = async (model: TextModel, s: TempLoraSnapshot, pattern: RegExp) =>
        await assert.rejects(drain(resumeWithTempLora(model, s)), (e: unknown) => {
          assert.ok(e instanceof SnapshotMismatchError, `${e}`);
          assert.match((e as Error).message, pattern);
          return true;
        });
      await resumeOn(other, snapshot, /architecture is llama2c/);
      const sameSizes = {
        ...snapshot,
        model: { ...snapshot.model, architecture: "LlamaForCausalLM" },
      };
      await resumeOn(other, sameSizes, /the sizes match but the weights differ/);
      const wider = { ...snapshot, model: { ...snapshot.model, dim: 128 } };
      await resumeOn(lm, wider, /its dim is 128, this model's is 64/);
    } finally {
      other.dispose();
    }

    // PEFT adapters templora cannot run, or made for another model, allocate nothing.
    const adapterDir = join(root, "peft");
    const peft = snapshot.adapter!;
    const writePeft = async (config: Record<string, unknown>, tensors: Map<string, TensorData>) => {
      await Deno.mkdir(adapterDir, { recursive: true });
      await Deno.writeTextFile(join(adapterDir, "adapter_config.json"), JSON.stringify(config));
      await Deno.writeFile(
        join(adapterDir, "adapter_model.safetensors"),
        writeSafetensors(tensors),
      );
    };
    await writePeft({ ...peft.config, use_dora: true }, peft.weights);
    await assert.rejects(loadPeftAdapter(adapterDir), SnapshotMismatchError);
    await writePeft({ ...peft.config, peft_type: "IA3" }, peft.weights);
    await assert.rejects(loadPeftAdapter(adapterDir), /peft_type is "IA3"/);
    const before = gpu.memory.bytesInUse;
    const fewerLayers = new Map([...peft.weights].filter(([name]) => !name.includes("layers.4.")));
    await writePeft(peft.config as unknown as Record<string, unknown>, fewerLayers);
    assert.throws(
      () => restoreAdapter(gpu, lm.config, { config: peft.config, weights: fewerLayers }),
      /no tensor base_model\.model\.model\.layers\.4\.self_attn\.q_proj\.lora_A\.weight/,
    );
    const wrongRank = { config: { ...peft.config, r: 8 }, weights: peft.weights };
    assert.throws(() => restoreAdapter(gpu, lm.config, wrongRank), /needs \[8,64\] \(rank 8\)/);
    const extra = new Map(peft.weights);
    extra.set(
      "base_model.model.lm_head.lora_A.weight",
      convertTensor(peft.weights.values().next().value!, "F32"),
    );
    assert.throws(
      () => restoreAdapter(gpu, lm.config, { config: peft.config, weights: extra }),
      /unexpected tensor base_model\.model\.lm_head/,
    );
    assert.equal(gpu.memory.bytesInUse, before, "nothing allocated by the failed restores");
  } finally {
    lm.dispose();
    await Deno.remove(root, { recursive: true });
  }
});
