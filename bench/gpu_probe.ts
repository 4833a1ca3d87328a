/**
 * The first thing bench/gpu_run.sh prints: which WebGPU adapter templora gets, the class of
 * tile sizes it chooses for it, and the limits and features the kernels depend on.
 *
 *   deno run -A bench/gpu_probe.ts
 */
import { acquireGpu } from "../src/gpu/device.ts";
import { adapterClass } from "../src/ops/shapes.ts";

const gpu = await acquireGpu();
const c = gpu.capabilities;
const l = gpu.limits;
console.log(`adapter: ${c.description} (vendor ${c.vendor || "?"}, ${c.architecture || "?"})`);
console.log(
  `class: ${adapterClass(c)}; fallback ${c.isFallbackAdapter}; backend ${c.backend}; ` +
    `shader-f16 ${c.shaderF16}; timestamp-query ${c.timestampQuery}; ` +
    `subgroups ${c.subgroupMinSize}-${c.subgroupMaxSize}`,
);
console.log(
  `limits: storage binding ${l.maxStorageBufferBindingSize}, buffer ${l.maxBufferSize}, ` +
    `workgroup storage ${l.maxComputeWorkgroupStorageSize}, invocations ` +
    `${l.maxComputeInvocationsPerWorkgroup}, workgroups per dimension ` +
    `${l.maxComputeWorkgroupsPerDimension}`,
);
gpu.device.destroy();
