import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { EventReader, serveApp } from "../../kernels_test/server_helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { TextModel } from "../model/text_model.ts";

gpuTest("server: stream_options.include_training streams each training step's loss", async () => {
  const { gpu } = await testGpu();
  const lm = await TextModel.load(STORIES260K, { gpu });
  const served = serveApp(lm);
  try {
    const body = {
      prompt: "Once upon a time",
      max_tokens: 40,
      temperature: 0,
      stream: true,
      templora: { chunk: 16, epochs: 2, window: 64 },
    };
    const read = async (streamOptions?: unknown) => {
      const reader = new EventReader(
        await served.post("/v1/completions", { ...body, stream_options: streamOptions }),
      );
      const events: any[] = [];
      for (let e = await reader.next(); e !== null && e !== "[DONE]"; e = await reader.next()) {
        events.push(e);
      }
      return events;
    };
    const plain = await read();
    assert.ok(plain.every((e) => e.templora_training === undefined));
    const events = await read({ include_training: true });
    const training = events.filter((e) => e.templora_training).map((e) => e.templora_training);
    // 40 tokens in chunks of 16: two chunks trained, two steps each.
    assert.deepEqual(training.map((t) => [t.chunk, t.epoch]), [[0, 0], [0, 1], [1, 0], [1, 1]]);
    for (const t of training) {
      assert.ok(Number.isFinite(t.loss) && t.loss > 0, `loss ${t.loss}`);
      assert.ok(t.tokens > 0 && t.seconds >= 0 && t.skipped === false);
    }
    for (const e of events.filter((e) => e.templora_training)) assert.deepEqual(e.choices, []);
    // The text is the same with and without the training chunks.
    const text = (es: any[]) => es.map((e) => e.choices?.[0]?.text ?? "").join("");
    assert.equal(text(events), text(plain));
    const last = events.findLast((e) => e.templora);
    assert.equal(last.templora.chunks_trained, 2);
    const bad = await served.post("/v1/completions", {
      ...body,
      stream_options: { include_training: "yes" },
    });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.param, "stream_options.include_training");
  } finally {
    await served.close();
    lm.dispose();
  }
});
