// C = alpha * op(A) · op(B) (+ C when params.accumulate != 0), all f32 row-major.
//   op(A) is [M, K]: A is stored [M, K], or [K, M] when TRANS_A (as in dW = dYᵀ·X).
//   op(B) is [K, N]: B is stored [K, N], or [N, K] when TRANS_B (weights stored [out, in]).
// A, B and C may be windows of wider row-major matrices: stored row r of A begins at element
// aOffset + r * lda, of B at bOffset + r * ldb, of C at cOffset + r * ldc (dense operands: offset
// 0, the stored row length). A head split by vocabulary rows writes each part's logits into its
// columns of the logits and reads them back for the input gradient this way, and a long K runs as
// several dispatches over windows of K, each adding onto C (see maxDispatchDepth in matmul.ts).
// Entry point main_f16b reads B from b16 instead: float16 weights, [N, K] when TRANS_B (the forward
// through a projection) or [K, N] (its input gradient), two halves per u32 word in element order,
// unpacked with unpack2x16float (core WGSL, no f16 feature needed).
//
// A workgroup of WG_X x WG_Y threads computes a BM x BN block of C (BM = TM WG_Y, BN = TN WG_X),
// walking K in steps of TK through two workgroup tiles kept k-major; each thread accumulates a
// TM x TN block (matmul_block.wgsl).
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override WG_X: u32 = 16; // threads along N
override WG_Y: u32 = 16; // threads along M
override TK: u32 = 16;   // depth of one workgroup tile along K

//!include "matmul_block.wgsl"

const BM: u32 = TM * WG_Y;
const BN: u32 = TN * WG_X;
const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
const THREADS: u32 = WG_X * WG_Y;

struct Params {
  m: u32, n: u32, k: u32, alpha: f32, lda: u32, ldc: u32, aOffset: u32, cOffset: u32,
  ldb: u32, bOffset: u32, accumulate: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // [M, lda], or [K, lda] if TRANS_A
@group(0) @binding(2) var<storage, read> b: array<f32>;        // [K, ldb], or [N, ldb] if TRANS_B
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // [M, ldc]
@group(0) @binding(4) var<storage, read> b16: array<u32>;      // as b, f16 pairs (main_f16b)

var<workgroup> tileA: array<vec4<f32>, TK * BM4>;  // [TK][BM / 4]: op(A)ᵀ block, 4 rows a vec4
var<workgroup> tileB: array<vec4<f32>, TK * BN4>;  // [TK][BN / 4]: op(B) block, 4 columns a vec4

fn opA(row: u32, col: u32) -> f32 {  // op(A)[row, col], zero outside
  if (row >= params.m || col >= params.k) { return 0.0; }
  if (TRANS_A) { return a[params.aOffset + col * params.lda + row]; }
  return a[params.aOffset + row * params.lda + col];
}

fn opB(row: u32, col: u32) -> f32 {  // op(B)[row, col], zero outside
  if (row >= params.k || col >= params.n) { return 0.0; }
  if (TRANS_B) { return b[params.bOffset + col * params.ldb + row]; }
  return b[params.bOffset + row * params.ldb + col];
}

fn opB16(row: u32, col: u32) -> f32 {  // op(B)[row, col] from f16 B, zero outside
  if (row >= params.k || col >= params.n) { return 0.0; }
  var at = params.bOffset + row * params.ldb + col;
  if (TRANS_B) { at = params.bOffset + col * params.ldb + row; }
  return unpack2x16float(b16[at >> 1u])[at & 1u];
}

// Consecutive threads walk the stored matrix's contiguous dimension.
fn fillTileA(row0: u32, k0: u32, li: u32) {
  for (var e = li; e < TK * BM4; e += THREADS) {
    var kk: u32; var m4: u32;
    if (TRANS_A) { kk = e / BM4; m4 = e % BM4; } else { kk = e % TK; m4 = e / TK; }
    let r = row0 + 4u * m4;
    let col = k0 + kk;
    tileA[kk * BM4 + m4] = vec4<f32>(opA(r, col), opA(r + 1u, col), opA(r + 2u, col), opA(r + 3u, col));
  }
}

fn fillTileB(col0: u32, k0: u32, li: u32) {
  for (var e = li; e < TK * BN4; e += THREADS) {
    var kk: u32; var n4: u32;
    if (TRANS_B) { kk = e % TK; n4 = e / TK; } else { kk = e / BN4; n4 = e % BN4; }
    let row = k0 + kk;
    let col = col0 + 4u * n4;
    tileB[kk * BN4 + n4] = vec4<f32>(opB(row, col), opB(row, col + 1u), opB(row, col + 2u), opB(row, col + 3u));
  }
}

fn fillTileB16(col0: u32, k0: u32, li: u32) {
  for (var e = li; e < TK * BN4; e += THREADS) {
    var kk: u32; var n4: u32;
    if (TRANS_B) { kk = e % TK; n4 = e / TK; } else { kk = e / BN4; n4 = e % BN4; }
    let row = k0 + kk;
    let col = col0 + 4u * n4;
    tileB[kk * BN4 + n4] = vec4<f32>(opB16(row, col), opB16(row, col + 1u), opB16(row, col + 2u), opB16(row, col + 3u));
  }
}

fn store(row: u32, col: u32, v: vec4<f32>) {
  if (row >= params.m) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (col + j < params.n) {
      let at = params.cOffset + row * params.ldc + col + j;
      var value = params.alpha * v[j];
      if (params.accumulate != 0u) { value += c[at]; }
      c[at] = value;
    }
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  for (var k0 = 0u; k0 < params.k; k0 += TK) {
    fillTileA(wg.y * BM, k0, li);
    fillTileB(wg.x * BN, k0, li);
    workgroupBarrier();
    multiplyTiles(lid);
    workgroupBarrier();
  }
  storeBlock(wg, lid);
}

// The same with B read from b16 (float16 weights); not with TRANS_A.
@compute @workgroup_size(WG_X, WG_Y)
fn main_f16b(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  for (var k0 = 0u; k0 < params.k; k0 += TK) {
    fillTileA(wg.y * BM, k0, li);
    fillTileB16(wg.x * BN, k0, li);
    workgroupBarrier();
    multiplyTiles(lid);
    workgroupBarrier();
  }
  storeBlock(wg, lid);
}
