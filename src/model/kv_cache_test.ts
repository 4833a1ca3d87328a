/**
 * The f16 KV cache on stories260K against the f32 one: greedy text (with a window small enough
 * that the cache is rebuilt by prefill several times) and the perplexity of a text with and
 * without Temp-Lora (whose training forward and backward read the f16 training cache), and the
 * cache's bytes.
 */
import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { TextModel } from "./text_model.ts";
import { evaluatePerplexity } from "../templora/evaluate.ts";
import { resolveTempLoraSettings } from "../templora/settings.ts";
import { KernelUsageError } from "../gpu/errors.ts";

gpuTest("f16 KV cache: stories260K writes and scores as with the f32 cache", async () => {
  const { gpu } = await testGpu();
  const [lm32, lm16] = await Promise.all(
    (["f32", "f16"] as const).map((kvCacheDtype) =>
      TextModel.load(STORIES260K, { gpu, kvCacheDtype })
    ),
  );
  try {
    const c = lm32.config;
    const cache32 = lm32.model.createCache(64), cache16 = lm16.model.createCache(64);
    assert.equal(cache16.dtype, "f16");
    assert.equal(cache16.bytes * 2, cache32.bytes);
    cache32.destroy();
    cache16.destroy();
    const options = { maxTokens: 256, temperature: 0, banEos: true, window: 96 };
    const prompt = "Once upon a time";
    const [a, b] = [
      await lm32.complete(prompt, options),
      await lm16.complete(prompt, options),
    ];
    const ids32 = a.tokens, ids16 = b.tokens;
    let agree = 0;
    while (agree < ids32.length && ids32[agree] === ids16[agree]) agree++;
    const same = ids32.filter((id, i) => id === ids16[i]).length;
    console.log(
      `  greedy ${ids32.length} tokens (window 96): the first ${agree} agree, ${same} in all`,
    );
    console.log(`  f32: ${JSON.stringify(a.text.slice(0, 160))}`);
    console.log(`  f16: ${JSON.stringify(b.text.slice(0, 160))}`);
    assert.ok(agree >= 64, `f16 greedy text leaves f32's after ${agree} tokens`);
    // Perplexity of the f32 text, plain and with Temp-Lora (trained on f16 keys and values).
    const settings = resolveTempLoraSettings(c, { window: 96, chunk: 32, epochs: 2 });
    const text = prompt + a.text;
    const [p32, p16] = [
      await evaluatePerplexity(lm32, text, { maxTokens: 256 }, settings),
      await evaluatePerplexity(lm16, text, { maxTokens: 256 }, settings),
    ];
    const rel = (x: number, y: number) => Math.abs(x - y) / y;
    console.log(
      `  perplexity f32 ${p32.base.ppl.toFixed(5)} / Temp-Lora ${p32.templora.ppl.toFixed(5)}; ` +
        `f16 ${p16.base.ppl.toFixed(5)} / ${p16.templora.ppl.toFixed(5)}`,
    );
    assert.ok(rel(p16.base.ppl, p32.base.ppl) < 2e-3, "base perplexity within 0.2%");
    assert.ok(rel(p16.templora.ppl, p32.templora.ppl) < 5e-3, "Temp-Lora perplexity within 0.5%");
  } finally {
    lm32.dispose();
    lm16.dispose();
  }
});

gpuTest("f16 KV cache: a model refuses a dtype it does not know", async () => {
  const { gpu } = await testGpu();
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    TextModel.load(STORIES260K, { gpu, kvCacheDtype: "bf16" as any }),
    KernelUsageError,
  );
});
