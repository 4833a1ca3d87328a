import assert from "node:assert/strict";
import { seededRng } from "../kernels_test/helpers.ts";
import type { Rng } from "../src/core/random.ts";
import { dequantizeMatrix, halfAt, rowBytes } from "../src/reference/quant.ts";
import { quantizeMatrix, QUANTIZER_TYPES, type QuantizerType } from "./gguf_quantize.ts";

const int8 = (b: number) => (b << 24) >> 24;

/** Sub-block s's 6-bit scale and min from a K-quant block's 12 scale bytes at `at`. */
function kScaleMin(bytes: Uint8Array, at: number, s: number): [number, number] {
  if (s < 4) return [bytes[at + s] & 63, bytes[at + s + 4] & 63];
  const low = bytes[at + s + 4];
  return [(low & 15) | ((bytes[at + s - 4] >> 6) << 4), (low >> 4) | ((bytes[at + s] >> 6) << 4)];
}

/**
 * The values element i of the block at `at` can take under the block's stored scales: a q + b
 * for integer codes q in [lo, hi].
 */
function levels(
  type: QuantizerType,
  bytes: Uint8Array,
  at: number,
  i: number,
): [number, number, number, number] {
  switch (type) {
    case "Q8_0":
      return [halfAt(bytes, at), 0, -128, 127];
    case "Q5_0": {
      const d = halfAt(bytes, at);
      return [d, -16 * d, 0, 31];
    }
    case "Q4_K": {
      const [sc, mn] = kScaleMin(bytes, at + 4, i >> 5);
      return [halfAt(bytes, at) * sc, -halfAt(bytes, at + 2) * mn, 0, 15];
    }
    case "Q6_K": {
      const a = halfAt(bytes, at + 208) * int8(bytes[at + 192 + (i >> 4)]);
      return [a, -32 * a, 0, 63];
    }
  }
}

const BLOCK = { Q8_0: [32, 34], Q5_0: [32, 22], Q4_K: [256, 144], Q6_K: [256, 210] } as const;

/**
 * Rows of blocks drawn in different ways: Gaussians of random scale, all zeros, a constant of
 * either sign, one large outlier, values all of one sign far from zero, and values so small that
 * the f16 scales underflow.
 */
function testMatrix(rng: Rng, type: QuantizerType, rows: number, cols: number): Float32Array {
  const x = new Float32Array(rows * cols);
  const qk = BLOCK[type][0];
  for (let b = 0; b < x.length; b += qk) {
    const block = x.subarray(b, b + qk);
    const kind = rng.int(10);
    const sigma = 10 ** (rng.next() * 4 - 3);
    for (let i = 0; i < qk; i++) block[i] = rng.normal() * sigma;
    if (kind === 0) block.fill(0);
    else if (kind === 1) block.fill((rng.next() < 0.5 ? -1 : 1) * sigma);
    else if (kind === 2) block[rng.int(qk)] = 1000 * sigma;
    else if (kind === 3) block.forEach((v, i) => block[i] = 5 * sigma + Math.abs(v));
    else if (kind === 4) block.forEach((v, i) => block[i] = v * 1e-5);
  }
  return x;
}

for (const type of QUANTIZER_TYPES) {
  Deno.test(`quantize ${type}: every value takes its nearest code, and the twin dequantizes it`, () => {
    const rng = seededRng(`quantize ${type}`);
    const [qk, size] = BLOCK[type];
    // The K-quants pick codes under the stored f16 scales: exactly the nearest code. Q8_0 and
    // Q5_0 pick them under the scale d before its f16 rounding (half an f16 ulp, h, away), which
    // moves x / d by up to Q h / |d| steps (Q = 127 or 16, the largest code) and so the error by
    // up to 2 Q h beyond the nearest code's.
    const codes = type === "Q8_0" ? 128 : type === "Q5_0" ? 17 : 0;
    const slack = (a: number) => 2 * codes * Math.max(Math.abs(a) * 2 ** -11, 2 ** -25);
    for (let trial = 0; trial < 6; trial++) {
      const rows = 1 + rng.int(4);
      const cols = qk * (1 + rng.int(type.endsWith("_K") ? 3 : 24));
      const x = testMatrix(rng, type, rows, cols);
      const bytes = quantizeMatrix(type, x, rows, cols);
      assert.equal(bytes.length, rows * rowBytes(type, cols));
      const y = dequantizeMatrix(type, bytes, rows, cols);
      for (let e = 0; e < x.length; e++) {
        const at = Math.floor(e / qk) * size;
        const [a, b, lo, hi] = levels(type, bytes, at, e % qk);
        const q = a === 0 ? lo : Math.max(lo, Math.min(hi, Math.round((x[e] - b) / a)));
        const best = Math.abs(x[e] - (a * q + b));
        const err = Math.abs(x[e] - y[e]);
        if (!(err <= best + slack(a) + 1e-12 * Math.abs(x[e]))) {
          assert.fail(
            `${type} [${rows}, ${cols}] element ${e}: x ${x[e]} -> ${y[e]} (error ${err}), ` +
              `but the block's levels ${a} q + ${b} reach within ${best}`,
          );
        }
      }
      for (let b = 0; b < x.length; b += qk) {
        if (x.subarray(b, b + qk).every((v) => v === 0)) {
          assert.ok(y.subarray(b, b + qk).every((v) => v === 0), `block at ${b}: zeros stay zero`);
        }
      }
    }
  });
}

Deno.test("quantize: relative error on Gaussian weights is what the bits allow", () => {
  const rng = seededRng("quantize gaussian");
  // ||x - x̂|| / ||x|| for N(0, 0.02) weights; llama.cpp's quantizers land near 0.004 (Q8_0),
  // 0.04 (Q5_0), 0.09 (Q4_K) and 0.02 (Q6_K) on such data.
  const bound: Record<QuantizerType, number> = { Q8_0: 0.006, Q5_0: 0.05, Q4_K: 0.1, Q6_K: 0.025 };
  const rows = 8, cols = 1536;
  const x = Float32Array.from(rng.normals(rows * cols, 0.02));
  for (const type of QUANTIZER_TYPES) {
    const y = dequantizeMatrix(type, quantizeMatrix(type, x, rows, cols), rows, cols);
    let num = 0, den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i] - y[i]) ** 2;
      den += x[i] ** 2;
    }
    const rel = Math.sqrt(num / den);
    console.log(`  ${type}: relative error ${rel.toFixed(4)}`);
    assert.ok(rel < bound[type], `${type}: ${rel} >= ${bound[type]}`);
  }
});

Deno.test("quantize: rows must be whole blocks", () => {
  assert.throws(() => quantizeMatrix("Q4_K", new Float32Array(576), 1, 576), RangeError);
  assert.throws(() => quantizeMatrix("Q8_0", new Float32Array(40), 1, 40), RangeError);
  assert.throws(() => quantizeMatrix("Q8_0", new Float32Array(32), 2, 32), RangeError);
});
