/**
 * A float64 Llama-family model built from the kernel twins: the yardstick the GPU model is
 * tested against. It runs a whole sequence from position 0 (no KV cache), optionally with a LoRA
 * adapter on any of the seven projections, and computes the masked cross-entropy loss with the
 * adapter's gradients by a full backward pass with frozen base weights. Slow by design: plain
 * loops, no tricks.
 */
import { attentionBackward, attentionForward, type AttentionShape } from "./attention.ts";
import { crossEntropyBackward, crossEntropyForward } from "./cross_entropy.ts";
import { embeddingForward } from "./embedding.ts";
import { matmulRef } from "./matmul.ts";
import { rmsnormBackward, rmsnormForward } from "./rmsnorm.ts";
import type { RopePairs } from "../core/rope.ts";
import {
  LORA_TARGETS,
  type LoraTarget,
  projectionDims,
  projectionName,
  type ProjectionSizes,
} from "../core/lora.ts";
import { ropeBackward, ropeForward } from "./rope.ts";
import { swigluBackward, swigluForward } from "./swiglu.ts";

/** The sizes and settings the reference model needs. */
export interface ReferenceConfig extends ProjectionSizes {
  nLayers: number;
  vocabSize: number;
  normEps: number;
  ropeTheta: number;
  ropePairs: RopePairs;
  /** Whether q, k and v projections have biases (Qwen2). */
  qkvBias?: boolean;
  /** RMSNorm over headDim on each query and key head before RoPE (Qwen3's q_norm/k_norm). */
  qkNorm?: boolean;
  /** Per-pair RoPE frequency divisors (Llama 3). */
  ropeFreqFactors?: ArrayLike<number>;
  /** Which layers apply RoPE (SmolLM3); absent: all. */
  ropeLayers?: readonly boolean[];
  /** Each query sees only the last this many positions, itself included (Mistral); absent: all. */
  slidingWindow?: number;
}

/** A reference config and which LM head it uses, read from a Hugging Face config.json. */
export interface HfReferenceConfig extends ReferenceConfig {
  /** tie_word_embeddings: the LM head is the token embedding. */
  tiedEmbeddings: boolean;
}

/**
 * A reference config read straight from a published config.json, by the formulas of the
 * Hugging Face modeling code rather than templora's loader: head_dim (else hidden / heads);
 * rope_theta (top level or in rope_parameters); inverse frequencies of rope_type "default",
 * "linear" (all divided by factor) and "llama3" (wavelengths past original / low_freq_factor
 * divided by factor, below original / high_freq_factor kept, a linear blend of the two between),
 * given as per-pair divisors; q/k/v biases for Qwen2; q/k head norms for Qwen3; SmolLM3's
 * no_rope_layers (1 = the layer rotates; absent: every no_rope_layer_interval-th layer does
 * not); Mistral's sliding_window.
 */
