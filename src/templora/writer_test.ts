import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { TextModel } from "../model/text_model.ts";
import { resolveTempLoraSettings } from "./settings.ts";
import { type WriterEvent, type WriterSummary, writeWithTempLora } from "./writer.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";

const STORIES = STORIES260K;

async function run(it: AsyncGenerator<WriterEvent, WriterSummary>) {
  const events: WriterEvent[] = [];
  for (;;) {
    const next = await it.next();
    if (next.done) return { events, summary: next.value };
    events.push(next.value);
  }
}

gpuTest("Temp-Lora writer: trains on every finished chunk and streams events", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES, { gpu });
  const settings = resolveTempLoraSettings(lm.config, { window: 128, chunk: 32, epochs: 2 });
  const options = { maxTokens: 150, temperature: 0.8, seed: 5, banEos: true };
  const { events, summary } = await run(
    writeWithTempLora(lm, "Once upon a time", options, settings),
  );
  const trains = events.filter((e) => e.type === "train");
  assert.equal(summary.tokens.length, 150);
  assert.equal(summary.chunksTrained, 4);
  assert.equal(trains.length, 8);
  assert.deepEqual(trains.map((e) => e.type === "train" && e.chunk), [0, 0, 1, 1, 2, 2, 3, 3]);
  for (const e of trains) if (e.type === "train") assert.ok(Number.isFinite(e.loss) && !e.skipped);
  assert.ok(events.some((e) => e.type === "cache" && e.reason === "slide"));
  assert.ok(summary.trainingShare > 0 && summary.trainingShare < 1);
  assert.ok(summary.peakGpuBytes > 0);
  const streamed = events.map((e) => e.type === "token" ? e.text : "").join("");
  assert.equal(streamed, summary.text);
  lm.dispose();
});

gpuTest("Temp-Lora writer: disabled, it writes what plain generation writes", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES, { gpu });
  const settings = resolveTempLoraSettings(lm.config, { window: 512, chunk: 32, enabled: false });
  const options = { maxTokens: 80, temperature: 0 };
  const { summary } = await run(writeWithTempLora(lm, "", options, settings));
  const plain = await lm.complete("", { ...options, window: 512 });
  assert.equal(summary.text, plain.text);
  assert.equal(summary.chunksTrained, 0);
  lm.dispose();
});

gpuTest(
  "Temp-Lora writer: GPU memory returns to its level after each of many sessions",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES, { gpu });
    const settings = resolveTempLoraSettings(lm.config, { window: 64, chunk: 16, epochs: 1 });
    const options = { maxTokens: 40, temperature: 1, banEos: true };
    await run(writeWithTempLora(lm, "", options, settings)); // compile and size the recorder
    gpu.memory.trim();
    const idle = gpu.memory.bytesInUse;
    for (let i = 0; i < 5; i++) {
      const controller = new AbortController();
      const it = writeWithTempLora(
        lm,
        "",
        { ...options, seed: i, signal: controller.signal },
        settings,
      );
      let n = 0;
      for await (const e of it) if (e.type === "token" && ++n === 10 + 5 * i) controller.abort();
      gpu.memory.trim();
      assert.equal(gpu.memory.bytesInUse, idle, `after session ${i}`);
    }
    lm.dispose();
  },
);
