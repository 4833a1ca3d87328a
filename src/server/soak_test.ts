/**
 * Soak and fuzz tests of the server on loopback, bounded in count: many sessions in concurrent
 * waves with clients that leave mid-stream, hundreds of malformed bodies, and a client that
 * reads nothing.
 */
import assert from "node:assert/strict";
import { gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import type { Rng } from "../core/random.ts";
import { TextModel } from "../model/text_model.ts";
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

const PROMPTS = ["Once upon a time", "The dog", "Lily saw a", "Tom and his mom"];

/** Eight request bodies: Temp-Lora on and off, greedy and sampled, several lengths. */
function variants() {
  return Array.from({ length: 8 }, (_, i) => ({
    prompt: PROMPTS[i % PROMPTS.length],
    max_tokens: 9 + (i % 3),
    temperature: i % 3 === 0 ? 0 : 0.9,
    seed: 40 + i,
    templora: { window: 32, chunk: 8, epochs: 1, rank: 4, enabled: i % 2 === 0 },
  }));
}

const SESSIONS = 200;
const WAVE = 8;

gpuTest(
  `server soak: ${SESSIONS} sessions in waves of ${WAVE}, a quarter leaving mid-stream`,
  async () => {
    const lm = await sharedModel();
    const s = serveApp(lm, { maxSessions: WAVE, maxQueue: WAVE, stepsPerSubmit: 8 });
    try {
      const bodies = variants();
      const solo: string[] = [];
      for (const body of bodies) {
        const r = await (await s.post("/v1/completions", body)).json();
        assert.equal(r.usage.completion_tokens, body.max_tokens, "these run to their full length");
        solo.push(r.choices[0].text);
      }
      lm.gpu.memory.trim();
      const idle = lm.gpu.memory.bytesInUse;
      let finished = 0;
      let left = 0;
      for (let wave = 0; wave < SESSIONS / WAVE; wave++) {
        await Promise.all(Array.from({ length: WAVE }, async (_, i) => {
          const n = wave * WAVE + i;
          const v = n % bodies.length;
          const leaves = i % 4 === wave % 4; // two of every eight
          const stream = n % 3 !== 0 || leaves;
          // A client that leaves asks for a long text, so it is surely still being written.
          const maxTokens = leaves ? 2000 : bodies[v].max_tokens;
          const response = await s.post("/v1/completions", {
            ...bodies[v],
            max_tokens: maxTokens,
            stream,
          });
          assert.equal(response.status, 200);
          if (!stream) {
            assert.equal((await response.json()).choices[0].text, solo[v], `session ${n}`);
            finished++;
            return;
          }
          const events = new EventReader(response);
          if (leaves) {
            for (let k = 0; k <= wave % 4; k++) await events.next();
            await events.cancel();
            left++;
            return;
          }
          const all = await events.rest();
          assert.equal(all[all.length - 1], "[DONE]", `session ${n}`);
          assert.equal(streamedText(all), solo[v], `session ${n}`);
          finished++;
        }));
        await eventually(
          `wave ${wave}: every session over`,
          async () => (await s.get("/health")).sessions.active === 0,
        );
        lm.gpu.memory.trim();
        assert.equal(lm.gpu.memory.bytesInUse, idle, `GPU memory after wave ${wave}`);
      }
      assert.equal(finished + left, SESSIONS);
      assert.equal(left, SESSIONS / 4);
      const m = parseMetrics(await (await fetch(`${s.base}/metrics`)).text());
      assert.equal(m.get('templora_sessions_total{outcome="completed"}'), finished + bodies.length);
      assert.equal(m.get('templora_sessions_total{outcome="disconnected"}'), left);
      assert.equal(m.get('templora_sessions_total{outcome="failed"}') ?? 0, 0);
    } finally {
      await s.close();
    }
  },
);

/** A random JSON value of at most `depth` levels. */
function randomValue(rng: Rng, depth: number): unknown {
  const kind = rng.int(depth > 0 ? 8 : 6);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng.next() < 0.5;
    case 2:
      return [0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 2, 4294967296, 1e-320][rng.int(8)];
    case 3:
      return "x".repeat(rng.int(5));
    case 4:
      return rng.int(100000);
    case 5:
      return "";
    case 6:
      return Array.from({ length: rng.int(3) }, () => randomValue(rng, depth - 1));
    default:
      return Object.fromEntries(
        Array.from({ length: rng.int(3) }, (_, i) => [`k${i}`, randomValue(rng, depth - 1)]),
      );
  }
}

/** A value of the wrong kind for a field that takes `kind`. */
function wrongKind(rng: Rng, kind: "number" | "string" | "boolean" | "object"): unknown {
  const options: unknown[] = [[], [1], { a: 1 }, "12", true, 7.5];
  const fitting = options.filter((v) =>
    kind === "number"
      ? typeof v !== "number"
      : kind === "string"
      ? typeof v !== "string"
      : kind === "boolean"
      ? typeof v !== "boolean"
      : typeof v !== "object" || Array.isArray(v)
  );
  return fitting[rng.int(fitting.length)];
}

const GOOD = {
  prompt: "Once",
  max_tokens: 1,
  temperature: 0,
  templora: { enabled: false, window: 16 },
};
const FIELD_KINDS: Record<string, "number" | "string" | "boolean" | "object"> = {
  max_tokens: "number",
  temperature: "number",
  top_p: "number",
  top_k: "number",
  repetition_penalty: "number",
  seed: "number",
  stream: "boolean",
  user: "string",
  model: "string",
  templora: "object",
  stream_options: "object",
};
const HUGE: [string, unknown][] = [
  ["max_tokens", 1e308],
  ["max_tokens", 2 ** 53 + 2],
  ["temperature", 1e308],
  ["top_k", 1e20],
  ["top_k", 2 ** 40],
  ["seed", 2 ** 64],
  ["repetition_penalty", 1e308],
  ["top_p", 1e308],
  ["templora", { epochs: 1e9 }],
  ["templora", { rank: 1e12 }],
  ["templora", { window: 1e15 }],
  ["templora", { chunk: 2 ** 53 }],
  ["templora", { lr: 1e308, alpha: -1 }],
  ["templora", { sink: 1e9 }],
];

