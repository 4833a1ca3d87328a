import { SAMPLING_WGSL as source } from "./shaders.generated.ts";
import { SHADER_SNIPPETS } from "./snippets.ts";
import { GpuLimitError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Params, Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  describeTensor,
  expectArgument,
  expectDtype,
  expectPositive,
  expectRows,
  expectU32,
  expectWindow,
} from "./shapes.ts";

const FILE = "sampling.wgsl";

/** How to pick a token. */
export interface SampleOptions {
  /** 0 = greedy (argmax); otherwise > 0. */
  temperature: number;
  /** Keep the k most likely tokens; 0 (default) = off. */
  topK?: number;
  /** Keep the smallest head of the (top-k) distribution with at least this mass; 1 = off. */
  topP?: number;
  /** u32 seed of the random generator; a draw is a pure function of (seed, tokens slot). */
  seed?: number;
}

/** Where the drawn tokens go. */
export interface DrawTarget {
  /** u32 [maxSteps]: draw d writes tokens[step + d]. */
  tokens: Tensor;
  /** Slot of draw 0, and the random generator's counter for it. */
  step: number;
  /**
   * Number of draws (one workgroup each). Logits [V] are shared by every draw; logits
   * [draws, V] give each draw its own row. Defaults to the number of logits rows.
   */
  draws?: number;
}

/**
 * Invocations per draw. Not narrowed on software adapters as the other row kernels are
 * (ROW_WORKGROUP): a top-k/top-p draw walks the row some 26 times, which at 151,936 ids and 64
 * invocations comes near the 65,535 loop iterations after which llvmpipe silently ends an
 * invocation's loops (see LOOP_ITERATION_LIMIT in matmul.ts).
 */
const SAMPLING_WORKGROUP = 256;

/**
 * Token selection that never waits for the host: argmax, repetition penalty, and temperature +
 * top-k + top-p sampling with a counter-based random generator (see src/reference/sampling.ts).
 */
export class SamplingOp {
  private constructor(
    private readonly argmax: Kernel,
    private readonly penalty: Kernel,
    private readonly sample: Kernel,
    private readonly uniforms: Kernel,
    /** Invocations per workgroup of all four kernels. */
    private readonly wg: number,
  ) {}

  /**
   * Compiles the four kernels (cached by the registry) with `workgroupSize` invocations per draw
   * (a power of two, at least 16; default 256 on every adapter).
   */
  static async create(
    registry: KernelRegistry,
    workgroupSize: number = SAMPLING_WORKGROUP,
  ): Promise<SamplingOp> {
    const get = (entryPoint: string) =>
      registry.get({
        file: FILE,
        source,
        includes: SHADER_SNIPPETS,
        entryPoint,
        constants: { WG: workgroupSize },
      });
    const kernels = await Promise.all(
      ["argmax", "repetition_penalty", "sample", "random_uniforms"].map(get),
    );
    return new SamplingOp(kernels[0], kernels[1], kernels[2], kernels[3], workgroupSize);
  }

  /** Records tokens[step + d] = argmax of draw d's logits (ties to the lowest index). */
  recordArgmax(rec: Recorder, logits: Tensor, target: DrawTarget): void {
    const { V, draws, rowStride } = this.#draws(rec, logits, target);
    rec.dispatch(
      this.argmax,
      { logits, tokens: target.tokens },
      params({ V, rowStride, step: target.step }),
      [draws],
    );
  }