export function referenceConfigFromHf(json: Record<string, any>): HfReferenceConfig {
  const arch = json.architectures[0] as string;
  const dim = json.hidden_size as number;
  const nHeads = json.num_attention_heads as number;
  const nLayers = json.num_hidden_layers as number;
  const headDim = (json.head_dim ?? dim / nHeads) as number;
  const rope = json.rope_parameters ?? json.rope_scaling ?? {};
  const base = (rope.rope_theta ?? json.rope_theta ?? 10000) as number;
  const config: HfReferenceConfig = {
    dim,
    hiddenDim: json.intermediate_size,
    nLayers,
    nHeads,
    nKvHeads: json.num_key_value_heads ?? nHeads,
    headDim,
    vocabSize: json.vocab_size,
    normEps: json.rms_norm_eps ?? 1e-6,
    ropeTheta: base,
    ropePairs: "half",
    tiedEmbeddings: json.tie_word_embeddings ?? false,
    qkvBias: arch === "Qwen2ForCausalLM",
    qkNorm: arch === "Qwen3ForCausalLM",
  };
  const type = rope.rope_type ?? rope.type ?? "default";
  if (type !== "default") {
    const inv = Array.from({ length: headDim / 2 }, (_, i) => Math.pow(base, (-2 * i) / headDim));
    let scaled: number[];
    if (type === "linear") {
      scaled = inv.map((f) => f / rope.factor);
    } else if (type === "llama3") {
      const { factor, low_freq_factor: low, high_freq_factor: high } = rope;
      const original = rope.original_max_position_embeddings;
      scaled = inv.map((f) => {
        const wavelength = (2 * Math.PI) / f;
        if (wavelength < original / high) return f;
        if (wavelength > original / low) return f / factor;
        const smooth = (original / wavelength - low) / (high - low);
        return (1 - smooth) * (f / factor) + smooth * f;
      });
    } else {
      throw new Error(`reference: rope_type ${type} is not modelled`);
    }
    config.ropeFreqFactors = inv.map((f, i) => f / scaled[i]);
  }
  if (arch === "SmolLM3ForCausalLM") {
    const interval = json.no_rope_layer_interval ?? 4;
    const flags: number[] = json.no_rope_layers ??
      Array.from({ length: nLayers }, (_, l) => ((l + 1) % interval !== 0 ? 1 : 0));
    config.ropeLayers = flags.map((f) => f === 1);
  }
  if (arch === "MistralForCausalLM" && typeof json.sliding_window === "number") {
    config.slidingWindow = json.sliding_window;
  }
  return config;
}

export { LORA_TARGETS, type LoraTarget, projectionName };

/** Looks up a weight by its Hugging Face name ("model.layers.0.self_attn.q_proj.weight", ...). */
export type WeightLookup = (name: string) => ArrayLike<number>;

/** A LoRA adapter: per (layer, target) A [rank, in] and B [out, rank], scaled by `scale`. */
export interface ReferenceLora {
  rank: number;
  scale: number;
  /** Keyed by `projectionName(layer, target)`. */
  a: Map<string, Float64Array>;
  b: Map<string, Float64Array>;
}

interface Linear {
  weight: ArrayLike<number>;
  bias?: ArrayLike<number>;
  loraA?: Float64Array;
  loraB?: Float64Array;
  inDim: number;
  outDim: number;
}

/** y [T, out] = x Wᵀ (+ bias) (+ scale (x Aᵀ) Bᵀ). */
function linearForward(x: ArrayLike<number>, t: number, lin: Linear, lora?: ReferenceLora) {
  const y = matmulRef(x, lin.weight, t, lin.inDim, lin.outDim, { transB: true });
  if (lin.bias) {
    for (let i = 0; i < t; i++) {
      for (let j = 0; j < lin.outDim; j++) y[i * lin.outDim + j] += lin.bias[j];
    }
  }
  if (lora && lin.loraA && lin.loraB) {
    const h = matmulRef(x, lin.loraA, t, lin.inDim, lora.rank, { transB: true });
    const delta = matmulRef(h, lin.loraB, t, lora.rank, lin.outDim, { transB: true });
    for (let i = 0; i < y.length; i++) y[i] += lora.scale * delta[i];
  }
  return y;
}

/** Gradients through a linear layer: dX always; dA, dB when it has an adapter. */
function linearBackward(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  t: number,
  lin: Linear,
  lora?: ReferenceLora,
): { dX: Float64Array; dA?: Float64Array; dB?: Float64Array } {
  const dX = matmulRef(dy, lin.weight, t, lin.outDim, lin.inDim);
  if (!lora || !lin.loraA || !lin.loraB) return { dX };
  const r = lora.rank;
  const h = matmulRef(x, lin.loraA, t, lin.inDim, r, { transB: true });
  const dB = matmulRef(dy, h, lin.outDim, t, r, { transA: true, alpha: lora.scale });
  const dH = matmulRef(dy, lin.loraB, t, lin.outDim, r, { alpha: lora.scale });
  const dA = matmulRef(dH, x, r, t, lin.inDim, { transA: true });
  const viaAdapter = matmulRef(dH, lin.loraA, t, r, lin.inDim);
  for (let i = 0; i < dX.length; i++) dX[i] += viaAdapter[i];
  return { dX, dA, dB };
}

