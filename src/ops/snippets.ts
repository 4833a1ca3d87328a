/**
 * The shader snippets kernels pull in with `//!include "<name>"` (see shaders/README.md), by file
 * name: ops pass this map as {@link KernelSpec.includes}, so the registry needs no file access.
 */
import { MATMUL_BLOCK_WGSL as matmulBlock } from "./shaders.generated.ts";
import { ORDER_KEY_WGSL as orderKey } from "./shaders.generated.ts";
import { REDUCE_WGSL as reduce } from "./shaders.generated.ts";
import { ROPE_ANGLES_WGSL as ropeAngles } from "./shaders.generated.ts";
import { ROW_STATS_WGSL as rowStats } from "./shaders.generated.ts";
import { SIGMOID_WGSL as sigmoid } from "./shaders.generated.ts";
import type { KernelSpec } from "../gpu/kernel.ts";

/** Every shared snippet in shaders/, by the name an include directive gives. */
export const SHADER_SNIPPETS: NonNullable<KernelSpec["includes"]> = {
  "matmul_block.wgsl": matmulBlock,
  "order_key.wgsl": orderKey,
  "reduce.wgsl": reduce,
  "rope_angles.wgsl": ropeAngles,
  "row_stats.wgsl": rowStats,
  "sigmoid.wgsl": sigmoid,
};
