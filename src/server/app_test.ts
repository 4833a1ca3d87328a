import assert from "node:assert/strict";
import OpenAI from "openai";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { TextModel } from "../model/text_model.ts";
import { createApp, type ServerOptions } from "./app.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";

const STORIES = STORIES260K;

let model: Promise<TextModel> | undefined;
function loadModel(): Promise<TextModel> {
  model ??= testGpu().then(({ gpu }) => TextModel.load(STORIES, { gpu }));
  return model;
}

interface Served {
  lm: TextModel;
  base: string;
  client: OpenAI;
  close: () => Promise<void>;
}

/** The app on a free loopback port, with an OpenAI client that never retries. */
async function serve(options: ServerOptions = {}): Promise<Served> {
  const lm = await loadModel();
  const app = createApp(lm, { modelId: "stories", ...options });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0 });
  return { lm, base, client, close: () => server.shutdown() };
}

/** A completion request body in OpenAI's shape, as the client sends it (plus `templora`). */
type Body = OpenAI.CompletionCreateParamsNonStreaming & { templora?: Record<string, unknown> };

async function streamText(client: OpenAI, body: Body) {
  const stream = await client.completions.create(
    { ...body, stream: true } as never,
  ) as unknown as AsyncIterable<OpenAI.Completion & { templora?: Record<string, unknown> }>;
  let text = "";
  let finish: string | null = null;
  let templora: Record<string, unknown> | undefined;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice) {
      text += choice.text;
      finish = choice.finish_reason ?? finish;
    }
    templora ??= chunk.templora;
    usage ??= chunk.usage ?? undefined;
  }
  return { text, finish, templora, usage };
}

async function health(base: string) {
  return await (await fetch(`${base}/health`)).json();
}

async function until(what: string, check: () => Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

gpuTest("server: completions (plain and streamed) match plain generation", async () => {
  const { lm, client, base, close } = await serve();
  try {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["stories"]);
    assert.equal((await health(base)).status, "ok");

    // Window 64 and chunk 32: the writer keeps max(W/2, W - chunk) = 32 = W/2 tokens when the
    // window slides, as plain generation does, so 100 tokens slide several times and still match.
    const prompt = "Once upon a time, a little bird";
    const body: Body = {
      model: "anything",
      prompt,
      max_tokens: 100,
      temperature: 0,
      seed: 3,
      templora: { enabled: false, window: 64, chunk: 32 },
    };
    const expected = await lm.complete(prompt, { maxTokens: 100, temperature: 0, window: 64 });
    const expectedFinish = expected.finishReason === "length" ? "length" : "stop";

    const plain = await client.completions.create(body) as OpenAI.Completion & {
      templora: Record<string, unknown>;
    };
    assert.equal(plain.object, "text_completion");
    assert.equal(plain.model, "stories");
    assert.equal(plain.choices.length, 1);
    assert.equal(plain.choices[0].text, expected.text);
    assert.equal(plain.choices[0].finish_reason, expectedFinish);
    assert.deepEqual(plain.usage, {
      prompt_tokens: lm.encode(prompt).length,
      completion_tokens: expected.tokens.length,
      total_tokens: lm.encode(prompt).length + expected.tokens.length,
    });
    assert.equal(plain.templora.enabled, false);
    assert.equal(plain.templora.window, 64);
    assert.equal(plain.templora.chunk, 32);
    for (const key of ["epochs", "lr", "rank", "alpha", "train_context", "kv_refresh", "beta1"]) {
      assert.equal(typeof plain.templora[key], "number", key);
    }

    const streamed = await streamText(client, {
      ...body,
      prompt: [prompt] as never,
      stream_options: { include_usage: true },
    } as Body);
    assert.equal(streamed.text, expected.text);
    assert.equal(streamed.finish, expectedFinish);
    assert.deepEqual(streamed.usage, plain.usage);
    assert.deepEqual(streamed.templora, plain.templora);

    // Stop sequences end the text before them, finish_reason "stop".
    const cut = expected.text.indexOf(" ", 10);
    const stopped = await client.completions.create({ ...body, stop: [expected.text.slice(cut)] });
    assert.equal(stopped.choices[0].text, expected.text.slice(0, cut));
    assert.equal(stopped.choices[0].finish_reason, "stop");
  } finally {
    await close();
  }
});