/** A head-wise RMSNorm's input and reciprocal RMS, when the model has q/k norms. */
interface HeadNormSaved {
  input: Float64Array;
  rstd: Float64Array;
}

interface LayerSaved {
  qNorm?: HeadNormSaved;
  kNorm?: HeadNormSaved;
  x: Float64Array;
  h: Float64Array;
  rstd: Float64Array;
  qr: Float64Array;
  kr: Float64Array;
  v: Float64Array;
  attn: Float64Array;
  x2: Float64Array;
  h2: Float64Array;
  rstd2: Float64Array;
  gate: Float64Array;
  up: Float64Array;
  act: Float64Array;
}

/** Result of {@link referenceForward}. */
export interface ReferenceForward {
  /** [T, vocab]. */
  logits: Float64Array;
  /** What the backward needs. */
  saved: { layers: LayerSaved[]; final: Float64Array; finalRstd: Float64Array; hf: Float64Array };
}

function linearOf(
  config: ReferenceConfig,
  weights: WeightLookup,
  layer: number,
  target: LoraTarget,
  lora?: ReferenceLora,
): Linear {
  const name = projectionName(layer, target);
  const [inDim, outDim] = projectionDims(config, target);
  const hasBias = config.qkvBias && (target === "q" || target === "k" || target === "v");
  return {
    weight: weights(`${name}.weight`),
    bias: hasBias ? weights(`${name}.bias`) : undefined,
    loraA: lora?.a.get(name),
    loraB: lora?.b.get(name),
    inDim,
    outDim,
  };
}

/** The LM head: lm_head.weight, or the embedding when they are tied (absent lm_head). */
export type HeadLookup = () => ArrayLike<number>;

/** Runs tokens (positions 0..T-1) through the model; logits for every position. */
export function referenceForward(
  config: ReferenceConfig,
  weights: WeightLookup,
  head: HeadLookup,
  tokens: readonly number[],
  lora?: ReferenceLora,
): ReferenceForward {
  const { dim, nHeads, nKvHeads, vocabSize, normEps: eps } = config;
  const t = tokens.length;
  const headDim = config.headDim;
  const rope = ropeOf(config);
  const shape = { tokens: t, past: 0, nHeads, nKvHeads, headDim };
  let x = embeddingForward(weights("model.embed_tokens.weight"), vocabSize, dim, tokens, t);
  const layers: LayerSaved[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const prefix = `model.layers.${l}`;
    const lin = (target: LoraTarget) => linearOf(config, weights, l, target, lora);
    const norm1 = rmsnormForward(x, weights(`${prefix}.input_layernorm.weight`), t, dim, eps);
    const qProj = linearForward(norm1.out, t, lin("q"), lora);
    const kProj = linearForward(norm1.out, t, lin("k"), lora);
    const v = linearForward(norm1.out, t, lin("v"), lora);
    const headNorm = (input: Float64Array, heads: number, which: "q" | "k") =>
      config.qkNorm
        ? rmsnormForward(
          input,
          weights(`${prefix}.self_attn.${which}_norm.weight`),
          t * heads,
          headDim,
          eps,
        )
        : undefined;
    const qNorm = headNorm(qProj, nHeads, "q");
    const kNorm = headNorm(kProj, nKvHeads, "k");
    const q = qNorm?.out ?? qProj;
    const k = kNorm?.out ?? kProj;
    const rotates = config.ropeLayers?.[l] ?? true;
    const qr = rotates ? ropeForward(q, t, 0, { ...rope, heads: nHeads }) : q;
    const kr = rotates ? ropeForward(k, t, 0, { ...rope, heads: nKvHeads }) : k;
    const attn = windowedAttention(qr, kr, v, shape, config.slidingWindow);
    const o = linearForward(attn, t, lin("o"), lora);
    const x2 = x.map((value, i) => value + o[i]);
    const norm2 = rmsnormForward(
      x2,
      weights(`${prefix}.post_attention_layernorm.weight`),
      t,
      dim,
      eps,
    );
    const gate = linearForward(norm2.out, t, lin("gate"), lora);
    const up = linearForward(norm2.out, t, lin("up"), lora);
    const act = swigluForward(gate, up);
    const down = linearForward(act, t, lin("down"), lora);
    layers.push({
      qNorm: qNorm && { input: qProj, rstd: qNorm.rstd },
      kNorm: kNorm && { input: kProj, rstd: kNorm.rstd },
      x,
      h: norm1.out,
      rstd: norm1.rstd,
      qr,
      kr,
      v,
      attn,
      x2,
      h2: norm2.out,
      rstd2: norm2.rstd,
      gate,
      up,
      act,
    });
    x = x2.map((value, i) => value + down[i]);
  }
  const finalNorm = rmsnormForward(x, weights("model.norm.weight"), t, dim, eps);
  const logits = matmulRef(finalNorm.out, head(), t, dim, vocabSize, { transB: true });
  return { logits, saved: { layers, final: x, finalRstd: finalNorm.rstd, hf: finalNorm.out } };
}

