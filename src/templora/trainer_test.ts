import {
  assertAdapterGradients,
  lossMask,
  randomizeAdapter,
} from "../../kernels_test/model_fixtures.ts";
import assert from "node:assert/strict";
import type { Gpu } from "../gpu/device.ts";
import { gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { readLlama2c } from "../formats/llama2c.ts";
import { tensorToF32 } from "../formats/tensor_data.ts";
import { readF32 } from "../gpu/readback.ts";
import { LlamaModel } from "../model/llama.ts";
import { referenceLossAndGradients } from "../reference/model.ts";
import { LORA_TARGETS, LoraAdapter } from "./adapter.ts";
import { DEFAULT_OPTIMIZER, Trainer } from "./trainer.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";

const STORIES = STORIES260K;

async function setup(rank = 4, maxTokens = 48) {
  const { gpu, registry, recorder } = await testGpu();
  const weights = await readLlama2c(STORIES);
  const model = await LlamaModel.create(gpu, registry, weights, STORIES);
  const adapter = new LoraAdapter(gpu, weights.config, {
    rank,
    alpha: 2 * rank,
    targets: LORA_TARGETS,
    seed: 3,
  });
  const trainer = await Trainer.create(model, adapter, registry, maxTokens);
  return { gpu, registry, recorder, weights, model, adapter, trainer };
}

gpuTest("Temp-Lora training: GPU adapter gradients match the float64 reference model", async () => {
  const { gpu, recorder, weights, model, adapter, trainer } = await setup();
  const rng = seededRng("adapter gradients");
  const config = weights.config;
  const lora = randomizeAdapter(gpu, adapter, rng);
  const t = 40;
  const from = 17;
  const tokens = [1, ...Array.from({ length: t - 1 }, () => rng.int(config.vocabSize))];
  const report = await trainer.step(recorder, tokens, from, {
    ...DEFAULT_OPTIMIZER,
    lr: 0,
    dropout: 0,
  }, 5);
  assert.equal(report.count, t - from);
  assert.ok(!report.skipped);
  const { targets, mask } = lossMask(tokens, from);
  await assertMatchesReference(
    { gpu, weights, adapter, lora, report },
    { tokens, targets, mask },
  );
  for (const x of [trainer, adapter, model]) x.destroy();
});

/** The step's loss and the adapter's gradients against the float64 reference model's. */
async function assertMatchesReference(
  run: {
    gpu: Gpu;
    weights: Awaited<ReturnType<typeof readLlama2c>>;
    adapter: LoraAdapter;
    lora: ReturnType<typeof randomizeAdapter>;
    report: { loss: number };
  },
  example: { tokens: number[]; targets: number[]; mask: boolean[] },
): Promise<void> {
  const { gpu, weights, adapter, lora, report } = run;
  const lookup = (name: string) => tensorToF32(weights.tensors.get(name)!);
  const ref = referenceLossAndGradients(
    weights.config,
    lookup,
    () => lookup("model.embed_tokens.weight"),
    example.tokens,
    example.targets,
    example.mask,
    lora,
  );
  assert.ok(
    Math.abs(report.loss - ref.loss) < 1e-4 * ref.loss,
    `loss ${report.loss} vs ${ref.loss}`,
  );
  await assertAdapterGradients(gpu, adapter, ref);
}

gpuTest(
  "Temp-Lora training: a loss on a span of a long example (the head skips the other rows) matches the float64 reference after a step that scored every row",
  async () => {
    const { gpu, recorder, weights, model, adapter, trainer } = await setup(4, 160);
    const rng = seededRng("scored span");
    const config = weights.config;
    const lora = randomizeAdapter(gpu, adapter, rng);
    const t = 150;
    const sequence = () => [1, ...Array.from({ length: t - 1 }, () => rng.int(config.vocabSize))];
    const frozen = { ...DEFAULT_OPTIMIZER, lr: 0, dropout: 0 };
    // Leaves every row's loss and head gradient non-zero in the trainer's buffers.
    await trainer.step(recorder, sequence(), 1, frozen, 0);
    const tokens = sequence();
    // Tokens 90..130 scored: rows 89..129, so the head's tiles start at row 64 and end at 130.
    const flags = tokens.map((_, i) => i >= 90 && i <= 130);
    const report = await trainer.step(recorder, tokens, flags, frozen, 1);
    assert.equal(report.count, 41);
    await assertMatchesReference({ gpu, weights, adapter, lora, report }, {
      tokens,
      targets: tokens.map((_, i) => tokens[i + 1] ?? 0),
      mask: tokens.map((_, i) => flags[i + 1] === true),
    });
    for (const x of [trainer, adapter, model]) x.destroy();
  },
);

gpuTest(
  "Temp-Lora training: a fresh adapter changes nothing; steps lower the chunk's loss",
  async () => {
    const { recorder, adapter, trainer, model } = await setup(8, 64);
    const rng = seededRng("training lowers loss");
    const tokens = [1, ...Array.from({ length: 63 }, () => 3 + rng.int(500))];
    const base = await trainer.score(recorder, tokens, 1, false);
    const fresh = await trainer.score(recorder, tokens, 1, true);
    assert.equal(fresh.lossSum, base.lossSum, "B = 0 must leave the loss bit-identical");
    const settings = { ...DEFAULT_OPTIMIZER, lr: 2e-3 };
    let last = base.loss;
    for (let i = 0; i < 4; i++) {
      const r = await trainer.step(recorder, tokens, 1, settings, i);
      assert.ok(!r.skipped && r.gradNorm! > 0);
      last = r.loss;
    }
    const after = await trainer.score(recorder, tokens, 1, true);
    assert.ok(
      after.loss < base.loss - 0.05,
      `loss ${base.loss} -> ${after.loss} (last step ${last})`,
    );
    assert.equal(adapter.steps, 4);
    for (const x of [trainer, adapter, model]) x.destroy();
  },
);

/** Adapter parameters whose first product overflows (non-finite gradients); returns them. */
async function overflowingAdapter(gpu: Gpu, adapter: LoraAdapter): Promise<Float32Array> {
  const params = new Float32Array(adapter.params.size);
  params[adapter.projections[0].a.byteOffset / 4] = 3e38;
  params[adapter.projections[0].b.byteOffset / 4] = 3e38;
  adapter.writeParams(gpu, params);
  return await readF32(gpu, adapter.params);
}

gpuTest("Temp-Lora training: a non-finite gradient skips the update and is reported", async () => {
  const { gpu, recorder, adapter, trainer, model } = await setup(4, 16);
  const before = await overflowingAdapter(gpu, adapter);
  const tokens = [1, 50, 60, 70, 80, 90, 100, 110, 120];
  const r = await trainer.step(recorder, tokens, 1, { ...DEFAULT_OPTIMIZER, lr: 1e-2 }, 0);
  assert.ok(r.skipped, "the step must report that it skipped");
  assert.deepEqual(await readF32(gpu, adapter.params), before);
  assert.equal(adapter.steps, 0);
  for (const x of [trainer, adapter, model]) x.destroy();
});

gpuTest(
  "Temp-Lora training: recomputed layers and a tiled LM head give the same step, bit for bit",
  async () => {
    const { gpu, registry, recorder, weights, model } = await setup(4, 160);
    const rng = seededRng("recompute and tiled head");
    const config = weights.config;
    const t = 150;
    const tokens = [1, ...Array.from({ length: t - 1 }, () => rng.int(config.vocabSize))];
    const runs = [];
    for (const options of [{}, { recompute: true, logitBytes: 64 * 8 * config.vocabSize }]) {
      const adapter = new LoraAdapter(gpu, config, {
        rank: 4,
        alpha: 8,
        targets: LORA_TARGETS,
        seed: 9,
      });
      const trainer = await Trainer.create(model, adapter, registry, 160, options);
      const settings = { ...DEFAULT_OPTIMIZER, lr: 1e-3 };
      const reports = [];
      for (let i = 0; i < 3; i++) {
        reports.push(await trainer.step(recorder, tokens, 40, settings, i));
      }
      const scored = await trainer.score(recorder, tokens, 40, true, { predictions: true });
      runs.push({
        tiles: trainer.activations.logitRows,
        recompute: trainer.activations.recompute,
        bytes: trainer.bytes,
        losses: reports.map((r) => r.loss),
        scored,
        params: await readF32(gpu, adapter.params),
      });
      trainer.destroy();
      adapter.destroy();
    }
    const [kept, lean] = runs;
    assert.equal(kept.tiles, 160);
    assert.equal(lean.tiles, 64, "three tiles of 64 rows for 150 tokens");
    assert.ok(lean.recompute && !kept.recompute);
    assert.ok(lean.bytes < kept.bytes / 2, `${lean.bytes} vs ${kept.bytes} bytes`);
    assert.deepEqual(lean.losses, kept.losses);
    assert.equal(lean.scored.lossSum, kept.scored.lossSum);
    assert.deepEqual(lean.scored.predicted, kept.scored.predicted);
    assert.equal(lean.scored.predicted?.length, t - 40);
    assert.deepEqual(lean.params, kept.params, "the same update, bit for bit");
    model.destroy();
  },
);

gpuTest(
  "Temp-Lora training: steps in one submission are one step at a time, bit for bit",
  async () => {
    const { gpu, registry, recorder, weights, model, adapter: unused, trainer: spare } =
      await setup(4, 48);
    spare.destroy();
    unused.destroy();
    const rng = seededRng("steps at once");
    const config = weights.config;
    const tokens = [1, ...Array.from({ length: 40 }, () => rng.int(config.vocabSize))];
    const settings = { ...DEFAULT_OPTIMIZER, lr: 1e-2, warmupSteps: 2 };
    const runs = [];
    for (const together of [false, true]) {
      const adapter = new LoraAdapter(gpu, config, {
        rank: 4,
        alpha: 8,
        targets: LORA_TARGETS,
        seed: 5,
      });
      const trainer = await Trainer.create(model, adapter, registry, 48);
      const reports = together
        ? [
          ...await trainer.steps(recorder, tokens, 8, settings, 0, 3),
          ...await trainer.steps(recorder, tokens, 8, settings, 3, 2),
        ]
        : [];
      for (let i = 0; !together && i < 5; i++) {
        reports.push(await trainer.step(recorder, tokens, 8, settings, i));
      }
      runs.push({ reports, steps: adapter.steps, params: await readF32(gpu, adapter.params) });
      trainer.destroy();
      adapter.destroy();
    }
    assert.deepEqual(runs[1].reports, runs[0].reports);
    assert.equal(runs[1].steps, 5);
    assert.deepEqual(runs[1].params, runs[0].params);
    assert.ok(runs[0].reports[4].loss < runs[0].reports[0].loss, "the steps train");
    model.destroy();
  },
);

gpuTest("Temp-Lora training: steps in one submission skip non-finite ones, t unmoved", async () => {
  const { gpu, recorder, adapter, trainer, model } = await setup(4, 16);
  const before = await overflowingAdapter(gpu, adapter);
  const tokens = [1, 50, 60, 70, 80, 90, 100, 110, 120];
  const reports = await trainer.steps(recorder, tokens, 1, DEFAULT_OPTIMIZER, 0, 3);
  assert.deepEqual(reports.map((r) => r.skipped), [true, true, true]);
  assert.deepEqual(await readF32(gpu, adapter.params), before);
  assert.equal(adapter.steps, 0);
  await assert.rejects(
    () => trainer.steps(recorder, tokens, 1, DEFAULT_OPTIMIZER, 3, 65),
    /1\.\.64/,
  );
  for (const x of [trainer, adapter, model]) x.destroy();
});
