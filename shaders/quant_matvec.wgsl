// Matrix-vector product for decode over quantized weights: y[N] = W[N, K] x[K] (+ bias[N])
// (+ y[N] when ACCUMULATE), W [out, in] kept in its GGUF blocks (quant_blocks.wgsl; QTYPE picks
// the type). K is a multiple of the block size.
//
// Each workgroup owns ROWS consecutive rows. Its WG threads stride over the rows' 32-value
// pieces (a whole block of the 32-value types, a sub-block of the K-quants): a thread loads the
// piece's eight x vec4s once, dots them with the piece of each of its ROWS rows, so every weight
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

// Rows past N read the last row again (their sums are discarded), so the loop has no branch.
fn partials(row0: u32, lid: u32) {
  var acc: array<f32, ROWS>;
  let pieces = params.k / 32u;
  for (var p = lid; p < pieces; p += WG) {
    let x0 = x[8u * p];
    let x1 = x[8u * p + 1u];
    let x2 = x[8u * p + 2u];
    let x3 = x[8u * p + 3u];
    let x4 = x[8u * p + 4u];
    let x5 = x[8u * p + 5u];
    let x6 = x[8u * p + 6u];
    let x7 = x[8u * p + 7u];
    let col = 32u * p;
    let e = col % QK;
    for (var r = 0u; r < ROWS; r++) {
      let b = q_block_at(min(row0 + r, params.rows - 1u), col, params.rowBytes);
      acc[r] += q_dot32(b, e, x0, x1, x2, x3, x4, x5, x6, x7);
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
