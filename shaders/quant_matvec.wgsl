// Matrix-vector product for decode over quantized weights: y[N] = W[N, K] x[K] (+ bias[N])
// (+ y[N] when ACCUMULATE), W [out, in] kept in its GGUF blocks (quant_blocks.wgsl; QTYPE picks
// the type). K is a multiple of the block size.
//
// Each workgroup owns ROWS consecutive rows. Its WG threads stride over the rows' pieces
// (quant_blocks.wgsl: a whole block of the 32-value types, half a block of the K-quants): a
// thread loads the piece's x once, dots it with the piece of each of its ROWS rows, so every weight
// byte is read once and every x load serves ROWS rows; then the per-thread sums of all ROWS rows
// are reduced at once with reduce.wgsl's tree. WG must be a power of two.
override WG: u32 = 64;
override ROWS: u32 = 4;
override ACCUMULATE: bool = false;

//!include "quant_blocks.wgsl"
//!include "reduce.wgsl"
// reduce_lanes is [ROWS, WG]: the per-thread sums of each row.
const REDUCE_ROWS: u32 = ROWS;

// rowBytes: bytes of one row of blocks; groupsX: workgroups along x (a 2-D grid for large N).
struct Params { rows: u32, k: u32, rowBytes: u32, groupsX: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qweight: array<u32>;  // [ceil(N rowBytes / 4)] W [N, K]
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;  // [K / 4]
@group(0) @binding(3) var<storage, read> bias: array<f32>;     // [N]
@group(0) @binding(4) var<storage, read_write> y: array<f32>;  // [N]

fn first_row(wg: vec3<u32>) -> u32 {
  return (wg.y * params.groupsX + wg.x) * ROWS;
}

fn x8(at: u32) -> QX8 {
  return QX8(x[at], x[at + 1u], x[at + 2u], x[at + 3u], x[at + 4u], x[at + 5u], x[at + 6u], x[at + 7u]);
}

// Rows past N read the last row again (their sums are discarded), so the loop has no branch.
fn partials(row0: u32, lid: u32) {
  var acc: array<f32, ROWS>;
  let pieces = params.k / Q_PIECE;
  for (var p = lid; p < pieces; p += WG) {
    let at = Q_PIECE4 * p;
    var g1 = QX8();
    var g2 = QX8();
    var g3 = QX8();
    if (Q_PIECE == 128u) {
      g1 = x8(at + 8u);
      g2 = x8(at + 16u);
      g3 = x8(at + 24u);
    }
    let xs = q_piece(x8(at), g1, g2, g3);
    let col = Q_PIECE * p;
    let e = col % QK;
    for (var r = 0u; r < ROWS; r++) {
      let b = q_block_at(min(row0 + r, params.rows - 1u), col, params.rowBytes);
      acc[r] += q_dot_piece(b, e, xs);
    }
  }
  for (var r = 0u; r < ROWS; r++) {
    reduce_lanes[r * WG + lid] = acc[r];
  }
}

fn store(row: u32, value: f32) {
  var out = value;
  if (ACCUMULATE) {
    out += y[row];
  }
  y[row] = out;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row0 = first_row(wg);
  partials(row0, lid);
  reduce_rows(lid, ROWS, REDUCE_SUM);
  for (var r = lid; r < ROWS; r += WG) {
    if (row0 + r < params.rows) {
      store(row0 + r, reduce_lanes[r * WG]);
    }
  }
}

@compute @workgroup_size(WG)
fn main_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row0 = first_row(wg);
  partials(row0, lid);
  reduce_rows(lid, ROWS, REDUCE_SUM);
  for (var r = lid; r < ROWS; r += WG) {
    if (row0 + r < params.rows) {
      store(row0 + r, reduce_lanes[r * WG] + bias[row0 + r]);
    }
  }
}
