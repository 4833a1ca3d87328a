// The matmuls of a LoRA adapter on a linear layer, forward and backward, as one tiled kernel:
//   C[M, N] (+)= alpha * op(A)[M, K] op(B)[K, N]
// op(A) is A stored [M, K], or A stored [K, M] when TRANS_A; op(B) is B stored [K, N], or [N, K]
// when TRANS_B. Dropout of the layer input x is recomputed from (seed, element index) wherever x
// meets the kernel: DROP = 1 drops op(A)'s elements, 2 op(B)'s, 3 the result's (indices are
// row-major into the stored tensor, so the mask is the same in every pass). See src/ops/lora.ts
// for how forward (h = drop(x) A^T; y += s h B^T) and backward map onto it.
//
// A grouped dispatch runs up to three such products of one shape at once, workgroup z picking
// problem z: the operands of each lie in the same three bindings at their own element offsets, and
// each draws its dropout mask from its own seed (indices stay relative to its own tensors, so the
// masks and sums are those of the products run one by one).
//
// A workgroup computes a BM x BN tile of C, staging BK-deep slices of op(A) and op(B) in
// workgroup memory as vec4s; each of its (BM / TM) * (BN / TN) threads accumulates a TM x TN
// block (matmul_block.wgsl: outer products of vec4s of op(A) and op(B) per k).
override BM: u32 = 32;  // multiple of 4
override BN: u32 = 32;  // multiple of 4
override BK: u32 = 16;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ACCUMULATE: bool = false;
override DROP: u32 = 0;

//!include "matmul_block.wgsl"

const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
const TK: u32 = BK;
const THREADS_N: u32 = BN / TN;
const THREADS: u32 = (BM / TM) * THREADS_N;

// seedMixZ = dropoutSeedMix(seed of problem Z); an element is kept when its hash >=
// dropThreshold, then scaled by keepScale = 1 / (1 - p). aAtZ, bAtZ, cAtZ: element offsets of
// problem Z's operands in a, b and c.
struct Params {
  m: u32, n: u32, k: u32, alpha: f32, dropThreshold: u32, keepScale: f32,
  aAt0: u32, aAt1: u32, aAt2: u32, bAt0: u32, bAt1: u32, bAt2: u32, cAt0: u32, cAt1: u32, cAt2: u32,
  seedMix0: u32, seedMix1: u32, seedMix2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // [M, K], or [K, M] if TRANS_A, at aAtZ
@group(0) @binding(2) var<storage, read> b: array<f32>;        // [K, N], or [N, K] if TRANS_B, at bAtZ
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // [M, N] at cAtZ

var<workgroup> tileA: array<vec4<f32>, BK * BM4>;  // [BK, BM] op(A) slice, k-major
var<workgroup> tileB: array<vec4<f32>, BK * BN4>;  // [BK, BN] op(B) slice

// This workgroup's problem: its operands' offsets and dropout seed word.
var<private> aAt: u32;
var<private> bAt: u32;
var<private> cAt: u32;
var<private> seedMix: u32;

fn pick(z: u32, v0: u32, v1: u32, v2: u32) -> u32 {
  return select(select(v0, v1, z == 1u), v2, z == 2u);
}

// lowbias32 (Chris Wellons); mirrored bit for bit by hash32 in src/reference/lora.ts.
fn hash32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

fn dropout(value: f32, index: u32) -> f32 {
  let keep = hash32(index ^ seedMix) >= params.dropThreshold;
  return select(0.0, value * params.keepScale, keep);
}

// op(A)[gm, gk], zero outside; dropped when DROP == 1.
fn op_a(gm: u32, gk: u32) -> f32 {
  if (gm >= params.m || gk >= params.k) {
    return 0.0;
  }
  let index = select(gm * params.k + gk, gk * params.m + gm, TRANS_A);
  var v = a[aAt + index];
  if (DROP == 1u) {
    v = dropout(v, index);
  }
  return v;
}

// op(B)[gk, gn], zero outside; dropped when DROP == 2.
fn op_b(gk: u32, gn: u32) -> f32 {
  if (gn >= params.n || gk >= params.k) {
    return 0.0;
  }
  let index = select(gk * params.n + gn, gn * params.k + gk, TRANS_B);
  var v = b[bAt + index];
  if (DROP == 2u) {
    v = dropout(v, index);
  }
  return v;
}

// Each invocation assembles whole vec4s of the tiles (four rows of op(A), four columns of op(B)),
// so no two invocations write parts of one workgroup vector. Consecutive invocations walk the
// stored matrix's contiguous dimension where the slice has it.
fn load_tiles(m0: u32, n0: u32, k0: u32, lid: u32) {
  for (var e = lid; e < BK * BM4; e += THREADS) {
    var kk = e % BK;
    var m4 = e / BK;
    if (TRANS_A) {
      kk = e / BM4;
      m4 = e % BM4;
    }
    let gm = m0 + 4u * m4;
    let gk = k0 + kk;
    tileA[kk * BM4 + m4] =
      vec4<f32>(op_a(gm, gk), op_a(gm + 1u, gk), op_a(gm + 2u, gk), op_a(gm + 3u, gk));
  }
  for (var e = lid; e < BK * BN4; e += THREADS) {
    var kk = e / BN4;
    var n4 = e % BN4;
    if (TRANS_B) {
      kk = e % BK;
      n4 = e / BK;
    }
    let gn = n0 + 4u * n4;
    let gk = k0 + kk;
    tileB[kk * BN4 + n4] =
      vec4<f32>(op_b(gk, gn), op_b(gk, gn + 1u), op_b(gk, gn + 2u), op_b(gk, gn + 3u));
  }
}

fn store(gm: u32, gn0: u32, v4: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    let gn = gn0 + j;
    if (gm < params.m && gn < params.n) {
      let index = gm * params.n + gn;
      var v = params.alpha * v4[j];
      if (DROP == 3u) {
        v = dropout(v, index);
      }
      if (ACCUMULATE) {
        v += c[cAt + index];
      }
      c[cAt + index] = v;
    }
  }
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = wg.z;
  aAt = pick(z, params.aAt0, params.aAt1, params.aAt2);
  bAt = pick(z, params.bAt0, params.bAt1, params.bAt2);
  cAt = pick(z, params.cAt0, params.cAt1, params.cAt2);
  seedMix = pick(z, params.seedMix0, params.seedMix1, params.seedMix2);
  let m0 = wg.y * BM;
  let n0 = wg.x * BN;
  let ty = lid / THREADS_N;
  let tx = lid % THREADS_N;
  let lid3 = vec3<u32>(tx, ty, 0u);
  for (var k0 = 0u; k0 < params.k; k0 += BK) {
    load_tiles(m0, n0, k0, lid);
    workgroupBarrier();
    multiplyTiles(lid3);
    workgroupBarrier();
  }
  storeBlock(wg, lid3);
}
