/**
 * The model check the browser tests run in both runtimes: the same code, through the public
 * API only, in Deno (on its WebGPU) and in a page (bundled by browser/bundles.ts): stories260K's
 * greedy text, token by token, and the losses of Temp-Lora training steps.
 */
import { type ModelSource, resolveTempLoraSettings, TextModel, writeWithTempLora } from "../mod.ts";

/** What one runtime produced. */
export interface ModelCheckResult {
  /** The adapter the run used ("vendor architecture" or its description). */
  adapter: string;
  /** Greedy tokens from BOS (EOS banned), and their text. */
  greedyTokens: number[];
  greedyText: string;
  /** Tokens of the Temp-Lora run, and each training step's loss (before its update). */
  writerTokens: number[];
  losses: number[];
}

/** Settings of the check (small, so it stays quick on a software adapter). */
export interface ModelCheckOptions {
  /** Greedy tokens to write (default 200). */
  greedyTokens?: number;
  /** Temp-Lora chunk (default 32) and chunks written (default 2, so one step trains on context). */
  chunk?: number;
  chunks?: number;
}

/** Runs the check on a model (a path in Deno, a URL in a page). */
export async function runModelCheck(
  source: ModelSource,
  options: ModelCheckOptions = {},
): Promise<ModelCheckResult> {
  const lm = await TextModel.load(source);
  try {
    const greedy = await lm.complete("", {
      maxTokens: options.greedyTokens ?? 200,
      temperature: 0,
      banEos: true,
    });
    const chunk = options.chunk ?? 32;
    const chunks = options.chunks ?? 2;
    const settings = resolveTempLoraSettings(lm.config, { window: 4 * chunk, chunk, epochs: 2 });
    const writerTokens: number[] = [];
    const losses: number[] = [];
    const run = writeWithTempLora(
      lm,
      "Once upon a time",
      { maxTokens: chunk * chunks + 1, temperature: 0, banEos: true },
      settings,
    );
    for await (const event of run) {
      if (event.type === "token" && event.id >= 0) writerTokens.push(event.id);
      if (event.type === "train") losses.push(event.loss);
    }
    const c = lm.gpu.capabilities;
    return {
      adapter: c.description,
      greedyTokens: greedy.tokens,
      greedyText: greedy.text,
      writerTokens,
      losses,
    };
  } finally {
    lm.dispose();
  }
}
