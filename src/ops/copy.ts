import source from "../../shaders/copy.wgsl" with { type: "text" };
import { KernelUsageError } from "../gpu/errors.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";

const WG = 256;
const MAX_GROUPS = 4096;

/** A vec4 copy kernel: the bandwidth reference the benchmarks compare other kernels with. */
export class CopyOp {
  private constructor(private readonly kernel: Kernel) {}

  /** Compiles the kernel. */
  static async create(registry: KernelRegistry): Promise<CopyOp> {
    return new CopyOp(await registry.get({ file: "copy.wgsl", source, constants: { WG } }));
  }

  /** Records dst = src; both f32 with a size that is a multiple of 4. */
  record(rec: Recorder, src: Tensor, dst: Tensor): void {
    if (src.size !== dst.size || src.size % 4 !== 0) {
      throw new KernelUsageError(`copy needs equal sizes divisible by 4, got ${src.size}, ${dst.size}`);
    }
    const n4 = src.size / 4;
    const groups = Math.min(MAX_GROUPS, Math.ceil(n4 / WG));
    rec.dispatch(this.kernel, { src, dst }, { n4, stride: groups * WG }, [groups]);
  }
}
