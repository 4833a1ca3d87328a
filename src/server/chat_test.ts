import assert from "node:assert/strict";
import { join } from "node:path";
import OpenAI from "openai";
import { gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import {
  loadTokenizerFixture,
  randomWeights,
  SMALL_LLAMA,
} from "../../kernels_test/model_fixtures.ts";
import { writeHfFolder } from "../formats/hf.ts";
import { HfTokenizer, readHfTokenizer } from "../formats/hf_tokenizer.ts";
import { TextModel } from "../model/text_model.ts";
import { createApp, type ServerOptions } from "./app.ts";

/** A short Llama-2-style template: system folded into the first turn, roles must alternate. */
const LLAMA2_TEMPLATE = [
  "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}",
  "{% set turns = messages[1:] %}{% else %}{% set system = '' %}{% set turns = messages %}",
  "{% endif %}{% for m in turns %}",
  "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}",
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}",
  "{% endif %}{% if m['role'] == 'user' %}{{ bos_token }}[INST] ",
  "{% if loop.first and system %}<<SYS>>\n{{ system }}\n<</SYS>>\n\n{% endif %}",
  "{{ m['content'] | trim }} [/INST]{% else %} {{ m['content'] | trim }} {{ eos_token }}",
  "{% endif %}{% endfor %}",
].join("");

const MESSAGES: OpenAI.ChatCompletionMessageParam[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi there" },
  { role: "assistant", content: "Hello!" },
  {
    role: "user",
    content: [{ type: "text", text: "Tell me " }, { type: "text", text: "a story." }],
  },
];
/** What LLAMA2_TEMPLATE makes of MESSAGES, written out by hand. */
const RENDERED = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s>" +
  "<s>[INST] Tell me a story. [/INST]";

type ChatBody = OpenAI.ChatCompletionCreateParamsNonStreaming & {
  templora?: Record<string, unknown>;
};

