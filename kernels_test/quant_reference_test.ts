/**
 * The float64 dequantization twin (src/reference/quant.ts) against an independent per-element
 * decoder, hand-built blocks, and the GGUF fixtures written by llama.cpp: the Q8_0 and Q4_0
 * stories260K files must lie within quantization error of the F32 file, and the Q4_K_M and
 * Q5_K_M files (the same random model quantized twice) must agree with each other.
 */
import assert from "node:assert/strict";
import { seededRng } from "./helpers.ts";
import { haveFixtures, readFixture } from "./quant_fixtures.ts";
import { GGML_QUANT_TYPES, type GgmlQuantType, isGgmlQuantType } from "../src/core/quant.ts";
import {
  blockShape,
  dequantizeBlock,
  dequantizeMatrix,
  EDGE_HALVES,
  halfAt,
  halfValue,
  packKScales,
  quantizeRandom,
} from "../src/reference/quant.ts";
import { f16BitsToF32 } from "../src/formats/tensor_data.ts";

const int8 = (b: number) => (b << 24) >> 24;

/** K-quant scales and mins of a block's 12 scale bytes, unpacked byte by byte. */
function kScales(bytes: Uint8Array, at: number): { sc: number[]; mn: number[] } {
  const sc = new Array(8).fill(0);
  const mn = new Array(8).fill(0);
  for (let j = 0; j < 12; j++) {
    const b = bytes[at + j];
    if (j < 4) {
      sc[j] |= b & 63;
      sc[j + 4] |= (b >> 6) << 4;
    } else if (j < 8) {
      mn[j - 4] |= b & 63;
      mn[j] |= (b >> 6) << 4;
    } else {
      sc[j - 4] |= b & 15;
      mn[j - 4] |= b >> 4;
    }
  }
  return { sc, mn };
}

/**
 * A second decoder, element by element from bit positions: value e of the block at `at` as
 * (code, a, c) with x = a code + c. Written apart from the twin, so the two only agree if both
 * read the layout the same way.
 */
function decodeElement(
  type: GgmlQuantType,
  bytes: Uint8Array,
  at: number,
  e: number,
): { code: number; a: number; c: number } {
  const byte = (i: number) => bytes[at + i];
  const nibble = (i: number, high: boolean) => high ? byte(i) >> 4 : byte(i) & 15;
  const bit = (i: number, k: number) => (byte(i + (k >> 3)) >> (k & 7)) & 1;
  const d = type === "Q6_K" ? 0 : halfAt(bytes, at);
  switch (type) {
    case "Q8_0":
      return { code: int8(byte(2 + e)), a: d, c: 0 };
    case "Q4_0":
      return { code: nibble(2 + (e & 15), e >= 16), a: d, c: -8 * d };
    case "Q4_1":
      return { code: nibble(4 + (e & 15), e >= 16), a: d, c: halfAt(bytes, at + 2) };
    case "Q5_0":
      return { code: nibble(6 + (e & 15), e >= 16) + 16 * bit(2, e), a: d, c: -16 * d };
    case "Q5_1": {
      const code = nibble(8 + (e & 15), e >= 16) + 16 * bit(4, e);
      return { code, a: d, c: halfAt(bytes, at + 2) };
    }
    case "Q4_K":
    case "Q5_K": {
      const s = e >> 5;
      const { sc, mn } = kScales(bytes, at + 4);
      const qs = type === "Q5_K" ? 48 : 16;
      let code = nibble(qs + 32 * (s >> 1) + (e & 31), (s & 1) === 1);
      if (type === "Q5_K") code += 16 * bit(16 + (e & 31), s);
      return { code, a: d * sc[s], c: -halfAt(bytes, at + 2) * mn[s] };
    }
    case "Q6_K": {
      const h = e >> 7;
      const r = e & 127;
      const low = nibble(64 * h + (r & 63), r >= 64);
      const high = (byte(128 + 32 * h + (r & 31)) >> (2 * (r >> 5))) & 3;
      const a = halfAt(bytes, at + 208) * int8(byte(192 + 8 * h + (r >> 4)));
      return { code: low + 16 * high, a, c: -32 * a };
    }
  }
}

/** Dequantizes a matrix through {@link decodeElement}. */
function decodeMatrix(type: GgmlQuantType, bytes: Uint8Array, count: number): Float64Array {
  const { elems, bytes: size } = blockShape(type);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const { code, a, c } = decodeElement(type, bytes, Math.floor(i / elems) * size, i % elems);
    out[i] = a * code + c;
  }
  return out;
}

function maxRelativeDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const scale = Math.max(Math.abs(a[i]), Math.abs(b[i]), 1e-300);
    worst = Math.max(worst, a[i] === b[i] ? 0 : Math.abs(a[i] - b[i]) / scale);
  }
  return worst;
}

function rmsRelative(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ref.length; i++) {
    diff += (out[i] - ref[i]) ** 2;
    norm += ref[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

Deno.test("halfValue decodes every finite float16 exactly (against tensor_data's decoder)", () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    if (((bits >> 10) & 31) === 31) {
      assert.throws(() => halfValue(bits), RangeError);
      continue;
    }
    const v = halfValue(bits);
    const w = f16BitsToF32(bits);
    if (!Object.is(v, w) && !(v === 0 && w === 0)) throw new Error(`f16 ${bits}: ${v} vs ${w}`);
  }
  assert.equal(halfValue(0x7bff), 65504);
  assert.equal(halfValue(0x0001), 2 ** -24);
  assert.equal(halfValue(0x0400), 2 ** -14);
});

Deno.test("dequantize twin agrees with a per-element decoder on random blocks of every type", () => {
  const rng = seededRng("quant twin vs per-element");
  for (const type of GGML_QUANT_TYPES) {
    const { elems } = blockShape(type);
    for (const options of [{}, { edgeFraction: 0.5 }, { fill: "ramp" as const }]) {
      const rows = 3;
      const cols = elems * 5;
      const bytes = quantizeRandom(type, rng, rows, cols, options);
      const twin = dequantizeMatrix(type, bytes, rows, cols);
      const other = decodeMatrix(type, bytes, rows * cols);
      for (const v of twin) assert.ok(Number.isFinite(v), `${type}: non-finite value`);
      const diff = maxRelativeDiff(twin, other);
      assert.ok(diff < 1e-12, `${type} ${JSON.stringify(options)}: twin vs decoder ${diff}`);
    }
  }
});

/** Number of distinct codes of each type. */
const CODES: Record<GgmlQuantType, number> = {
  Q8_0: 256,
  Q4_0: 16,
  Q4_1: 16,
  Q5_0: 32,
  Q5_1: 32,
  Q4_K: 16,
  Q5_K: 32,
  Q6_K: 64,
};

Deno.test("random blocks cover every code and the edge scales", () => {
  const rng = seededRng("quant coverage");
  for (const type of GGML_QUANT_TYPES) {
    const { elems, bytes: size } = blockShape(type);
    const bytes = quantizeRandom(type, rng, 4, elems * 8, { fill: "ramp", edgeFraction: 0.5 });
    const codes = new Set<number>();
    for (let i = 0; i < 32 * elems; i++) {
      codes.add(decodeElement(type, bytes, Math.floor(i / elems) * size, i % elems).code);
    }
    assert.equal(codes.size, CODES[type], `${type}: ${codes.size} distinct codes`);
  }
  const edges = quantizeRandom("Q8_0", rng, 64, 32 * 16, { edgeFraction: 1 });
  const seen = new Set<number>();
  for (let at = 0; at < edges.length; at += 34) seen.add(edges[at] | (edges[at + 1] << 8));
  assert.equal(seen.size, EDGE_HALVES.length);
});