/**
 * Causal attention where query t sees keys max(0, t - window + 1)..t: each query row is one
 * attention call over its window's keys. Without a window, or a window the sequence fits, the
 * plain causal call.
 */
function windowedAttention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  shape: AttentionShape,
  window: number | undefined,
): Float64Array {
  const { tokens: t, nHeads, nKvHeads, headDim } = shape;
  if (window === undefined || t <= window) return attentionForward(q, k, v, shape).out;
  const out = new Float64Array(t * nHeads * headDim);
  const qRow = nHeads * headDim;
  const kvRow = nKvHeads * headDim;
  for (let i = 0; i < t; i++) {
    const from = Math.max(0, i - window + 1);
    const row = attentionForward(
      q.subarray(i * qRow, (i + 1) * qRow),
      k.subarray(from * kvRow, (i + 1) * kvRow),
      v.subarray(from * kvRow, (i + 1) * kvRow),
      { ...shape, tokens: 1, past: i - from },
    ).out;
    out.set(row, i * qRow);
  }
  return out;
}

/** Loss and adapter gradients of {@link referenceLossAndGradients}. */
export interface ReferenceGradients {
  /** Mean cross-entropy over scored tokens. */
  loss: number;
  /** Number of scored tokens. */
  count: number;
  /** d loss / d A and d loss / d B, keyed like the adapter. */
  dA: Map<string, Float64Array>;
  dB: Map<string, Float64Array>;
}

/**
 * Mean cross-entropy of predicting targets[t] from tokens[0..t] over positions where mask[t] is
 * set, and its gradients with respect to every adapter matrix (base weights frozen).
 */
