import type { TextModel } from "../model/text_model.ts";
import type { TempLoraSettings } from "../templora/settings.ts";
import { type WriterEvent, type WriterSession, writeWithTempLora } from "../templora/writer.ts";
import type { SamplingRequest } from "./request.ts";

/** OpenAI's finish reasons this server reports. */
export type OpenAiFinishReason = "stop" | "length";

/** What a finished completion returns. */
export interface CompletionOutcome {
  text: string;
  promptTokens: number;
  completionTokens: number;
  /** "stop": EOS or a stop sequence; "length": max_tokens or the time limit was reached. */
  finishReason: OpenAiFinishReason;
  /** The time limit ended the run. */
  timedOut: boolean;
  chunksTrained: number;
  trainingSeconds: number;
}

/** How one completion runs. */
export interface RunControl {
  /** Aborts when the client goes away: generation stops and everything is freed at once. */
  clientSignal: AbortSignal;
  /** Wall-clock limit of the run; past it the run ends with finish_reason "length". */
  timeoutMs: number;
  /** Decode steps per GPU submission: small, so concurrent runs interleave finely. */
  stepsPerSubmit: number;
  /** Sampling seed (the request's, or one the server drew). */
  seed: number;
  /** Sees every event of the run (for metrics). */
  onEvent?: (event: WriterEvent) => void;
  /** Gets the run's live GPU accounting once its buffers exist. */
  onSession?: (session: WriterSession) => void;
}

/**
 * Writes one completion with its own Temp-Lora session (adapter, optimizer state, KV cache),
 * calling `onText` with each piece of final text. Returns null when the client went away. The
 * session is freed when this returns or throws.
 */
export async function runCompletion(
  lm: TextModel,
  promptIds: readonly number[],
  request: SamplingRequest,
  settings: TempLoraSettings,
  control: RunControl,
  onText: (text: string) => void,
): Promise<CompletionOutcome | null> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), control.timeoutMs);
  const { clientSignal } = control;
  const writer = writeWithTempLora(
    lm,
    promptIds,
    {
      maxTokens: request.maxTokens,
      temperature: request.temperature,
      topP: request.topP,
      topK: request.topK,
      repetitionPenalty: request.repetitionPenalty,
      seed: control.seed,
      stop: request.stop,
      stepsPerSubmit: control.stepsPerSubmit,
      signal: AbortSignal.any([clientSignal, deadline.signal]),
    },
    settings,
    { onSession: control.onSession },
  );
  try {
    for (;;) {
      if (clientSignal.aborted) {
        // Free the session now rather than after the next batch (the writer's own recorder
        // submits what it holds before its buffers go).
        await writer.return(undefined as never);
        return null;
      }
      const step = await writer.next();
      if (step.done) {
        if (clientSignal.aborted) return null;
        const s = step.value;
        const timedOut = s.finishReason === "abort";
        return {
          text: s.text,
          promptTokens: s.promptTokens,
          completionTokens: s.tokens.length,
          finishReason: s.finishReason === "eos" || s.finishReason === "stop" ? "stop" : "length",
          timedOut,
          chunksTrained: s.chunksTrained,
          trainingSeconds: s.trainingSeconds,
        };
      }
      const event = step.value;
      control.onEvent?.(event);
      if (event.type === "token" && event.text) onText(event.text);
    }
  } finally {
    clearTimeout(timer);
  }
}
