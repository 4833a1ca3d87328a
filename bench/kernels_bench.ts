/**
 * Kernel throughput: matmul GFLOP/s at decode, prefill, training and backward shapes (against a
 * plain 16 x 16-tiled matmul measured in the same run), copy GB/s as the bandwidth yardstick,
 * the optimizer's GB/s (AdamW and the gradient norm over a flat adapter), a Q8_0 prefill product,
 * other tiles of the products on GPUs (for choosing tiles per adapter), and decode's one-token
 * LoRA (lora_decode.wgsl) at SmolLM2-135M's widest projection under each adapter class's tiles,
 * and training's LoRA products under each class's register block.
 * Run with `deno task bench`; the table at the end is what bench/RESULTS.md records.
 */
import naiveSource from "./naive_matmul.wgsl" with { type: "text" };
import { gpu, gpuBench, registry } from "./harness.ts";
import { createTensor, Tensor, uploadTensor } from "../src/gpu/tensor.ts";
import {
  MATMUL_TILES,
  type MatmulForm,
  MatmulOp,
  type MatmulTiles,
  matmulTiles,
} from "../src/ops/matmul.ts";
import { QuantMatmulOp } from "../src/ops/quant_matmul.ts";
import { uploadQuantMatrix } from "../src/ops/quant_weight.ts";
import { quantizeRandom } from "../src/reference/quant.ts";
import { Rng } from "../src/core/random.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { AdamWOp, biasCorrections } from "../src/ops/adamw.ts";
import { GradNormOp, STATS } from "../src/ops/grad_norm.ts";
import { LORA_DECODE_TILES, LoraDecodeOp, type LoraDecodeTiles } from "../src/ops/lora_decode.ts";
import { LORA_BLOCKS, LoraOp } from "../src/ops/lora.ts";

function matrix(rows: number, cols: number): Tensor {
  return createTensor(gpu, [rows, cols], "f32", "bench matrix");
}

/** Cases: [label, M, K, N, form]. Weights are stored [out, in], hence transB for forwards. */
const MATMULS: [string, number, number, number, MatmulForm][] = [
  ["decode 1x576x1536 (x·Wᵀ)", 1, 576, 1536, { transB: true }],
  ["prefill 128x576x1536 (x·Wᵀ)", 128, 576, 1536, { transB: true }],
  ["training 1024x1024x1024", 1024, 1024, 1024, {}],
  ["backward dX 128x1536x576 (dY·W)", 128, 1536, 576, {}],
  ["backward dA 64x128x576 (dHᵀ·X)", 64, 128, 576, { transA: true }],
];

/**
 * Matmul tiles besides the adapter class's: on GPUs smaller workgroup tiles (a 128 x 128 one leaves
 * a 256-token product ten workgroups, on a GPU of a hundred multiprocessors) and llvmpipe's; on
 * llvmpipe the GPUs' (8 x 8 a thread in 16 x 16 threads), so each run says what the others would
 * give here.
 */
const DEFAULT_MATMUL_TILES = matmulTiles(gpu.capabilities);
const OTHER_MATMUL_TILES: MatmulTiles[] = gpu.capabilities.isFallbackAdapter
  ? [MATMUL_TILES.discrete]
  : [
    { wgX: 8, wgY: 8, tk: 16, tm: 8, tn: 8 },
    { wgX: 16, wgY: 8, tk: 16, tm: 8, tn: 8 },
    { wgX: 8, wgY: 8, tk: 32, tm: 8, tn: 8 },
    MATMUL_TILES.fallback,
  ];
const tileText = (t: MatmulTiles) =>
  `${t.tm * t.wgY}x${t.tn * t.wgX} tiles (${t.tm}x${t.tn} a thread), TK ${t.tk}`;

for (const [label, m, k, n, form] of MATMULS) {
  const a = form.transA ? matrix(k, m) : matrix(m, k);
  const b = form.transB ? matrix(n, k) : matrix(k, n);
  const c = matrix(m, n);
  const flops = 2 * m * n * k;
  for (const tiles of [DEFAULT_MATMUL_TILES, ...OTHER_MATMUL_TILES]) {
    const op = await MatmulOp.create(registry, form, tiles);
    gpuBench({
      group: "matmul",
      name: `templora ${label}${tiles === DEFAULT_MATMUL_TILES ? "" : `, ${tileText(tiles)}`}`,
      flops,
      repeat: Math.max(1, Math.min(64, Math.round(4e8 / flops))),
      record: (rec) => op.record(rec, a, b, c),
    });
  }
}

{
  // Prefill's Q8_0 product at SmolLM2-135M's gate and up shape, x [128, 576] · Wᵀ, W [1536, 576].
  const t = 128, k = 576, n = 1536;
  const w = uploadQuantMatrix(gpu, quantizeRandom("Q8_0", new Rng(3), n, k), "Q8_0", n, k);
  const x = matrix(t, k), y = matrix(t, n);
  for (const tiles of [DEFAULT_MATMUL_TILES, ...OTHER_MATMUL_TILES]) {
    const op = await QuantMatmulOp.create(registry, { types: ["Q8_0"], tiles });
    gpuBench({
      group: "quant matmul",
      name: `Q8_0 prefill ${t}x${k}x${n} (x·Wᵀ), ${tileText(tiles)}`,
      flops: 2 * t * k * n,
      repeat: 8,
      record: (rec) => op.recordForward(rec, x, w, y),
    });
  }
}

