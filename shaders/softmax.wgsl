// Row-wise softmax over logits [T, V], one workgroup per row. Each thread keeps an online
// (max, sum of exp(x - max)) pair over its strided slice of the row; the pairs are merged by a
// tree reduction in workgroup memory, then the row is read once more to write the probabilities.
override WG: u32 = 256;

// V: row length; rows: T; groupsX: workgroups along x (rows beyond 65535 spill into y).
struct Params { V: u32, rows: u32, groupsX: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // [T, V]
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;  // [T, V]

var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

// Merges (m1, s1) and (m2, s2), each a max and a sum of exp(x - max); -inf maxima mean empty.
fn merge(m1: f32, s1: f32, m2: f32, s2: f32) -> vec2<f32> {
  let m = max(m1, m2);
  if (s1 == 0.0) { return vec2(m2, s2); }
  if (s2 == 0.0) { return vec2(m1, s1); }
  return vec2(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
}

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * params.groupsX + wid.x;
  if (row >= params.rows) { return; }  // uniform across the workgroup
  let V = params.V;
  let base = row * V;
  let t = lid.x;

  var m = -3.0e38;
  var s = 0.0;
  for (var i = t; i < V; i += WG) {
    let x = logits[base + i];
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  red_max[t] = m;
  red_sum[t] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (t < stride) {
      let r = merge(red_max[t], red_sum[t], red_max[t + stride], red_sum[t + stride]);
      red_max[t] = r.x;
      red_sum[t] = r.y;
    }
    workgroupBarrier();
  }
  let rowMax = red_max[0];
  let inv = 1.0 / red_sum[0];
  for (var i = t; i < V; i += WG) {
    probs[base + i] = exp(logits[base + i] - rowMax) * inv;
  }
}