Deno.test("hand-built blocks decode to the values they were built from", () => {
  const rng = seededRng("quant hand-built");
  // Q4_K and Q5_K: known scales and mins, d = 0.5, dmin = 0.25, codes q(e) = (e * 5) % 16 (+16).
  for (const type of ["Q4_K", "Q5_K"] as const) {
    const sc = Array.from({ length: 8 }, () => rng.int(64));
    const mn = Array.from({ length: 8 }, () => rng.int(64));
    const block = new Uint8Array(type === "Q4_K" ? 144 : 176);
    block.set([0x00, 0x38, 0x00, 0x34]); // 0.5, 0.25
    block.set(packKScales(sc, mn), 4);
    const qs = type === "Q4_K" ? 16 : 48;
    const code = (e: number) => ((e * 5) % 16) + (type === "Q5_K" && e % 3 === 0 ? 16 : 0);
    for (let e = 0; e < 256; e++) {
      const s = e >> 5;
      const byte = qs + 32 * (s >> 1) + (e & 31);
      block[byte] |= (code(e) & 15) << (4 * (s & 1));
      if (code(e) >= 16) block[16 + (e & 31)] |= 1 << s;
    }
    const out = new Float64Array(256);
    dequantizeBlock(type, block, 0, out, 0);
    for (let e = 0; e < 256; e++) {
      const s = e >> 5;
      assert.equal(out[e], 0.5 * sc[s] * code(e) - 0.25 * mn[s], `${type} value ${e}`);
    }
  }
  // Q6_K: scales[i] = i - 8 (signed), d = 2, code(e) = e % 64.
  const q6 = new Uint8Array(210);
  for (let i = 0; i < 16; i++) q6[192 + i] = (i - 8) & 255;
  q6.set([0x00, 0x40], 208);
  for (let e = 0; e < 256; e++) {
    const h = e >> 7;
    const r = e & 127;
    q6[64 * h + (r & 63)] |= ((e % 64) & 15) << (r >= 64 ? 4 : 0);
    q6[128 + 32 * h + (r & 31)] |= ((e % 64) >> 4) << (2 * (r >> 5));
  }
  const out6 = new Float64Array(256);
  dequantizeBlock("Q6_K", q6, 0, out6, 0);
  for (let e = 0; e < 256; e++) {
    assert.equal(out6[e], 2 * ((e >> 4) - 8) * ((e % 64) - 32), `Q6_K value ${e}`);
  }
  // Q5_0: d = -1, qh = 0xa5a5a5a5, nibbles j and 15 - j.
  const q5 = new Uint8Array(22);
  q5.set([0x00, 0xbc, 0xa5, 0xa5, 0xa5, 0xa5]);
  for (let j = 0; j < 16; j++) q5[6 + j] = j | ((15 - j) << 4);
  const out5 = new Float64Array(32);
  dequantizeBlock("Q5_0", q5, 0, out5, 0);
  for (let e = 0; e < 32; e++) {
    const low = e < 16 ? e : 31 - e;
    const high = (0xa5a5a5a5 >>> e) & 1;
    assert.ok(out5[e] === -(low + 16 * high - 16), `Q5_0 value ${e}: ${out5[e]}`);
  }
});

const fixtures = haveFixtures();

Deno.test({
  name: "stories260K Q8_0 and Q4_0 dequantize to within quantization error of the F32 file",
  ignore: !fixtures,
  async fn() {
    const f32 = await readFixture("stories260K-f32.gguf");
    for (const file of ["stories260K-q8_0.gguf", "stories260K-q4_0.gguf"]) {
      const counts: Record<string, number> = {};
      const worst: Record<string, number> = {};
      for (const t of (await readFixture(file)).values()) {
        if (!isGgmlQuantType(t.type)) continue;
        const ref = f32.get(t.name)!;
        const refValues = new Float32Array(
          ref.bytes.buffer.slice(ref.bytes.byteOffset, ref.bytes.byteOffset + ref.bytes.length),
        );
        const [cols, rows = 1] = t.dims;
        const values = dequantizeMatrix(t.type, t.bytes, rows, cols);
        // Round to nearest with a float16 scale: within d/2 (Q8_0: plus 127 half-ulps of d);
        // Q4_0 maps the extreme of one sign to code 16, clamped to 15: within |d|.
        const bound = t.type === "Q8_0" ? 0.5 + 127 / 2048 : 1 + 8 / 2048;
        const { elems, bytes: size } = blockShape(t.type);
        for (let b = 0; b < values.length / elems; b++) {
          const d = Math.abs(halfAt(t.bytes, b * size));
          for (let j = 0; j < elems; j++) {
            const err = Math.abs(values[b * elems + j] - refValues[b * elems + j]);
            if (err > bound * d + 1e-12) {
              throw new Error(`${file} ${t.name} value ${b * elems + j}: error ${err}, d ${d}`);
            }
          }
        }
        const rel = rmsRelative(values, refValues);
        assert.ok(rel < (t.type === "Q8_0" ? 0.01 : 0.15), `${file} ${t.name}: rms ${rel}`);
        counts[t.type] = (counts[t.type] ?? 0) + 1;
        worst[t.type] = Math.max(worst[t.type] ?? 0, rel);
      }
      console.log(
        `  ${file}: ${JSON.stringify(counts)} tensors within bounds; worst rms error ` +
          JSON.stringify(worst, (_k, v) => typeof v === "number" ? +v.toPrecision(3) : v),
      );
      assert.ok(counts[file.includes("q8_0") ? "Q8_0" : "Q4_0"] >= 30);
    }
  },
});

