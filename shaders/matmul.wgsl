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
// A workgroup of WG_X x WG_Y threads computes a BM x BN block of C (BM = 8 WG_Y, BN = 8 WG_X),
// walking K in steps of TK through two workgroup tiles kept k-major, so the inner loop reads four
// vec4s and does sixteen vec4 FMAs. Each thread's 8 x 8 block lives in sixteen named vec4
// variables rather than an array: compilers that do not unroll the loop (Mesa's llvmpipe among
// them) would otherwise spill an indexed array to memory and run several times slower.
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override WG_X: u32 = 16; // threads along N
override WG_Y: u32 = 16; // threads along M
override TK: u32 = 16;   // depth of one workgroup tile along K

const BM: u32 = 8u * WG_Y;
const BN: u32 = 8u * WG_X;
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

// c<i><j>: row i of the thread's 8 x 8 block, columns 4j..4j+3. Private variables, so both entry
// points share the helpers below; after inlining they stay in registers like locals.
var<private> c00: vec4<f32>; var<private> c01: vec4<f32>;
var<private> c10: vec4<f32>; var<private> c11: vec4<f32>;
var<private> c20: vec4<f32>; var<private> c21: vec4<f32>;
var<private> c30: vec4<f32>; var<private> c31: vec4<f32>;
var<private> c40: vec4<f32>; var<private> c41: vec4<f32>;
var<private> c50: vec4<f32>; var<private> c51: vec4<f32>;
var<private> c60: vec4<f32>; var<private> c61: vec4<f32>;
var<private> c70: vec4<f32>; var<private> c71: vec4<f32>;

// Adds the tiles' product into the thread's block.
fn multiplyTiles(lid: vec3<u32>) {
  for (var kk = 0u; kk < TK; kk++) {
    let b0 = tileB[kk * BN4 + 2u * lid.x];
    let b1 = tileB[kk * BN4 + 2u * lid.x + 1u];
    let a0 = tileA[kk * BM4 + 2u * lid.y];
    let a1 = tileA[kk * BM4 + 2u * lid.y + 1u];
    c00 = fma(vec4<f32>(a0.x), b0, c00); c01 = fma(vec4<f32>(a0.x), b1, c01);
    c10 = fma(vec4<f32>(a0.y), b0, c10); c11 = fma(vec4<f32>(a0.y), b1, c11);
    c20 = fma(vec4<f32>(a0.z), b0, c20); c21 = fma(vec4<f32>(a0.z), b1, c21);
    c30 = fma(vec4<f32>(a0.w), b0, c30); c31 = fma(vec4<f32>(a0.w), b1, c31);
    c40 = fma(vec4<f32>(a1.x), b0, c40); c41 = fma(vec4<f32>(a1.x), b1, c41);
    c50 = fma(vec4<f32>(a1.y), b0, c50); c51 = fma(vec4<f32>(a1.y), b1, c51);
    c60 = fma(vec4<f32>(a1.z), b0, c60); c61 = fma(vec4<f32>(a1.z), b1, c61);
    c70 = fma(vec4<f32>(a1.w), b0, c70); c71 = fma(vec4<f32>(a1.w), b1, c71);
  }
}

fn storeBlock(wg: vec3<u32>, lid: vec3<u32>) {
  let r = wg.y * BM + 8u * lid.y;
  let col = wg.x * BN + 8u * lid.x;
  store(r, col, c00); store(r, col + 4u, c01);
  store(r + 1u, col, c10); store(r + 1u, col + 4u, c11);
  store(r + 2u, col, c20); store(r + 2u, col + 4u, c21);
  store(r + 3u, col, c30); store(r + 3u, col + 4u, c31);
  store(r + 4u, col, c40); store(r + 4u, col + 4u, c41);
  store(r + 5u, col, c50); store(r + 5u, col + 4u, c51);
  store(r + 6u, col, c60); store(r + 6u, col + 4u, c61);
  store(r + 7u, col, c70); store(r + 7u, col + 4u, c71);
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
