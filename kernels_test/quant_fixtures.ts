/**
 * The GGUF fixtures in ../shared/models/gguf for the quantized kernels' tests (read with
 * src/formats/gguf.ts), the tensors the kernels are run on, and a dot-product closeness check.
 */
import { fileURLToPath } from "node:url";
import { readGguf } from "../src/formats/gguf.ts";

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

/** Every tensor of a fixture file, by name, read with src/formats/gguf.ts. */
export async function readFixture(file: string): Promise<Map<string, FixtureTensor>> {
  const gguf = await readGguf(fileURLToPath(new URL(file, GGUF_DIR)));
  const tensors = new Map<string, FixtureTensor>();
  for (const info of gguf.tensors.values()) {
    tensors.set(info.name, {
      name: info.name,
      dims: info.dims,
      type: info.type.name,
      bytes: await gguf.readTensorBytes(info.name),
    });
  }
  return tensors;
}