gpuTest("server: 8 concurrent Temp-Lora streams each write what they write alone", async () => {
  const { client, base, close } = await serve({ maxSessions: 4, maxQueue: 16 });
  try {
    const prompts = ["Once upon a time", "The dog", "Lily saw a", "Tom and his mom", "One day"];
    const bodies: Body[] = Array.from({ length: 8 }, (_, i) => ({
      model: "stories",
      prompt: prompts[i % prompts.length],
      max_tokens: 24,
      temperature: i % 2 ? 0 : 0.9,
      seed: 100 + i,
      templora: { window: 64, chunk: 16, epochs: 1, rank: 4, lr: 0.05 },
    }));
    const alone: string[] = [];
    for (const body of bodies) {
      const r = await client.completions.create(body) as OpenAI.Completion & {
        templora: { chunks_trained: number; enabled: boolean; rank: number; alpha: number };
      };
      assert.equal(r.usage!.completion_tokens, 24, "EOS is rare enough that these run full length");
      assert.equal(r.templora.chunks_trained, 1);
      assert.equal(r.templora.enabled, true);
      assert.equal(r.templora.alpha, 4, "alpha follows the rank");
      alone.push(r.choices[0].text);
    }
    const together = await Promise.all(bodies.map((b) => streamText(client, b)));
    for (let i = 0; i < bodies.length; i++) {
      assert.equal(together[i].text, alone[i], `request ${i}`);
      assert.equal(together[i].finish, "length");
      assert.equal(together[i].templora?.chunks_trained, 1);
    }
    // The adapters matter: without training the first 16 tokens are the same (the adapter starts
    // at zero), and the rest differs for some requests.
    let changed = 0;
    for (let i = 0; i < bodies.length; i++) {
      const off: Body = { ...bodies[i], templora: { ...bodies[i].templora, enabled: false } };
      const plain = (await client.completions.create(off)).choices[0].text;
      assert.equal(plain.slice(0, 8), alone[i].slice(0, 8), `request ${i} start`);
      if (plain !== alone[i]) changed++;
    }
    console.log(`  training changed ${changed} of ${bodies.length} texts`);
    assert.ok(changed > 0);
    const sessions = (await health(base)).sessions;
    assert.equal(sessions.active, 0);
    assert.equal(sessions.queued, 0);
  } finally {
    await close();
  }
});

gpuTest("server: a client that disconnects mid-stream frees its session", async () => {
  const { lm, client, base, close } = await serve();
  try {
    const body: Body = {
      model: "stories",
      prompt: "Once upon a time",
      max_tokens: 2000,
      temperature: 0.8,
      seed: 7,
      templora: { window: 64, chunk: 16, epochs: 1 },
    };
    await client.completions.create({ ...body, max_tokens: 40 }); // warm up kernels and pools
    lm.gpu.memory.trim();
    const idle = lm.gpu.memory.bytesInUse;

    for (const cutAfter of [3, 20]) {
      const stream = await client.completions.create({ ...body, stream: true });
      let chunks = 0;
      for await (const _ of stream) if (++chunks === cutAfter) break; // break aborts the request
      await until("the session to end", async () => (await health(base)).sessions.active === 0);
      lm.gpu.memory.trim();
      assert.equal(lm.gpu.memory.bytesInUse, idle, `after a disconnect at chunk ${cutAfter}`);
    }
    const after = await client.completions.create({ ...body, max_tokens: 5 });
    assert.equal(after.usage!.completion_tokens, 5);
  } finally {
    await close();
  }
});

