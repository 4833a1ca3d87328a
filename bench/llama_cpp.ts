/**
 * llama.cpp as the benchmarks' peer, through the npm package node-llama-cpp, whose platform
 * packages ship llama.cpp prebuilt (@node-llama-cpp/linux-x64: the CPU build with one ggml CPU
 * backend per x86 feature level, picked at load time). Nothing is built or downloaded at run
 * time: `build: "never"`, and the prebuilt binary must be in the npm package.
 *
 * The package is imported by a computed specifier, so type checking (and `deno check bench/`)
 * never fetches it; the types below are the few this module uses. Run the scripts that use it
 * with `--no-lock` (the deno.json tasks do) so that the project's lockfile is left alone.
 */

/** The npm specifier (pinned: 3.21.1 is the newest whose prebuilt packages all install here). */
export const NODE_LLAMA_CPP = "npm:node-llama-cpp@3.21.1";

interface NlcSequence {
  evaluateWithoutGeneratingNewTokens(tokens: number[]): Promise<void>;
  evaluate(
    tokens: number[],
    options?: { temperature?: number },
  ): AsyncGenerator<number, void, void | number | number[]>;
  clearHistory(): Promise<void>;
  controlledEvaluate(
    input: (number | [number, { generateNext: { probabilities: true } }])[],
  ): Promise<({ next: { probabilities?: Map<number, number> } } | undefined)[]>;
  readonly nextTokenIndex: number;
  dispose(): void;
}

interface NlcContext {
  getSequence(): NlcSequence;
  readonly contextSize: number;
  readonly batchSize: number;
  readonly currentThreads: number;
  dispose(): Promise<void>;
}

interface NlcModel {
  tokenize(text: string, specialTokens?: boolean): number[];
  detokenize(tokens: readonly number[]): string;
  createContext(options: {
    contextSize: number;
    batchSize: number;
    threads: { ideal: number; min: number };
    flashAttention: boolean;
    sequences: number;
  }): Promise<NlcContext>;
  readonly size: number;
  readonly fileInfo: { metadata: Record<string, unknown> };
  readonly tokens: { readonly bos: number | null };
  readonly trainContextSize: number;
  readonly vocabularyType?: string;
  dispose(): Promise<void>;
}

interface NlcLlama {
  readonly gpu: string | false;
  readonly buildType: string;
  readonly cpuMathCores: number;
  readonly systemInfo: string;
  readonly llamaCppRelease: { repo: string; release: string };
  getGpuDeviceNames(): Promise<string[]>;
  loadModel(options: { modelPath: string; gpuLayers: number | "max"; useMmap?: boolean }): Promise<
    NlcModel
  >;
  dispose(): Promise<void>;
}

interface NlcModule {
  getLlama(options: {
    gpu: false | "vulkan" | "cuda" | "auto";
    build: "never";
    logLevel: unknown;
    maxThreads: number;
    progressLogs: boolean;
    skipDownload: boolean;
  }): Promise<NlcLlama>;
  LlamaLogLevel: Record<string, unknown>;
}

/** A loaded llama.cpp model with one context per thread count. */
export interface PeerModel {
  model: NlcModel;
  contexts: Map<number, NlcContext>;
}

/** llama.cpp through node-llama-cpp, or why it is not there. */
export type Peer =
  | { ok: true; llama: NlcLlama; backend: string; version: string }
  | { ok: false; why: string };

/**
 * Loads llama.cpp's CPU build (or, with `gpu`, that backend's prebuilt binary); never builds or
 * downloads. A failure comes back as `{ ok: false, why }`.
 */
