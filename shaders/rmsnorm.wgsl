// RMSNorm over rows: out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps), and its backward.
// One workgroup per row (rows beyond the per-dimension limit spill into y), reducing with the
// shared tree of reduce.wgsl; the backward of weight gets one invocation per vec4 column summing
// over rows, so no atomics.
// `dim` must be a multiple of 4 (rows are read as vec4s); dim4 = dim / 4.

// Invocations per workgroup; a power of two (the tree reduction halves it).
override WG: u32 = 64;
// Backward entry points add into dX / dWeight instead of overwriting them.
override ACCUMULATE: bool = false;

//!include "reduce.wgsl"
const REDUCE_ROWS: u32 = 1u;

// groupsX: workgroups along x of the row grid (row = wid.y * groupsX + wid.x).
struct Params { rows: u32, dim4: u32, eps: f32, groupsX: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;                // [rows, dim]
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;           // [dim]
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;        // [rows, dim]
@group(0) @binding(4) var<storage, read_write> rstdOut: array<f32>;          // [rows]
@group(0) @binding(5) var<storage, read> rstd: array<f32>;                   // [rows]
@group(0) @binding(6) var<storage, read> dOut: array<vec4<f32>>;             // [rows, dim]
@group(0) @binding(7) var<storage, read_write> dX: array<vec4<f32>>;         // [rows, dim]
@group(0) @binding(8) var<storage, read_write> dWeight: array<vec4<f32>>;    // [dim]
@group(0) @binding(9) var<storage, read_write> xCopy: array<vec4<f32>>;      // [rows, dim]

fn row_rstd(row: u32, lid: u32) -> f32 {
  let base = row * params.dim4;
  var squares = 0.0;
  for (var c = lid; c < params.dim4; c += WG) {
    let v = x[base + c];
    squares += dot(v, v);
  }
  let total = workgroup_sum(lid, squares);
  return inverseSqrt(total / f32(params.dim4 * 4u) + params.eps);
}

fn normalize_row(row: u32, lid: u32, r: f32) {
  let base = row * params.dim4;
  for (var c = lid; c < params.dim4; c += WG) {
    out[base + c] = x[base + c] * r * weight[c];
  }
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * params.groupsX + wid.x;
  if (row >= params.rows) { return; }  // uniform across the workgroup
  normalize_row(row, lid, row_rstd(row, lid));
}

// A row of the training forward: normalized, its rstd saved for the backward.
fn normalize_save_row(row: u32, lid: u32) {
  let r = row_rstd(row, lid);
  normalize_row(row, lid, r);
  if (lid == 0u) {
    rstdOut[row] = r;
  }
}

// The forward for training: also saves rstd [rows] for the backward.
@compute @workgroup_size(WG)
fn forward_save(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * params.groupsX + wid.x;
  if (row >= params.rows) { return; }  // uniform across the workgroup
  normalize_save_row(row, lid);
}

// forward_save that also copies x to xCopy: a training layer's norm starts the next buffer of the
// residual stream (the attention's or the MLP's output is then added to that copy) in the same
// pass over x, instead of a copy dispatch of its own.
@compute @workgroup_size(WG)
fn forward_save_copy(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.y * params.groupsX + wid.x;
  if (row >= params.rows) { return; }  // uniform across the workgroup
  normalize_save_row(row, lid);
  let base = row * params.dim4;
  for (var c = lid; c < params.dim4; c += WG) {
    xCopy[base + c] = x[base + c];
  }
}

// dX = r * weight * dOut - x * r^3 / dim * sum(dOut * weight * x), per row.
@compute @workgroup_size(WG)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * params.groupsX + wid.x;
  if (row >= params.rows) { return; }  // uniform across the workgroup
  let base = row * params.dim4;
  let r = rstd[row];
  var projection = 0.0;
  for (var c = lid; c < params.dim4; c += WG) {
    projection += dot(dOut[base + c] * weight[c], x[base + c]);
  }
  let s = workgroup_sum(lid, projection) * r * r * r / f32(params.dim4 * 4u);
  for (var c = lid; c < params.dim4; c += WG) {
    let g = dOut[base + c] * weight[c] * r - x[base + c] * s;
    if (ACCUMULATE) {
      dX[base + c] += g;
    } else {
      dX[base + c] = g;
    }
  }
}

// dWeight = sum over rows of dOut * x * rstd; one invocation per vec4 column.
@compute @workgroup_size(WG)
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= params.dim4) {
    return;
  }
  var acc = vec4<f32>(0.0);
  for (var row = 0u; row < params.rows; row++) {
    let at = row * params.dim4 + c;
    acc += dOut[at] * x[at] * rstd[row];
  }
  if (ACCUMULATE) {
    dWeight[c] += acc;
  } else {
    dWeight[c] = acc;
  }
}
