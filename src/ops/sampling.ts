import source from "../../shaders/sampling.wgsl" with { type: "text" };
import { KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Params, Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";

const WG = 256;
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
 * Token selection that never waits for the host: argmax, repetition penalty, and temperature +
 * top-k + top-p sampling with a counter-based random generator (see src/reference/sampling.ts).
 */
export class SamplingOp {
  private constructor(
    private readonly argmax: Kernel,
    private readonly penalty: Kernel,
    private readonly sample: Kernel,
    private readonly uniforms: Kernel,
  ) {}

  /** Compiles the four kernels (cached by the registry). */
  static async create(registry: KernelRegistry): Promise<SamplingOp> {
    const get = (entryPoint: string) =>
      registry.get({ file: FILE, source, entryPoint, constants: { WG } });
    const kernels = await Promise.all(
      ["argmax", "repetition_penalty", "sample", "random_uniforms"].map(get),
    );
    return new SamplingOp(kernels[0], kernels[1], kernels[2], kernels[3]);
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
    if (!(temperature > 0) || !Number.isFinite(1 / temperature)) {
      throw new KernelUsageError(`sampling temperature must be >= 0, got ${temperature}`);
    }
    if (!Number.isInteger(topK) || topK < 0) {
      throw new KernelUsageError(`topK must be a non-negative integer, got ${topK}`);
    }
    if (!(topP > 0 && topP <= 1)) throw new KernelUsageError(`topP must be in (0, 1], got ${topP}`);
    checkU32(seed, "sampling seed");
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
    const V = vocabulary(logits, "repetition-penalty logits");
    if (history.dtype !== "u32") throw new ShapeError(`history must be u32, got ${history.dtype}`);
    const { first, count } = window;
    checkU32(first, "history first");
    checkU32(count, "history count");
    if (first + count > history.size) {
      throw new ShapeError(
        `history window [${first}, ${first + count}) overruns [${history.shape}]`,
      );
    }
    if (!(penalty > 0) || !Number.isFinite(penalty)) {
      throw new KernelUsageError(`repetition penalty must be > 0, got ${penalty}`);
    }
    if (penalty === 1 || count === 0) return;
    rec.dispatch(
      this.penalty,
      { logitsInOut: logits, history },
      params({ V, first, count, penalty }),
      [Math.ceil(count / WG)],
    );
  }

  /** Records randoms[i] = uniform01(seed, step + i), the numbers the sampler draws with. */
  recordRandomUniforms(rec: Recorder, randoms: Tensor, seed: number, step: number): void {
    if (randoms.dtype !== "f32") throw new ShapeError(`randoms must be f32, got ${randoms.dtype}`);
    checkU32(seed, "seed");
    checkU32(step, "step");
    const count = randoms.size;
    rec.dispatch(this.uniforms, { randoms }, params({ seed, step, count }), [
      Math.ceil(count / WG),
    ]);
  }

  #draws(rec: Recorder, logits: Tensor, target: DrawTarget) {
    const V = vocabulary(logits, "sampling logits");
    const rows = logits.shape.length === 2 ? logits.shape[0] : 1;
    const draws = target.draws ?? rows;
    if (!Number.isInteger(draws) || draws < 1) {
      throw new KernelUsageError(`draws must be a positive integer, got ${draws}`);
    }
    if (rows !== 1 && rows !== draws) {
      throw new ShapeError(
        `${draws} draws need logits [${draws}, V] or [V], got [${logits.shape}]`,
      );
    }
    if (draws > rec.gpu.limits.maxComputeWorkgroupsPerDimension) {
      throw new KernelUsageError(`${draws} draws exceed one dispatch; split them`);
    }
    const { tokens, step } = target;
    if (tokens.dtype !== "u32") throw new ShapeError(`tokens must be u32, got ${tokens.dtype}`);
    checkU32(step, "step");
    if (step + draws > tokens.size) {
      throw new ShapeError(`slots [${step}, ${step + draws}) overrun tokens [${tokens.shape}]`);
    }
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

function vocabulary(logits: Tensor, what: string): number {
  if (logits.dtype !== "f32") throw new ShapeError(`${what} must be f32, got ${logits.dtype}`);
  if (logits.shape.length < 1 || logits.shape.length > 2) {
    throw new ShapeError(`${what} must be [V] or [rows, V], got [${logits.shape}]`);
  }
  const V = logits.shape[logits.shape.length - 1];
  if (V < 1) throw new ShapeError(`${what} has an empty vocabulary`);
  return V;
}

function checkU32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new KernelUsageError(`${what} must be a u32, got ${value}`);
  }
}