export async function loadPeer(gpu: false | "vulkan" | "cuda" = false): Promise<Peer> {
  let mod: NlcModule;
  try {
    const spec = NODE_LLAMA_CPP;
    mod = await import(spec) as NlcModule;
  } catch (error) {
    return {
      ok: false,
      why: `${NODE_LLAMA_CPP} could not be imported (${String(error).split("\n")[0]}); ` +
        `run \`deno cache --no-lock ${NODE_LLAMA_CPP}\` where npm is reachable`,
    };
  }
  try {
    const llama = await mod.getLlama({
      gpu,
      build: "never",
      logLevel: mod.LlamaLogLevel.error,
      // No cap: a context's thread count is then exactly the one asked for.
      maxThreads: 0,
      progressLogs: false,
      skipDownload: true,
    });
    let version =
      `node-llama-cpp 3.21.1 (${llama.buildType} llama.cpp ${llama.llamaCppRelease.release})`;
    if (gpu) {
      // llama.cpp's Vulkan backend skips CPU devices such as lavapipe: it then computes on the
      // CPU, one thread, and says so only through an empty device list.
      const names = await llama.getGpuDeviceNames();
      version += names.length
        ? ` on ${names.join(", ")}`
        : ", no GPU device found: llama.cpp computes on the CPU";
    }
    return { ok: true, llama, backend: gpu || "CPU", version };
  } catch (error) {
    return {
      ok: false,
      why: `node-llama-cpp has no usable prebuilt llama.cpp for ${gpu || "CPU"} here (${
        String(error).split("\n")[0]
      })`,
    };
  }
}

/** Loads `path` on the CPU (or all layers on the GPU backend) with a context per thread count. */
export async function loadPeerModel(
  peer: Extract<Peer, { ok: true }>,
  path: string,
  threads: readonly number[],
  contextSize: number,
  batchSize: number,
): Promise<PeerModel> {
  const model = await peer.llama.loadModel({
    modelPath: path,
    gpuLayers: peer.backend === "CPU" ? 0 : "max",
  });
  const contexts = new Map<number, NlcContext>();
  for (const n of threads) {
    contexts.set(
      n,
      await model.createContext({
        contextSize,
        batchSize,
        threads: { ideal: n, min: n },
        flashAttention: false,
        sequences: 1,
      }),
    );
  }
  return { model, contexts };
}

/** Frees a model and its contexts. */
export async function disposePeerModel(m: PeerModel): Promise<void> {
  for (const c of m.contexts.values()) await c.dispose();
  await m.model.dispose();
}

/** Evaluates `prompt` in one batch from an empty cache (prefill), no token generated. */
export async function peerPrefill(ctx: NlcContext, prompt: number[]): Promise<void> {
  const seq = ctx.getSequence();
  try {
    await seq.clearHistory();
    await seq.evaluateWithoutGeneratingNewTokens(prompt);
  } finally {
    seq.dispose();
  }
}

/**
 * Greedy decoding: `prompt` minus its last token is evaluated untimed, then `onStart` runs and
 * `tokens` tokens are generated (the first step evaluates the prompt's last token, each later one
 * the token before: one single-token forward per generated token). Returns the ids.
 */
export async function peerDecode(
  ctx: NlcContext,
  prompt: number[],
  tokens: number,
  onStart: () => void,
): Promise<number[]> {
  const seq = ctx.getSequence();
  try {
    await seq.clearHistory();
    await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
    onStart();
    const out: number[] = [];
    for await (const t of seq.evaluate(prompt.slice(-1), { temperature: 0 })) {
      out.push(t);
      if (out.length === tokens) break;
    }
    return out;
  } finally {
    seq.dispose();
  }
}

/**
 * ln p(tokens[i] | tokens[0 .. i)) for i in from .. tokens.length - 1 (from >= 1), evaluated in
 * one pass from an empty cache with llama.cpp's unadjusted probabilities.
 */
export async function peerLogProbs(
  ctx: NlcContext,
  tokens: readonly number[],
  from: number,
): Promise<number[]> {
  const seq = ctx.getSequence();
  try {
    await seq.clearHistory();
    const input = tokens.slice(0, -1).map((t, i) =>
      i + 1 >= from
        ? [t, { generateNext: { probabilities: true } }] as [number, {
          generateNext: { probabilities: true };
        }]
        : t
    );
    const results = await seq.controlledEvaluate(input);
    const out: number[] = [];
    for (let i = from; i < tokens.length; i++) {
      const p = results[i - 1]?.next.probabilities?.get(tokens[i]);
      if (p === undefined) throw new Error(`llama.cpp gave no probability for position ${i}`);
      out.push(Math.log(p));
    }
    return out;
  } finally {
    seq.dispose();
  }
}
