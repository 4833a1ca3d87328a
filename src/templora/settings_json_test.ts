import assert from "node:assert/strict";
import { SMALL_LLAMA } from "../../kernels_test/model_fixtures.ts";
import { resolveTempLoraSettings } from "./settings.ts";
import { tempLoraSettingsJson } from "./settings_json.ts";

const CONFIG = SMALL_LLAMA;

Deno.test("Temp-Lora settings in JSON: snake_case, every setting, nothing nested", () => {
  const s = resolveTempLoraSettings(CONFIG, { window: 256, chunk: 32, kvRefresh: 3 });
  const json = tempLoraSettingsJson(s);
  assert.equal(json.window, 256);
  assert.equal(json.chunk, 32);
  assert.equal(json.train_context, 224);
  assert.equal(json.kv_refresh, 3);
  assert.equal(json.lr, s.optimizer.lr);
  assert.equal(json.max_grad_norm, s.optimizer.maxGradNorm);
  assert.deepEqual(json.targets, [...s.targets]);
  for (const key of Object.keys(json)) assert.match(key, /^[a-z0-9_]+$/, key);
  for (const value of Object.values(json)) {
    assert.ok(Array.isArray(value) || typeof value !== "object", "flat");
  }
  // Every setting and optimizer setting has its place.
  const count = Object.keys(s).length - 1 + Object.keys(s.optimizer).length;
  assert.equal(Object.keys(json).length, count);
});