  /**
   * Records a draw from softmax(logits / temperature) restricted by top-k then top-p, or argmax
   * when the temperature is 0.
   */
  recordSample(rec: Recorder, logits: Tensor, target: DrawTarget, options: SampleOptions): void {
    const { temperature, topK = 0, topP = 1, seed = 0 } = options;
    if (temperature === 0) return this.recordArgmax(rec, logits, target);
    const op = "sampling";
    const usable = temperature > 0 && Number.isFinite(1 / temperature);
    expectArgument(op, "temperature", usable, ">= 0 (and 1 / temperature finite)", temperature);
    expectU32(op, "topK", topK);
    expectArgument(op, "topP", topP > 0 && topP <= 1, "in (0, 1]", topP);
    expectU32(op, "seed", seed);
    const { V, draws, rowStride } = this.#draws(rec, logits, target);
    rec.dispatch(
      this.sample,
      { logits, tokens: target.tokens },
      params({
        V,
        rowStride,
        step: target.step,
        seed,
        invTemperature: 1 / temperature,
        topK,
        topP,
      }),
      [draws],
    );
  }

  /**
   * Records the repetition penalty, in place on logits [V]: each distinct id among
   * history[first .. first + count) gets x > 0 ? x / penalty : x * penalty, once. Ids outside
   * the vocabulary are ignored. A penalty of 1 records nothing.
   */
  recordRepetitionPenalty(
    rec: Recorder,
    logits: Tensor,
    history: Tensor,
    window: { first: number; count: number },
    penalty: number,
  ): void {
    const op = "repetition penalty";
    const V = vocabulary(op, logits);
    expectDtype(op, "history", history, "u32");
    const { first, count } = window;
    expectU32(op, "history first", first);
    expectU32(op, "history count", count);
    expectWindow(op, "history window", first, count, history.size, "ids");
    expectArgument(
      op,
      "penalty",
      penalty > 0 && Number.isFinite(penalty),
      "finite and > 0",
      penalty,
    );
    if (penalty === 1 || count === 0) return;
    rec.dispatch(
      this.penalty,
      { logitsInOut: logits, history },
      params({ V, first, count, penalty }),
      [Math.ceil(count / this.wg)],
    );
  }

  /** Records randoms[i] = uniform01(seed, step + i), the numbers the sampler draws with. */
  recordRandomUniforms(rec: Recorder, randoms: Tensor, seed: number, step: number): void {
    const op = "random uniforms";
    expectDtype(op, "randoms", randoms, "f32");
    expectU32(op, "seed", seed);
    expectU32(op, "step", step);
    const count = randoms.size;
    rec.dispatch(this.uniforms, { randoms }, params({ seed, step, count }), [
      Math.ceil(count / this.wg),
    ]);
  }

  #draws(rec: Recorder, logits: Tensor, target: DrawTarget) {
    const op = "sampling";
    const V = vocabulary(op, logits);
    const rows = logits.size / V;
    const draws = target.draws ?? rows;
    expectArgument(op, "draws", Number.isInteger(draws) && draws >= 1, "a positive integer", draws);
    if (rows !== 1 && rows !== draws) {
      throw new ShapeError(
        `${op}: logits must be f32 [${draws}, ${V}] or [${V}] for ${draws} draws, got ` +
          describeTensor(logits),
      );
    }
    const max = rec.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (draws > max) {
      throw new GpuLimitError(`${op}: ${draws} draws exceed one dispatch's ${max}; split them`);
    }
    const { tokens, step } = target;
    expectDtype(op, "tokens", tokens, "u32");
    expectU32(op, "step", step);
    expectWindow(op, "token slots", step, draws, tokens.size, "slots");
    return { V, draws, rowStride: rows === 1 ? 0 : V };
  }
}

/** Every field of the shader's Params, zero unless given. */
function params(given: Params): Params {
  return {
    V: 0,
    rowStride: 0,
    step: 0,
    seed: 0,
    invTemperature: 1,
    topK: 0,
    topP: 1,
    penalty: 1,
    first: 0,
    count: 0,
    ...given,
  };
}

/** V of logits [V] or [rows, V] (leading dimensions fold into rows), f32 with V >= 1. */
function vocabulary(op: string, logits: Tensor): number {
  const [, V] = expectRows(op, "logits", logits, "f32");
  expectPositive(op, "logits", logits, "V", V);
  return V;
}
