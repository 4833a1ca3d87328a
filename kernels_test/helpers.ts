/**
 * Shared test plumbing: one GPU for the whole run, seeded random inputs (seed printed, or set by
 * TEMPLORA_SEED), poisoned outputs, and relative-error checks against float64 twins.
 */
import { acquireGpu, type Gpu } from "../src/gpu/device.ts";
import { KernelRegistry } from "../src/gpu/kernel.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { readF32, readU32 } from "../src/gpu/readback.ts";
import {
  createTensor,
  type DType,
  slotElements,
  slotViews,
  type Tensor,
  writeTensor,
} from "../src/gpu/tensor.ts";
import { Rng } from "../src/core/random.ts";

export interface TestGpu {
  gpu: Gpu;
  registry: KernelRegistry;
  recorder: Recorder;
}

let shared: Promise<TestGpu> | undefined;

/** The GPU, registry and recorder every test shares. */
export function testGpu(): Promise<TestGpu> {
  shared ??= acquireGpu().then((gpu) => {
    const registry = new KernelRegistry(gpu);
    return { gpu, registry, recorder: new Recorder(gpu) };
  });
  return shared;
}

/** Deno.test for GPU tests: WebGPU handles outlive single tests by design. */
export function gpuTest(name: string, fn: (t: Deno.TestContext) => Promise<void>): void {
  Deno.test({ name, fn, sanitizeResources: false, sanitizeOps: false });
}

/** A fresh seeded generator; the seed is printed so a failure can be replayed. */
export function seededRng(what: string): Rng {
  const fromEnv = Deno.env.get("TEMPLORA_SEED");
  const seed = fromEnv ? Number(fromEnv) : Math.floor(Math.random() * 2 ** 31);
  console.log(`  ${what}: seed ${seed} (replay with TEMPLORA_SEED=${seed})`);
  return new Rng(seed);
}

/** A bit pattern no kernel writes by accident: a quiet NaN with a recognisable payload. */
export const POISON_BITS = 0x7fa5a5a5;

/** A tensor whose every 32-bit word is {@link POISON_BITS}. */
export function poisoned(gpu: Gpu, shape: readonly number[], dtype: DType = "f32"): Tensor {
  const t = createTensor(gpu, shape, dtype, "poisoned output");
  const words = new Uint32Array(Math.ceil(t.byteLength / 4)).fill(POISON_BITS);
  writeTensor(gpu, t, dtype === "f16" ? new Uint16Array(words.buffer) : words);
  return t;
}

/**
 * f32 tensors of `shapes` in one poisoned buffer, laid out as slotViews lays them out (so that
 * kernels reach several through one binding); destroy `buffer` to free them all.
 */
export function poisonedSlots(gpu: Gpu, shapes: number[][]): { buffer: Tensor; views: Tensor[] } {
  const buffer = poisoned(gpu, [slotElements(shapes)]);
  return { buffer, views: slotViews(buffer, shapes) };
}

/** Reads an f32 tensor and throws if any element still holds the poison. */
export async function readWritten(gpu: Gpu, t: Tensor, what: string): Promise<Float32Array> {
  const out = await readF32(gpu, t);
  assertWritten(new Uint32Array(out.buffer), what);
  return out;
}

/** Reads a u32 tensor and throws if any element still holds the poison. */
export async function readWrittenU32(gpu: Gpu, t: Tensor, what: string): Promise<Uint32Array> {
  const out = await readU32(gpu, t);
  assertWritten(out, what);
  return out;
}

function assertWritten(words: Uint32Array, what: string): void {
  const missed = words.indexOf(POISON_BITS);
  if (missed >= 0) {
    let count = 0;
    for (const w of words) if (w === POISON_BITS) count++;
    throw new Error(
      `${what}: ${count} of ${words.length} elements never written (first ${missed})`,
    );
  }
}

/** ||out - ref|| / ||ref|| (absolute when ref is zero). */
export function relativeError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) throw new Error(`length ${out.length} vs ${ref.length}`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = out[i] - ref[i];
    diff += d * d;
    norm += ref[i] * ref[i];
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}

/** Throws unless every value is finite and the relative error is under `tol`. */
export function assertClose(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
  what: string,
  tol = 1e-4,
): void {
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i])) throw new Error(`${what}: element ${i} is ${out[i]}`);
  }
  const err = relativeError(out, ref);
  if (!(err < tol)) throw new Error(`${what}: relative error ${err.toExponential(3)} >= ${tol}`);
}

/**
 * assertClose for outputs that are dot products of length `k`: the error norm is taken relative
 * to the larger of ||ref|| and ||refAbs|| / sqrt(k), where refAbs holds the same dots of the
 * absolute values. Random dots have ||ref|| near ||refAbs|| / sqrt(k); one that happens to cancel
 * (a single output, a row of large same-signed weights) would otherwise demand more than float32
 * can give, while a wrong kernel still misses by order one.
 */
export function assertCloseDots(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
  refAbs: ArrayLike<number>,
  k: number,
  what: string,
  tol = 1e-4,
): number {
  let diff = 0;
  let norm = 0;
  let normAbs = 0;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(out[i])) throw new Error(`${what}: element ${i} is ${out[i]}`);
    diff += (out[i] - ref[i]) ** 2;
    norm += ref[i] ** 2;
    normAbs += refAbs[i] ** 2;
  }
  const scale = Math.max(Math.sqrt(norm), Math.sqrt(normAbs / k));
  const err = scale === 0 ? Math.sqrt(diff) : Math.sqrt(diff) / scale;
  if (!(err < tol)) throw new Error(`${what}: relative error ${err.toExponential(3)} >= ${tol}`);
  return err;
}
