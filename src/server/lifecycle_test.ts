import assert from "node:assert/strict";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { acquireGpu } from "../gpu/device.ts";
import { TextModel } from "../model/text_model.ts";
import type { ServedModel } from "./host.ts";
import {
  EventReader,
  eventually,
  parseMetrics,
  serveApp,
  streamedText,
} from "../../kernels_test/server_helpers.ts";

let shared: Promise<TextModel> | undefined;
function sharedModel(): Promise<TextModel> {
  shared ??= testGpu().then(({ gpu }) => TextModel.load(STORIES260K, { gpu }));
  return shared;
}

const SMALL = { window: 32, chunk: 8, epochs: 2, rank: 4 };

gpuTest("server: /metrics counts sessions, tokens, steps, GPU bytes and latencies", async () => {
  const lm = await sharedModel();
  const s = serveApp(lm);
  try {
    const body = { prompt: "Once", max_tokens: 24, temperature: 0.8, seed: 1, templora: SMALL };
    const a = await (await s.post("/v1/completions", body)).json();
    const off = { ...body, max_tokens: 10, templora: { ...SMALL, enabled: false } };
    const b = await (await s.post("/v1/completions", off)).json();
    assert.equal(a.usage.completion_tokens, 24);
    assert.equal(a.templora.chunks_trained, 2);
    assert.equal(b.usage.completion_tokens, 10);
    const bad = await s.post("/v1/completions", "{");
    assert.equal(bad.status, 400);
    await bad.body?.cancel();

    const response = await fetch(`${s.base}/metrics`);
    assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const text = await response.text();
    // Every series is announced with HELP and TYPE, and every line parses.
    for (const line of text.trim().split("\n")) {
      assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? -?[\d.e+-]+|\w+(\{.*\})? \+Inf)$/);
    }
    const m = parseMetrics(text);
    assert.equal(m.get("templora_tokens_generated_total"), 34);
    assert.equal(m.get("templora_prompt_tokens_total"), 2 * lm.encode("Once").length);
    assert.equal(m.get("templora_training_steps_total"), 4, "two chunks, two epochs each");
    assert.equal(m.get("templora_training_steps_skipped_total"), 0);
    assert.equal(m.get('templora_sessions_total{outcome="completed"}'), 2);
    assert.equal(m.get('templora_requests_total{route="POST /v1/completions",status="200"}'), 2);
    assert.equal(m.get('templora_requests_total{route="POST /v1/completions",status="400"}'), 1);
    assert.equal(
      m.get('templora_request_duration_seconds_count{route="POST /v1/completions"}'),
      3,
    );
    assert.equal(
      m.get('templora_request_duration_seconds_bucket{route="POST /v1/completions",le="+Inf"}'),
      3,
    );
    assert.equal(m.get('templora_session_duration_seconds_count{route="/v1/completions"}'), 2);
    assert.equal(m.get("templora_sessions_active"), 0);
    assert.equal(m.get("templora_sessions_gpu_bytes"), 0);
    assert.equal(m.get("templora_gpu_bytes_in_use"), lm.gpu.memory.bytesInUse);
    assert.equal(m.get("templora_gpu_peak_bytes"), lm.gpu.memory.highestBytes);
    assert.ok(m.get("templora_gpu_peak_bytes")! >= m.get("templora_gpu_bytes_in_use")!);
    assert.equal(m.get("templora_gpu_available"), 1);

    // A session that is writing is accounted for on its own.
    const stream = new EventReader(
      await s.post("/v1/completions", { ...body, max_tokens: 2000, stream: true }),
    );
    await stream.next();
    const health = await s.get("/health");
    assert.equal(health.sessions.running.length, 1);
    const running = health.sessions.running[0];
    assert.ok(running.gpu_bytes > 0);
    assert.equal(health.sessions.gpu_bytes, running.gpu_bytes);
    assert.ok(health.gpu.bytes_in_use > running.gpu_bytes);
    const during = parseMetrics(await (await fetch(`${s.base}/metrics`)).text());
    assert.equal(during.get("templora_sessions_active"), 1);
    assert.ok(during.get("templora_sessions_gpu_bytes")! > 0);
    await stream.cancel();
    await eventually(
      "the session to end",
      async () => (await s.get("/health")).sessions.active === 0,
    );
    const after = parseMetrics(await (await fetch(`${s.base}/metrics`)).text());
    assert.equal(after.get('templora_sessions_total{outcome="disconnected"}'), 1);
    assert.equal(after.get("templora_sessions_gpu_bytes"), 0);
  } finally {
    await s.close();
  }
});

