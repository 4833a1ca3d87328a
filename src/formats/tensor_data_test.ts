import assert from "node:assert/strict";
import { Rng } from "../core/random.ts";
import {
  bf16ArrayToF32,
  bf16BitsToF32,
  convertTensor,
  f16ArrayToF32,
  f16BitsToF32,
  f32ArrayToBf16,
  f32ToBf16Bits,
  f32ToF16Bits,
  tensorToF32,
} from "./tensor_data.ts";

function seed(): Rng {
  const s = (Math.random() * 2 ** 31) >>> 0;
  console.log(`seed ${s}`);
  return new Rng(s);
}

/** Random float32 bit patterns of every kind (normals, subnormals, huge, NaN, inf). */
function randomF32(rng: Rng, n: number): Float32Array {
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) bits[i] = (rng.next() * 2 ** 32) >>> 0;
  const out = new Float32Array(bits.buffer);
  // Many values near the float16 range too, where rounding is interesting.
  for (let i = 0; i < n; i += 2) out[i] = (rng.next() - 0.5) * 2 ** (rng.int(50) - 30);
  return out;
}

const sameBits = (a: number, b: number) => a === b || (Number.isNaN(a) && Number.isNaN(b));

Deno.test("f16 -> f32 is exact for all 65536 patterns and round-trips", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const native = new Float16Array(all.buffer);
  const ours = f16ArrayToF32(all);
  for (let h = 0; h < 65536; h++) {
    assert.ok(
      sameBits(ours[h], native[h]),
      `pattern ${h.toString(16)}: ${ours[h]} vs ${native[h]}`,
    );
    assert.ok(sameBits(f16BitsToF32(h), native[h]));
    const back = f32ToF16Bits(ours[h]);
    if (Number.isNaN(ours[h])) assert.equal(back & 0x7c00, 0x7c00);
    else assert.equal(back, h, `pattern ${h.toString(16)} came back as ${back.toString(16)}`);
  }
});

Deno.test("f32 -> f16 rounds to nearest even like Float16Array", () => {
  const xs = randomF32(seed(), 200_000);
  const special = [
    65504,
    65519.99,
    65520,
    -65520,
    2 ** -24,
    2 ** -25,
    2 ** -25 * 1.0000001,
    3 * 2 ** -26,
    2 ** -14 - 2 ** -25,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    -0,
    Infinity,
    -Infinity,
    1e-30,
  ];
  const all = new Float32Array([...xs, ...special]);
  const native = new Float16Array(all);
  const nativeBits = new Uint16Array(native.buffer);
  for (let i = 0; i < all.length; i++) {
    const ours = f32ToF16Bits(all[i]);
    if (Number.isNaN(all[i])) {
      assert.ok(Number.isNaN(f16BitsToF32(ours)));
      continue;
    }
    assert.equal(
      ours,
      nativeBits[i],
      `${all[i]}: ${ours.toString(16)} vs ${nativeBits[i].toString(16)}`,
    );
  }
});

Deno.test("f32 -> bf16 rounds to nearest even; bf16 -> f32 exact", () => {
  const xs = randomF32(seed(), 100_000);
  for (const x of xs) {
    const b = f32ToBf16Bits(x);
    const y = bf16BitsToF32(b);
    if (Number.isNaN(x)) {
      assert.ok(Number.isNaN(y));
      continue;
    }
    // y is a bf16 value (low 16 bits zero) and the nearest one; ties to even mantissa.
    const lo = bf16BitsToF32(b - 1 & 0xffff);
    const hi = bf16BitsToF32(b + 1 & 0xffff);
    const err = Math.abs(y - x);
    if (Number.isFinite(y)) {
      if (Number.isFinite(lo) && Math.sign(lo) === Math.sign(y)) assert.ok(err <= Math.abs(lo - x));
      if (Number.isFinite(hi) && Math.sign(hi) === Math.sign(y)) assert.ok(err <= Math.abs(hi - x));
      if (err === Math.abs(lo - x) || err === Math.abs(hi - x)) {
        if (err > 0) assert.equal(b & 1, 0, `tie at ${x} must go to even`);
      }
    }
  }
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80); // tie, stays even
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie, rounds up to even
  assert.equal(f32ToBf16Bits(3.4e38), 0x7f80); // rounds past the largest finite to infinity
  assert.deepEqual(
    bf16ArrayToF32(f32ArrayToBf16([1, -2, 0.5])),
    new Float32Array([1, -2, 0.5]),
  );
});

Deno.test("tensor conversion helpers keep shapes and values", () => {
  const f32 = {
    dtype: "F32" as const,
    shape: [2, 3],
    data: new Float32Array([1, 2, 3, -1, 0.25, 8]),
  };
  assert.equal(tensorToF32(f32), f32.data);
  for (const dtype of ["F16", "BF16"] as const) {
    const t = convertTensor(f32, dtype);
    assert.equal(t.dtype, dtype);
    assert.deepEqual(t.shape, [2, 3]);
    assert.deepEqual(tensorToF32(t), f32.data);
    assert.equal(convertTensor(t, dtype), t);
  }
});
