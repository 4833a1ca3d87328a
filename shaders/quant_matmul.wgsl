// Tiled matmuls against a quantized weight W [out, in] kept in its GGUF blocks
// (quant_blocks.wgsl; QTYPE picks the type), for prefill and training:
//   forward:        C[M, N] = A[M, K] · Wᵀ   with A = X [T, in], W [N = out, K = in]
//   backward_input: C[M, N] = A[M, K] · W    with A = dY [T, out], W [K = out, N = in]
// (+ C when ACCUMULATE). Through a frozen base layer only this input gradient is needed, so a
// LoRA adapter trains over quantized weights without an f32 copy of them.
//
// A workgroup of WG_X x WG_Y threads computes a BM x BN block of C (BM = TM WG_Y, BN = TN WG_X),
// walking K in steps of TK (a multiple of 4) through two workgroup tiles kept k-major, each
// thread accumulating a TM x TN block (matmul_block.wgsl). W tiles are dequantized once per
// workgroup while being loaded: four values of a row at a time (one q_values4); the forward form
// transposes 4 x 4 patches in registers so each thread writes whole vec4s of the tile.
override ACCUMULATE: bool = false;
override WG_X: u32 = 16; // threads along N
override WG_Y: u32 = 16; // threads along M
override TK: u32 = 16;   // depth of one workgroup tile along K, a multiple of 4

//!include "quant_blocks.wgsl"
//!include "matmul_block.wgsl"

const BM: u32 = TM * WG_Y;
const BN: u32 = TN * WG_X;
const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
const TK4: u32 = TK / 4u;
const THREADS: u32 = WG_X * WG_Y;

// rowBytes: bytes of one row of W's blocks. A's row r starts at element aOffset + r * lda and C's
// at cOffset + r * ldc (a window of a wider matrix, as matmul.wgsl's; dense: 0, K and 0, N).
// W's row 0 is its stored row wRow0: backward_input sums a long K (W's rows) as windows, one
// dispatch each (see maxDispatchDepth in matmul.ts); the forward passes 0.
struct Params {
  m: u32, n: u32, k: u32, rowBytes: u32, lda: u32, ldc: u32, aOffset: u32, cOffset: u32,
  wRow0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // [M, lda]: X [T, in] or dY [T, out]
@group(0) @binding(2) var<storage, read> qweight: array<u32>;    // W [out, in] blocks, [ceil(out rowBytes / 4)]
@group(0) @binding(3) var<storage, read_write> c: array<f32>;    // [M, ldc]: Y [T, out] or dX [T, in]

var<workgroup> tileA: array<vec4<f32>, TK * BM4>;  // [TK][BM / 4]: Aᵀ block, 4 rows a vec4
var<workgroup> tileB: array<vec4<f32>, TK * BN4>;  // [TK][BN / 4]: op(W) block, 4 columns a vec4

fn loadA(row: u32, col: u32) -> f32 {  // A[row, col], zero outside
  if (row >= params.m || col >= params.k) { return 0.0; }
  return a[params.aOffset + row * params.lda + col];
}

// W[row, col .. col + 3] (col % 4 == 0) for W with `rows` rows and `cols` values a row; zero
// outside. cols is a multiple of the block size, so four values never straddle the edge.
fn loadW4(row: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
  if (row >= rows || col >= cols) { return vec4<f32>(0.0); }
  return q_values4(q_block_at(params.wRow0 + row, col, params.rowBytes), col % QK);
}

// Consecutive threads walk A's rows (its contiguous dimension).
fn fillTileA(row0: u32, k0: u32, li: u32) {
  for (var e = li; e < TK * BM4; e += THREADS) {
    let kk = e % TK;
    let m4 = e / TK;
    let r = row0 + 4u * m4;
    let col = k0 + kk;
    tileA[kk * BM4 + m4] = vec4<f32>(loadA(r, col), loadA(r + 1u, col), loadA(r + 2u, col), loadA(r + 3u, col));
  }
}

// forward: tileB[kk][n4] = W[n .. n + 3, k0 + kk]. A thread dequantizes a 4 x 4 patch (four rows
// of W, four values each) and writes it transposed; consecutive threads walk along a row.
fn fillTileWt(col0: u32, k0: u32, li: u32) {
  for (var e = li; e < TK4 * BN4; e += THREADS) {
    let k4 = e % TK4;
    let n4 = e / TK4;
    let n = col0 + 4u * n4;
    let k = k0 + 4u * k4;
    let w0 = loadW4(n, k, params.n, params.k);
    let w1 = loadW4(n + 1u, k, params.n, params.k);
    let w2 = loadW4(n + 2u, k, params.n, params.k);
    let w3 = loadW4(n + 3u, k, params.n, params.k);
    let at = 4u * k4 * BN4 + n4;
    tileB[at] = vec4<f32>(w0.x, w1.x, w2.x, w3.x);
    tileB[at + BN4] = vec4<f32>(w0.y, w1.y, w2.y, w3.y);
    tileB[at + 2u * BN4] = vec4<f32>(w0.z, w1.z, w2.z, w3.z);
    tileB[at + 3u * BN4] = vec4<f32>(w0.w, w1.w, w2.w, w3.w);
  }
}

// backward_input: tileB[kk][n4] = W[k0 + kk, n .. n + 3], straight from a row.
fn fillTileW(col0: u32, k0: u32, li: u32) {
  for (var e = li; e < TK * BN4; e += THREADS) {
    let kk = e / BN4;
    let n4 = e % BN4;
    tileB[kk * BN4 + n4] = loadW4(k0 + kk, col0 + 4u * n4, params.k, params.n);
  }
}

fn store(row: u32, col: u32, v: vec4<f32>) {
  if (row >= params.m) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (col + j < params.n) {
      let at = params.cOffset + row * params.ldc + col + j;
      var value = v[j];
      if (ACCUMULATE) { value += c[at]; }
      c[at] = value;
    }
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn forward(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  for (var k0 = 0u; k0 < params.k; k0 += TK) {
    fillTileA(wg.y * BM, k0, li);
    fillTileWt(wg.x * BN, k0, li);
    workgroupBarrier();
    multiplyTiles(lid);
    workgroupBarrier();
  }
  storeBlock(wg, lid);
}

@compute @workgroup_size(WG_X, WG_Y)
fn backward_input(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  for (var k0 = 0u; k0 < params.k; k0 += TK) {
    fillTileA(wg.y * BM, k0, li);
    fillTileW(wg.x * BN, k0, li);
    workgroupBarrier();
    multiplyTiles(lid);
    workgroupBarrier();
  }
  storeBlock(wg, lid);
}
