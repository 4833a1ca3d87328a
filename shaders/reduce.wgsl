// Workgroup reductions by a binary tree in workgroup memory, shared by the kernels that need one:
// pull it in with `//!include "reduce.wgsl"`. The including shader defines
//   WG           invocations per workgroup, a power of two (an `override`: the registry makes it a
//                constant, which sizes the array below), with local_invocation_index < WG;
//   REDUCE_ROWS  how many values each invocation reduces at once, at most (a constant, often 1).
// Every function has barriers: call it from uniform control flow, in every invocation, with the
// same `rows` and `op`. The tree folds lane i + width into lane i for width = WG / 2, ..., 1: a
// fixed order, so results are deterministic.

// [REDUCE_ROWS, WG]: lane i of row r holds invocation i's r-th value.
var<workgroup> reduce_lanes: array<f32, REDUCE_ROWS * WG>;

const REDUCE_SUM: u32 = 0u;
const REDUCE_MAX: u32 = 1u;

// Reduces rows 0 .. rows - 1 of reduce_lanes in place, once every invocation has written its lane
// of each: afterwards reduce_lanes[r * WG] holds row r's sum (REDUCE_SUM) or maximum (REDUCE_MAX),
// readable by every invocation until the lanes are written again.
//
// Each level's folds (rows x width of them) are spread over all WG invocations, so a workgroup
// that reduces many rows over few lanes keeps every lane busy (at WG = 8 and 32 rows: 28 steps a
// lane where one fold a row per lane took 96, most with lanes masked off). Which invocation does a
// fold does not change its operands, so the sums are the same bit for bit.
fn reduce_rows(lid: u32, rows: u32, op: u32) {
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width >>= 1u) {
    let shift = countTrailingZeros(width);
    for (var fold = lid; fold < rows * width; fold += WG) {
      let at = (fold >> shift) * WG + (fold & (width - 1u));
      let a = reduce_lanes[at];
      let b = reduce_lanes[at + width];
      reduce_lanes[at] = select(a + b, max(a, b), op == REDUCE_MAX);
    }
    workgroupBarrier();
  }
}

// `value` of every invocation reduced by `op`, returned to every invocation.
fn workgroup_reduce(lid: u32, value: f32, op: u32) -> f32 {
  reduce_lanes[lid] = value;
  reduce_rows(lid, 1u, op);
  let result = reduce_lanes[0];
  workgroupBarrier();  // every invocation has read it before the lanes are written again
  return result;
}

// Sum of `value` over the workgroup, returned to every invocation.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
  return workgroup_reduce(lid, value, REDUCE_SUM);
}

// Maximum of `value` over the workgroup, returned to every invocation.
fn workgroup_max(lid: u32, value: f32) -> f32 {
  return workgroup_reduce(lid, value, REDUCE_MAX);
}
