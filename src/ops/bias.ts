import { BIAS_WGSL as source } from "./shaders.generated.ts";
import type { Kernel, KernelRegistry } from "../gpu/kernel.ts";
import type { Recorder } from "../gpu/recorder.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { expectDtype, expectRows, expectSize, strideGrid } from "./shapes.ts";

const WG = 256;
const MAX_GROUPS = 4096;

/** Adds a bias row to every row of a matrix, in place; and bans tokens from logits. */
export class BiasOp {
  private constructor(private readonly kernel: Kernel, private readonly banKernel: Kernel) {}

  /** Compiles the kernels. */
  static async create(registry: KernelRegistry): Promise<BiasOp> {
    const get = (entryPoint: string) =>
      registry.get({ file: "bias.wgsl", source, entryPoint, constants: { WG } });
    return new BiasOp(await get("main"), await get("ban"));
  }

  /** Records logits[id] = lowest f32 for every id in `banned` (u32 [n]); logits [vocab]. */
  recordBan(rec: Recorder, logits: Tensor, banned: Tensor): void {
    expectDtype("ban", "banned", banned, "u32");
    expectDtype("ban", "logits", logits, "f32");
    rec.dispatch(
      this.banKernel,
      { banned, logits },
      { count: banned.size, vocab: logits.size },
      [Math.ceil(banned.size / WG)],
    );
  }

  /** Records y[r, :] += bias for every row r. y [rows, cols], bias [cols]. */
  record(rec: Recorder, y: Tensor, bias: Tensor): void {
    const [, cols] = expectRows("bias", "y", y, "f32");
    expectSize("bias", "bias", bias, "f32", cols);
    const { groups, stride } = strideGrid(y.size, WG, MAX_GROUPS);
    rec.dispatch(this.kernel, { bias, y }, { n: y.size, cols, stride }, [groups]);
  }
}
