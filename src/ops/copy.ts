import source from "../../shaders/copy.wgsl" with { type: "text" };
import { KernelUsageError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";

const WG = 256;
const MAX_GROUPS = 4096;

/** Which elements a copy moves; all counts are in f32 elements and multiples of 4. */
export interface CopyRange {
  /** First element read (default 0). */
  srcOffset?: number;
  /** First element written (default 0). */
  dstOffset?: number;
  /** Elements copied (default: all of src after srcOffset). */
  count?: number;
}

/** A vec4 copy kernel: moves rows between tensors, and is the bandwidth yardstick. */
export class CopyOp {
  private constructor(private readonly kernel: Kernel) {}

  /** Compiles the kernel. */
  static async create(registry: KernelRegistry): Promise<CopyOp> {
    return new CopyOp(await registry.get({ file: "copy.wgsl", source, constants: { WG } }));
  }

  /** Records dst[dstOffset + i] = src[srcOffset + i] for i < count (f32 tensors). */
  record(rec: Recorder, src: Tensor, dst: Tensor, range: CopyRange = {}): void {
    const { srcOffset = 0, dstOffset = 0 } = range;
    const count = range.count ?? src.size - srcOffset;
    for (
      const [name, value] of [["srcOffset", srcOffset], ["dstOffset", dstOffset], ["count", count]]
    ) {
      if (!Number.isInteger(value) || (value as number) < 0 || (value as number) % 4 !== 0) {
        throw new KernelUsageError(`copy: ${name} ${value} must be a non-negative multiple of 4`);
      }
    }
    if (src.dtype !== "f32" || dst.dtype !== "f32") {
      throw new KernelUsageError(`copy moves f32 tensors, got ${src.dtype} -> ${dst.dtype}`);
    }
    if (srcOffset + count > src.size || dstOffset + count > dst.size) {
      throw new KernelUsageError(
        `copy of ${count} elements from ${srcOffset} of [${src.shape}] to ${dstOffset} of ` +
          `[${dst.shape}] runs past a tensor`,
      );
    }
    const n4 = count / 4;
    const groups = Math.max(1, Math.min(MAX_GROUPS, Math.ceil(n4 / WG)));
    rec.dispatch(this.kernel, { src, dst }, {
      n4,
      srcOffset: srcOffset / 4,
      dstOffset: dstOffset / 4,
      stride: groups * WG,
    }, [groups]);
  }
}
