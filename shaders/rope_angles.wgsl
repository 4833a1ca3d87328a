// RoPE angles, shared by the kernels that rotate (rope.wgsl, fused_matvec.wgsl): pull it in with
// `//!include "rope_angles.wgsl"`. The including shader declares
//   @group(0) @binding(N) var<storage, read> freqs: array<vec4<f32>>;  // [headDim / 2] (hi, mid, lo, 0)
// the per-pair frequencies in turns per position that src/ops/rope.ts's ropeFrequencyTable makes
// (see rope.wgsl for why angles are reduced in turns).

const TAU: f32 = 6.283185307179586;

// (cos, sin) of pair i's angle at `pos`.
fn cos_sin(pos: u32, i: u32) -> vec2<f32> {
  let f = freqs[i];
  let q = f32(pos >> 8u);
  let r = f32(pos & 255u);
  let high = fract(q * (256.0 * f.x)) + fract(q * (256.0 * f.y));
  let low = fract(r * f.x) + fract(r * f.y);
  let turns = fract(fract(high) + fract(low) + f32(pos) * f.z);
  return cos_sin_turns(select(turns, turns - 1.0, turns > 0.5));
}

// (cos, sin) of `turns` full turns, |turns| <= 1/2: the nearest quarter turn q is taken out
// exactly, and the rest, |a| <= pi/4, goes through Taylor polynomials (truncation below 3e-8).
fn cos_sin_turns(turns: f32) -> vec2<f32> {
  let quarters = turns * 4.0;
  let q = round(quarters);
  let a = (quarters - q) * (TAU / 4.0);
  let a2 = a * a;
  let s = a * (1.0 + a2 * (-1.0 / 6.0 + a2 * (1.0 / 120.0 + a2 * (-1.0 / 5040.0 +
    a2 * (1.0 / 362880.0)))));
  let c = 1.0 + a2 * (-0.5 + a2 * (1.0 / 24.0 + a2 * (-1.0 / 720.0 + a2 * (1.0 / 40320.0))));
  switch (i32(q) & 3) {
    case 1: { return vec2<f32>(-s, c); }
    case 2: { return vec2<f32>(-c, -s); }
    case 3: { return vec2<f32>(s, -c); }
    default: { return vec2<f32>(c, s); }
  }
}

// Rotates (a, b) by the angle (direction 1) or back by it (direction -1).
fn rotate(v: vec2<f32>, cs: vec2<f32>, direction: f32) -> vec2<f32> {
  let s = cs.y * direction;
  return vec2<f32>(v.x * cs.x - v.y * s, v.x * s + v.y * cs.x);
}

