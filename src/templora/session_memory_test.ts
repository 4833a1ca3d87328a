import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { TextModel } from "../model/text_model.ts";
import { resolveTempLoraSettings } from "./settings.ts";
import { type WriterEvent, type WriterSession, writeWithTempLora } from "./writer.ts";

gpuTest("writer: each run accounts for exactly the GPU memory it adds", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const options = { maxTokens: 40, temperature: 0.9, banEos: true };
  const start = (seed: number, enabled: boolean) => {
    const settings = resolveTempLoraSettings(lm.config, {
      window: 32,
      chunk: 8,
      epochs: 1,
      enabled,
    });
    let session: WriterSession | undefined;
    const it = writeWithTempLora(lm, "Once", { ...options, seed }, settings, {
      onSession: (s) => session = s,
    });
    return { it, session: () => session! };
  };
  /** Pulls events until one matches. */
  const until = async (it: AsyncGenerator<WriterEvent>, match: (e: WriterEvent) => boolean) => {
    for (;;) {
      const next = await it.next();
      assert.ok(!next.done, "the run ended first");
      if (match(next.value)) return;
    }
  };
  const warm = start(0, true);
  for await (const _ of warm.it); // compile every kernel first
  gpu.memory.trim();
  const idle = gpu.memory.bytesInUse;

  // Two runs paused at the same time: the device holds exactly their two footprints more.
  const a = start(1, true);
  const b = start(2, false);
  await until(a.it, (e) => e.type === "train");
  await until(b.it, (e) => e.type === "token" && e.index === 20);
  gpu.memory.trim(); // readback staging is pooled by the device, not held by a run
  assert.ok(a.session().gpuBytes > b.session().gpuBytes, "the adapter and trainer count");
  const held = a.session().gpuBytes;
  assert.equal(gpu.memory.bytesInUse - idle, held + b.session().gpuBytes);

  let summary;
  for (;;) {
    const next = await a.it.next();
    if (next.done) {
      summary = next.value;
      break;
    }
  }
  assert.ok(summary.gpuBytes >= held, "the summary gives what the run held at its end");
  assert.equal(a.session().gpuBytes, 0, "nothing held once it has ended");
  gpu.memory.trim();
  assert.equal(gpu.memory.bytesInUse - idle, b.session().gpuBytes);
  await b.it.return(undefined as never);
  assert.equal(b.session().gpuBytes, 0);
  gpu.memory.trim();
  assert.equal(gpu.memory.bytesInUse, idle);
  lm.dispose();
});
