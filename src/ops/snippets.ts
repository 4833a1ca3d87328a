/**
 * The shader snippets kernels pull in with `//!include "<name>"` (see shaders/README.md), by file
 * name: ops pass this map as {@link KernelSpec.includes}, so the registry needs no file access.
 */
import reduce from "../../shaders/reduce.wgsl" with { type: "text" };
import rowStats from "../../shaders/row_stats.wgsl" with { type: "text" };
import type { KernelSpec } from "../gpu/kernel.ts";

/** Every shared snippet in shaders/, by the name an include directive gives. */
export const SHADER_SNIPPETS: NonNullable<KernelSpec["includes"]> = {
  "reduce.wgsl": reduce,
  "row_stats.wgsl": rowStats,
};
