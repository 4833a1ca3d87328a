// Row statistics for a softmax, shared by softmax.wgsl and cross_entropy.wgsl through
// `//!include "row_stats.wgsl"`. The including shader declares a `logits` storage binding and the
// `WG` constant (invocations per workgroup, a power of two); row_stats must be called by every
// invocation of the workgroup, from uniform control flow (it has barriers).
//
// Its tree merges (max, sum) pairs rather than taking the max and then the sum with reduce.wgsl:
// one pass of barriers instead of two, and each sum is rescaled only when its max changes.
var<workgroup> row_max: array<f32, WG>;
var<workgroup> row_sum: array<f32, WG>;

// Merges two (max, sum of exp(x - max)) pairs; a zero sum marks an empty pair.
fn merge_stats(m1: f32, s1: f32, m2: f32, s2: f32) -> vec2<f32> {
  if (s1 == 0.0) { return vec2(m2, s2); }
  if (s2 == 0.0) { return vec2(m1, s1); }
  let m = max(m1, m2);
  return vec2(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
}

// (max, sum of exp(x - max)) over logits[base .. base + V): each thread keeps an online pair over
// its strided slice, then the pairs are merged by a tree reduction in workgroup memory.
fn row_stats(base: u32, V: u32, t: u32) -> vec2<f32> {
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
  row_max[t] = m;
  row_sum[t] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (t < stride) {
      let r = merge_stats(row_max[t], row_sum[t], row_max[t + stride], row_sum[t + stride]);
      row_max[t] = r.x;
      row_sum[t] = r.y;
    }
    workgroupBarrier();
  }
  let result = vec2(row_max[0], row_sum[0]);
  workgroupBarrier();  // every thread has read the result before the arrays are reused
  return result;
}
