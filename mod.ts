/**
 * templora: long text with Temp-Lora on WebGPU. While a model writes, a temporary LoRA adapter
 * is trained on the text it has just produced, so the context lives in the adapter's weights;
 * the adapter is discarded when the text is done.
 *
 * ```ts
 * import { resolveTempLoraSettings, TextModel, writeWithTempLora } from "jsr:@templora/templora";
 *
 * const lm = await TextModel.load("stories260K.bin");
 * const settings = resolveTempLoraSettings(lm.config);
 * for await (const event of writeWithTempLora(lm, "Once upon a time", { maxTokens: 512 }, settings)) {
 *   if (event.type === "token") await Deno.stdout.write(new TextEncoder().encode(event.text));
 * }
 * lm.dispose();
 * ```
 *
 * The lower layers are exported too: the WebGPU runtime (device, tensors, kernel registry,
 * recorder), every WGSL op with its TypeScript wrapper, the model file formats and tokenizers.
 * @module
 */
// Temp-Lora
export * from "./src/templora/adapter.ts";
export * from "./src/templora/trainer.ts";
export * from "./src/templora/settings.ts";
export * from "./src/templora/writer.ts";
// Models and generation
export * from "./src/model/errors.ts";
export * from "./src/model/text_model.ts";
export * from "./src/model/generate.ts";
export * from "./src/model/write_loop.ts";
export * from "./src/model/decode_session.ts";
export * from "./src/model/llama.ts";
export * from "./src/model/kv_cache.ts";
export * from "./src/model/gpu_weights.ts";
export * from "./src/model/stop.ts";
// File formats and tokenizers
export * from "./src/formats/errors.ts";
export * from "./src/formats/config.ts";
export * from "./src/formats/tensor_data.ts";
export * from "./src/formats/tokenizer.ts";
export * from "./src/formats/load.ts";
// WebGPU runtime
export * from "./src/gpu/errors.ts";
export * from "./src/gpu/device.ts";
export * from "./src/gpu/memory.ts";
export * from "./src/gpu/tensor.ts";
export * from "./src/gpu/kernel.ts";
export type { BindingDecl, ConstantValue, ParamField } from "./src/gpu/wgsl_parse.ts";
export * from "./src/gpu/recorder.ts";
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
export * from "./src/ops/adamw.ts";
export * from "./src/ops/grad_norm.ts";
