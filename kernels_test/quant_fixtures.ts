/**
 * The GGUF fixtures in ../shared/models/gguf for the quantized kernels' tests: just enough of a
 * GGUF reader to find a tensor's type, shape and bytes (header, metadata skipped over, tensor
 * infos, aligned data section).
 */
import { ggmlTypeById } from "../src/core/quant.ts";

/** Folder of the shared GGUF fixtures, from the repository root. */
export const GGUF_DIR = new URL("../../shared/models/gguf/", import.meta.url);

/** One tensor of a fixture: ggml dims (ne[0] = row length), type name and packed bytes. */
export interface FixtureTensor {
  name: string;
  /** ggml's ne: ne[0] is the length of a row (the "in" of an [out, in] matrix). */
  dims: number[];
  type: string;
  bytes: Uint8Array;
}

/** Quantized tensors of the GGUF fixtures: one of each type they hold. */
export const FIXTURE_TENSORS: [string, string][] = [
  ["stories260K-q8_0.gguf", "blk.0.attn_q.weight"],
  ["stories260K-q4_0.gguf", "blk.1.ffn_gate.weight"],
  ["tiny-llama-spm-q4_k_m.gguf", "blk.0.ffn_up.weight"],
  ["tiny-llama-spm-q5_k_m.gguf", "blk.0.attn_output.weight"],
  ["tiny-llama-spm-q4_k_m.gguf", "blk.1.ffn_down.weight"],
];

/** Whether the fixtures are present (tests that need them skip otherwise). */
export function haveFixtures(): boolean {
  try {
    return Deno.statSync(new URL("stories260K-f32.gguf", GGUF_DIR)).isFile;
  } catch {
    return false;
  }
}

/** Every tensor of a fixture file, by name. */
export function readFixture(file: string): Map<string, FixtureTensor> {
  const data = Deno.readFileSync(new URL(file, GGUF_DIR));
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  const u32 = () => {
    const v = view.getUint32(at, true);
    at += 4;
    return v;
  };
  const u64 = () => {
    const v = Number(view.getBigUint64(at, true));
    at += 8;
    return v;
  };
  const str = () => {
    const n = u64();
    const s = new TextDecoder().decode(data.subarray(at, at + n));
    at += n;
    return s;
  };
  const scalarBytes = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
  let alignment = 32;
  const skipValue = (type: number): number | undefined => {
    if (type === 8) return void str();
    if (type === 9) {
      const inner = u32();
      const count = u64();
      for (let i = 0; i < count; i++) skipValue(inner);
      return;
    }
    const size = scalarBytes[type];
    if (!size) throw new Error(`${file}: metadata type ${type} at byte ${at}`);
    const v = size === 4 ? view.getUint32(at, true) : undefined;
    at += size;
    return v;
  };

  if (u32() !== 0x46554747) throw new Error(`${file} is not GGUF`);
  const version = u32();
  if (version !== 3 && version !== 2) throw new Error(`${file}: GGUF version ${version}`);
  const tensorCount = u64();
  const metadataCount = u64();
  for (let i = 0; i < metadataCount; i++) {
    const key = str();
    const v = skipValue(u32());
    if (key === "general.alignment" && v !== undefined) alignment = v;
  }
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const nDims = u32();
    const dims = Array.from({ length: nDims }, u64);
    infos.push({ name, dims, type: u32(), offset: u64() });
  }
  const start = Math.ceil(at / alignment) * alignment;
  const tensors = new Map<string, FixtureTensor>();
  for (const info of infos) {
    const type = ggmlTypeById(info.type);
    if (!type) throw new Error(`${file}: ${info.name} has unsupported type ${info.type}`);
    const elems = info.dims.reduce((a, b) => a * b, 1);
    const size = (elems / type.blockElems) * type.blockBytes;
    const from = start + info.offset;
    tensors.set(info.name, {
      name: info.name,
      dims: info.dims,
      type: type.name,
      bytes: data.subarray(from, from + size),
    });
  }
  return tensors;
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