Deno.test("hf tokenizer: chat_template as a string, a named list, or chat_template.jinja", async () => {
  const tokenizerJson = await loadTokenizerFixture("tokenizer.json");
  const config = await loadTokenizerFixture("tokenizer_config.json");
  assert.equal((await HfTokenizer.fromJson(tokenizerJson, config, "t")).chatTemplate, undefined);

  const plain = await HfTokenizer.fromJson(
    tokenizerJson,
    { ...config, chat_template: "{{ bos_token }}x" },
    "t",
  );
  assert.deepEqual(plain.chatTemplate, {
    template: "{{ bos_token }}x",
    bosToken: "<s>",
    eosToken: "</s>",
  });
  const listed = await HfTokenizer.fromJson(
    tokenizerJson,
    {
      ...config,
      bos_token: { content: "<s>", lstrip: false },
      eos_token: undefined, // falls back to config.json's eos_token_id
      chat_template: [{ name: "tool_use", template: "T" }, { name: "default", template: "D" }],
    },
    "t",
    { eos_token_id: 2 },
  );
  assert.deepEqual(listed.chatTemplate, { template: "D", bosToken: "<s>", eosToken: "</s>" });
  const noDefault = await HfTokenizer.fromJson(tokenizerJson, {
    ...config,
    chat_template: [{ name: "tool_use", template: "T" }],
  }, "t");
  assert.equal(noDefault.chatTemplate, undefined);

  const dir = await Deno.makeTempDir({ prefix: "templora_chat_tok_" });
  try {
    await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson));
    await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    await Deno.writeTextFile(join(dir, "chat_template.jinja"), "J");
    assert.equal((await readHfTokenizer(dir)).chatTemplate?.template, "J");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest("server: chat completions (plain and streamed) match plain generation", async () => {
  const { gpu } = await testGpu();
  const dir = await Deno.makeTempDir({ prefix: "templora_chat_llama_" });
  const servers: Deno.HttpServer[] = [];
  let lm: TextModel | undefined;
  try {
    await writeHfFolder(dir, randomWeights(SMALL_LLAMA, seededRng("chat random llama")), {
      dtype: "BF16",
    });
    await Deno.writeTextFile(
      join(dir, "tokenizer.json"),
      JSON.stringify(await loadTokenizerFixture("tokenizer.json")),
    );
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({
        ...await loadTokenizerFixture("tokenizer_config.json"),
        eos_token: { content: "</s>", special: true },
        chat_template: [
          { name: "default", template: LLAMA2_TEMPLATE },
          { name: "rag", template: "unused" },
        ],
      }),
    );
    const model = lm = await TextModel.load(dir, { gpu });
    const serve = (options: ServerOptions) => {
      const app = createApp(model, { modelId: "chat-llama", ...options });
      const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
      servers.push(server);
      const base = `http://127.0.0.1:${server.addr.port}`;
      return { base, client: new OpenAI({ baseURL: `${base}/v1`, apiKey: "-", maxRetries: 0 }) };
    };
    const { base, client } = serve({});

    // The template writes BOS (twice here) and EOS itself; nothing is added in front.
    const ids = lm.encode(RENDERED, false);
    assert.equal(ids[0], 1);
    assert.notEqual(ids[1], 1);
    assert.equal(ids.filter((id) => id === 1).length, 2);
    assert.equal(ids.filter((id) => id === 2).length, 1);
    const expected = await lm.complete(ids, { maxTokens: 40, temperature: 0, window: 64 });
    const expectedFinish = expected.finishReason === "length" ? "length" : "stop";
    console.log(`  reply (${expected.tokens.length} tokens): ${JSON.stringify(expected.text)}`);
    const usage = {
      prompt_tokens: ids.length,
      completion_tokens: expected.tokens.length,
      total_tokens: ids.length + expected.tokens.length,
    };
    const body: ChatBody = {
      model: "anything",
      messages: MESSAGES,
      max_tokens: 40,
      temperature: 0,
      seed: 5,
      templora: { enabled: false, window: 64, chunk: 32 },
    };

    const plain = await client.chat.completions.create(body) as OpenAI.ChatCompletion & {
      templora: Record<string, unknown>;
    };
    assert.equal(plain.object, "chat.completion");
    assert.match(plain.id, /^chatcmpl-/);
    assert.equal(plain.model, "chat-llama");
    assert.equal(plain.choices.length, 1);
    assert.equal(plain.choices[0].message.role, "assistant");
    assert.equal(plain.choices[0].message.content, expected.text);
    assert.equal(plain.choices[0].finish_reason, expectedFinish);
    assert.deepEqual(plain.usage, usage);
    assert.equal(plain.templora.enabled, false);
    assert.equal(plain.templora.window, 64);

    const { max_tokens: _, ...rest } = body;
    const stream = await client.chat.completions.create({
      ...rest,
      max_completion_tokens: 40,
      stream: true,
      stream_options: { include_usage: true },
    } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.ok(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0].id));
    assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
    const withChoice = chunks.filter((c) => c.choices.length > 0);
    const text = withChoice.map((c) => c.choices[0].delta.content ?? "").join("");
    assert.equal(text, expected.text);
    const last = withChoice[withChoice.length - 1].choices[0];
    assert.equal(last.finish_reason, expectedFinish);
    assert.deepEqual(last.delta, {});
    assert.ok(withChoice.slice(0, -1).every((c) => c.choices[0].finish_reason === null));
    assert.deepEqual(chunks[chunks.length - 1].usage, usage);

    // The raw stream ends with [DONE].
    const raw = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ ...body, max_tokens: 3, stream: true }),
    });
    assert.equal(raw.headers.get("content-type"), "text/event-stream");
    assert.ok((await raw.text()).endsWith("data: [DONE]\n\n"));

    // Bad messages get OpenAI errors naming the field; the server stays up.
    const good = { messages: [{ role: "user", content: "Hi" }], max_tokens: 2, temperature: 0 };
    const cases: [string, unknown, string, string][] = [
      ["empty messages", { ...good, messages: [] }, "messages", "invalid_value"],
      ["no messages", { ...good, messages: undefined }, "messages", "invalid_value"],
      ["messages not an array", { ...good, messages: "Hi" }, "messages", "invalid_value"],
      ["message not an object", { ...good, messages: ["Hi"] }, "messages[0]", "invalid_value"],
      [
        "unknown role",
        { ...good, messages: [{ role: "wizard", content: "Hi" }] },
        "messages[0].role",
        "invalid_value",
      ],
      [
        "content not a string",
        { ...good, messages: [{ role: "user", content: 42 }] },
        "messages[0].content",
        "invalid_value",
      ],
      [
        "tool calls",
        { ...good, messages: [...good.messages, { role: "assistant", tool_calls: [] }] },
        "messages[1].tool_calls",
        "invalid_value",
      ],
      [
        "max tokens disagree",
        { ...good, max_completion_tokens: 3 },
        "max_completion_tokens",
        "invalid_value",
      ],
      ["prompt field", { ...good, prompt: "Hi" }, "prompt", "unknown_parameter"],
      ["n > 1", { ...good, n: 2 }, "n", "invalid_value"],
      [
        "roles that do not alternate (raised by the template)",
        { ...good, messages: [good.messages[0], good.messages[0]] },
        "messages",
        "chat_template_error",
      ],
    ];
    for (const [what, bad, param, code] of cases) {
      const response = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify(bad),
      });
      assert.equal(response.status, 400, what);
      const { error } = await response.json();
      assert.equal(error.param, param, `${what}: ${error.message}`);
      assert.equal(error.code, code, `${what}: ${error.message}`);
      assert.equal(error.type, "invalid_request_error", what);
    }
    await assert.rejects(
      client.chat.completions.create({
        model: "chat-llama",
        messages: [{ role: "assistant", content: "Hi" }],
      }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /must alternate/.test(e.message),
    );
    const next = await client.chat.completions.create({ model: "x", ...good } as ChatBody);
    assert.equal(next.usage!.prompt_tokens, lm.encode("<s>[INST] Hi [/INST]", false).length);

    // Without a token limit the reply may fill the context, capped by the server's maxTokens.
    const capped = serve({ maxTokens: 6 }).client;
    const free = await capped.chat.completions.create({
      model: "x",
      messages: good.messages,
      temperature: 0,
      templora: { enabled: false },
    } as ChatBody);
    const n = free.usage!.completion_tokens;
    assert.ok(free.choices[0].finish_reason === "length" ? n === 6 : n <= 6, `${n} tokens`);
  } finally {
    for (const server of servers) await server.shutdown();
    lm?.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