Deno.test({
  name: "tiny-llama-spm Q4_K_M and Q5_K_M: twin = per-element decoder, files agree, codes span",
  ignore: !fixtures,
  async fn() {
    const q4 = await readFixture("tiny-llama-spm-q4_k_m.gguf");
    const q5 = await readFixture("tiny-llama-spm-q5_k_m.gguf");
    const decoded = new Map<string, Float64Array>();
    let fewestSpanning = 1;
    let worstPair = 0;
    const seenTypes = new Set<string>();
    for (const [file, tensors] of [["q4_k_m", q4], ["q5_k_m", q5]] as const) {
      for (const t of tensors.values()) {
        if (!isGgmlQuantType(t.type)) continue;
        seenTypes.add(t.type);
        const [cols, rows = 1] = t.dims;
        const values = dequantizeMatrix(t.type, t.bytes, rows, cols);
        const other = decodeMatrix(t.type, t.bytes, rows * cols);
        const diff = maxRelativeDiff(values, other);
        assert.ok(diff < 1e-12, `${file} ${t.name}: twin vs decoder ${diff}`);
        decoded.set(`${file}:${t.name}`, values);
        // A quantizer's codes fill most of each scale group's range: a group of codes read
        // from the wrong places (or under the wrong scale) would not.
        const { elems, bytes: size } = blockShape(t.type);
        const group = t.type === "Q6_K" ? 16 : 32;
        let full = 0;
        let groups = 0;
        for (let b = 0; b < (rows * cols) / elems; b++) {
          for (let g = 0; g < elems; g += group) {
            let lo = Infinity;
            let hi = -Infinity;
            let a = 0;
            for (let j = g; j < g + group; j++) {
              const el = decodeElement(t.type, t.bytes, b * size, j);
              lo = Math.min(lo, el.code);
              hi = Math.max(hi, el.code);
              a = el.a;
            }
            if (a === 0) continue;
            groups++;
            if (t.type === "Q6_K") {
              if (Math.max(32 - lo, hi - 32) >= 28) full++;
            } else {
              const top = t.type === "Q5_K" ? 31 : 15;
              if (hi >= top - 3 && lo <= 3) full++;
            }
          }
        }
        const fraction = full / groups;
        assert.ok(fraction > 0.97, `${file} ${t.name} ${t.type}: ${fraction} of groups span`);
        fewestSpanning = Math.min(fewestSpanning, fraction);
      }
    }
    assert.deepEqual([...seenTypes].sort(), ["Q4_K", "Q5_K", "Q6_K"]);
    // The two files quantize the same f32 weights: Q4_K and Q5_K values of a tensor agree to
    // within Q4_K's error, and the Q6_K tensors are the same in both.
    let pairs = 0;
    for (const t of q4.values()) {
      const other = q5.get(t.name)!;
      if (!isGgmlQuantType(t.type)) continue;
      const a = decoded.get(`q4_k_m:${t.name}`)!;
      const b = decoded.get(`q5_k_m:${t.name}`)!;
      const rel = rmsRelative(a, b);
      if (t.type === "Q6_K") {
        assert.equal(other.type, "Q6_K");
        assert.equal(rel, 0, `${t.name}: the Q6_K tensors differ`);
        continue;
      }
      assert.equal(`${t.type}/${other.type}`, "Q4_K/Q5_K");
      assert.ok(rel < 0.15, `${t.name}: Q4_K vs Q5_K rms ${rel}`);
      worstPair = Math.max(worstPair, rel);
      pairs++;
    }
    assert.equal(pairs, 12);
    console.log(
      `  groups spanning their range: at least ${fewestSpanning.toFixed(3)}; ` +
        `Q4_K vs Q5_K worst rms difference ${worstPair.toFixed(4)}`,
    );
    // Random weights of one kind have one spread, whichever type holds them.
    const spread = (v: Float64Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
    for (const name of ["attn_v", "ffn_down"]) {
      const low = spread(decoded.get(`q4_k_m:blk.0.${name}.weight`)!);
      const high = spread(decoded.get(`q4_k_m:blk.1.${name}.weight`)!);
      assert.ok(high / low > 0.8 && high / low < 1.25, `${name}: spread ${low} vs ${high}`);
    }
  },
});
