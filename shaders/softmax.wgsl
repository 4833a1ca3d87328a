// Row-wise softmax over logits [T, V], one workgroup per row: the row's max and sum of
// exp(x - max) from row_stats (row_stats.wgsl), then the row is read once more to write the
// probabilities.
override WG: u32 = 256;

//!include "row_stats.wgsl"

// V: row length; rows: T; groupsX: workgroups along x (rows beyond 65535 spill into y).
struct Params { V: u32, rows: u32, groupsX: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // [T, V]
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;  // [T, V]

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * params.groupsX + wid.x;
  if (row >= params.rows) { return; }  // uniform across the workgroup
  let V = params.V;
  let base = row * V;
  let t = lid.x;

  let stats = row_stats(base, V, t);
  let rowMax = stats.x;
  let inv = 1.0 / stats.y;
  for (var i = t; i < V; i += WG) {
    probs[base + i] = exp(logits[base + i] - rowMax) * inv;
  }
}
