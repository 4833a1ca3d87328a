// Softmax cross-entropy with a per-token loss mask.
//   ce_forward:  one workgroup per row; loss[t] = mask[t] * (logsumexp(logits[t]) - logits[t, y_t])
//                (exactly 0 where mask[t] == 0) and the row statistics the backward needs.
//   ce_reduce:   one workgroup; totals[0] = sum(loss), totals[1] = sum(mask) (the scored count
//                for a 0/1 mask). A separate pass instead of float atomics, so it is deterministic.
//   ce_backward: dLogits[t, v] = (softmax(logits[t])[v] - (v == y_t)) * mask[t] * gradScale.
// A masked-in target outside [0, V) gives a NaN loss, so a bad target cannot go unnoticed.
override WG: u32 = 256;
// Columns of one row that one backward workgroup covers.
override COLS: u32 = 1024;

//!include "row_stats.wgsl"
//!include "reduce.wgsl"
// ce_reduce sums two rows at once: the losses and the mask.
const REDUCE_ROWS: u32 = 2u;

// V: row length; rows: T; rowGroups: workgroups in the grid dimension that walks the rows (rows
// beyond the per-dimension limit spill into the next dimension);
// gradScale: the factor of every gradient (typically 1 / scored count).
struct Params { V: u32, rows: u32, rowGroups: u32, gradScale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;             // [T, V]
@group(0) @binding(2) var<storage, read> targets: array<u32>;            // [T]
@group(0) @binding(3) var<storage, read> mask: array<f32>;               // [T], 1 = scored
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;         // [T]
// Per row: (max of the row, log of sum(exp(logits - max))), so logsumexp = x + y.
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;  // [T, 2]
@group(0) @binding(6) var<storage, read_write> totals: array<f32>;       // [2] (loss sum, count)
@group(0) @binding(7) var<storage, read_write> dLogits: array<f32>;      // [T, V]
@group(0) @binding(8) var<storage, read> statsIn: array<vec2<f32>>;      // [T, 2] from ce_forward
@group(0) @binding(9) var<storage, read> lossIn: array<f32>;             // [T] from ce_forward

@compute @workgroup_size(WG)
fn ce_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * params.rowGroups + wid.x;
  if (row >= params.rows) { return; }  // uniform across the workgroup
  let V = params.V;
  let base = row * V;
  let t = lid.x;

  let rowStats = row_stats(base, V, t);
  if (t == 0u) {
    let rowMax = rowStats.x;
    let logSum = log(rowStats.y);
    stats[row] = vec2(rowMax, logSum);
    let w = mask[row];
    let y = targets[row];
    var l = 0.0;
    if (w != 0.0) {
      if (y < V) {
        // (max - x_y) first: exact for close values, where max + logSum would round at 1e4.
        l = w * ((rowMax - logits[base + y]) + logSum);
      } else {
        // A quiet NaN built from a runtime value: a constant expression that evaluates to NaN
        // is a shader-creation error in WGSL (Tint rejects it).
        l = bitcast<f32>(0x7fc00000u | (y & 0u));
      }
    }
    loss[row] = l;
  }
}

@compute @workgroup_size(WG)
fn ce_reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  var sum = 0.0;
  var count = 0.0;
  for (var i = t; i < params.rows; i += WG) {
    sum += lossIn[i];
    count += mask[i];
  }
  reduce_lanes[t] = sum;
  reduce_lanes[WG + t] = count;
  reduce_rows(t, 2u, REDUCE_SUM);
  if (t == 0u) {
    totals[0] = reduce_lanes[0];
    totals[1] = reduce_lanes[WG];
  }
}

// Grid: x over column blocks of COLS; y, then z, over rows.
@compute @workgroup_size(WG)
fn ce_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.z * params.rowGroups + wid.y;
  if (row >= params.rows) { return; }
  let V = params.V;
  let base = row * V;
  let scale = mask[row] * params.gradScale;
  let st = statsIn[row];
  let y = targets[row];
  let end = min(V, (wid.x + 1u) * COLS);
  for (var i = wid.x * COLS + lid.x; i < end; i += WG) {
    var g = 0.0;
    if (scale != 0.0) {
      let p = exp((logits[base + i] - st.x) - st.y);
      g = (p - select(0.0, 1.0, i == y)) * scale;
    }
    dLogits[base + i] = g;
  }
}