{
  const m = 1024, k = 1024, n = 1024;
  const kernel = await registry.get({ file: "naive_matmul.wgsl", source: naiveSource });
  const a = matrix(m, k), b = matrix(k, n), c = matrix(m, n);
  gpuBench({
    group: "matmul",
    name: "naive 16x16 baseline 1024x1024x1024",
    flops: 2 * m * n * k,
    repeat: 1,
    iterations: 3,
    record: (rec) => rec.dispatch(kernel, { a, b, c }, { m, n, k }, [n / 16, m / 16]),
  });
}

{
  const n = 16 * 1024 * 1024; // 64 MiB each way
  const op = await CopyOp.create(registry);
  const src = createTensor(gpu, [n]), dst = createTensor(gpu, [n]);
  gpuBench({
    group: "bandwidth",
    name: "copy 64 MiB",
    bytes: 2 * 4 * n,
    repeat: 4,
    record: (rec) => op.record(rec, src, dst),
  });
}

{
  // AdamW over a flat adapter of 4M parameters (SmolLM2-135M's shape at r = 64 has ~4.9M):
  // it reads params, grads, m and v and writes params, m and v, 28 bytes per parameter.
  const n = 4 * 1024 * 1024;
  const adamw = await AdamWOp.create(registry);
  const gradNorm = await GradNormOp.create(registry);
  const [params, grads, m, v] = [0, 1, 2, 3].map(() => createTensor(gpu, [n]));
  const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7, weightDecay: 0, firstStep: 1 };
  // Norm 0, clip 1, finite, t = 1: row 0 of the bias corrections.
  const stats = uploadTensor(gpu, new Float32Array([0, 1, 0, 1]), [STATS.size]);
  const corrections = uploadTensor(gpu, biasCorrections(hyper, 1, 1), [1, 2]);
  gpuBench({
    group: "optimizer",
    name: "AdamW, 4M parameters",
    bytes: 28 * n,
    repeat: 4,
    record: (rec) => adamw.record(rec, { params, grads, m, v, stats, corrections }, hyper),
  });
  gpuBench({
    group: "optimizer",
    name: "gradient norm + clip factor, 4M parameters",
    bytes: 4 * n,
    repeat: 4,
    record: (rec) => gradNorm.record(rec, grads, stats, 1),
  });
}

{
  // y[1536] += (x[576]·Aᵀ)·Bᵀ at rank 64, as decode's gate and up projections run it.
  const inDim = 576, outDim = 1536, rank = 64;
  const flat = createTensor(gpu, [rank * inDim + outDim * rank], "f32", "bench adapter");
  const a = new Tensor(flat.buffer, [rank, inDim], "f32", 0);
  const b = new Tensor(flat.buffer, [outDim, rank], "f32", rank * inDim * 4);
  const x = createTensor(gpu, [inDim]), y = createTensor(gpu, [outDim]);
  // Each class's tiles and, on GPUs, neighbours of theirs (the first is the GPU tiles before
  // lora_decode took tiles per class).
  const candidates: LoraDecodeTiles[] = gpu.capabilities.isFallbackAdapter ? [] : [
    { wg: 64, outPerWg: 512, rankBlock: 16, bLanes: 1 },
    { wg: 128, outPerWg: 64, rankBlock: 16, bLanes: 2 },
    { wg: 256, outPerWg: 32, rankBlock: 8, bLanes: 8 },
  ];
  const tileSets = new Map<string, LoraDecodeTiles>(
    [...Object.values(LORA_DECODE_TILES), ...candidates].map((v) => [JSON.stringify(v), v]),
  );
  for (const tiles of tileSets.values()) {
    const op = await LoraDecodeOp.create(registry, tiles);
    gpuBench({
      group: "lora decode",
      name: `576 -> 1536, rank 64, ${tiles.wg} invocations, ${tiles.outPerWg} outputs, ` +
        `${tiles.bLanes} lanes an output`,
      flops: 2 * rank * (inDim + outDim),
      bytes: 4 * (rank * inDim + outDim * rank),
      repeat: 64,
      record: (rec) => op.record(rec, x, a, b, y, 0.5),
    });
  }
}

{
  // Training's LoRA products at SmolLM2-135M's q projection, 256 tokens, rank 64 (576 -> 64 ->
  // 576), forward and backward with dropout, under every class's register block.
  const t = 256, inDim = 576, rank = 64, outDim = 576;
  const m = (rows: number, cols: number) => createTensor(gpu, [rows, cols], "f32", "bench lora");
  const x = m(t, inDim), a = m(rank, inDim), b = m(outDim, rank), h = m(t, rank);
  const y = m(t, outDim), dY = m(t, outDim), dH = m(t, rank), dX = m(t, inDim);
  const dA = m(rank, inDim), dB = m(outDim, rank);
  const dropout = { p: 0.1, seed: 3 };
  const flops = 2 * t * rank * (inDim + outDim);
  for (const block of new Set(Object.values(LORA_BLOCKS))) {
    const op = await LoraOp.create(registry, block);
    gpuBench({
      group: "lora",
      name: `forward 256 x 576 -> 64 -> 576, ${block} x ${block} a thread`,
      flops,
      repeat: 8,
      record: (rec) => op.recordForward(rec, { x, a, b, h, y, scale: 1, dropout }),
    });
    gpuBench({
      group: "lora",
      name: `backward 256 x 576 -> 64 -> 576, ${block} x ${block} a thread`,
      flops: 2 * flops,
      repeat: 8,
      record: (rec) =>
        op.recordBackward(rec, { x, a, b, h, dY, dH, dA, dB, dX, scale: 1, dropout }),
    });
  }
}