export function referenceLossAndGradients(
  config: ReferenceConfig,
  weights: WeightLookup,
  head: HeadLookup,
  tokens: readonly number[],
  targets: readonly number[],
  mask: readonly boolean[],
  lora: ReferenceLora,
): ReferenceGradients {
  const { dim, nHeads, nKvHeads, vocabSize: vocab } = config;
  const t = tokens.length;
  if (config.slidingWindow !== undefined && t > config.slidingWindow) {
    throw new Error("reference: gradients through a sliding window are not modelled");
  }
  const headDim = config.headDim;
  const rope = ropeOf(config);
  const shape = { tokens: t, past: 0, nHeads, nKvHeads, headDim };
  const { logits, saved } = referenceForward(config, weights, head, tokens, lora);

  const weightsOfMask = mask.map((m) => (m ? 1 : 0));
  const { sum, count } = crossEntropyForward(logits, targets, weightsOfMask, t, vocab);
  const loss = sum / count;
  const dLogits = crossEntropyBackward(logits, targets, weightsOfMask, t, vocab, 1 / count);

  const dA = new Map<string, Float64Array>();
  const dB = new Map<string, Float64Array>();
  const dHf = matmulRef(dLogits, head(), t, vocab, dim);
  let dx = rmsnormBackward(saved.final, weights("model.norm.weight"), saved.finalRstd, dHf, t, dim)
    .dX;
  for (let l = config.nLayers - 1; l >= 0; l--) {
    const s = saved.layers[l];
    const prefix = `model.layers.${l}`;
    const lin = (target: LoraTarget) => linearOf(config, weights, l, target, lora);
    const through = (target: LoraTarget, dy: ArrayLike<number>, input: ArrayLike<number>) => {
      const g = linearBackward(dy, input, t, lin(target), lora);
      const name = projectionName(l, target);
      if (g.dA && g.dB) {
        dA.set(name, g.dA);
        dB.set(name, g.dB);
      }
      return g.dX;
    };
    const dAct = through("down", dx, s.act);
    const { dGate, dUp } = swigluBackward(dAct, s.gate, s.up);
    const dH2 = through("gate", dGate, s.h2);
    const dH2up = through("up", dUp, s.h2);
    for (let i = 0; i < dH2.length; i++) dH2[i] += dH2up[i];
    const ffnNorm = weights(`${prefix}.post_attention_layernorm.weight`);
    const dX2n = rmsnormBackward(s.x2, ffnNorm, s.rstd2, dH2, t, dim).dX;
    const dx2 = dx.map((value, i) => value + dX2n[i]);
    const dAttn = through("o", dx2, s.attn);
    const grads = attentionBackward(dAttn, s.qr, s.kr, s.v, shape);
    const rotates = config.ropeLayers?.[l] ?? true;
    const dqNormed = rotates ? ropeBackward(grads.dQ, t, 0, { ...rope, heads: nHeads }) : grads.dQ;
    const dkNormed = rotates
      ? ropeBackward(grads.dK, t, 0, { ...rope, heads: nKvHeads })
      : grads.dK;
    const headNormBack = (
      d: Float64Array,
      n: HeadNormSaved | undefined,
      heads: number,
      w: string,
    ) =>
      n
        ? rmsnormBackward(
          n.input,
          weights(`${prefix}.self_attn.${w}_norm.weight`),
          n.rstd,
          d,
          t * heads,
          headDim,
        ).dX
        : d;
    const dq = headNormBack(dqNormed, s.qNorm, nHeads, "q");
    const dk = headNormBack(dkNormed, s.kNorm, nKvHeads, "k");
    const dH = through("q", dq, s.h);
    const dHk = through("k", dk, s.h);
    const dHv = through("v", grads.dV, s.h);
    for (let i = 0; i < dH.length; i++) dH[i] += dHk[i] + dHv[i];
    const attnNorm = weights(`${prefix}.input_layernorm.weight`);
    const dXn = rmsnormBackward(s.x, attnNorm, s.rstd, dH, t, dim).dX;
    dx = dx2.map((value, i) => value + dXn[i]);
  }
  return { loss, count, dA, dB };
}

/** Mean masked cross-entropy only (for finite differences). */
export function referenceLoss(
  config: ReferenceConfig,
  weights: WeightLookup,
  head: HeadLookup,
  tokens: readonly number[],
  targets: readonly number[],
  mask: readonly boolean[],
  lora?: ReferenceLora,
): number {
  const { logits } = referenceForward(config, weights, head, tokens, lora);
  const weightsOfMask = mask.map((m) => (m ? 1 : 0));
  const { sum, count } = crossEntropyForward(
    logits,
    targets,
    weightsOfMask,
    tokens.length,
    config.vocabSize,
  );
  return sum / count;
}

/** The RoPE settings of a model (heads are added per use). */
function ropeOf(config: ReferenceConfig) {
  return {
    headDim: config.headDim,
    base: config.ropeTheta,
    pairs: config.ropePairs,
    divisors: config.ropeFreqFactors,
  };
}