/** One malformed body: raw text that must get a 4xx. */
function malformed(rng: Rng, i: number): { what: string; body: string } {
  const good = JSON.stringify(GOOD);
  switch (i % 7) {
    case 0: {
      const bytes = new Uint8Array(rng.int(64));
      for (let k = 0; k < bytes.length; k++) bytes[k] = rng.int(256);
      // Random bytes that happen to be a JSON object with known fields cannot occur at these
      // lengths, but keep the case honest: prefix a byte JSON never starts with.
      return { what: "random bytes", body: "\u0001" + new TextDecoder().decode(bytes) };
    }
    case 1:
      return { what: "truncated JSON", body: good.slice(0, 1 + rng.int(good.length - 2)) };
    case 2: {
      const fields = Object.keys(FIELD_KINDS);
      const field = fields[rng.int(fields.length)];
      return {
        what: `wrong type for ${field}`,
        body: JSON.stringify({ ...GOOD, [field]: wrongKind(rng, FIELD_KINDS[field]) }),
      };
    }
    case 3: {
      const [field, value] = HUGE[rng.int(HUGE.length)];
      const merged = field === "templora" ? { ...GOOD.templora, ...value as object } : value;
      return { what: `huge ${field}`, body: JSON.stringify({ ...GOOD, [field]: merged }) };
    }
    case 4: {
      const depth = 50 + rng.int(20000);
      const field = ["prompt", "templora", "stop", "stream_options"][rng.int(4)];
      return {
        what: `${field} nested ${depth} deep`,
        body: `{"prompt":"Once","max_tokens":1,"${field}":${"[".repeat(depth)}${
          "]".repeat(depth)
        }}`,
      };
    }
    case 5:
      return {
        what: "unknown field",
        body: JSON.stringify({ ...GOOD, [`extra_${rng.int(1000)}`]: randomValue(rng, 2) }),
      };
    default: {
      const body = rng.next() < 0.5 ? randomValue(rng, 3) : [GOOD];
      const shaped = typeof body === "object" && body !== null && !Array.isArray(body)
        ? { ...body as object, prompt: 5 }
        : body;
      return { what: "not a request", body: JSON.stringify(shaped) };
    }
  }
}

gpuTest(
  "server fuzz: 500 malformed bodies each get a 4xx JSON error; good requests still work",
  async () => {
    const lm = await sharedModel();
    const errors: unknown[] = [];
    const s = serveApp(lm, { maxTokens: 256, onServerError: (e) => errors.push(e) });
    const rng = seededRng("server fuzz");
    try {
      for (let i = 0; i < 500; i++) {
        const { what, body } = malformed(rng, i);
        const path = i % 10 === 9 ? "/v1/chat/completions" : "/v1/completions";
        const response = await s.post(path, body);
        const label = `case ${i} (${what}): ${body.slice(0, 80)}`;
        assert.ok(response.status >= 400 && response.status < 500, `${label}: ${response.status}`);
        assert.match(response.headers.get("content-type") ?? "", /^application\/json/, label);
        const { error } = await response.json();
        assert.equal(typeof error.message, "string", label);
        assert.ok(error.message.length > 0, label);
        if (i % 5 === 4) {
          const next = await (await s.post("/v1/completions", GOOD)).json();
          assert.equal(next.usage?.completion_tokens, 1, `the good request after ${label}`);
        }
      }
      const health = await s.get("/health");
      assert.equal(health.sessions.active, 0);
      assert.deepEqual(errors, []);
    } finally {
      await s.close();
    }
  },
);

gpuTest("server: a client that reads nothing does not hold up the others", async () => {
  const lm = await sharedModel();
  const s = serveApp(lm, { maxSessions: 2, maxQueue: 4 });
  const bodies = variants().slice(0, 4);
  try {
    const solo: string[] = [];
    for (const body of bodies) {
      solo.push((await (await s.post("/v1/completions", body)).json()).choices[0].text);
    }
    lm.gpu.memory.trim();
    const idle = lm.gpu.memory.bytesInUse;

    // A raw connection that sends a long streamed request and never reads a byte of the answer.
    const port = Number(new URL(s.base).port);
    const slow = await Deno.connect({ hostname: "127.0.0.1", port });
    const request = JSON.stringify({ ...bodies[0], max_tokens: 1500, stream: true });
    await slow.write(new TextEncoder().encode(
      `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${new TextEncoder().encode(request).length}\r\n\r\n${request}`,
    ));
    await eventually(
      "the slow client's session to start",
      async () => (await s.get("/health")).sessions.active === 1,
    );

    // The others are answered in full, streamed or not, while it holds its session unread.
    const texts = await Promise.all(bodies.map(async (body, i) => {
      const response = await s.post("/v1/completions", { ...body, stream: i % 2 === 0 });
      return i % 2 === 0
        ? streamedText(await new EventReader(response).rest())
        : (await response.json()).choices[0].text;
    }));
    assert.deepEqual(texts, solo);
    assert.ok((await s.get("/health")).sessions.active <= 1);

    slow.close();
    await eventually(
      "the slow client's session to end",
      async () => (await s.get("/health")).sessions.active === 0,
    );
    lm.gpu.memory.trim();
    assert.equal(lm.gpu.memory.bytesInUse, idle);
  } finally {
    await s.close();
  }
});
