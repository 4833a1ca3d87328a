import { COPY_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { expectArgument, expectDtype, expectWindow, strideGrid } from "./shapes.ts";

const OP = "copy";

const WG = 256;
const MAX_GROUPS = 4096;

/** Which elements a copy moves; all counts are in elements and multiples of 4. */
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
  private constructor(private readonly kernel: Kernel, private readonly kernelF16: Kernel) {}

  /** Compiles the kernels (f32 to f32, f32 to f16). */
  static async create(registry: KernelRegistry): Promise<CopyOp> {
    const get = (entryPoint: string) =>
      registry.get({ file: "copy.wgsl", source, entryPoint, constants: { WG } });
    const [kernel, kernelF16] = await Promise.all([get("main"), get("main_f16")]);
    return new CopyOp(kernel, kernelF16);
  }

  /**
   * Records dst[dstOffset + i] = src[srcOffset + i] for i < count: src f32, dst f32 or f16 (each
   * value rounded to nearest half, e.g. into an f16 KV cache; dst must start at a whole u32 word).
   */
  record(rec: Recorder, src: Tensor, dst: Tensor, range: CopyRange = {}): void {
    const { srcOffset = 0, dstOffset = 0 } = range;
    const count = range.count ?? src.size - srcOffset;
    for (
      const [name, value] of [["srcOffset", srcOffset], ["dstOffset", dstOffset], [
        "count",
        count,
      ]] as const
    ) {
      const ok = Number.isInteger(value) && value >= 0 && value % 4 === 0;
      expectArgument(OP, name, ok, "a non-negative multiple of 4", value);
    }
    expectDtype(OP, "src", src, "f32");
    const f16 = dst.dtype === "f16";
    if (!f16) expectDtype(OP, "dst", dst, "f32");
    expectArgument(OP, "dst offset", dst.byteOffset % 4 === 0, "a whole u32 word", dst.byteOffset);
    expectWindow(OP, "source window", srcOffset, count, src.size, "elements");
    expectWindow(OP, "destination window", dstOffset, count, dst.size, "elements");
    const n4 = count / 4;
    const { groups, stride } = strideGrid(n4, WG, MAX_GROUPS);
    const bindings: Record<string, Tensor> = f16 ? { src, dst16: dst } : { src, dst };
    rec.dispatch(f16 ? this.kernelF16 : this.kernel, bindings, {
      n4,
      srcOffset: srcOffset / 4,
      dstOffset: dstOffset / 4,
      stride,
    }, [groups]);
  }
}
