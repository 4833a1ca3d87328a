/**
 * The layers under templora's public API, for people building on its WebGPU runtime: the device
 * and its limits, tensors, the kernel registry and recorder, every WGSL op with its TypeScript
 * wrapper, the Llama-family model (one forward for prefill, decode and training), the KV cache
 * and decode session, the LoRA adapter and its trainer, and the model file formats and
 * tokenizers.
 *
 * ```ts
 * import { acquireGpu, createTensor, KernelRegistry, MatmulOp, Recorder } from "jsr:@templora/templora/gpu";
 *
 * const gpu = await acquireGpu();
 * const registry = new KernelRegistry(gpu);
 * const matmul = await MatmulOp.create(registry, { transB: true });
 * const x = createTensor(gpu, [8, 64], "f32", "x");
 * const w = createTensor(gpu, [32, 64], "f32", "w");
 * const y = createTensor(gpu, [8, 32], "f32", "y");
 * const rec = new Recorder(gpu);
 * matmul.record(rec, x, w, y); // y = x·wᵀ
 * rec.submit();
 * ```
 * @module
 */
// Shared definitions
export * from "./src/core/lora.ts";
export * from "./src/core/rope.ts";
export * from "./src/core/quant.ts";
export * from "./src/core/random.ts";
// WebGPU runtime
export * from "./src/gpu/errors.ts";
export * from "./src/gpu/device.ts";
export * from "./src/gpu/memory.ts";
export * from "./src/gpu/tensor.ts";
export * from "./src/gpu/kernel.ts";
export type { BindingDecl, ConstantValue, ParamField } from "./src/gpu/wgsl_parse.ts";
export * from "./src/gpu/recorder.ts";
export * from "./src/gpu/profiler.ts";
export * from "./src/gpu/readback.ts";
// Ops (one per shader file)
export * from "./src/ops/copy.ts";
export * from "./src/ops/matmul.ts";
export * from "./src/ops/matvec.ts";
export * from "./src/ops/attention.ts";
export * from "./src/ops/embedding.ts";
export * from "./src/ops/rmsnorm.ts";
export * from "./src/ops/rope.ts";
export * from "./src/ops/swiglu.ts";
export * from "./src/ops/bias.ts";
export * from "./src/ops/softmax.ts";
export * from "./src/ops/cross_entropy.ts";
export * from "./src/ops/sampling.ts";
export * from "./src/ops/lora.ts";
export * from "./src/ops/lora_decode.ts";
export * from "./src/ops/fused_matvec.ts";
export * from "./src/ops/decode_layer.ts";
export { type AdapterClass, adapterClass } from "./src/ops/shapes.ts";
export * from "./src/ops/adamw.ts";
export * from "./src/ops/grad_norm.ts";
export * from "./src/ops/quant_weight.ts";
export * from "./src/ops/quant_matvec.ts";
export * from "./src/ops/quant_matmul.ts";
export * from "./src/ops/quant_embedding.ts";
// File formats and tokenizers
export * from "./src/formats/errors.ts";
export * from "./src/formats/config.ts";
export * from "./src/formats/tensor_data.ts";
export * from "./src/formats/tokenizer.ts";
export * from "./src/formats/load.ts";
export * from "./src/formats/files.ts";
export * from "./src/formats/safetensors.ts";
export * from "./src/formats/safetensors_folder.ts";
export * from "./src/formats/hf.ts";
export * from "./src/formats/llama2c.ts";
export * from "./src/formats/gguf.ts";
export * from "./src/formats/gguf_model.ts";
export * from "./src/formats/gguf_tokenizer.ts";
// The model and generation
export * from "./src/model/errors.ts";
export * from "./src/model/adapter.ts";
export * from "./src/model/activations.ts";
export * from "./src/model/gpu_weights.ts";
export * from "./src/model/kv_cache.ts";
export * from "./src/model/llama.ts";
export * from "./src/model/decode_session.ts";
export * from "./src/model/decode_loop.ts";
export * from "./src/model/generate.ts";
export * from "./src/model/stop.ts";
export * from "./src/model/text_model.ts";
// Temp-Lora's parts
export * from "./src/templora/adapter.ts";
export * from "./src/templora/trainer.ts";
export * from "./src/templora/settings.ts";
export * from "./src/templora/writer.ts";
export * from "./src/templora/evaluate.ts";
export * from "./src/templora/snapshot.ts";
export * from "./src/templora/errors.ts";
