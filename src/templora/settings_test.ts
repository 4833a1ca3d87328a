import assert from "node:assert/strict";
import { SMALL_LLAMA } from "../../kernels_test/model_fixtures.ts";
import { InvalidSettingError } from "../model/errors.ts";
import { resolveTempLoraSettings } from "./settings.ts";

Deno.test("Temp-Lora settings: an out-of-range setting is named with its range and why", () => {
  const length = SMALL_LLAMA.maxSeqLen;
  const cases: [Parameters<typeof resolveTempLoraSettings>[1], string][] = [
    [
      { window: 600 },
      `window must be an integer in 2..${length} (${length} is the model's trained length), ` +
      "got 600",
    ],
    [
      { window: 64, chunk: 40 },
      "chunk must be an integer in 1..32 (at most half the window of 64)",
    ],
    [{ epochs: -1 }, "epochs must be an integer >= 0, got -1"],
    [{ kvRefresh: 1.5 }, "kvRefresh must be an integer >= 0, got 1.5"],
    [
      { window: 64, chunk: 16, trainContext: length },
      `trainContext must be an integer in 0..${length - 16} (with the chunk of 16 it must fit ` +
      `the model's length of ${length}), got ${length}`,
    ],
  ];
  for (const [overrides, message] of cases) {
    assert.throws(
      () => resolveTempLoraSettings(SMALL_LLAMA, overrides),
      (e: unknown) => e instanceof InvalidSettingError && e.message.startsWith(message),
      JSON.stringify(overrides),
    );
  }
});

Deno.test("Temp-Lora settings: alpha follows the rank, and undefined overrides keep the defaults", () => {
  const defaults = resolveTempLoraSettings(SMALL_LLAMA);
  const ranked = resolveTempLoraSettings(SMALL_LLAMA, { rank: 8 });
  assert.equal(ranked.rank, 8);
  assert.equal(ranked.alpha, 8, "alpha follows the rank, so the update's scale stays 1");
  assert.equal(resolveTempLoraSettings(SMALL_LLAMA, { rank: 8, alpha: 32 }).alpha, 32);
  const blank = resolveTempLoraSettings(SMALL_LLAMA, {
    rank: undefined,
    window: undefined,
    optimizer: { lr: undefined },
  });
  assert.deepEqual(blank, defaults);
});

Deno.test("Temp-Lora settings: real models get the paper's settings, small ones scaled", () => {
  const model = (dim: number, maxSeqLen: number) => ({ ...SMALL_LLAMA, dim, maxSeqLen });
  const llama8b = resolveTempLoraSettings(model(4096, 131072));
  assert.deepEqual(
    [llama8b.window, llama8b.chunk, llama8b.trainContext, llama8b.rank, llama8b.epochs],
    [4096, 1024, 3072, 64, 2],
  );
  assert.equal(llama8b.optimizer.lr, 5e-5);
  assert.equal(resolveTempLoraSettings(model(2048, 131072)).optimizer.lr, 5e-5);
  const short = resolveTempLoraSettings(model(2048, 2048));
  assert.deepEqual([short.window, short.chunk], [2048, 512], "the window is capped by the model");
  const smol = resolveTempLoraSettings(model(576, 8192));
  assert.deepEqual([smol.window, smol.chunk, smol.epochs, smol.rank], [1024, 256, 3, 64]);
  assert.equal(smol.optimizer.lr, 3.1e-4);
  assert.equal(resolveTempLoraSettings(model(64, 512)).optimizer.lr, 1e-3, "stories260K's, swept");
});
