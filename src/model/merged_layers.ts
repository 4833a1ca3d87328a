/**
 * Decode weights with a LoRA adapter's update merged in. For the layers that decode in one
 * workgroup on packed f32 weights, a copy of each packed layer in which every adapted matrix W is
 * W + scale · B·A: the layer kernel then decodes without its adapter stages (no h, no second
 * product), reading each weight once. The copy is kept with the adapter (its `derived` map) and
 * brought up to date, in the recorder, whenever the adapter's version has moved on. A merged
 * product sums in its own order, so its outputs differ from the kernel's adapter path by float32
 * rounding.
 */
import { LORA_TARGETS } from "../core/lora.ts";
import type { Gpu } from "../gpu/device.ts";
import { KernelUsageError } from "../gpu/errors.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { createTensor, Tensor } from "../gpu/tensor.ts";
import type { MatmulOp } from "../ops/matmul.ts";
import type { AdapterDerivative, ModelAdapter } from "./adapter.ts";
import type { GpuLayer, PackedLayer } from "./gpu_weights.ts";

/** The merged copies of some layers' packed weights (undefined for the others). */
export class MergedLayers implements AdapterDerivative {
  #version = Number.NaN;

  private constructor(readonly layers: readonly (PackedLayer | undefined)[]) {}

  /** Allocates copies of `base`'s packed layers where `merges` says (each f32 packed). */
  static allocate(gpu: Gpu, base: readonly GpuLayer[], merges: readonly boolean[]): MergedLayers {
    const made: Tensor[] = [];
    try {
      const layers = base.map((layer, l) => {
        const packed = layer.packed;
        if (!merges[l] || !packed) return undefined;
        if (packed.kind !== "f32" || packed.data.byteOffset !== 0) {
          throw new KernelUsageError(
            `merged layers: layer ${l} is not a whole-buffer f32 packed layer`,
          );
        }
        const data = createTensor(gpu, packed.data.shape, "u32", `merged layer ${l}`);
        made.push(data);
        return { ...packed, data };
      });
      return new MergedLayers(layers);
    } catch (error) {
      for (const t of made) t.destroy();
      throw error;
    }
  }

  get version(): number {
    return this.#version;
  }

  get bytes(): number {
    return this.layers.reduce((sum, p) => sum + (p?.data.byteLength ?? 0), 0);
  }

  /**
   * Records bringing the copies to `adapter`'s present values: each layer copied from `base`,
   * then W += scale · B[out, r]·A[r, in] for every adapted matrix (`accumulate`: C += alpha·A·B).
   */
  record(rec: Recorder, adapter: ModelAdapter, base: readonly GpuLayer[], accumulate: MatmulOp) {
    for (const [l, merged] of this.layers.entries()) {
      if (!merged) continue;
      rec.copy(base[l].packed!.data, merged.data);
      for (const target of LORA_TARGETS) {
        const part = adapter.get(l, target);
        if (!part) continue;
        const w = base[l][target] as Tensor;
        const into = new Tensor(merged.data.buffer, w.shape, "f32", w.byteOffset);
        accumulate.record(rec, part.b, part.a, into, adapter.scale);
      }
    }
    this.#version = adapter.version;
  }

  destroy(): void {
    for (const p of this.layers) p?.data.destroy();
  }
}