gpuTest(
  "server: shutdown ends streams with an error event, refuses the rest, frees all",
  async () => {
    const lm = await sharedModel();
    const shutdown = new AbortController();
    const s = serveApp(lm, { maxSessions: 1, maxQueue: 4, signal: shutdown.signal });
    try {
      const body = { prompt: "Once", max_tokens: 3000, temperature: 0.8, templora: SMALL };
      await (await s.post("/v1/completions", { ...body, max_tokens: 4 })).json(); // warm up
      lm.gpu.memory.trim();
      const idle = lm.gpu.memory.bytesInUse;
      const stream = new EventReader(await s.post("/v1/completions", { ...body, stream: true }));
      assert.ok((await stream.next()).choices);
      const queued = s.post("/v1/completions", { ...body, max_tokens: 5 });
      await eventually(
        "a request to queue",
        async () => (await s.get("/health")).sessions.queued === 1,
      );

      shutdown.abort();
      const events = await stream.rest();
      const last = events[events.length - 1];
      assert.equal(last.error?.code, "server_shutdown", JSON.stringify(last));
      assert.ok(!events.includes("[DONE]"));
      const refused = await queued;
      assert.equal(refused.status, 503);
      assert.equal((await refused.json()).error.code, "server_shutdown");
      const late = await s.post("/v1/completions", { ...body, max_tokens: 5 });
      assert.equal(late.status, 503);
      assert.equal((await late.json()).error.code, "server_shutdown");
      const health = await s.get("/health");
      assert.equal(health.status, "shutting_down");
      assert.equal(health.sessions.active, 0);
      assert.equal(health.sessions.queued, 0);
      lm.gpu.memory.trim();
      assert.equal(lm.gpu.memory.bytesInUse, idle, "every session freed");
    } finally {
      await s.close();
    }
  },
);

gpuTest(
  "server: a lost GPU device gives 503 while it is acquired again, then requests succeed",
  async () => {
    // A device of its own: this test destroys it.
    const gpu = await acquireGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    let gate!: () => void;
    const opened = new Promise<void>((resolve) => gate = resolve);
    let attempts = 0;
    let closed = 0;
    const reloaded: ServedModel[] = [];
    const errors: unknown[] = [];
    const shutdown = new AbortController();
    const s = serveApp(lm, {
      signal: shutdown.signal,
      onServerError: (e) => errors.push(e),
      reload: async () => {
        if (++attempts === 1) throw new Error("no device yet");
        await opened;
        const g = await acquireGpu();
        const m = await TextModel.load(STORIES260K, { gpu: g });
        const served = {
          lm: m,
          close() {
            closed++;
            m.dispose();
            g.destroy();
          },
        };
        reloaded.push(served);
        return served;
      },
    });
    try {
      const body = {
        prompt: "Once upon a time",
        max_tokens: 40,
        temperature: 0.9,
        seed: 21,
        templora: SMALL,
      };
      const before = await (await s.post("/v1/completions", body)).json();
      assert.equal(before.usage.completion_tokens, 40);

      const stream = new EventReader(
        await s.post("/v1/completions", { ...body, max_tokens: 3000, stream: true }),
      );
      assert.ok((await stream.next()).choices);
      gpu.device.destroy(); // the device is lost in the middle of the stream
      const events = await stream.rest();
      const last = events[events.length - 1];
      assert.equal(last.error?.code, "gpu_device_lost", JSON.stringify(last));
      assert.equal(last.error?.type, "server_error");

      // While the device is acquired again (the first attempt fails, the second waits):
      await eventually("the first reload attempt", () => attempts >= 2);
      const refused = await s.post("/v1/completions", body);
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("retry-after"), "1");
      assert.equal((await refused.json()).error.code, "gpu_device_lost");
      const health = await s.get("/health");
      assert.equal(health.status, "recovering");
      assert.match(health.gpu.lost_reason, /destroyed/);
      const metrics = parseMetrics(await (await fetch(`${s.base}/metrics`)).text());
      assert.equal(metrics.get("templora_gpu_available"), 0);
      assert.equal(metrics.get("templora_gpu_device_losses_total"), 1);
      assert.equal(metrics.get('templora_sessions_total{outcome="failed"}'), 1);
      assert.deepEqual(errors.map(String), ["Error: no device yet"]);

      gate();
      await eventually(
        "the model to be back",
        async () => (await s.get("/health")).status === "ok",
      );
      const after = await (await s.post("/v1/completions", body)).json();
      assert.equal(
        after.choices[0].text,
        before.choices[0].text,
        "the same text on the new device",
      );
      const streamed = new EventReader(await s.post("/v1/completions", { ...body, stream: true }));
      assert.equal(streamedText(await streamed.rest()), before.choices[0].text);
      assert.equal(reloaded.length, 1);
      const back = parseMetrics(await (await fetch(`${s.base}/metrics`)).text());
      assert.equal(back.get("templora_gpu_recoveries_total"), 1);
      assert.equal(back.get("templora_gpu_bytes_in_use"), reloaded[0].lm.gpu.memory.bytesInUse);

      shutdown.abort();
      assert.equal(closed, 1, "the model the server loaded is closed at shutdown");
    } finally {
      await s.close();
      lm.dispose();
      gpu.destroy();
    }
  },
);