gpuTest("server: bad requests get OpenAI errors and the server stays up", async () => {
  const { lm, client, base, close } = await serve({ maxTokens: 256 });
  try {
    const post = (path: string, body: string) =>
      fetch(`${base}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
    const json = (v: unknown) => JSON.stringify(v);
    const good = { prompt: "Once", max_tokens: 4, temperature: 0 };
    const tooLong = "Once upon a time there was a dog. ".repeat(200);
    assert.ok(lm.encode(tooLong).length > lm.config.maxSeqLen);
    const cases: [string, string, number, string | null, string | null][] = [
      ["malformed JSON", '{"prompt": ', 400, null, "invalid_json"],
      ["not an object", "[1, 2]", 400, null, null],
      ["wrong type", json({ ...good, max_tokens: "ten" }), 400, "max_tokens", "invalid_value"],
      ["wrong prompt type", json({ ...good, prompt: 42 }), 400, "prompt", "invalid_value"],
      ["negative temperature", json({ ...good, temperature: -1 }), 400, "temperature", null],
      ["top_p zero", json({ ...good, top_p: 0 }), 400, "top_p", null],
      ["max_tokens too large", json({ ...good, max_tokens: 257 }), 400, "max_tokens", null],
      ["fractional seed", json({ ...good, seed: 1.5 }), 400, "seed", null],
      ["stop wrong type", json({ ...good, stop: [1] }), 400, "stop", null],
      ["unknown field", json({ ...good, foo: 1 }), 400, "foo", "unknown_parameter"],
      ["n > 1", json({ ...good, n: 2 }), 400, "n", null],
      ["stream not boolean", json({ ...good, stream: "yes" }), 400, "stream", null],
      ["templora window", json({ ...good, templora: { window: 4096 } }), 400, "templora", null],
      [
        "templora chunk",
        json({ ...good, templora: { window: 64, chunk: 40 } }),
        400,
        "templora",
        null,
      ],
      ["templora type", json({ ...good, templora: { enabled: 1 } }), 400, "templora.enabled", null],
      ["templora unknown", json({ ...good, templora: { x: 1 } }), 400, "templora.x", null],
      [
        "prompt too long",
        json({ ...good, prompt: tooLong }),
        400,
        "prompt",
        "context_length_exceeded",
      ],
      ["body too large", json({ ...good, user: "x".repeat(1 << 20) }), 413, null, null],
    ];
    for (const [what, body, status, param, code] of cases) {
      const response = await post("/v1/completions", body);
      assert.equal(response.status, status, what);
      const { error } = await response.json();
      assert.equal(typeof error.message, "string", what);
      assert.ok(error.message.length > 0, what);
      assert.equal(typeof error.type, "string", what);
      if (param !== null) assert.equal(error.param, param, `${what}: ${error.message}`);
      if (code !== null) assert.equal(error.code, code, what);
      const next = await client.completions.create({ model: "stories", ...good });
      assert.equal(next.usage!.completion_tokens, 4, `a good request after: ${what}`);
    }

    const chat = await post("/v1/chat/completions", json({ messages: [] }));
    assert.equal(chat.status, 400);
    const chatError = (await chat.json()).error;
    assert.match(chatError.message, /no chat template/);
    assert.equal(chatError.code, "chat_template_missing");
    await assert.rejects(
      client.chat.completions.create({
        model: "stories",
        messages: [{ role: "user", content: "hi" }],
      }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /chat template/.test(e.message),
    );
    const missing = await fetch(`${base}/v1/nothing`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, "not_found");
    await assert.rejects(
      client.completions.create({ model: "stories", prompt: "Once", temperature: 5 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.status === 400,
    );
  } finally {
    await close();
  }
});

gpuTest("server: 429 past the session and queue bounds; time limit ends with length", async () => {
  const { client, base, close } = await serve({
    maxSessions: 1,
    maxQueue: 0,
    retryAfterSeconds: 2,
    requestTimeoutMs: 400,
  });
  try {
    const long: Body = { model: "stories", prompt: "Once", max_tokens: 4000, temperature: 1 };
    const stream = await client.completions.create({ ...long, stream: true });
    const it = stream[Symbol.asyncIterator]();
    await it.next(); // admitted and writing

    const busy = await fetch(`${base}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "Once", max_tokens: 2 }),
    });
    assert.equal(busy.status, 429);
    assert.equal(busy.headers.get("retry-after"), "2");
    assert.equal((await busy.json()).error.type, "rate_limit_error");
    await assert.rejects(
      client.completions.create({ model: "stories", prompt: "Once", max_tokens: 2 }),
      (e: unknown) => e instanceof OpenAI.RateLimitError,
    );

    // The running stream hits the 400 ms limit: it ends with "length" well before 4000 tokens.
    let finish: string | null = null;
    let tokens = 1;
    for (let step = await it.next(); !step.done; step = await it.next()) {
      finish = step.value.choices[0]?.finish_reason ?? finish;
      tokens++;
    }
    assert.equal(finish, "length");
    assert.ok(tokens < 4000);

    const next = await client.completions.create({
      model: "stories",
      prompt: "Once",
      max_tokens: 3,
    });
    assert.equal(next.usage!.completion_tokens, 3);
  } finally {
    await close();
  }
});
