// Matrix-vector product for decode: y[N] = W[N, K] x[K] (+ bias[N]) (+ y[N] when ACCUMULATE).
// W is row-major [out, in], the layout of llama checkpoint weights, in f32 or packed f16.
// Each workgroup owns ROWS consecutive rows; its WG threads stride over K in vec4 steps (K must be
// a multiple of 4), keep one vec4 accumulator per row (so every x load serves ROWS rows), then
// reduce the per-thread sums of all ROWS rows at once with reduce.wgsl's tree. WG must be a power
// of two.
override WG: u32 = 64;
override ROWS: u32 = 4;
override ACCUMULATE: bool = false;

//!include "reduce.wgsl"
// reduce_lanes is [ROWS, WG]: the per-thread sums of each row.
const REDUCE_ROWS: u32 = ROWS;

// groupsX: workgroups along x; large N spreads row blocks over a 2-D grid.
struct Params { rows: u32, k4: u32, groupsX: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weight: array<vec4<f32>>;    // [N, K/4] W [N, K] f32
@group(0) @binding(2) var<storage, read> weight16: array<vec2<u32>>;  // [N, K/4] W [N, K] f16
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;         // [K/4]
@group(0) @binding(4) var<storage, read> bias: array<f32>;            // [N]
@group(0) @binding(5) var<storage, read_write> y: array<f32>;         // [N]

fn first_row(wg: vec3<u32>) -> u32 {
  return (wg.y * params.groupsX + wg.x) * ROWS;
}

// Rows past N read the last row again (their sums are discarded), so the loop has no branch.
fn row_offset(row0: u32, r: u32) -> u32 {
  return min(row0 + r, params.rows - 1u) * params.k4;
}

fn partials_f32(row0: u32, lid: u32) {
  var acc: array<vec4<f32>, ROWS>;
  for (var k = lid; k < params.k4; k += WG) {
    let xv = x[k];
    for (var r = 0u; r < ROWS; r++) {
      acc[r] = fma(weight[row_offset(row0, r) + k], xv, acc[r]);
    }
  }
  for (var r = 0u; r < ROWS; r++) {
    reduce_lanes[r * WG + lid] = acc[r].x + acc[r].y + acc[r].z + acc[r].w;
  }
}

fn partials_f16(row0: u32, lid: u32) {
  var acc: array<vec4<f32>, ROWS>;
  for (var k = lid; k < params.k4; k += WG) {
    let xv = x[k];
    for (var r = 0u; r < ROWS; r++) {
      let packed = weight16[row_offset(row0, r) + k];
      let wv = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
      acc[r] = fma(wv, xv, acc[r]);
    }
  }
  for (var r = 0u; r < ROWS; r++) {
    reduce_lanes[r * WG + lid] = acc[r].x + acc[r].y + acc[r].z + acc[r].w;
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
  partials_f32(row0, lid);
  reduce_rows(lid, ROWS, REDUCE_SUM);
  if (lid < ROWS && row0 + lid < params.rows) {
    store(row0 + lid, reduce_lanes[lid * WG]);
  }
}

@compute @workgroup_size(WG)
fn main_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row0 = first_row(wg);
  partials_f32(row0, lid);
  reduce_rows(lid, ROWS, REDUCE_SUM);
  if (lid < ROWS && row0 + lid < params.rows) {
    store(row0 + lid, reduce_lanes[lid * WG] + bias[row0 + lid]);
  }
}

@compute @workgroup_size(WG)
fn main_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row0 = first_row(wg);
  partials_f16(row0, lid);
  reduce_rows(lid, ROWS, REDUCE_SUM);
  if (lid < ROWS && row0 + lid < params.rows) {
    store(row0 + lid, reduce_lanes[lid * WG]);
  }
}

@compute @workgroup_size(WG)
fn main_f16_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row0 = first_row(wg);
  partials_f16(row0, lid);
  reduce_rows(lid, ROWS, REDUCE_SUM);
  if (lid < ROWS && row0 + lid < params.rows) {
    store(row0 + lid, reduce_lanes[lid * WG] + bias[row0 + lid]);
  }
}
