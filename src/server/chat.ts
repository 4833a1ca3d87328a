/** Chat prompts rendered with the tokenizer's Jinja chat template (Hugging Face's format). */
import { Template } from "@huggingface/jinja";
import type { ChatTemplate } from "../formats/tokenizer.ts";
import { ApiError } from "./errors.ts";
import type { ChatMessage } from "./request.ts";

/** Parsed templates by source: a server renders with one template many times. */
const parsed = new Map<string, Template>();

/**
 * The prompt text of `messages` as the template writes it, ending with the assistant's turn
 * (`add_generation_prompt`). A template that fails to parse or render (including its own
 * `raise_exception`, e.g. roles that do not alternate) is a 400 with the Jinja message.
 */
export function renderChat(chat: ChatTemplate, messages: readonly ChatMessage[]): string {
  try {
    let template = parsed.get(chat.template);
    if (!template) {
      template = new Template(chat.template);
      parsed.set(chat.template, template);
    }
    const context: Record<string, unknown> = { messages, add_generation_prompt: true };
    if (chat.bosToken !== undefined) context.bos_token = chat.bosToken;
    if (chat.eosToken !== undefined) context.eos_token = chat.eosToken;
    return template.render(context);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new ApiError(
      400,
      `the model's chat template could not render these messages: ${message}`,
      "invalid_request_error",
      "messages",
      "chat_template_error",
    );
  }
}
