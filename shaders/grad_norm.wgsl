// Global L2 norm of the flat gradient buffer, the clipping factor and a non-finite flag, in two
// passes without float atomics: `partials` leaves one (scale, sumsq, flag) per workgroup, then
// `finish` (one workgroup) merges them and writes stats = [norm, clipScale, nonFiniteFlag] and
// adds one to stats[3], the optimizer steps applied, when the gradients are finite (AdamW reads
// that count for its bias corrections, so steps after a skipped one need no host round trip).
//
// Sums of squares are kept relative to a running maximum, norm = scale * sqrt(sumsq) with every
// term (|g| / scale)^2 <= 1, so finite gradients up to f32's max (1e30 squares to inf in f32) give
// a finite norm and no false flag. Non-finite elements are recognised by their exponent bits
// (compilers may assume NaN never compares), counted in the flag and left out of the norm.
override WG: u32 = 256;

// partials: (scale, sumsq, flag, 0) per workgroup.
// Starting scale: values below it add (|g| / 2^-64)^2 <= 1; squares under ~1e-76 vanish harmlessly.
const MIN_SCALE: f32 = 0x1p-64f;
// The running 1 / scale is kept times 2^32 (INV_BIAS): 1 / |g| is subnormal for |g| > 2^126, and
// implementations may flush subnormals to zero (SwiftShader does). Powers of two scale exactly, so
// a * (inv * 2^-32) rounds as a * (1 / scale) would.
const INV_BIAS: f32 = 0x1p32f;
const INV_UNBIAS: f32 = 0x1p-32f;
const INV_MIN_SCALE: f32 = 0x1p96f;  // INV_BIAS / MIN_SCALE

struct Params { n: u32, stride: u32, groups: u32, maxNorm: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grads: array<f32>;                // [n]
@group(0) @binding(2) var<storage, read_write> partial: array<vec4<f32>>;  // [groups] partials
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;          // [4] norm, clip, flag, applied

var<workgroup> wScale: array<f32, WG>;
var<workgroup> wSumsq: array<f32, WG>;
var<workgroup> wFlag: array<f32, WG>;

// (s1, q1) + (s2, q2) with a common scale max(s1, s2); scales are never below MIN_SCALE.
fn merge(s1: f32, q1: f32, s2: f32, q2: f32) -> vec2<f32> {
  let s = max(s1, s2);
  let r1 = s1 / s;
  let r2 = s2 / s;
  return vec2<f32>(s, q1 * r1 * r1 + q2 * r2 * r2);
}

fn reduce_workgroup(lid: u32) {
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (lid < half) {
      let m = merge(wScale[lid], wSumsq[lid], wScale[lid + half], wSumsq[lid + half]);
      wScale[lid] = m.x;
      wSumsq[lid] = m.y;
      wFlag[lid] = max(wFlag[lid], wFlag[lid + half]);
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn partials(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  var scale = MIN_SCALE;
  var inv = INV_MIN_SCALE;
  var sumsq = 0.0;
  var flag = 0.0;
  for (var i = gid.x; i < params.n; i += params.stride) {
    let g = grads[i];
    if ((bitcast<u32>(g) & 0x7f800000u) == 0x7f800000u) {
      flag = 1.0;
      continue;
    }
    let a = abs(g);
    if (a > scale) {
      let r = scale / a;
      sumsq *= r * r;
      scale = a;
      inv = INV_BIAS / a;
    }
    let t = (a * inv) * INV_UNBIAS;
    sumsq = fma(t, t, sumsq);
  }
  wScale[lid] = scale;
  wSumsq[lid] = sumsq;
  wFlag[lid] = flag;
  reduce_workgroup(lid);
  if (lid == 0u) {
    partial[wg.x] = vec4<f32>(wScale[0], wSumsq[0], wFlag[0], 0.0);
  }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) lid: u32) {
  var scale = MIN_SCALE;
  var sumsq = 0.0;
  var flag = 0.0;
  for (var i = lid; i < params.groups; i += WG) {
    let p = partial[i];
    let m = merge(scale, sumsq, p.x, p.y);
    scale = m.x;
    sumsq = m.y;
    flag = max(flag, p.z);
  }
  wScale[lid] = scale;
  wSumsq[lid] = sumsq;
  wFlag[lid] = flag;
  reduce_workgroup(lid);
  if (lid == 0u) {
    let norm = wScale[0] * sqrt(wSumsq[0]);
    let denom = norm + 1e-6;
    stats[0] = norm;
    stats[1] = select(1.0, params.maxNorm / denom, denom > params.maxNorm);
    stats[2] = wFlag[0];
    stats[3] = stats[3] + select(1.0, 0.0, wFlag[0] != 0.0);
  }
}
